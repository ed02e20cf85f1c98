"""Small end-to-end runs of recipes/{speechocean762,fsdd}/sid/run.sh on a few real speakers from ../shared.

Tiny model, one epoch, a work directory under tmp (``--work-dir``): the recipes' own data/ and exp/ are
never touched. Each run checks every stage's outputs; the speechocean762 one also checks that a re-run
skips the completed work.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import kaldiio
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SPEECHOCEAN = SHARED / "corpora" / "speechocean762"
FSDD = SHARED / "corpora" / "fsdd"

TINY = ("model.d_model=32 model.num_layers=1 model.num_heads=2 model.ffn_dim=64 sid.embed_dim=16 "
        "sid.pooling_kwargs.hidden_dim=16 trainer.max_frames_per_batch=3000")
ONE_EPOCH = ["--train-args", f"trainer.max_epochs=1 {TINY}"]


def _run(recipe: str, corpus: Path, work_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", str(ROOT / "recipes" / recipe / "sid" / "run.sh"), "--corpus-dir", str(corpus),
                           "--work-dir", str(work_dir), "--nj", "1", *ONE_EPOCH, *args],
                          env=env, capture_output=True, text=True, timeout=600)


def _check_decode(decode: Path, data: Path) -> list[list[str]]:
    utts = [line.split()[0] for line in (data / "wav.scp").read_text().splitlines()]
    predictions = [line.split() for line in (decode / "predictions.txt").read_text().splitlines()]
    assert [p[0] for p in predictions] == utts
    embeddings = dict(kaldiio.load_scp(str(decode / "embeddings.scp")))
    assert sorted(embeddings) == sorted(utts)
    assert all(np.asarray(v).shape == (16,) for v in embeddings.values())
    assert (decode / "failed.txt").read_text() == ""
    return predictions


@pytest.mark.slow
def test_speechocean762_sid_recipe_end_to_end(tmp_path: Path) -> None:
    if not SPEECHOCEAN.is_dir():
        pytest.skip(f"../shared not found: {SPEECHOCEAN} is absent (the speechocean762 corpus, openslr 101)")
    work = tmp_path / "so762"
    result = _run("speechocean762", SPEECHOCEAN, work, "--max-speakers", "2")
    assert result.returncode == 0, result.stderr[-4000:]
    for stage_line in ("stage 0", "stage 1", "stage 2", "stage 3", "stage 4", "stage 5", "stage 6"):
        assert stage_line in result.stderr
    speakers = (work / "exp" / "ident" / "speakers.txt").read_text().split()
    assert len(speakers) == 4  # 2 of train/ + 2 of test/
    assert len((work / "exp" / "verif" / "speakers.txt").read_text().split()) == 2  # train/ speakers only
    predictions = _check_decode(work / "exp" / "ident" / "decode_ident_test", work / "data" / "ident_test")
    assert all(p[1] in speakers for p in predictions)
    _check_decode(work / "exp" / "verif" / "decode_verif_test", work / "data" / "verif_test")

    ident = json.loads((work / "exp" / "ident" / "scores" / "scores.json").read_text())
    assert 0 <= ident["identification"]["top1"] <= ident["identification"]["top5"] == 100.0  # 4 speakers
    verif = json.loads((work / "exp" / "verif" / "scores" / "scores.json").read_text())
    trials = (work / "data" / "verif_test" / "trials").read_text().splitlines()
    assert verif["verification"]["num_trials"] == len(trials) and 0 <= verif["verification"]["eer"] <= 100
    assert "identification" not in verif  # its test speakers were never seen in training
    assert (work / "exp" / "verif" / "scores" / "det.png").stat().st_size > 1000
    assert (work / "exp" / "verif" / "scores" / "embeddings.png").stat().st_size > 1000  # 10 utterances/speaker
    table = (work / "RESULTS.md").read_text()
    assert "| ident |" in table and "| verif |" in table

    # Re-running skips every unit of every stage: 1 data, 6 features, 2 cmvn, 2 x (train, infer, score), results.
    model_pt = work / "exp" / "verif" / "model.pt"
    before = model_pt.stat().st_mtime_ns
    again = _run("speechocean762", SPEECHOCEAN, work, "--max-speakers", "2")
    assert again.returncode == 0, again.stderr[-4000:]
    assert model_pt.stat().st_mtime_ns == before
    assert again.stderr.count(": up to date, skipped") == 16, again.stderr[-3000:]
    for verb in ("running", "redoing", "resuming"):
        assert not re.search(rf"\) stage \d [^:]*: {verb}", again.stderr), again.stderr[-3000:]


def test_fsdd_sid_recipe_end_to_end(tmp_path: Path) -> None:  # 43 s: not `slow`; the fast suite's full recipe run
    if not FSDD.is_dir():
        pytest.skip(f"../shared not found: {FSDD} is absent (the Free Spoken Digit Dataset)")
    work = tmp_path / "fsdd"
    result = _run("fsdd", FSDD, work, "--max-speakers", "2")
    assert result.returncode == 0, result.stderr[-4000:]
    feats_yaml = (work / "exp" / "ident" / "feats.yaml").read_text()
    assert "high_freq: 3800" in feats_yaml  # the 8 kHz band limit travels with the model
    predictions = _check_decode(work / "exp" / "ident" / "decode_ident_test", work / "data" / "ident_test")
    assert {p[1] for p in predictions} <= {"george", "jackson"}
    scores = json.loads((work / "exp" / "ident" / "scores" / "scores.json").read_text())
    assert scores["identification"]["num_speakers"] == 2
    assert "verification" not in scores
    assert "| ident |" in (work / "RESULTS.md").read_text()


def test_missing_corpus_is_a_clear_error(tmp_path: Path) -> None:
    result = _run("speechocean762", tmp_path / "nowhere", tmp_path / "work", "--stop-stage", "0")
    assert result.returncode != 0
    assert "not found" in result.stderr and "openslr" in result.stderr


def test_fsdd_sid_recipe_with_augmentation(tmp_path: Path) -> None:  # ~1 min: 2 speakers, tiny model, 1 epoch
    """`--augment speaker`: the unit "stage 3 rirs" makes the synthetic RIR set once (16 kHz: the rate the
    augmenter works at, FSDD's 8 kHz audio being resampled when loaded), training reverberates with it into
    exp/ident_aug; a re-run with `--embedding crops` redoes inference and scoring only."""
    if not FSDD.is_dir():
        pytest.skip(f"../shared not found: {FSDD} is absent (the Free Spoken Digit Dataset)")
    work = tmp_path / "fsdd"
    aug = ["--max-speakers", "2", "--augment", "speaker", "--rir-rooms", "1"]
    result = _run("fsdd", FSDD, work, *aug)
    assert result.returncode == 0, result.stderr[-4000:]
    manifest = json.loads((work / "data" / "rirs" / "rir_set.json").read_text())
    assert manifest["params"]["sample_rate"] == 16000
    assert len(list((work / "data" / "rirs" / "simulated_rirs").rglob("*.wav"))) == 15  # 3 classes x 1 room x 5
    assert (work / "data" / "rirs" / ".stage.rirs").is_file()
    assert not (work / "exp" / "ident").exists()  # the augmented experiment has its own name
    exp = work / "exp" / "ident_aug"
    config = (exp / "config.yaml").read_text()
    assert "enabled: true" in config and "rir_dir: data/rirs" in config and "make_rir_set: false" in config
    train_log = (exp / "train.log").read_text()
    assert "augmented crops" in train_log and "data/rirs: 15 RIRs" in train_log
    assert json.loads((exp / "scores" / "scores.json").read_text())["identification"]["num_speakers"] == 2
    assert "| ident_aug |" in (work / "RESULTS.md").read_text()

    model = (exp / "model.pt").stat().st_mtime_ns
    again = _run("fsdd", FSDD, work, *aug, "--embedding", "crops", "--stage", "3")
    assert again.returncode == 0, again.stderr[-4000:]
    assert "stage 3 rirs data/rirs: up to date, skipped" in again.stderr
    assert "stage 3 train exp/ident_aug: up to date, skipped" in again.stderr
    assert (exp / "model.pt").stat().st_mtime_ns == model
    assert "stage 4 infer exp/ident_aug on data/ident_test: redoing: now 'command: speechattn-infer" in again.stderr
    assert "embedding=crops" in again.stderr and "stage 5 score exp/ident_aug: redoing" in again.stderr
    inputs = json.loads((exp / "decode_ident_test" / "inputs.json").read_text())
    assert inputs["settings"]["embedding"] == "crops"

    # A bigger RIR set would redo the set and the training (dry run: nothing changes on disk).
    dry = _run("fsdd", FSDD, work, *aug[:-1], "2", "--stage", "3", "--stop-stage", "3", "--dry-run", "true")
    assert dry.returncode == 0, dry.stderr[-4000:]
    assert "stage 3 rirs data/rirs: redoing: now 'command: python" in dry.stderr
    assert "stage 3 train exp/ident_aug: redoing: data/rirs/.stage.rirs would be redone" in dry.stderr
    assert (exp / "model.pt").stat().st_mtime_ns == model
