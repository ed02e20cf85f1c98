"""One small end-to-end run of recipes/speechocean762/phone/run.sh on a few real utterances from ../shared."""
from __future__ import annotations

import json
import os
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


def test_phone_recipe_end_to_end(recipe: Path) -> None:
    result = _run(recipe, "--train-args", ONE_EPOCH)  # the default models: mlp_context, truncated_transformer
    assert result.returncode == 0, result.stderr[-4000:]
    for stage_line in ("stage 0", "stage 1", "stage 2", "stage 3", "stage 4", "stage 5"):
        assert stage_line in result.stderr
    data = recipe / "data"
    for s in ("train", "dev", "test"):
        assert (data / s / "feats.scp").exists() and (data / s / "frame_labels").exists()
    for model in MODELS:
        exp = recipe / "exp" / model
        frames = (exp / "decode_test" / "frames.txt").read_text().splitlines()
        assert len(frames) == 12
        scores = json.loads((exp / "scores" / "scores.json").read_text())
        assert 0 <= scores["frame_accuracy"] <= 100 and "non_silence_frame_accuracy" in scores
        assert (exp / "scores" / "confusion.png").stat().st_size > 1000
        assert (exp / "config.yaml").exists() and (exp / "checkpoints" / "last.pt").exists()
    assert (recipe / "exp" / "truncated_transformer" / "scores" / "attention_map.png").stat().st_size > 1000
    table = (recipe / "RESULTS.md").read_text()
    assert "mlp_context" in table and "truncated_transformer" in table

    # Re-running is idempotent: every stage finds its outputs complete and skips the work.
    model_pt = recipe / "exp" / "truncated_transformer" / "model.pt"
    before = model_pt.stat().st_mtime_ns
    again = _run(recipe, "--model", "truncated_transformer", "--stop-stage", "4",
                 "--train-args", ONE_EPOCH)
    assert again.returncode == 0, again.stderr[-4000:]
    assert model_pt.stat().st_mtime_ns == before
    log = again.stdout + again.stderr + (recipe / "exp" / "truncated_transformer" / "train.log").read_text()
    for message in ("already prepared", "feats.scp is up to date", "is complete"):
        assert message in log, log[-3000:]
    assert (recipe / "exp" / "truncated_transformer" / "train.out").stat().st_size > 0  # console output

    # Speed perturbation: data/train_sp (3 speeds of each training utterance), a separate experiment.
    sp = _run(recipe, "--speed-perturb", "true", "--model", "truncated_transformer", "--stop-stage", "3",
              "--train-args", ONE_EPOCH)
    assert sp.returncode == 0, sp.stderr[-4000:]
    train_utts = (data / "train" / "wav.scp").read_text().splitlines()
    sp_utts = (data / "train_sp" / "wav.scp").read_text().splitlines()
    assert len(sp_utts) == 3 * len(train_utts) and (data / "train_sp" / "feats.scp").exists()
    sp_exp = recipe / "exp" / "truncated_transformer_sp"
    assert (sp_exp / "model.pt").exists() and "data/train_sp" in (sp_exp / "config.yaml").read_text()
    assert model_pt.stat().st_mtime_ns == before  # the unperturbed experiment is untouched


def test_missing_corpus_is_a_clear_error(recipe: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", str(recipe / "run.sh"), "--corpus-dir", str(tmp_path / "nowhere")],
                            cwd=recipe, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "not found" in result.stderr and "openslr" in result.stderr
