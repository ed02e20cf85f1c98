"""Kaldi-compatible features: parity with torchaudio and kaldi-native-fbank, deltas, chunk invariance, and
the compute_features stage end to end on a tiny data dir."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.compliance.kaldi as kaldi
from omegaconf import OmegaConf

from speechattn.features.extract import (FeatureConfig, add_deltas, compute_features, compute_features_chunk,
                                         feature_context_frames, feature_dim, plan_feature_chunk,
                                         torchaudio_reference_features)
from speechattn.data.framing import frame_span_samples, num_frames

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_WAV = SHARED / "fixtures" / "cmu_arctic_slt" / "arctic_a0009.wav"
REPO = Path(__file__).resolve().parents[1]

FBANK = FeatureConfig(kind="fbank")
MFCC = FeatureConfig(kind="mfcc", num_mel_bins=23)


def synthetic_speechlike(num_samples: int = 24000, seed: int = 0) -> torch.Tensor:
    """A chirp with harmonics, amplitude modulation and a little noise, in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(num_samples, dtype=torch.float64) / 16000
    phase = 2 * torch.pi * (120 * t + 400 * t ** 2)
    signal = sum(torch.sin(k * phase) / k for k in range(1, 6)) * (0.6 + 0.4 * torch.sin(2 * torch.pi * 3 * t))
    signal = 0.2 * signal + 0.01 * torch.randn(num_samples, generator=gen, dtype=torch.float64)
    return signal.float()


def real_waveform() -> torch.Tensor:
    if not REAL_WAV.is_file():
        pytest.skip(f"../shared not found: {REAL_WAV}")
    data, rate = sf.read(REAL_WAV, dtype="float32")
    assert rate == 16000
    return torch.from_numpy(data)


WAVEFORMS = {"synthetic": lambda: synthetic_speechlike(), "real": real_waveform}


# ------------------------------------------------------------------------------------------------ shapes

def test_shapes_and_feature_dim() -> None:
    waveform = synthetic_speechlike(16000)
    fbank, mfcc = compute_features(waveform, 16000, FBANK), compute_features(waveform, 16000, MFCC)
    assert fbank.shape == (98, 80) and feature_dim(FBANK) == 80 and fbank.dtype == torch.float32
    assert mfcc.shape == (98, 39) and feature_dim(MFCC) == 39
    no_deltas = FeatureConfig(kind="mfcc", num_mel_bins=23, deltas=False)
    assert compute_features(waveform, 16000, no_deltas).shape == (98, 13) and feature_dim(no_deltas) == 13
    assert feature_context_frames(MFCC) == 4 and feature_context_frames(FBANK) == 0


@pytest.mark.parametrize("num_samples", [0, 399, 400, 559, 560, 16001])
def test_frame_count_follows_framing(num_samples: int) -> None:
    for cfg in (FBANK, MFCC):
        feats = compute_features(synthetic_speechlike(max(num_samples, 1))[:num_samples], 16000, cfg)
        assert feats.shape == (num_frames(num_samples), feature_dim(cfg))


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="sample rate"):
        compute_features(torch.zeros(8000), 8000, FBANK)
    with pytest.raises(ValueError, match="NaN"):
        compute_features(torch.tensor([float("nan")] * 800), 16000, FBANK)
    with pytest.raises(ValueError, match="unknown feature option"):
        FeatureConfig.from_config({"kind": "fbank", "num_mel_bin": 40})
    with pytest.raises(ValueError, match="kind"):
        FeatureConfig(kind="plp")


# ------------------------------------------------------------------------------------------------ parity

def assert_same_features(ours: np.ndarray, reference: np.ndarray, what: str) -> tuple[float, float]:
    """Equal up to float32 rounding. Log-mel values of bins ~25 nepers below the frame's loudest bin sit at
    the FFT's rounding floor, where any two float32 implementations (Kaldi's included) differ by ~1e-2;
    so the bound is on the mean and the 99.9th percentile, with a loose cap on the maximum."""
    assert ours.shape == reference.shape, what
    diff = np.abs(ours - reference)
    assert diff.mean() < 1e-4 and np.quantile(diff, 0.999) < 2e-3 and diff.max() < 5e-2, \
        f"{what}: mean {diff.mean():.2e}, 99.9% {np.quantile(diff, 0.999):.2e}, max {diff.max():.2e}"
    return float(diff.max()), float(diff.mean())


@pytest.mark.parametrize("source", sorted(WAVEFORMS))
def test_parity_with_direct_torchaudio_calls(source: str) -> None:
    """Our cached, faster pipeline against plain ``torchaudio.compliance.kaldi`` calls (Kaldi defaults)."""
    waveform = WAVEFORMS[source]()
    scaled = waveform.unsqueeze(0) * 32768
    expected_fbank = kaldi.fbank(scaled, num_mel_bins=80, dither=0.0, energy_floor=0.0)
    assert_same_features(compute_features(waveform, 16000, FBANK).numpy(), expected_fbank.numpy(), "fbank")
    expected_mfcc = kaldi.mfcc(scaled, num_mel_bins=23, num_ceps=13, dither=0.0, energy_floor=0.0)
    assert_same_features(compute_features(waveform, 16000, MFCC)[:, :13].numpy(), expected_mfcc.numpy(), "mfcc")


@pytest.mark.parametrize("options", [
    dict(kind="fbank", num_mel_bins=40, window_type="hamming"),
    dict(kind="fbank", window_type="hanning", preemphasis=0.0, remove_dc_offset=False),
    dict(kind="fbank", window_type="rectangular", low_freq=100.0, high_freq=-400.0),
    dict(kind="fbank", window_type="blackman", frame_length_ms=20.0, frame_shift_ms=12.5),
    dict(kind="fbank", num_mel_bins=40, sample_rate=8000),
    dict(kind="mfcc", num_mel_bins=40, num_ceps=20, cepstral_lifter=0.0),
    dict(kind="mfcc", num_mel_bins=23, use_energy=True),
    dict(kind="mfcc", num_mel_bins=23, use_energy=True, energy_floor=3e5),  # floor active on quiet frames
], ids=lambda options: ",".join(f"{k}={v}" for k, v in options.items()))
def test_options_match_torchaudio_reference(options: dict) -> None:
    cfg = FeatureConfig(**options, deltas=False)
    waveform = synthetic_speechlike(12000)
    waveform[4000:6000] *= 1e-3  # quiet stretch
    if cfg.sample_rate != 16000:
        waveform = waveform[::2].contiguous()
    ours = compute_features(waveform, cfg.sample_rate, cfg)
    assert ours.shape == (num_frames(waveform.numel(), cfg.sample_rate, cfg.frame_length_ms, cfg.frame_shift_ms),
                          feature_dim(cfg))
    reference = torchaudio_reference_features(waveform, cfg.sample_rate, cfg)
    assert_same_features(ours.numpy(), reference.numpy(), str(options))


def test_dither_is_random_and_zero_dither_deterministic() -> None:
    waveform = synthetic_speechlike(8000)
    assert torch.equal(compute_features(waveform, 16000, FBANK), compute_features(waveform, 16000, FBANK))
    dithered = FeatureConfig(kind="fbank", dither=1.0)
    a, b = compute_features(waveform, 16000, dithered), compute_features(waveform, 16000, dithered)
    assert a.shape == b.shape and not torch.equal(a, b)
    assert (a - compute_features(waveform, 16000, FBANK)).abs().mean() < 0.05  # a small perturbation


def kaldi_native(waveform: torch.Tensor, cfg: FeatureConfig) -> np.ndarray:
    knf = pytest.importorskip("kaldi_native_fbank")
    opts = knf.FbankOptions() if cfg.kind == "fbank" else knf.MfccOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = True
    opts.frame_opts.samp_freq = cfg.sample_rate
    opts.mel_opts.num_bins = cfg.num_mel_bins
    if cfg.kind == "mfcc":
        opts.num_ceps = cfg.num_ceps
        opts.use_energy = False
    extractor = knf.OnlineFbank(opts) if cfg.kind == "fbank" else knf.OnlineMfcc(opts)
    extractor.accept_waveform(cfg.sample_rate, (waveform * 32768).tolist())
    extractor.input_finished()
    return np.stack([extractor.get_frame(i) for i in range(extractor.num_frames_ready)])


@pytest.mark.parametrize("source", sorted(WAVEFORMS))
@pytest.mark.parametrize("cfg", [FBANK, MFCC], ids=["fbank", "mfcc"])
def test_parity_with_kaldi_native_fbank(source: str, cfg: FeatureConfig, record_property) -> None:
    """kaldi-native-fbank re-implements Kaldi's C++ feature code: our features must match it to float
    rounding."""
    waveform = WAVEFORMS[source]()
    reference = kaldi_native(waveform, cfg)
    ours = compute_features(waveform, 16000, cfg)[:, :reference.shape[1]].numpy()
    max_diff, mean_diff = assert_same_features(ours, reference, f"{source} {cfg.kind} vs kaldi_native_fbank")
    record_property("max_abs_diff", max_diff)
    record_property("mean_abs_diff", mean_diff)
    print(f"{source} {cfg.kind}: max |ours - kaldi_native_fbank| = {max_diff:.2e}, mean = {mean_diff:.2e}")


# ------------------------------------------------------------------------------------------------ deltas

def kaldi_add_deltas_by_hand(feats: np.ndarray, window: int = 2, order: int = 2) -> np.ndarray:
    """Straight transcription of Kaldi's DeltaFeatures (src/feat/feature-functions.cc), in float64."""
    scales = [np.array([1.0])]
    for _ in range(order):
        prev = scales[-1]
        prev_offset = (len(prev) - 1) // 2
        cur = np.zeros(len(prev) + 2 * window)
        normalizer = 0.0
        for j in range(-window, window + 1):
            normalizer += j * j
            for k in range(-prev_offset, prev_offset + 1):
                cur[j + k + prev_offset + window] += j * prev[k + prev_offset]
        scales.append(cur / normalizer)
    num_frames_, dim = feats.shape
    out = np.zeros((num_frames_, dim * (order + 1)))
    for t in range(num_frames_):
        for i, scale in enumerate(scales):
            offset = (len(scale) - 1) // 2
            for j, s in enumerate(scale):
                source = min(max(t + j - offset, 0), num_frames_ - 1)  # Kaldi clamps at the edges
                out[t, i * dim:(i + 1) * dim] += s * feats[source]
    return out


@pytest.mark.parametrize("num_frames_", [1, 2, 5, 9, 23])
def test_deltas_match_kaldi_add_deltas(num_frames_: int) -> None:
    feats = np.random.default_rng(num_frames_).normal(size=(num_frames_, 4)).astype(np.float32)
    ours = add_deltas(torch.from_numpy(feats)).numpy()
    np.testing.assert_allclose(ours, kaldi_add_deltas_by_hand(feats.astype(np.float64)), atol=1e-5)


def test_delta_filters_by_hand() -> None:
    """On a ramp x_t = t, Δ = 1 and ΔΔ = 0 away from the edges (window 2: 5 and 9 taps)."""
    ramp = torch.arange(20, dtype=torch.float32).unsqueeze(1)
    out = add_deltas(ramp)
    torch.testing.assert_close(out[2:-2, 1], torch.ones(16))
    torch.testing.assert_close(out[4:-4, 2], torch.zeros(12))
    # First frame: clamped neighbours [0, 0, 0, 1, 2] -> (1*1 + 2*2) / 10 = 0.5.
    assert out[0, 1].item() == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------------ chunks

@pytest.mark.parametrize("source", sorted(WAVEFORMS))
@pytest.mark.parametrize("cfg", [FBANK, MFCC], ids=["fbank", "mfcc"])
def test_chunked_features_equal_whole_utterance(source: str, cfg: FeatureConfig) -> None:
    """Long-form inference computes features chunk by chunk: the rows must not depend on the chunking
    (bit-exact on x86 MKL thanks to the frontend's row padding; the contract is 1e-5)."""
    waveform = WAVEFORMS[source]()
    full = compute_features(waveform, 16000, cfg)
    total = full.shape[0]
    ranges = [(0, 1), (0, 10), (3, 50), (total // 2, total // 2 + 1), (total - 7, total), (0, total),
              (40, 140)]
    for first, last in ranges:
        plan = plan_feature_chunk(first, last, total, cfg)
        chunk = compute_features_chunk(waveform[plan.sample_start:plan.sample_end], 16000, cfg, plan)
        torch.testing.assert_close(chunk, full[first:last], rtol=0, atol=1e-5,
                                   msg=lambda m: f"frames [{first}, {last}): {m}")
        if feature_context_frames(cfg) == 0:  # static features need nothing beyond frame_span_samples
            start, end = frame_span_samples(first, last)
            torch.testing.assert_close(compute_features(waveform[start:end], 16000, cfg), full[first:last],
                                       rtol=0, atol=1e-5)
    # Without the delta context, the rows near a chunk boundary would differ: the context is needed.
    if feature_context_frames(cfg):
        start, end = frame_span_samples(40, 140)
        naive = compute_features(waveform[start:end], 16000, cfg)
        assert not torch.allclose(naive, full[40:140], atol=1e-3)


# ------------------------------------------------------------------------------------------- stage e2e

def write_tiny_data_dir(root: Path) -> tuple[Path, dict[str, Path]]:
    """4 synthetic utterances of 2 speakers + one corrupt file, with utt2num_frames."""
    from speechattn.data.kaldi_dir import utt2spk_to_spk2utt, write_table

    data_dir, audio_dir = root / "data" / "train", root / "audio"
    audio_dir.mkdir(parents=True)
    lengths = {"spkA-u1": 8000, "spkA-u2": 12345, "spkB-u1": 4000, "spkB-u2": 20000}
    paths = {}
    for i, (utt, n) in enumerate(lengths.items()):
        paths[utt] = audio_dir / f"{utt}.flac"
        sf.write(paths[utt], synthetic_speechlike(n, seed=i).numpy(), 16000, subtype="PCM_16")
    paths["spkB-u3"] = audio_dir / "spkB-u3.flac"
    paths["spkB-u3"].write_bytes(b"this is not audio")
    write_table(data_dir / "wav.scp", {utt: str(p) for utt, p in paths.items()})
    utt2spk = {utt: utt.split("-")[0] for utt in paths}
    write_table(data_dir / "utt2spk", utt2spk)
    write_table(data_dir / "spk2utt", utt2spk_to_spk2utt(utt2spk))
    write_table(data_dir / "utt2num_frames", {utt: str(num_frames(n)) for utt, n in lengths.items()})
    return data_dir, paths


def compose(config_name: str, overrides: list[str]):
    from hydra import compose as hydra_compose, initialize_config_dir

    from speechattn.bin._hydra import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return hydra_compose(config_name=config_name, overrides=overrides)


def test_compute_features_stage_end_to_end(tmp_path: Path) -> None:
    import kaldiio

    from speechattn.bin import compute_features as stage
    from speechattn.data.audio import load_audio
    from speechattn.data.kaldi_dir import read_table

    data_dir, paths = write_tiny_data_dir(tmp_path)
    # The Hydra app as run.sh runs it: 2 jobs in 2 worker processes.
    proc = subprocess.run([sys.executable, "-m", "speechattn.bin.compute_features", f"data_dir={data_dir}", "nj=2",
                           "progress=false"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert proc.returncode == 0, proc.stderr
    feats_scp = read_table(data_dir / "feats.scp")  # also checks C-locale sorting
    assert list(feats_scp) == ["spkA-u1", "spkA-u2", "spkB-u1", "spkB-u2"]
    failed = read_table(data_dir / "feats_failed.txt")
    assert list(failed) == ["spkB-u3"] and "wav.scp:" in failed["spkB-u3"]
    assert "1 utterance(s) skipped" in proc.stderr + proc.stdout
    assert (data_dir / "feat_dim").read_text().strip() == "80"
    stored_cfg = FeatureConfig.from_config(compose("compute_features", ["data_dir=x"]).features)
    assert FeatureConfig.from_config(OmegaConf.load(data_dir / "feats.yaml")) == stored_cfg
    for utt, matrix in kaldiio.load_scp_sequential(str(data_dir / "feats.scp")):
        expected = compute_features(load_audio(str(paths[utt])), 16000, stored_cfg).numpy()
        np.testing.assert_array_equal(matrix, expected)
    assert sorted(p.name for p in (data_dir / "feats").glob("raw_fbank.*.scp")) == ["raw_fbank.1.scp",
                                                                                   "raw_fbank.2.scp"]
    assert not list((data_dir / "feats").glob(".*.tmp"))

    # Re-run: everything is up to date, nothing is rewritten.
    mtime = (data_dir / "feats.scp").stat().st_mtime_ns
    assert stage.run(compose("compute_features", [f"data_dir={data_dir}", "nj=2", "progress=false"])) == \
        {"skipped": True}
    assert (data_dir / "feats.scp").stat().st_mtime_ns == mtime

    # A job at a time (cluster mode): done jobs are skipped; the merge waits for all jobs.
    (data_dir / "feats.scp").unlink()
    summary = stage.run(compose("compute_features", [f"data_dir={data_dir}", "nj=2", "job=1", "progress=false"]))
    assert summary["merged"] is True  # job 2 was already complete from the first run
    # A newer wav.scp makes every job stale: the first job to finish waits for the other, which merges.
    # Explicitly newer: file-system timestamps are coarse, so "now" can tie with the feats.scp just written.
    newer = (data_dir / "feats.scp").stat().st_mtime_ns + 1_000_000
    os.utime(data_dir / "wav.scp", ns=(newer, newer))
    summary = stage.run(compose("compute_features", [f"data_dir={data_dir}", "nj=2", "job=2", "progress=false"]))
    assert summary == {"skipped": False, "merged": False, "pending": [1]}
    summary = stage.run(compose("compute_features", [f"data_dir={data_dir}", "nj=2", "job=1", "progress=false"]))
    assert summary == {"skipped": False, "merged": True, "num_done": 4, "num_failed": 1}
    marker = json.loads((data_dir / "feats" / "raw_fbank.2.done.json").read_text())
    assert marker["failed"][0][0] == "spkB-u3"

    # force=true recomputes an up-to-date stage.
    mtime = (data_dir / "feats.scp").stat().st_mtime_ns
    summary = stage.run(compose("compute_features", [f"data_dir={data_dir}", "nj=2", "workers=1", "force=true",
                                                     "progress=false"]))
    assert summary["merged"] and (data_dir / "feats.scp").stat().st_mtime_ns > mtime


def test_frame_count_mismatch_names_the_utterance(tmp_path: Path) -> None:
    from speechattn.bin import compute_features as stage
    from speechattn.data.kaldi_dir import KaldiDataError, read_table, write_table

    data_dir, _ = write_tiny_data_dir(tmp_path)
    counts = read_table(data_dir / "utt2num_frames")
    counts["spkA-u2"] = str(int(counts["spkA-u2"]) + 1)
    write_table(data_dir / "utt2num_frames", counts)
    cfg = compose("compute_features", [f"data_dir={data_dir}", "nj=1", "progress=false", "features=mfcc"])
    with pytest.raises(KaldiDataError, match="spkA-u2.*utt2num_frames"):
        stage.run(cfg)
    assert not (data_dir / "feats.scp").exists()
    assert not list((data_dir / "feats").glob("raw_mfcc.1.*"))  # nothing that looks complete
    assert not list((data_dir / "feats").glob(".*.tmp"))
