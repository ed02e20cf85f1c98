"""Training loop: exact resume after an interruption, atomic weights-only checkpoints, DDP with gloo."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from phone_data import make_phone_corpus, phone_overrides
from speechattn.bin._hydra import CONF_DIR
from speechattn.bin.train import run
from speechattn.utils.checkpoint import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _train(overrides: list[str]) -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    run(cfg, Path(cfg.exp_dir))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_phone_corpus(tmp_path_factory.mktemp("phone"))


def test_resume_after_interruption_is_exact(corpus: Path, tmp_path: Path) -> None:
    common = ["trainer.max_epochs=2", "trainer.save_every_steps=1", "model.dropout=0.1"]
    _train(phone_overrides(corpus, tmp_path / "straight") + common)
    steps_per_epoch = len(load_checkpoint(tmp_path / "straight" / "checkpoints" / "epoch-1.pt")["history"]) and \
        load_checkpoint(tmp_path / "straight" / "checkpoints" / "epoch-1.pt")["step"]
    assert steps_per_epoch >= 3
    interrupted = tmp_path / "interrupted"
    stop = steps_per_epoch + 2  # in the middle of the second epoch
    with pytest.raises(KeyboardInterrupt):
        _train(phone_overrides(corpus, interrupted) + common + [f"trainer.stop_after_steps={stop}"])
    assert not (interrupted / ".done").exists()
    state = load_checkpoint(interrupted / "checkpoints" / "last.pt")
    assert state["step"] == stop and state["sampler"]["batches_done"] == 2
    _train(phone_overrides(corpus, interrupted) + common)  # resumes from checkpoints/last.pt
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(interrupted / "checkpoints" / "last.pt")
    assert a["step"] == b["step"]
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=1e-6, msg=key)
    assert [round(r["valid_loss"], 5) for r in a["history"]] == [round(r["valid_loss"], 5) for r in b["history"]]
    # A finished experiment is skipped, not retrained.
    mtime = (interrupted / "model.pt").stat().st_mtime
    _train(phone_overrides(corpus, interrupted) + common)
    assert (interrupted / "model.pt").stat().st_mtime == mtime
    assert (interrupted / "training_curves.png").stat().st_size > 0
    assert (interrupted / "tensorboard").is_dir()


def test_training_learns_the_synthetic_phones(corpus: Path, tmp_path: Path) -> None:
    _train(phone_overrides(corpus, tmp_path / "exp") + ["trainer.max_epochs=6", "optim.lr=3e-3"])
    best = load_checkpoint(tmp_path / "exp" / "model.pt")
    assert best["valid_acc"] > 0.6, best["valid_acc"]


def test_checkpoint_is_atomic_and_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"w": torch.ones(2), "step": 3})

    class Boom:
        def __reduce__(self):  # pickling fails half-way through the save
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        save_checkpoint(path, {"w": torch.zeros(2), "bad": Boom()})
    assert load_checkpoint(path)["step"] == 3  # the previous checkpoint survived intact
    assert not [p for p in tmp_path.iterdir() if p.name != "ckpt.pt"]  # no temp file left behind
    torch.save({"obj": Path("x")}, tmp_path / "pickled.pt")  # arbitrary objects are refused
    with pytest.raises(RuntimeError, match="cannot load checkpoint"):
        load_checkpoint(tmp_path / "pickled.pt")


def test_torchrun_ddp_two_processes_gloo(corpus: Path, tmp_path: Path) -> None:
    exp = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "speechattn.bin.train", *phone_overrides(corpus, exp), "trainer.max_epochs=1"]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = load_checkpoint(exp / "checkpoints" / "last.pt")
    assert ckpt["sampler"]["world_size"] == 2
    assert (exp / "model.pt").exists() and (exp / ".done").exists()


def test_all_reduce_sum_returns_only_once_no_other_holder_keeps_its_tensor() -> None:
    # Gloo's worker thread may still hold a reduced tensor when all_reduce returns; if the process then
    # exits, its release (which takes the GIL) aborts the rank (CI, 2026-12-04: SIGABRT of rank 1 after
    # validation). wait_until_released must block until the other holder lets go, here an autograd graph
    # that saved the tensor and is dropped by another thread 0.2 s later.
    import threading
    import time

    from speechattn.training.distributed import wait_until_released

    t = torch.zeros(3, requires_grad=True)
    alone = t._use_count()
    graph = [(t * t).sum()]  # MulBackward saves t: its use count rises
    assert t._use_count() > alone
    release = threading.Timer(0.2, graph.clear)
    start = time.monotonic()
    release.start()
    wait_until_released(t, alone)
    assert time.monotonic() - start >= 0.19
    assert t._use_count() == alone
    release.join()


def test_wait_until_released_gives_up_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    from speechattn.training.distributed import wait_until_released

    t = torch.zeros(3, requires_grad=True)
    alone = t._use_count()
    graph = (t * t).sum()
    wait_until_released(t, alone, timeout_s=0.05)  # never released: returns instead of hanging
    assert "still holds a reduced tensor" in caplog.text
    del graph


def test_cuda_training_gets_a_process_group_that_also_reduces_cpu_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    # all_reduce_sum reduces CPU tensors (loss and accuracy sums); a plain "nccl" group has no CPU backend and
    # would fail at the end of the first epoch on a GPU. No GPU here: the backend asked for is what is checked.
    import doctest

    import torch.distributed as dist

    from speechattn.training import distributed

    assert doctest.testmod(distributed).failed == 0
    asked: list[str] = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend: asked.append(backend))
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    distributed.init_distributed(torch.device("cuda", 0))
    distributed.init_distributed(torch.device("cpu"))
    assert asked == ["cpu:gloo,cuda:nccl", "gloo"]
