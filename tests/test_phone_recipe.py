"""One small end-to-end run of recipes/speechocean762/phone/run.sh on a few real utterances from ../shared."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CORPUS = SHARED / "corpora" / "speechocean762"
RECIPE = ROOT / "recipes" / "speechocean762" / "phone"

MODELS = ("mlp_context", "truncated_transformer")
ONE_EPOCH = "trainer.max_epochs=1"


def _run(recipe: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    return subprocess.run(["bash", str(recipe / "run.sh"), "--corpus-dir", str(CORPUS), "--max-utts", "12", *args],
                          cwd=recipe, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    """A copy of the recipe directory (so the test never touches a user's data/ and exp/)."""
    if not CORPUS.is_dir():
        pytest.skip(f"../shared not found: {CORPUS} is absent (the speechocean762 corpus, openslr 101)")
    dst = tmp_path / "recipes" / "speechocean762" / "phone"
    shutil.copytree(RECIPE, dst, ignore=shutil.ignore_patterns("data", "exp", "fbank", "mfcc", "RESULTS.md"))
    for name in ("utils", "local", "conf", "speechattn"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    return dst


UNIT = re.compile(r"\(\w+\.sh:\d+\) (stage \d \w+[^:]*): (.*)")


def units(stderr: str) -> dict[str, str]:
    """What the run did with each unit of work: 'stage 3 train exp/x' -> 'running' / 'up to date' / ..."""
    done = {}
    for name, what in UNIT.findall(stderr):
        if not what.startswith("done in"):
            done[name] = what.split(",")[0].split(":")[0].split(" (")[0]
    return done


@pytest.mark.slow
def test_phone_recipe_end_to_end(recipe: Path) -> None:
    result = _run(recipe, "--train-args", ONE_EPOCH)  # the default models: mlp_context, truncated_transformer
    assert result.returncode == 0, result.stderr[-4000:]
    for stage_line in ("stage 0", "stage 1", "stage 2", "stage 3", "stage 4", "stage 5", "stage 6"):
        assert stage_line in result.stderr
    first = units(result.stderr)
    assert len(first) == 12 and set(first.values()) == {"running"}, first  # 1 data, 3 features, 1 cmvn, 2x3, results
    data = recipe / "data"
    for s in ("train", "dev", "test"):
        assert (data / s / "feats.scp").exists() and (data / s / "frame_labels").exists()
        assert (data / s / ".stage.features").exists()
    for model in MODELS:
        exp = recipe / "exp" / model
        frames = (exp / "decode_test" / "frames.txt").read_text().splitlines()
        assert len(frames) == 12
        scores = json.loads((exp / "scores" / "scores.json").read_text())
        assert 0 <= scores["frame_accuracy"] <= 100 and "non_silence_frame_accuracy" in scores
        assert (exp / "scores" / "confusion.png").stat().st_size > 1000
        assert (exp / "config.yaml").exists() and (exp / "checkpoints" / "last.pt").exists()
        assert (exp / "train.out").stat().st_size > 0  # console output of the parallel training
    assert (recipe / "exp" / "truncated_transformer" / "scores" / "attention_map.png").stat().st_size > 1000
    table = (recipe / "RESULTS.md").read_text()
    assert "mlp_context" in table and "truncated_transformer" in table

    # A second run does nothing and says so for every unit of every stage.
    model_pt = recipe / "exp" / "truncated_transformer" / "model.pt"
    mlp_pt = recipe / "exp" / "mlp_context" / "model.pt"
    before = model_pt.stat().st_mtime_ns
    again = _run(recipe, "--train-args", ONE_EPOCH)
    assert again.returncode == 0, again.stderr[-4000:]
    assert units(again.stderr) == {name: "up to date" for name in first}, again.stderr[-3000:]
    assert model_pt.stat().st_mtime_ns == before

    # Speed perturbation: data/train_sp (3 speeds of each training utterance), a separate experiment.
    sp = _run(recipe, "--speed-perturb", "true", "--model", "truncated_transformer", "--stop-stage", "3",
              "--train-args", ONE_EPOCH)
    assert sp.returncode == 0, sp.stderr[-4000:]
    assert units(sp.stderr) == {
        "stage 0 data": "up to date", "stage 0 data data/train_sp": "running",
        "stage 1 features data/train_sp": "running", "stage 1 features data/dev": "up to date",
        "stage 1 features data/test": "up to date", "stage 2 cmvn data/train_sp": "running",
        "stage 3 train exp/truncated_transformer_sp": "running"}, sp.stderr[-3000:]
    train_utts = (data / "train" / "wav.scp").read_text().splitlines()
    sp_utts = (data / "train_sp" / "wav.scp").read_text().splitlines()
    assert len(sp_utts) == 3 * len(train_utts) and (data / "train_sp" / "feats.scp").exists()
    sp_exp = recipe / "exp" / "truncated_transformer_sp"
    assert (sp_exp / "model.pt").exists() and "data/train_sp" in (sp_exp / "config.yaml").read_text()
    assert model_pt.stat().st_mtime_ns == before  # the unperturbed experiment is untouched

    # Another option (features): what depends on it is redone, nothing else.
    mfcc = _run(recipe, "--features", "mfcc", "--model", "mlp_context", "--stop-stage", "3",
                "--train-args", ONE_EPOCH)
    assert mfcc.returncode == 0, mfcc.stderr[-4000:]
    redone = units(mfcc.stderr)
    assert redone.pop("stage 0 data") == "up to date"
    assert set(redone) == {"stage 1 features data/train", "stage 1 features data/dev", "stage 1 features data/test",
                           "stage 2 cmvn data/train", "stage 3 train exp/mlp_context"}
    assert all(what == "redoing" for what in redone.values()), redone
    assert "now 'command: speechattn-compute-features data_dir=data/train feats_dir=mfcc/train features=mfcc'" \
        in mfcc.stderr
    assert (recipe / "mfcc" / "train").is_dir() and "mfcc" in (mlp_pt.parent / "feats.yaml").read_text()
    assert model_pt.stat().st_mtime_ns == before  # not selected: untouched (its stamps now say it is stale)

    # A failing unit: one line naming it, the command and its last output.
    bad = _run(recipe, "--features", "mfcc", "--model", "mlp_context", "--stage", "3", "--stop-stage", "3",
               "--train-args", "trainer.no_such_key=1")
    assert bad.returncode == 1
    errors = [line for line in bad.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "stage 3 train exp/mlp_context failed (exit 1): speechattn-train" in errors[0], \
        bad.stderr[-3000:]
    assert "no_such_key" in errors[0] and "full output: exp/mlp_context/train.out" in errors[0]


def test_missing_corpus_is_a_clear_error(recipe: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", str(recipe / "run.sh"), "--corpus-dir", str(tmp_path / "nowhere")],
                            cwd=recipe, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "not found" in result.stderr and "openslr" in result.stderr
