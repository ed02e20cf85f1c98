"""Small end-to-end runs of the TIMIT, LibriSpeech+MFA and VoxCeleb1 recipes on fixtures made at test time.

The fixtures (``local/make_fixture.py --size small``) are speechocean762 speech from ``../shared`` re-laid in
each corpus's documented layout, not the real corpora. One model, one epoch, a work directory under tmp
(``--work-dir``): the recipes' own data/ and exp/ are never touched.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from speechattn.data.timit import phone_table_39, phone_table_48

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "corpora" / "speechocean762"
PHONE_ARGS = ["--model", "mlp_context", "--max-utts", "16", "--train-args", "trainer.max_epochs=1"]
TINY_SID = ("trainer.max_epochs=1 model.d_model=32 model.num_layers=1 model.num_heads=2 model.ffn_dim=64 "
            "sid.embed_dim=16 sid.pooling_kwargs.hidden_dim=16 trainer.max_frames_per_batch=3000")


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}


def _run(recipe: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "recipes" / recipe / "run.sh"), "--nj", "1", *args],
                          env=_env(), capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory):
    """``make(corpus) -> directory`` of a small fixture (made once per module)."""
    if not (SOURCE / "alignments" / "phones.ctm").is_file():
        pytest.skip(f"../shared not found: {SOURCE} (speechocean762 with alignments) is absent, so no fixture "
                    f"in the TIMIT / LibriSpeech / VoxCeleb1 layout can be made")
    base = tmp_path_factory.mktemp("corpora")

    def make(corpus: str) -> Path:
        out = base / corpus
        result = subprocess.run([sys.executable, str(ROOT / "local" / "make_fixture.py"), corpus, "--out-dir",
                                 str(out), "--size", "small"], env=_env(), capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        return out

    return make


def _check_phone_run(result: subprocess.CompletedProcess, work: Path) -> dict:
    assert result.returncode == 0, result.stderr[-4000:]
    for stage_line in ("stage 0", "stage 1", "stage 2", "stage 3", "stage 4", "stage 5", "stage 6"):
        assert stage_line in result.stderr
    exp = work / "exp" / "mlp_context"
    test_utts = (work / "data" / "test" / "wav.scp").read_text().splitlines()
    assert len((exp / "decode_test" / "frames.txt").read_text().splitlines()) == len(test_utts) > 0
    assert (exp / "scores" / "confusion.png").stat().st_size > 1000
    assert "mlp_context" in (work / "RESULTS.md").read_text()
    return json.loads((exp / "scores" / "scores.json").read_text())


@pytest.mark.slow
def test_timit_recipe_trains_on_48_and_scores_on_39(fixtures, tmp_path: Path) -> None:
    corpus = fixtures("timit")
    work = tmp_path / "timit"
    scores = _check_phone_run(_run("timit/phone", "--corpus-dir", str(corpus), "--work-dir", str(work),
                                   *PHONE_ARGS), work)
    exp = work / "exp" / "mlp_context"
    assert (exp / "phones.txt").read_text().split()[::2] == phone_table_48()
    assert (exp / "score_map").read_text() == (work / "data" / "lang" / "score_map").read_text()
    # Scored on the 39 classes: closures, epenthetic silence and the other merged phones are gone.
    assert set(scores["per_phone"]) == set(phone_table_39())
    assert scores["score_map"].endswith("score_map")
    assert 0 <= scores["frame_accuracy_training_classes"] <= scores["frame_accuracy"] <= 100


@pytest.mark.slow
def test_librispeech_recipe_end_to_end(fixtures, tmp_path: Path) -> None:
    root = fixtures("librispeech")
    work = tmp_path / "libri"
    scores = _check_phone_run(_run("librispeech/phone", "--corpus-dir", str(root / "LibriSpeech"),
                                   "--alignments-dir", str(root / "alignments"), "--work-dir", str(work),
                                   *PHONE_ARGS), work)
    assert not (work / "exp" / "mlp_context" / "score_map").exists() and "score_map" not in scores
    assert len(scores["per_phone"]) == 40  # SIL + 39 ARPAbet phones, stress removed


@pytest.mark.slow
def test_voxceleb1_recipe_end_to_end(fixtures, tmp_path: Path) -> None:
    corpus = fixtures("voxceleb1")
    work = tmp_path / "vox"
    result = _run("voxceleb1/sid", "--corpus-dir", str(corpus), "--work-dir", str(work), "--train-args", TINY_SID)
    assert result.returncode == 0, result.stderr[-4000:]
    ident = json.loads((work / "exp" / "ident" / "scores" / "scores.json").read_text())
    assert 0 <= ident["identification"]["top1"] <= ident["identification"]["top5"] <= 100
    verif = json.loads((work / "exp" / "verif" / "scores" / "scores.json").read_text())
    trials = (work / "data" / "verif_test" / "trials").read_text().splitlines()
    assert verif["verification"]["num_trials"] == len(trials) > 0 and 0 <= verif["verification"]["eer"] <= 100
    assert set(verif["verification"]["min_dcf_at_p_target"]) == {"0.01", "0.05"}
    # Verification trains on speakers of no trial.
    trial_speakers = {u.split("-")[0] for line in trials for u in line.split()[1:]}
    assert not trial_speakers & set((work / "exp" / "verif" / "speakers.txt").read_text().split())
    table = (work / "RESULTS.md").read_text()
    assert "| ident |" in table and "| verif |" in table


def test_librispeech_recipe_without_alignments_is_one_line(tmp_path: Path) -> None:
    result = _run("librispeech/phone", "--corpus-dir", str(tmp_path), "--alignments-dir", str(tmp_path / "none"),
                  "--work-dir", str(tmp_path / "w"))
    assert result.returncode == 1
    assert f"alignments directory '{tmp_path / 'none'}' not found" in result.stderr


def test_timit_recipe_rejects_an_unknown_test_set(tmp_path: Path) -> None:
    result = _run("timit/phone", "--corpus-dir", str(tmp_path), "--test-set", "full", "--work-dir", str(tmp_path))
    assert result.returncode == 1 and "--test-set 'full': core | complete" in result.stderr
