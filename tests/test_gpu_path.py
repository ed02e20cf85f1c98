"""The GPU path, checked on CPU (issue #12): precision (autocast, fp16 loss scaling, checkpoints across
precisions), engine choice (attention dropout, explicit engines never replaced, logged once), bounded
shapes for compiled code (torch's own compilation counter), and bench/gpu_check.sh's CPU dry-run."""
from __future__ import annotations

import logging
import os
import subprocess
import warnings
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from phone_data import phone_overrides
from test_training import _train, corpus  # noqa: F401 - the training helper and the synthetic corpus fixture
from speechattn.bin._hydra import CONF_DIR
from speechattn.bin.train import run
from speechattn.data.dataset import Batch
from speechattn.data.sampler import LengthBucketBatchSampler
from speechattn.models import attention
from speechattn.models.attention import TruncatedSelfAttention, flex_banded_attention, planned_engines, resolve_engine
from speechattn.models.transformer import SelfAttentionEncoder
from speechattn.tasks.phone import IGNORE_INDEX
from speechattn.utils.checkpoint import load_checkpoint
from speechattn.utils.precision import Precision, inference_precision, resolve_precision
from speechattn.training.shapes import ShapePolicy, compilation_count, sampler_buckets

ROOT = Path(__file__).resolve().parents[1]
CPU, CUDA = torch.device("cpu"), torch.device("cuda")
SLOW = pytest.mark.skipif(not os.environ.get("SPEECHATTN_SLOW_TESTS"),
                          reason="set SPEECHATTN_SLOW_TESTS=1 (inductor compiles, ~2-4 min)")


# ------------------------------------------------------------------------------------------ precision


def test_precision_resolution() -> None:
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision(None, CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp8", CPU)
    assert Precision.create("fp16", CPU).scaler is not None and Precision.create("bf16", CPU).scaler is None
    assert inference_precision({}, None, CPU).name == "fp32"  # checkpoints from before precisions existed
    assert inference_precision({"precision": "bf16"}, None, CPU).name == "bf16"
    assert inference_precision({"precision": "bf16"}, "fp32", CPU).name == "fp32"


def test_bf16_autocast_runs_the_encoder_in_bf16_with_fp32_weights() -> None:
    enc = SelfAttentionEncoder(8, d_model=16, num_layers=1, num_heads=2, ffn_dim=32, left=3, right=3,
                               pos_conv_kernel=3, conv_kernel=3)
    seen = []
    enc.layers[0].attn.in_proj.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with Precision.create("bf16", CPU).autocast():
        y = enc(torch.randn(2, 20, 8), torch.tensor([20, 11]))
    y.float().sum().backward()
    assert seen == [torch.bfloat16]
    assert all(p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32
               for p in enc.parameters())


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_training_on_cpu(corpus: Path, tmp_path: Path, precision: str) -> None:
    exp = tmp_path / precision
    _train(phone_overrides(corpus, exp) + ["trainer.max_epochs=3", "optim.lr=3e-3",
                                          f"trainer.precision={precision}"])
    last = load_checkpoint(exp / "checkpoints" / "last.pt")
    history = last["history"]
    assert all(torch.isfinite(torch.tensor([r["train_loss"], r["valid_loss"]])).all() for r in history)
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 0.1, history  # a few steps reduce the loss
    assert last["precision"] == precision and last["precision_state"]["name"] == precision
    assert bool(last["precision_state"]["scaler"]) == (precision == "fp16")  # GradScaler state is resumable
    assert load_checkpoint(exp / "model.pt")["precision"] == precision
    assert all(v.dtype == torch.float32 for v in last["model"].values() if v.is_floating_point())  # master weights


def test_checkpoints_load_across_precisions(corpus: Path, tmp_path: Path, caplog) -> None:
    from speechattn.tasks.phone_predictor import PhoneLabeler

    exp = tmp_path / "bf16"
    _train(phone_overrides(corpus, exp) + ["trainer.max_epochs=2", "trainer.precision=bf16"])
    follows = PhoneLabeler.from_exp_dir(exp)  # the checkpoint's precision
    fp32 = PhoneLabeler.from_exp_dir(exp, precision="fp32")
    assert follows.precision.name == "bf16" and fp32.precision.name == "fp32"
    feats = torch.randn(157, 80)
    a, b = follows.logits(feats), fp32.logits(feats)
    assert a.dtype == b.dtype == torch.float32
    torch.testing.assert_close(a, b, atol=0.15, rtol=0.05)  # bf16 has 8 mantissa bits
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.9
    # Training resumed in another precision continues from the same weights (logged, not refused).
    (exp / ".done").unlink()  # a finished experiment is otherwise skipped
    with caplog.at_level(logging.WARNING):
        _train(phone_overrides(corpus, exp) + ["trainer.max_epochs=3", "trainer.precision=fp32"])
    assert "trained with precision=bf16, continuing with fp32" in caplog.text
    last = load_checkpoint(exp / "checkpoints" / "last.pt")
    assert last["epoch"] == 3 and last["precision"] == "fp32"


# ------------------------------------------------------------------------------------------ engines


def test_attention_dropout_is_separate_from_dropout() -> None:
    from speechattn.models.encoders import build_encoder

    cfg = {"name": "truncated_transformer", "d_model": 16, "num_layers": 1, "num_heads": 2, "ffn_dim": 32,
           "left": 2, "right": 2, "dropout": 0.3}
    enc = build_encoder(cfg, 8)
    assert enc.layers[0].attn.dropout == 0.0 and enc.layers[0].dropout.p == 0.3  # default: no attention dropout
    assert build_encoder({**cfg, "attention_dropout": 0.2}, 8).layers[0].attn.dropout == 0.2
    for name in ("truncated_transformer", "transformer"):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            model_cfg = compose(config_name="train", overrides=[f"model={name}"]).model
        assert model_cfg.attention_dropout == 0.0 and model_cfg.dropout == 0.1


def test_auto_engine_on_cuda_is_fused_without_attention_dropout() -> None:
    for grad in (False, True):
        assert resolve_engine("auto", CUDA, torch.bfloat16, needs_grad=grad) == "varlen"
        assert resolve_engine("auto", CUDA, torch.float32, needs_grad=grad) == "flex"
        assert resolve_engine("auto", CPU, torch.float32, needs_grad=grad) == "blockwise"
    assert resolve_engine("auto", CUDA, torch.bfloat16, dropout_active=True) == "blockwise"
    # The default models plan a fused engine for CUDA training under the default (bf16) precision.
    enc = SelfAttentionEncoder(8, d_model=16, num_layers=2, num_heads=2, ffn_dim=32, left=3, right=3)
    assert planned_engines(enc, CUDA, torch.bfloat16, training=True) == {"varlen": 2}
    assert planned_engines(enc, CPU, torch.float32, training=True) == {"blockwise": 2}


@pytest.mark.parametrize("engine, device, dtype, grad, message", [
    ("flex", CPU, torch.float32, True, "no backward pass on cpu"),
    ("varlen", CPU, torch.bfloat16, False, "needs CUDA"),
    ("varlen", CUDA, torch.float32, False, "needs fp16/bf16"),
])
def test_explicit_engine_that_cannot_run_is_an_error(engine, device, dtype, grad, message) -> None:
    with pytest.raises(ValueError, match=f"model.engine={engine} cannot run here: .*{message}"):
        resolve_engine(engine, device, dtype, needs_grad=grad)
    with pytest.raises(ValueError, match="attention_dropout=0"):
        resolve_engine("flex", CUDA, torch.float32, dropout_active=True)
    assert resolve_engine("flex", CPU, torch.float32) == "flex"  # CPU flex forward (inference) is allowed


def test_explicit_flex_is_not_replaced_when_training_on_cpu() -> None:
    attn = TruncatedSelfAttention(16, 2, 3, 3, engine="flex").train()
    with pytest.raises(ValueError, match="FlexAttention has no backward"):
        attn(torch.randn(2, 10, 16))


def test_engine_choice_is_logged_once(caplog) -> None:
    attention._LOGGED_ENGINES.clear()
    attn = TruncatedSelfAttention(16, 2, 3, 3).eval()
    with caplog.at_level(logging.INFO, logger="speechattn.models.attention"), torch.no_grad():
        for _ in range(3):
            attn(torch.randn(2, 10, 16))
    lines = [r.getMessage() for r in caplog.records if "attention engine" in r.getMessage()]
    assert lines == ["attention engine: blockwise (model.engine=auto, cpu, float32, inference)"]
    # The trainer logs the training engine up front (planned_engines(mark_logged=True)): layers stay quiet.
    caplog.clear()
    assert planned_engines(attn, CPU, torch.float32, training=True, mark_logged=True) == {"blockwise": 1}
    with caplog.at_level(logging.INFO, logger="speechattn.models.attention"):
        attn.train()(torch.randn(2, 10, 16))[0].sum().backward()
    assert not [r for r in caplog.records if "attention engine" in r.getMessage()]


# ------------------------------------------------------------------------------------------ shapes


def _batch(lengths: list[int], dim: int = 4) -> Batch:
    T = max(lengths)
    feats = torch.randn(len(lengths), T, dim)
    targets = torch.randint(0, 5, (len(lengths), T))
    for i, n in enumerate(lengths):
        feats[i, n:] = 0
        targets[i, n:] = IGNORE_INDEX
    return Batch([f"u{i}" for i in range(len(lengths))], feats, torch.tensor(lengths), targets)


def test_shape_policy_pads_to_one_shape_per_bucket() -> None:
    rng = torch.Generator().manual_seed(0)
    lengths = torch.randint(40, 400, (200,), generator=rng).tolist()
    sampler = LengthBucketBatchSampler(lengths, 1200, num_buckets=4, seed=3)
    policy = ShapePolicy.from_sampler(sampler)
    assert len(policy.edges) == 4 and policy.edges[-1] == max(lengths)
    shapes_per_epoch = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        shapes = set()
        for indices in sampler:
            padded = policy(_batch([lengths[i] for i in indices]))
            shapes.add(tuple(padded.feats.shape))
            assert padded.targets.shape == padded.feats.shape[:2]
        shapes_per_epoch.append(shapes)
    assert len(shapes_per_epoch[0]) == 4  # one (B, T) per bucket ...
    assert shapes_per_epoch[1] == shapes_per_epoch[2] == shapes_per_epoch[0]  # ... all seen in the first epoch
    assert sampler_buckets(sampler) == list(zip(policy.edges, policy.capacities))


def test_shape_padding_does_not_change_the_loss() -> None:
    from speechattn.models.encoders import build_encoder
    from speechattn.tasks.phone import FrameClassifier, frame_correct, frame_loss

    torch.manual_seed(0)
    model = FrameClassifier(build_encoder({"name": "truncated_transformer", "d_model": 16, "num_layers": 2,
                                           "num_heads": 2, "ffn_dim": 32, "left": 3, "right": 3,
                                           "conv_kernel": 3}, 4), 5).eval()
    batch = _batch([37, 20, 31])
    padded = ShapePolicy([50, 90], [4, 2])(batch)
    assert padded.feats.shape == (4, 50, 4) and padded.utts[-1] == "<pad>"
    with torch.no_grad():
        a, b = model(batch.feats, batch.lengths), model(padded.feats, padded.lengths)
    torch.testing.assert_close(frame_loss(a, batch.targets), frame_loss(b, padded.targets), atol=1e-5, rtol=0)
    assert frame_correct(a, batch.targets) == frame_correct(b, padded.targets)


def test_compiled_encoder_second_epoch_compiles_nothing(corpus: Path, tmp_path: Path) -> None:
    # aot_eager: the same dynamo graphs (and recompilation guards) as inductor, without C++ builds.
    exp = tmp_path / "compiled"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=phone_overrides(corpus, exp) + [
            "trainer.max_epochs=2", "trainer.num_buckets=2", "trainer.compile=true",
            "+trainer.compile_backend=aot_eager"])
    torch._dynamo.reset()
    run(cfg, exp)
    history = load_checkpoint(exp / "checkpoints" / "last.pt")["history"]
    assert history[0]["compilations"] > 0, history
    assert history[1]["compilations"] == 0, history
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in history)


@SLOW
def test_compiled_flex_forward_second_epoch_compiles_nothing() -> None:
    # FlexAttention compiled by inductor (its fused CPU kernel) on ShapePolicy-padded batches, forward only
    # (no flex backward on CPU): the first epoch compiles one graph per bucket, the second none.
    torch.manual_seed(0)
    lengths = torch.randint(60, 700, (40,)).tolist()
    sampler = LengthBucketBatchSampler(lengths, 2000, num_buckets=2, seed=1)
    policy = ShapePolicy.from_sampler(sampler)
    torch._dynamo.reset()
    counts = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        before = compilation_count()
        for indices in sampler:
            batch = policy(_batch([lengths[i] for i in indices], dim=16))
            B, T, _ = batch.feats.shape
            q = k = v = batch.feats.view(B, T, 2, 8).transpose(1, 2)
            pad = torch.arange(T)[None, :] >= batch.lengths[:, None]
            out = flex_banded_attention(q, k, v, 8, 8, pad, compile=True)
            ref, _ = attention.dense_masked_attention(q, k, v, 8, 8, pad)
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
        counts.append(compilation_count() - before)
    assert counts[0] >= 1 and counts[1] == 0, counts


# ------------------------------------------------------------------------------------------ gpu_check.sh


@pytest.mark.skipif(not (ROOT.parent / "shared" / "corpora" / "speechocean762").is_dir(),
                    reason="needs ../shared/corpora/speechocean762")
def test_gpu_check_dry_run_on_cpu(tmp_path: Path) -> None:
    # The same five steps as on a GPU, at tiny sizes on CPU (~2 min), so the script cannot rot.
    result = subprocess.run([str(ROOT / "bench" / "gpu_check.sh"), "--cpu", "--work-dir", str(tmp_path), "--nj", "1"],
                            capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = (tmp_path / "gpu_check.md").read_text()
    assert "0 failed" in table
    for step in "abcde":
        assert f"\n| {step} | " in table, step
    assert "| e | speechattn-infer 0.5 min on cpu fp32 vs cpu fp32 | " in table and " 0 labels differ" in table
    # A failing check makes the exit status non-zero: no model for step e without step c.
    failing = subprocess.run([str(ROOT / "bench" / "gpu_check.sh"), "--cpu", "--steps", "e", "--work-dir",
                              str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert failing.returncode == 1 and "| e | 1-hour inference | skipped: no model" in failing.stdout
