"""Feature extraction benchmark: speed (real-time factor, one thread) and Kaldi parity.

    .venv/bin/python bench/features.py [--seconds 60] [--repeats 5]

Audio: the first speechocean762 utterances (../shared) until ``--seconds`` of speech. Each extractor is
timed (best of ``--repeats``, process CPU time) on the whole concatenation in one call and utterance by
utterance (per-call overhead included, as in the compute_features stage). RTF = audio seconds / compute seconds; the target is
>= 500x real time for our fbank and MFCC on one core. Differences are measured against kaldi-native-fbank
(a C++ port of Kaldi's feature code) on the concatenation.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # one core for everybody
    os.environ[_var] = "1"

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from speechattn.features.extract import (FeatureConfig, add_deltas, compute_features,  # noqa: E402
                                         torchaudio_reference_features)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CORPUS = SHARED / "corpora" / "speechocean762" / "WAVE"
TARGET_RTF = 500.0
SAMPLE_RATE = 16000

FBANK = FeatureConfig(kind="fbank", num_mel_bins=80)
MFCC = FeatureConfig(kind="mfcc", num_mel_bins=23, num_ceps=13, deltas=True)


def load_speech(seconds: float) -> list[np.ndarray]:
    if not CORPUS.is_dir():
        sys.exit(f"../shared not found: {CORPUS}")
    utterances, total = [], 0
    for path in sorted(CORPUS.glob("*/*.flac")):
        data, rate = sf.read(path, dtype="float32")
        assert rate == SAMPLE_RATE, path
        utterances.append(data)
        total += len(data)
        if total >= seconds * SAMPLE_RATE:
            break
    return utterances


# --------------------------------------------------------------------------------------- extractors

def ours(cfg: FeatureConfig) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: compute_features(torch.from_numpy(x), SAMPLE_RATE, cfg).numpy()


def torchaudio_direct(cfg: FeatureConfig) -> Callable[[np.ndarray], np.ndarray]:
    """Plain ``torchaudio.compliance.kaldi`` calls (what extract.py did before its cached frontend)."""
    def extract(x: np.ndarray) -> np.ndarray:
        static = torchaudio_reference_features(torch.from_numpy(x), SAMPLE_RATE, cfg)
        return (add_deltas(static, cfg.delta_window) if cfg.uses_deltas else static).numpy()

    return extract


def kaldi_native(kind: str) -> Callable[[np.ndarray], np.ndarray]:
    import kaldi_native_fbank as knf

    def extract(x: np.ndarray) -> np.ndarray:
        opts = knf.FbankOptions() if kind == "fbank" else knf.MfccOptions()
        opts.frame_opts.dither = 0.0
        opts.frame_opts.snip_edges = True
        opts.mel_opts.num_bins = 80 if kind == "fbank" else 23
        if kind == "mfcc":
            opts.num_ceps, opts.use_energy = 13, False
        extractor = knf.OnlineFbank(opts) if kind == "fbank" else knf.OnlineMfcc(opts)
        extractor.accept_waveform(SAMPLE_RATE, x * 32768)
        extractor.input_finished()
        return np.stack([extractor.get_frame(i) for i in range(extractor.num_frames_ready)])

    return extract


def librosa_logmel(n_mels: int) -> Callable[[np.ndarray], np.ndarray]:
    """Same analysis as ours: 25 ms window in a 512-point FFT, 10 ms shift, no padding, power, 20 Hz-Nyquist."""
    import librosa

    def extract(x: np.ndarray) -> np.ndarray:
        mel = librosa.feature.melspectrogram(y=x * 32768, sr=SAMPLE_RATE, n_fft=512, win_length=400, hop_length=160,
                                             window="hann", center=False, power=2.0, n_mels=n_mels, fmin=20.0,
                                             fmax=SAMPLE_RATE / 2, htk=True, norm=None)
        return np.log(np.maximum(mel, np.finfo(np.float32).eps)).T

    return extract


def librosa_mfcc() -> Callable[[np.ndarray], np.ndarray]:
    import librosa

    logmel = librosa_logmel(23)

    def extract(x: np.ndarray) -> np.ndarray:
        ceps = librosa.feature.mfcc(S=logmel(x).T, n_mfcc=13, dct_type=2, norm="ortho", lifter=22)
        return np.concatenate([ceps, librosa.feature.delta(ceps, width=5, order=1),
                               librosa.feature.delta(ceps, width=5, order=2)]).T

    return extract


# --------------------------------------------------------------------------------------- measurement

def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Best-of-``repeats`` CPU time of this (single-threaded) process: unlike wall time it is not inflated
    when other processes compete for the cores."""
    fn()  # warm-up (lazy imports, caches)
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)

    utterances = load_speech(args.seconds)
    whole = np.concatenate(utterances)
    audio_seconds = len(whole) / SAMPLE_RATE
    print(f"audio: {len(utterances)} speechocean762 utterances, {audio_seconds:.1f} s; torch threads = "
          f"{torch.get_num_threads()}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")

    extractors = {
        "ours fbank (80)": ("fbank", ours(FBANK)),
        "torchaudio.compliance fbank (80)": ("fbank", torchaudio_direct(FBANK)),
        "kaldi-native-fbank fbank (80)": ("fbank", kaldi_native("fbank")),
        "librosa log-mel (80)": ("fbank", librosa_logmel(80)),
        "ours mfcc+d+dd (39)": ("mfcc", ours(MFCC)),
        "torchaudio.compliance mfcc+d+dd": ("mfcc", torchaudio_direct(MFCC)),
        "kaldi-native-fbank mfcc (13)": ("mfcc", kaldi_native("mfcc")),
        "librosa mfcc+d+dd (39)": ("mfcc", librosa_mfcc()),
    }
    references = {"fbank": kaldi_native("fbank")(whole), "mfcc": kaldi_native("mfcc")(whole)}
    baseline = {"fbank": "kaldi-native-fbank fbank (80)", "mfcc": "kaldi-native-fbank mfcc (13)"}

    rows = []
    for name, (kind, fn) in extractors.items():
        t_whole = best_time(lambda: fn(whole), args.repeats)
        t_utts = best_time(lambda: [fn(u) for u in utterances], args.repeats)
        out = fn(whole)[:, :references[kind].shape[1]]
        diff = np.abs(out - references[kind]) if out.shape == references[kind].shape else None
        rows.append((name, kind, audio_seconds / t_whole, audio_seconds / t_utts, diff))
    speed = {name: (rtf_whole, rtf_utts) for name, _, rtf_whole, rtf_utts, _ in rows}

    header = f"{'extractor':32} {'RTF whole':>10} {'RTF per-utt':>12} {'x knf (per-utt)':>16} " \
             f"{'max|d| vs knf':>14} {'mean|d| vs knf':>15}"
    print(header)
    print("-" * len(header))
    for name, kind, rtf_whole, rtf_utts, diff in rows:
        ratio = rtf_utts / speed[baseline[kind]][1]
        max_d = f"{diff.max():.2e}" if diff is not None else "n/a"
        mean_d = f"{diff.mean():.2e}" if diff is not None else "n/a"
        print(f"{name:32} {rtf_whole:9.0f}x {rtf_utts:11.0f}x {ratio:15.2f}x {max_d:>14} {mean_d:>15}")
    print("(differences: static columns only; librosa uses a different window and mel scale, so it is not "
          "Kaldi-compatible: its difference is shown for scale)")
    for name in ("ours fbank (80)", "ours mfcc+d+dd (39)"):
        worst = min(speed[name])
        verdict = "PASS" if worst >= TARGET_RTF else "FAIL"
        print(f"{verdict}: {name} at {worst:.0f}x real time (worst of whole / per-utt) vs target {TARGET_RTF:.0f}x")


if __name__ == "__main__":
    main()
