"""A tiny synthetic phone corpus for training/inference tests: tones whose frequency is the 'phone'.

Each utterance is a sequence of segments; segment k is a sine at the frequency of its phone, so a model
can learn the labels in a few steps. Written as a real Kaldi data dir (wav.scp, utt2spk, spk2utt,
frame_labels, feats.scp, cmvn_global.ark) with the package's own writers.
"""
from __future__ import annotations

from pathlib import Path

import kaldiio
import numpy as np
import soundfile as sf
import torch

from speechattn.data.alignments import Segment, frame_labels_from_segments, write_phone_table
from speechattn.data.kaldi_dir import utt2spk_to_spk2utt, write_table
from speechattn.features.cmvn import accumulate_stats, combine, write_stats_ark
from speechattn.features.extract import FeatureConfig, compute_features
from speechattn.data.framing import num_frames

PHONES = ["SIL", "AA", "B", "IY"]
FREQ = {"SIL": 0.0, "AA": 300.0, "B": 900.0, "IY": 2000.0}


def synth_utterance(rng: np.random.Generator, sr: int = 16000) -> tuple[np.ndarray, list[Segment]]:
    segments, pieces, t = [], [], 0.0
    for _ in range(int(rng.integers(3, 6))):
        phone = PHONES[int(rng.integers(0, len(PHONES)))]
        dur = float(rng.integers(8, 20)) / 100
        n = int(round(dur * sr))
        tt = np.arange(n) / sr
        pieces.append(0.3 * np.sin(2 * np.pi * FREQ[phone] * tt) + 0.01 * rng.standard_normal(n))
        segments.append(Segment(t, dur, phone))
        t += dur
    return np.concatenate(pieces).astype(np.float32), segments


def make_data_dir(root: Path, name: str, num_utts: int, seed: int, with_features: bool = True) -> Path:
    """Write ``root/name`` with ``num_utts`` synthetic utterances (2 speakers)."""
    rng = np.random.default_rng(seed)
    d = root / name
    wav_dir = root / "wav" / name
    wav_dir.mkdir(parents=True, exist_ok=True)
    wav_scp, utt2spk, labels = {}, {}, {}
    cfg = FeatureConfig()
    writer_items = {}
    for i in range(num_utts):
        spk = f"spk{i % 2}"
        utt = f"{spk}-{name}-{i:03d}"
        audio, segments = synth_utterance(rng)
        path = wav_dir / f"{utt}.flac"
        sf.write(path, audio, 16000)
        wav_scp[utt] = str(path)
        utt2spk[utt] = spk
        T = num_frames(len(audio))
        labels[utt] = list(frame_labels_from_segments(segments, T))
        if with_features:
            writer_items[utt] = compute_features(torch.from_numpy(audio), 16000, cfg).numpy()
    write_table(d / "wav.scp", wav_scp)
    write_table(d / "utt2spk", utt2spk)
    write_table(d / "spk2utt", utt2spk_to_spk2utt(utt2spk))
    write_table(d / "frame_labels", labels)
    if with_features:
        kaldiio.save_ark(str(d / "feats.ark"), {u: writer_items[u] for u in sorted(writer_items)},
                         scp=str(d / "feats.scp"))
        (d / "feats.yaml").write_text("".join(f"{k}: {v}\n" for k, v in cfg.to_dict().items()))
        stats = combine(accumulate_stats(m) for m in writer_items.values())
        write_stats_ark(d / "cmvn_global.ark", {"global": stats})
    return d


def make_phone_corpus(root: Path, train_utts: int = 24, dev_utts: int = 6) -> Path:
    """``root/{train,dev,lang}``; returns root."""
    make_data_dir(root, "train", train_utts, seed=1)
    make_data_dir(root, "dev", dev_utts, seed=2)
    write_phone_table(root / "lang" / "phones.txt", PHONES)
    return root


def phone_overrides(root: Path, exp_dir: Path, model: str = "truncated_transformer") -> list[str]:
    """Hydra overrides for a fast training run on the synthetic corpus."""
    small = {
        "truncated_transformer": ["model.d_model=32", "model.num_layers=2", "model.ffn_dim=64", "model.left=4",
                                  "model.right=4"],
        "transformer": ["model.d_model=32", "model.num_layers=2", "model.ffn_dim=64"],
        "mlp_context": ["model.hidden_dim=32", "model.num_layers=2", "model.context=2"],
        "blstm": ["model.hidden_dim=16", "model.num_layers=1"],
        "torchaudio_conformer": ["model.d_model=32", "model.num_layers=2", "model.num_heads=2", "model.ffn_dim=64",
                                 "model.conv_kernel=7"],
    }[model]
    return [f"model={model}", f"exp_dir={exp_dir}", f"data.train_dir={root}/train", f"data.valid_dir={root}/dev",
            f"data.test_dir={root}/dev", f"data.lang_dir={root}/lang", "trainer.max_frames_per_batch=2000",
            "trainer.threads=1", "optim.warmup_steps=2", *small]
