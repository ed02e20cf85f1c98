"""Speed perturbation of Kaldi data dirs (speechattn/data/speed_perturb.py, local/perturb_data_dir_speed.py)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch

from phone_data import make_data_dir
from speechattn.data.alignments import Segment, frame_labels_from_segments
from speechattn.data.audio import load_audio
from speechattn.data.kaldi_dir import KaldiDataDir, KaldiDataError, read_table, read_table_lists, validate_data_dir
from speechattn.data.speed_perturb import (
    apply_speed,
    perturb_data_dir,
    perturbed_num_samples,
    speed_prefix,
    stretch_frame_labels,
)
from speechattn.features.extract import FeatureConfig, compute_features
from speechattn.data.framing import num_frames

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


@pytest.mark.parametrize("factor", [0.9, 1.0, 1.1, 0.8, 1.25])
@pytest.mark.parametrize("n", [400, 16000, 48007])
def test_perturbed_num_samples_is_what_apply_speed_returns(factor: float, n: int) -> None:
    out = apply_speed(torch.randn(n), 16000, factor)
    assert out.dim() == 1 and out.numel() == perturbed_num_samples(n, factor)


def test_apply_speed_changes_pitch_and_tempo_together() -> None:
    sr, f0 = 16000, 500.0
    tone = torch.sin(2 * torch.pi * f0 * torch.arange(sr) / sr)
    fast = apply_speed(tone, sr, 1.25)
    assert fast.numel() == pytest.approx(sr / 1.25, abs=1)
    spectrum = torch.fft.rfft(fast).abs()
    peak_hz = int(spectrum.argmax()) * sr / fast.numel()
    assert peak_hz == pytest.approx(f0 * 1.25, rel=0.01)
    with pytest.raises(ValueError):
        apply_speed(tone, sr, 0.0)


def test_stretch_frame_labels() -> None:
    labels = ["a"] * 10 + ["b"] * 10
    assert stretch_frame_labels(labels, 1.0, 20) == labels
    slow = stretch_frame_labels(labels, 0.5, 40)  # twice as long: each label twice as many frames
    assert slow.count("a") == pytest.approx(20, abs=1) and slow[-1] == "b" and len(slow) == 40
    fast = stretch_frame_labels(labels, 2.0, 10)
    assert fast.count("a") == pytest.approx(5, abs=1) and fast[0] == "a" and fast[-1] == "b"
    with pytest.raises(ValueError):
        stretch_frame_labels([], 1.1, 3)


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_stretched_labels_match_labels_of_the_stretched_alignment(factor: float) -> None:
    rng = np.random.default_rng(0)
    bounds = np.cumsum(rng.integers(3, 25, size=40)) / 100.0  # phone ends in seconds, 10 ms grid
    starts = np.concatenate([[0.0], bounds[:-1]])
    segments = [Segment(float(s), float(e - s), f"p{i % 7}") for i, (s, e) in enumerate(zip(starts, bounds))]
    samples = int(bounds[-1] * 16000)
    original = list(frame_labels_from_segments(segments, num_frames(samples)))
    n_out = num_frames(perturbed_num_samples(samples, factor))
    exact = list(frame_labels_from_segments(
        [Segment(s.start / factor, s.duration / factor, s.label) for s in segments], n_out))
    stretched = stretch_frame_labels(original, factor, n_out)
    agree = np.mean([a == b for a, b in zip(exact, stretched)])
    assert agree > 0.9  # they differ only where a boundary is within half a frame of a scaled centre


def _compose_features(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from speechattn.bin._hydra import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name="compute_features", overrides=overrides)


def test_perturb_data_dir_then_features(tmp_path: Path) -> None:
    from speechattn.bin import compute_features as stage

    src = make_data_dir(tmp_path, "train", 4, seed=3, with_features=False)
    dst = tmp_path / "train_sp"
    assert perturb_data_dir(src, dst, [0.9, 1.0, 1.1]) == 12
    validate_data_dir(dst, require_labels="frame_labels")
    data, original = KaldiDataDir.load(dst), KaldiDataDir.load(src)
    labels, original_labels = read_table_lists(dst / "frame_labels"), read_table_lists(src / "frame_labels")
    for utt, spk in original.utt2spk.items():
        assert labels[utt] == original_labels[utt]  # speed 1 keeps IDs and labels
        for factor in (0.9, 1.1):
            new = speed_prefix(factor) + utt
            assert data.utt2speed[new] == factor and data.wav_scp[new] == original.wav_scp[utt]
            assert data.utt2spk[new] == speed_prefix(factor) + spk  # a new speaker, as in Kaldi
    assert read_table(dst / "utt2num_frames") == {u: str(len(v)) for u, v in labels.items()}

    # The feature stage reads utt2speed; its utt2num_frames check proves the label counts match.
    stage.run(_compose_features([f"data_dir={dst}", "nj=2", "workers=1", "progress=false"]))
    feats = dict(kaldiio.load_scp_sequential(str(dst / "feats.scp")))
    assert sorted(feats) == sorted(labels) and all(len(labels[u]) == m.shape[0] for u, m in feats.items())
    utt = next(iter(original.wav_scp))
    expected = compute_features(apply_speed(load_audio(original.wav_scp[utt]), 16000, 1.1), 16000, FeatureConfig())
    np.testing.assert_array_equal(feats["sp1.1-" + utt], expected.numpy())

    # Complete output: nothing is rewritten; other factors: redone.
    mtime = (dst / "wav.scp").stat().st_mtime_ns
    assert perturb_data_dir(src, dst, [0.9, 1.0, 1.1]) == 12
    assert (dst / "wav.scp").stat().st_mtime_ns == mtime
    assert perturb_data_dir(src, dst, [0.9, 1.0]) == 8
    assert not (dst / "feats.scp").exists()  # stale features of the old copy are removed
    (dst / "cmvn_spk.scp").write_text("stale\n")
    perturb_data_dir(src, dst, [1.0, 1.1])
    assert not (dst / "cmvn_spk.scp").exists()  # so are speaker CMVN stats


def test_bad_input_is_refused(tmp_path: Path) -> None:
    src = make_data_dir(tmp_path, "train", 2, seed=4, with_features=False)
    with pytest.raises(ValueError, match="distinct and > 0"):
        perturb_data_dir(src, tmp_path / "x", [0.9, 0.9])
    sp = tmp_path / "sp"
    perturb_data_dir(src, sp, [1.1])
    with pytest.raises(KaldiDataError, match="already speed-perturbed"):
        perturb_data_dir(sp, tmp_path / "sp2", [0.9])
    lines = (sp / "utt2speed").read_text().splitlines()
    lines[1] = lines[1].split()[0] + " fast"
    (sp / "utt2speed").write_text("\n".join(lines) + "\n")
    with pytest.raises(KaldiDataError, match=r"utt2speed:2: expected a speed factor > 0"):
        KaldiDataDir.load(sp)
    (src / "segments").write_text("".join(f"{u} {u} 0.0 0.1\n" for u in read_table(src / "wav.scp")))
    with pytest.raises(KaldiDataError, match="segments:1: speed perturbation of segmented data dirs"):
        perturb_data_dir(src, tmp_path / "y", [0.9])


def test_command_line(tmp_path: Path) -> None:
    src = make_data_dir(tmp_path, "train", 2, seed=5, with_features=False)
    script = str(ROOT / "local" / "perturb_data_dir_speed.py")
    ok = subprocess.run([sys.executable, script, str(src), str(tmp_path / "sp")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert len(read_table(tmp_path / "sp" / "wav.scp")) == 6
    bad = subprocess.run([sys.executable, script, "--factors", "0.9,fast", str(src), str(tmp_path / "sp3")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--factors" in bad.stderr
    missing = subprocess.run([sys.executable, script, str(tmp_path / "nope"), str(tmp_path / "sp4")],
                             capture_output=True, text=True)
    assert missing.returncode == 1 and "data directory not found" in missing.stderr


def test_speed_prefix() -> None:
    assert (speed_prefix(0.9), speed_prefix(1.0), speed_prefix(1.1)) == ("sp0.9-", "", "sp1.1-")
