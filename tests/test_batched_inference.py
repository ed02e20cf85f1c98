"""Batched inference (``speechattn-infer batch_frames=N``) gives the outputs of one-at-a-time inference.

Untrained models (random weights give near-ties between classes more often than trained ones, so label
equality is a strict check) are saved as experiment directories; every test compares the batched path
against the one-at-a-time path (``batch_frames=0``, today's behaviour) on utterances of different lengths
in one batch, including lengths that are not multiples of the frame stack and 1-3 frame utterances.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from speechattn.data.framing import num_frames
from speechattn.features.extract import FeatureConfig
from speechattn.inference import batching
from speechattn.inference.batching import plan_batches
from speechattn.inference.driver import infer_dir
from speechattn.tasks import get_task
from speechattn.tasks.base import Predictor
from speechattn.utils.checkpoint import save_checkpoint

SR = 16000
NONE_CMVN = {"mode": "none", "norm_means": False, "norm_vars": False, "var_floor": 1e-10, "stats": None}
TRUNCATED = {"name": "truncated_transformer", "frame_stack": 3, "d_model": 32, "num_layers": 2, "num_heads": 2,
             "ffn_dim": 64, "left": 12, "right": 9, "dropout": 0.1, "pos_conv_kernel": 5, "conv_kernel": 3,
             "engine": "auto"}
SID = {"pooling": "attentive_stats", "pooling_kwargs": {"hidden_dim": 16}, "embed_dim": 8, "head": "aam",
       "margin": 0.2, "scale": 30.0, "easy_margin": False}
# Frames per utterance: lengths 1-4 and around multiples of the frame stacks 3 and 4 (padding of the last
# stacked position), mixed so that one batch holds very different lengths.
FRAMES = [1, 2, 3, 4, 37, 5, 36, 120, 38, 7, 61, 11, 90, 12, 13]


def _make_exp(root: Path, task: str, model: dict[str, Any], seed: int = 0) -> Path:
    """An experiment directory holding an untrained model (what ``Predictor.from_exp_dir`` reads)."""
    torch.manual_seed(seed)
    exp = root / f"exp_{task}_{model['name']}_{model.get('frame_stack', 1)}_{seed}"
    exp.mkdir(parents=True)
    config = {"task": task, "model": model, "cmvn": NONE_CMVN, "sid": SID}
    labels = [f"c{i}" for i in range(7)]
    net = get_task(task).build_model(config, 80, len(labels)).eval()
    save_checkpoint(exp / "model.pt", {"config": config, "input_dim": 80, "model": net.state_dict(),
                                       get_task(task).checkpoint_labels_key: labels})
    OmegaConf.save(OmegaConf.create(dataclasses.asdict(FeatureConfig())), exp / "feats.yaml")
    return exp


def _samples(frames: int) -> int:
    """Samples of an utterance with exactly ``frames`` 25/10 ms frames."""
    n = 400 + 160 * (frames - 1)
    assert num_frames(n) == frames
    return n


def _wav_dir(root: Path, frames: list[int], *, extra: dict[str, str] | None = None, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    data = root / "data"
    (root / "wav").mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    entries = dict(extra or {})
    for i, n in enumerate(frames):
        t = np.arange(_samples(n)) / SR
        wav = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * t) + 0.05 * rng.standard_normal(t.size)
        path = root / "wav" / f"u{i:02d}.flac"
        sf.write(path, wav.astype(np.float32), SR)
        entries[f"u{i:02d}"] = str(path)
    (data / "wav.scp").write_text("".join(f"{k} {v}\n" for k, v in sorted(entries.items())))
    return data


def _alone_and_batched(predictor: Predictor, feats: list[torch.Tensor]) -> tuple[list[Any], list[Any]]:
    return [predictor.predict_batch([f])[0] for f in feats], predictor.predict_batch(feats)


# ------------------------------------------------------------------------------------------ batch planning

def test_plan_batches_covers_every_utterance_once_within_the_budget() -> None:
    rng = np.random.default_rng(0)
    lengths = [int(n) for n in rng.integers(1, 900, size=200)] + [5000]
    batches = plan_batches(lengths, 2000)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 2000
    assert [5000 in [lengths[i] for i in b] for b in batches].count(True) == 1 and batches[0] == [200]
    assert len(batches) < len(lengths) / 3  # similar lengths share batches
    for budget in (0, 1):  # one at a time, in order: today's behaviour
        assert plan_batches(lengths, budget) == [[i] for i in range(len(lengths))]


# ---------------------------------------------------------------------------------------- predictor level

@pytest.mark.parametrize("model", [
    TRUNCATED,
    {**TRUNCATED, "frame_stack": 4},
    {**TRUNCATED, "frame_stack": 1},
    {"name": "mlp_context", "frame_stack": 3, "context": 2, "hidden_dim": 32, "num_layers": 2, "dropout": 0.2},
    {"name": "blstm", "frame_stack": 3, "hidden_dim": 16, "num_layers": 2, "dropout": 0.2},
    {"name": "transformer", "frame_stack": 3, "d_model": 32, "num_layers": 2, "num_heads": 2, "ffn_dim": 64,
     "dropout": 0.1, "pos_conv_kernel": 5, "engine": "auto"},
], ids=["truncated_k3", "truncated_k4", "truncated_k1", "mlp_context_k3", "blstm_k3", "full_attention_k3"])
def test_phone_batch_labels_equal_one_at_a_time(tmp_path: Path, model: dict[str, Any]) -> None:
    predictor = get_task("phone").load_predictor(_make_exp(tmp_path, "phone", model))
    torch.manual_seed(1)
    feats = [torch.randn(n, 80) for n in FRAMES]
    alone, batched = _alone_and_batched(predictor, feats)
    assert [len(labels) for labels in batched] == FRAMES
    assert batched == alone
    # Not a vacuous comparison: the untrained model does not give every frame the same label.
    assert len({label for labels in alone for label in labels}) > 1


def test_phone_batch_through_the_time_chunked_encoder_path(tmp_path: Path) -> None:
    """A padded batch longer than the encoder's inference chunk runs layer by layer in time chunks; labels
    still equal each utterance alone (which, shorter, runs unchunked)."""
    predictor = get_task("phone").load_predictor(_make_exp(tmp_path, "phone", TRUNCATED))
    predictor.model.encoder.inference_chunk = 16  # positions: the 120-frame utterance (40 positions) is chunked
    torch.manual_seed(2)
    feats = [torch.randn(n, 80) for n in FRAMES]
    alone, batched = _alone_and_batched(predictor, feats)
    assert batched == alone


@pytest.mark.parametrize("model,pooling", [
    (TRUNCATED, "attentive_stats"), ({**TRUNCATED, "frame_stack": 4}, "mean"),
    ({**TRUNCATED, "frame_stack": 1}, "self_attention"),
])
def test_sid_batch_embeddings_equal_one_at_a_time(tmp_path: Path, model: dict[str, Any], pooling: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    kwargs = {"attentive_stats": {"hidden_dim": 16}, "mean": {}, "self_attention": {"num_heads": 2}}[pooling]
    monkeypatch.setitem(SID, "pooling", pooling)
    monkeypatch.setitem(SID, "pooling_kwargs", kwargs)
    predictor = get_task("sid").load_predictor(_make_exp(tmp_path, "sid", model))
    torch.manual_seed(3)
    feats = [torch.randn(n, 80) for n in FRAMES]
    alone, batched = _alone_and_batched(predictor, feats)
    assert [p.num_frames for p in batched] == FRAMES
    torch.testing.assert_close(torch.stack([p.embedding for p in batched]),
                               torch.stack([p.embedding for p in alone]), rtol=1e-5, atol=1e-6)
    assert [p.speaker for p in batched] == [p.speaker for p in alone]
    np.testing.assert_allclose([p.score for p in batched], [p.score for p in alone], rtol=0, atol=1e-6)
    assert len({p.speaker for p in alone}) > 1


# ------------------------------------------------------------------------------------------- driver level

def _outputs(out: Path, names: tuple[str, ...]) -> dict[str, str]:
    return {name: (out / name).read_text() for name in names}


@pytest.mark.parametrize("batch_frames", [1, 100, 400, 100_000])
def test_phone_driver_outputs_identical_to_one_at_a_time(tmp_path: Path, batch_frames: int,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """frames.txt, phones.ctm, failed.txt and inputs.json are byte-identical: same labels, same order, same
    skipped utterances; a long file (> chunk_frames) among them is labelled in chunks as before."""
    exp = _make_exp(tmp_path, "phone", TRUNCATED)
    (tmp_path / "bad").mkdir()
    sf.write(tmp_path / "bad" / "short.wav", np.zeros(300, dtype=np.float32), SR)  # < one window
    (tmp_path / "bad" / "empty.wav").write_bytes(b"")
    rng = np.random.default_rng(4)
    sf.write(tmp_path / "bad" / "long.flac", (0.1 * rng.standard_normal(_samples(700))).astype(np.float32), SR)
    extra = {"u03a_empty": str(tmp_path / "bad" / "empty.wav"), "u07a_short": str(tmp_path / "bad" / "short.wav"),
             "u05a_long": str(tmp_path / "bad" / "long.flac")}
    data = _wav_dir(tmp_path, FRAMES, extra=extra)
    monkeypatch.setattr(batching, "WINDOW_BATCHES", 2)  # several windows: order kept across them
    monkeypatch.setattr("speechattn.inference.driver.WINDOW_BATCHES", 2)
    files = ("frames.txt", "phones.ctm", "failed.txt", "inputs.json")
    infer_dir(exp, data, tmp_path / "one", chunk_frames=300)
    infer_dir(exp, data, tmp_path / "batched", chunk_frames=300, batch_frames=batch_frames)
    one, batched = _outputs(tmp_path / "one", files), _outputs(tmp_path / "batched", files)
    assert batched == one
    utts = [line.split()[0] for line in one["frames.txt"].splitlines()]
    assert utts == sorted((set(extra) | {f"u{i:02d}" for i in range(len(FRAMES))}) - {"u03a_empty", "u07a_short"})
    assert [line.split()[0] for line in one["failed.txt"].splitlines()] == ["u03a_empty", "u07a_short"]
    lengths = {line.split()[0]: len(line.split()) - 1 for line in one["frames.txt"].splitlines()}
    assert lengths["u05a_long"] == 700 and lengths["u00"] == 1


def test_phone_driver_long_file_still_chunked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With batching on, a file longer than ``chunk_frames`` never enters a batch: it goes through the
    chunked path and gives the labels of whole-utterance inference, also when ``chunk_frames`` (200) is not
    a multiple of the frame stack (3; chunks starting off the stacking grid used to change the labels)."""
    exp = _make_exp(tmp_path, "phone", TRUNCATED)
    rng = np.random.default_rng(5)
    long_path = tmp_path / "long.flac"
    sf.write(long_path, (0.1 * rng.standard_normal(_samples(650))).astype(np.float32), SR)
    data = _wav_dir(tmp_path, [40, 50], extra={"long": str(long_path)})
    from speechattn.tasks.phone_predictor import PhoneLabeler
    batch_sizes: list[int] = []
    chunked: list[str] = []
    real_batch, real_iter = PhoneLabeler.predict_batch, PhoneLabeler.iter_label_file
    monkeypatch.setattr(PhoneLabeler, "predict_batch",
                        lambda self, feats: batch_sizes.append(len(feats)) or real_batch(self, feats))
    monkeypatch.setattr(PhoneLabeler, "iter_label_file",
                        lambda self, path, chunk: chunked.append(path) or real_iter(self, path, chunk))
    infer_dir(exp, data, tmp_path / "out", chunk_frames=200, batch_frames=10_000)
    assert chunked == [str(long_path)] and batch_sizes == [2]
    predictor = get_task("phone").load_predictor(exp)
    whole = predictor.label_waveform(torch.from_numpy(sf.read(long_path, dtype="float32")[0]))
    frames = {line.split()[0]: line.split()[1:] for line in (tmp_path / "out" / "frames.txt").read_text().splitlines()}
    assert frames["long"] == whole


def test_phone_driver_with_segments(tmp_path: Path) -> None:
    """Segments (cut from their recordings) are batched too, with the same outputs."""
    exp = _make_exp(tmp_path, "phone", {**TRUNCATED, "frame_stack": 4})
    data = _wav_dir(tmp_path, [300, 200])
    segments = ["u00-a u00 0.00 0.50", "u00-b u00 0.50 1.20", "u00-c u00 1.20 1.23", "u00-d u00 2.00 2.0020",
                "u01-a u01 0.10 1.50", "u01-b u01 1.50 1.95"]
    (data / "segments").write_text("".join(s + "\n" for s in segments))
    files = ("frames.txt", "phones.ctm", "failed.txt", "inputs.json")
    infer_dir(exp, data, tmp_path / "one")
    infer_dir(exp, data, tmp_path / "batched", batch_frames=300)
    one = _outputs(tmp_path / "one", files)
    assert _outputs(tmp_path / "batched", files) == one
    assert one["failed.txt"].startswith("u00-d ")  # 2 ms: shorter than one window
    assert [line.split()[0] for line in one["frames.txt"].splitlines()] == ["u00-a", "u00-b", "u00-c", "u01-a", "u01-b"]


def test_sid_driver_outputs_match_one_at_a_time(tmp_path: Path) -> None:
    exp = _make_exp(tmp_path, "sid", {**TRUNCATED, "frame_stack": 4})
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "empty.wav").write_bytes(b"")
    data = _wav_dir(tmp_path, FRAMES, extra={"u02a_empty": str(tmp_path / "bad" / "empty.wav")})
    infer_dir(exp, data, tmp_path / "one")
    infer_dir(exp, data, tmp_path / "batched", batch_frames=150)
    one, batched = tmp_path / "one", tmp_path / "batched"
    for name in ("failed.txt", "inputs.json"):
        assert (batched / name).read_text() == (one / name).read_text()
    assert json.loads((batched / "inputs.json").read_text())["checkpoint"]
    rows_one = [line.split() for line in (one / "predictions.txt").read_text().splitlines()]
    rows_batched = [line.split() for line in (batched / "predictions.txt").read_text().splitlines()]
    assert [r[:2] for r in rows_batched] == [r[:2] for r in rows_one]  # same order, same speakers
    np.testing.assert_allclose([float(r[2]) for r in rows_batched], [float(r[2]) for r in rows_one], atol=1e-4)
    emb_one, emb_batched = kaldiio.load_scp(str(one / "embeddings.scp")), kaldiio.load_scp(str(batched / "embeddings.scp"))
    assert list(emb_batched) == list(emb_one) == [r[0] for r in rows_one]
    for utt in emb_one:
        np.testing.assert_allclose(emb_batched[utt], emb_one[utt], rtol=1e-5, atol=1e-6)
