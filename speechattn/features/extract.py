"""Kaldi-compatible acoustic features: 80-dim log-mel fbank or 13 MFCC + Δ + ΔΔ.

Features follow Kaldi's ``compute-fbank-feats`` / ``compute-mfcc-feats`` (``snip_edges=true``) as
``torchaudio.compliance.kaldi`` does, with the filters cached and a cheaper power spectrum (same numbers,
~1.5-2x faster; :func:`torchaudio_reference_features` calls torchaudio directly). The frame count is always
``framing.num_frames(len(waveform))``. The waveform is scaled to the 16-bit integer range first
(``waveform_scale``), as Kaldi reads WAV samples as integers; dither defaults to 0 for determinism.

Deltas follow Kaldi's ``add-deltas`` (order 2, window 2): Δ is the 5-tap regression of the static
features and ΔΔ the 9-tap filter obtained by convolving that regression with itself, both over frame
indices clamped to the utterance (edge frames replicated).

Example:
    >>> import torch
    >>> cfg = FeatureConfig(kind="mfcc", num_mel_bins=23)
    >>> feats = compute_features(torch.randn(16000) * 0.1, 16000, cfg)
    >>> tuple(feats.shape), feature_dim(cfg)
    ((98, 39), 39)
"""
from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torchaudio.compliance.kaldi as kaldi
import torchaudio.functional as AF
from torch import Tensor

from speechattn.data import framing

FEATURE_KINDS = ("fbank", "mfcc")
WINDOW_TYPES = ("povey", "hanning", "hamming", "rectangular", "blackman")


@dataclass
class FeatureConfig:
    """Feature extraction settings (the Hydra ``features`` group; stored as ``data_dir/feats.yaml``).

    Args:
        kind: ``"fbank"`` (log-mel filterbank, ``num_mel_bins`` dims) or ``"mfcc"``.
        sample_rate: expected sample rate of the waveform (audio is resampled on loading).
        num_mel_bins: triangular mel filters (80 for fbank; Kaldi's MFCC default is 23).
        num_ceps: cepstra kept for MFCC, C0 included.
        deltas: append Δ and ΔΔ (Kaldi ``add-deltas``); MFCC only, ignored for fbank.
        delta_window: half-width of the delta regression window (Kaldi ``--delta-window``).
        frame_length_ms, frame_shift_ms: 25 / 10 ms (see ``framing``).
        dither: Gaussian dither amplitude in 16-bit units; 0 keeps features deterministic.
        preemphasis: pre-emphasis coefficient.
        low_freq, high_freq: mel filter range in Hz (``high_freq <= 0`` is an offset from Nyquist).
        window_type: ``povey`` | ``hamming`` | ``hanning`` | ``rectangular`` | ``blackman``.
        remove_dc_offset: subtract each frame's mean before the FFT.
        use_energy: MFCC only: replace C0 by the log frame energy (Kaldi's default is true, but Kaldi
            recipes' ``conf/mfcc.conf`` set ``--use-energy=false``, as we do).
        energy_floor: floor on the log energy when ``use_energy`` (Kaldi default 0).
        cepstral_lifter: MFCC liftering coefficient.
        waveform_scale: multiplier applied to float samples in [-1, 1] (32768 = Kaldi's int16 reading).
    """

    kind: str = "fbank"
    sample_rate: int = 16000
    num_mel_bins: int = 80
    num_ceps: int = 13
    deltas: bool = True
    delta_window: int = 2
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    dither: float = 0.0
    preemphasis: float = 0.97
    low_freq: float = 20.0
    high_freq: float = 0.0
    window_type: str = "povey"
    remove_dc_offset: bool = True
    use_energy: bool = False
    energy_floor: float = 0.0
    cepstral_lifter: float = 22.0
    waveform_scale: float = 32768.0

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"features.kind must be one of {FEATURE_KINDS}, got {self.kind!r}")
        if self.window_type not in WINDOW_TYPES:
            raise ValueError(f"features.window_type must be one of {WINDOW_TYPES}, got {self.window_type!r}")
        if self.kind == "mfcc" and self.num_ceps > self.num_mel_bins:
            raise ValueError(f"features.num_ceps={self.num_ceps} > num_mel_bins={self.num_mel_bins}")
        if self.delta_window < 1:
            raise ValueError(f"features.delta_window must be >= 1, got {self.delta_window}")
        # Validates the frame geometry early (raises on empty windows).
        framing.frame_window_samples(self.sample_rate, self.frame_length_ms)
        framing.frame_shift_samples(self.sample_rate, self.frame_shift_ms)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | Any) -> "FeatureConfig":
        """Build from a Hydra/OmegaConf node or a plain mapping; unknown keys are an error."""
        if isinstance(cfg, FeatureConfig):
            return cfg
        try:
            from omegaconf import DictConfig, OmegaConf

            if isinstance(cfg, DictConfig):
                cfg = OmegaConf.to_container(cfg, resolve=True)
        except ImportError:  # pragma: no cover - omegaconf ships with hydra-core
            pass
        values = dict(cfg)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown feature option(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, e.g. to store beside the features (``feats.yaml``)."""
        return dataclasses.asdict(self)

    @property
    def uses_deltas(self) -> bool:
        """Whether Δ and ΔΔ are appended (MFCC with ``deltas=True``)."""
        return self.kind == "mfcc" and self.deltas


def feature_dim(cfg: FeatureConfig) -> int:
    """Output dimension D: ``num_mel_bins`` for fbank, ``num_ceps`` (x3 with deltas) for MFCC."""
    static = cfg.num_mel_bins if cfg.kind == "fbank" else cfg.num_ceps
    return static * 3 if cfg.uses_deltas else static


def feature_context_frames(cfg: FeatureConfig) -> int:
    """Frames of context on each side that a frame's features depend on beyond its own window.

    0 for static features; ``2 * delta_window`` (4) with Δ + ΔΔ, since ΔΔ is a 9-tap filter.
    """
    return 2 * cfg.delta_window if cfg.uses_deltas else 0


def compute_features(waveform: Tensor, sample_rate: int, cfg: FeatureConfig) -> Tensor:
    """Features of one utterance.

    Args:
        waveform: ``(N,)`` float samples in [-1, 1] at ``sample_rate``.
        sample_rate: must equal ``cfg.sample_rate`` (resample when loading, not here).
        cfg: feature settings.

    Returns:
        ``(T, D)`` float32 with ``T == framing.num_frames(N)`` and ``D == feature_dim(cfg)``
        (``T == 0`` for signals shorter than one window).
    """
    static = compute_static_features(waveform, sample_rate, cfg)
    return add_deltas(static, cfg.delta_window) if cfg.uses_deltas else static


def compute_static_features(waveform: Tensor, sample_rate: int, cfg: FeatureConfig) -> Tensor:
    """Fbank or MFCC without deltas: ``(N,)`` -> ``(T, num_mel_bins | num_ceps)``; every frame depends
    only on its own window of samples."""
    _check_waveform(waveform, sample_rate, cfg)
    frontend = _frontend(_frontend_key(cfg))
    return frontend(waveform.to(torch.float32) * cfg.waveform_scale)


def torchaudio_reference_features(waveform: Tensor, sample_rate: int, cfg: FeatureConfig) -> Tensor:
    """The same static features computed by ``torchaudio.compliance.kaldi.fbank`` / ``mfcc`` directly.

    :func:`compute_static_features` gives the same numbers (to float rounding) 1.5-2x faster; this is
    kept as the reference for tests and the benchmark. ``(N,)`` -> ``(T, num_mel_bins | num_ceps)``.
    """
    _check_waveform(waveform, sample_rate, cfg)
    static_dim = cfg.num_mel_bins if cfg.kind == "fbank" else cfg.num_ceps
    if framing.num_frames(waveform.numel(), sample_rate, cfg.frame_length_ms, cfg.frame_shift_ms) == 0:
        return waveform.new_zeros((0, static_dim), dtype=torch.float32)  # torchaudio asserts on short input
    samples = (waveform.to(torch.float32) * cfg.waveform_scale).unsqueeze(0)  # (1, N)
    common = dict(dither=cfg.dither, energy_floor=cfg.energy_floor, frame_length=cfg.frame_length_ms,
                  frame_shift=cfg.frame_shift_ms, high_freq=cfg.high_freq, low_freq=cfg.low_freq,
                  num_mel_bins=cfg.num_mel_bins, preemphasis_coefficient=cfg.preemphasis,
                  remove_dc_offset=cfg.remove_dc_offset, sample_frequency=float(sample_rate), snip_edges=True,
                  window_type=cfg.window_type)
    if cfg.kind == "fbank":
        return kaldi.fbank(samples, use_energy=False, **common)
    return kaldi.mfcc(samples, num_ceps=cfg.num_ceps, cepstral_lifter=cfg.cepstral_lifter,
                      use_energy=cfg.use_energy, **common)


def _check_waveform(waveform: Tensor, sample_rate: int, cfg: FeatureConfig) -> None:
    if waveform.dim() != 1:
        raise ValueError(f"waveform must be 1-D (N,), got shape {tuple(waveform.shape)}")
    if sample_rate != cfg.sample_rate:
        raise ValueError(f"waveform sample rate {sample_rate} != features.sample_rate {cfg.sample_rate}")
    if not torch.isfinite(waveform).all():
        raise ValueError("waveform contains NaN or inf")


# Fields that change the static features (not the deltas or the input scaling).
_FRONTEND_FIELDS = ("kind", "sample_rate", "num_mel_bins", "num_ceps", "frame_length_ms", "frame_shift_ms",
                    "dither", "preemphasis", "low_freq", "high_freq", "window_type", "remove_dc_offset",
                    "use_energy", "energy_floor", "cepstral_lifter")


def _frontend_key(cfg: FeatureConfig) -> tuple:
    return tuple(getattr(cfg, name) for name in _FRONTEND_FIELDS)


@functools.lru_cache(maxsize=16)
def _frontend(key: tuple) -> "_KaldiFrontend":
    return _KaldiFrontend(FeatureConfig(**dict(zip(_FRONTEND_FIELDS, key))))


class _KaldiFrontend:
    """Kaldi's fbank / MFCC pipeline (``feature-window.cc``, ``mel-computations.cc``, ``feature-mfcc.cc``)
    with the window, mel filters and DCT built once.

    Why not call ``torchaudio.compliance.kaldi`` each time: it rebuilds the filters on every call and takes
    the power spectrum as ``|X|.pow(2)``, a complex ``abs`` (hypot + sqrt) that alone costs about a third of
    the extraction; ``re^2 + im^2`` (what Kaldi computes) is ~6x cheaper, and the FFT zero-padding is done
    by ``rfft(n=...)`` instead of a padded copy. Filters, window and DCT come from the same formulas as
    torchaudio (its ``get_mel_banks`` is reused), so the output equals
    :func:`torchaudio_reference_features` to float rounding.
    """

    ROW_BLOCK = 16

    def __init__(self, cfg: FeatureConfig) -> None:
        self.cfg = cfg
        self.window_size = framing.frame_window_samples(cfg.sample_rate, cfg.frame_length_ms)
        self.window_shift = framing.frame_shift_samples(cfg.sample_rate, cfg.frame_shift_ms)
        self.fft_size = 1 << (self.window_size - 1).bit_length()  # round_to_power_of_two
        self.window = _window_function(cfg.window_type, self.window_size)  # (W,)
        mel_banks, _ = kaldi.get_mel_banks(cfg.num_mel_bins, self.fft_size, float(cfg.sample_rate), cfg.low_freq,
                                           cfg.high_freq, 100.0, -500.0, 1.0)
        self.mel_t = mel_banks.to(torch.float32).T.contiguous()  # (fft_size / 2, num_mel_bins); no Nyquist bin
        self.dct: Tensor | None = None
        if cfg.kind == "mfcc":
            # Kaldi's DCT: orthonormal type II with C0 weighted sqrt(1/num_mel_bins), then liftering.
            dct = AF.create_dct(cfg.num_mel_bins, cfg.num_mel_bins, "ortho")
            dct[:, 0] = math.sqrt(1.0 / cfg.num_mel_bins)
            dct = dct[:, :cfg.num_ceps]
            if cfg.cepstral_lifter != 0.0:
                i = torch.arange(cfg.num_ceps, dtype=torch.float32)
                dct = dct * (1.0 + 0.5 * cfg.cepstral_lifter * torch.sin(math.pi * i / cfg.cepstral_lifter))
            self.dct = dct.contiguous()  # (num_mel_bins, num_ceps)
        self.epsilon = torch.finfo(torch.float32).eps

    def __call__(self, samples: Tensor) -> Tensor:
        """``samples (N,)`` already scaled -> ``(T, D)`` with ``T = framing.num_frames(N)``."""
        cfg = self.cfg
        static_dim = cfg.num_mel_bins if self.dct is None else cfg.num_ceps
        if samples.numel() < self.window_size:
            return samples.new_zeros((0, static_dim))
        frames = samples.unfold(0, self.window_size, self.window_shift)  # (T, W) view, snip_edges
        num_frames = frames.shape[0]
        if cfg.dither != 0.0:
            frames = frames + torch.randn_like(frames) * cfg.dither
        if cfg.remove_dc_offset:
            frames = frames - frames.mean(dim=1, keepdim=True)
        log_energy = None
        if self.dct is not None and cfg.use_energy:  # raw energy: before pre-emphasis and windowing
            log_energy = frames.square().sum(dim=1).clamp_min(self.epsilon).log()
            if cfg.energy_floor > 0.0:
                log_energy = log_energy.clamp_min(math.log(cfg.energy_floor))
        # Rows padded to a multiple of ROW_BLOCK with zeros: BLAS picks its kernels by matrix size, and a
        # different remainder kernel rounds differently, so without this a frame's features would depend
        # (in the last bit) on how many frames are computed together, breaking exact chunk invariance.
        padded = -(-num_frames // self.ROW_BLOCK) * self.ROW_BLOCK
        buffer = frames.new_empty((padded, self.window_size))
        buffer[num_frames:].zero_()
        if cfg.preemphasis != 0.0:  # x[j] -= c * x[j - 1], with x[-1] = x[0] (Kaldi)
            torch.sub(frames[:, 1:], frames[:, :-1], alpha=cfg.preemphasis, out=buffer[:num_frames, 1:])
            torch.mul(frames[:, 0], 1.0 - cfg.preemphasis, out=buffer[:num_frames, 0])
        else:
            buffer[:num_frames].copy_(frames)
        buffer.mul_(self.window)
        spectrum = torch.fft.rfft(buffer, n=self.fft_size)[:, :self.fft_size // 2]  # zero-padded FFT
        power = spectrum.real.square() + spectrum.imag.square()  # (T', fft_size / 2)
        feats = torch.mm(power, self.mel_t).clamp_min_(self.epsilon).log_()  # (T', num_mel_bins)
        if self.dct is not None:
            feats = torch.mm(feats, self.dct)  # (T', num_ceps)
        feats = feats[:num_frames]
        if log_energy is not None:
            feats[:, 0] = log_energy
        return feats


def _window_function(window_type: str, size: int) -> Tensor:
    """Kaldi's analysis windows (``FeatureWindowFunction``), symmetric, float32 ``(size,)``."""
    if window_type == "povey":  # Hann raised to 0.85: goes to zero at the edges
        return torch.hann_window(size, periodic=False).pow(0.85)
    if window_type == "hanning":
        return torch.hann_window(size, periodic=False)
    if window_type == "hamming":
        return torch.hamming_window(size, periodic=False, alpha=0.54, beta=0.46)
    if window_type == "rectangular":
        return torch.ones(size)
    if window_type == "blackman":
        n = torch.arange(size, dtype=torch.float32) * (2 * math.pi / (size - 1))
        return 0.42 - 0.5 * torch.cos(n) + 0.08 * torch.cos(2 * n)
    raise ValueError(f"unknown window_type {window_type!r}: povey | hanning | hamming | rectangular | blackman")


def add_deltas(static: Tensor, window: int = 2) -> Tensor:
    """Kaldi ``add-deltas`` (order 2): ``(T, F)`` -> ``(T, 3F)`` = ``[static, Δ, ΔΔ]``.

    Kaldi computes ΔΔ as one 9-tap filter over clamped frame indices. Applying the 5-tap delta twice gives
    the same filter in the interior but not at the edges (the inner delta would be replicated instead of
    the features), so the features are first padded by ``window`` replicated frames; then both passes of
    ``compute_deltas`` see exactly the frames Kaldi sees and the padding is cut off again.
    """
    num_frames = static.shape[0]
    if num_frames == 0:
        return static.new_zeros((0, 3 * static.shape[1]))
    win_length = 2 * window + 1
    by_dim = static.T  # compute_deltas works along the last axis: (F, T)
    delta = AF.compute_deltas(by_dim, win_length=win_length, mode="replicate")
    padded = torch.cat([by_dim[:, :1].expand(-1, window), by_dim, by_dim[:, -1:].expand(-1, window)], dim=1)
    delta_delta = AF.compute_deltas(AF.compute_deltas(padded, win_length=win_length, mode="replicate"),
                                    win_length=win_length, mode="replicate")[:, window:window + num_frames]
    return torch.cat([by_dim, delta, delta_delta], dim=0).T.contiguous()


@dataclass(frozen=True)
class FeatureChunk:
    """How to compute frames ``[first_frame, last_frame)`` of a long utterance from a slice of its samples.

    Read ``waveform[sample_start:sample_end]``, pass it to :func:`compute_features_chunk` with this plan.
    """

    first_frame: int
    last_frame: int
    sample_start: int
    sample_end: int
    drop_front: int  # context frames computed before first_frame, discarded


def plan_feature_chunk(first_frame: int, last_frame: int, total_frames: int, cfg: FeatureConfig) -> FeatureChunk:
    """Sample range (with delta context, clamped to the utterance) needed for frames ``[first, last)``."""
    if not 0 <= first_frame <= last_frame <= total_frames:
        raise ValueError(f"frame range [{first_frame}, {last_frame}) outside [0, {total_frames})")
    context = feature_context_frames(cfg)
    lo = max(0, first_frame - context)
    hi = min(total_frames, last_frame + context)
    start, end = framing.frame_span_samples(lo, hi, cfg.sample_rate, cfg.frame_length_ms, cfg.frame_shift_ms)
    return FeatureChunk(first_frame, last_frame, start, end, first_frame - lo)


def compute_features_chunk(segment: Tensor, sample_rate: int, cfg: FeatureConfig, plan: FeatureChunk) -> Tensor:
    """Frames ``[plan.first_frame, plan.last_frame)`` from ``segment = waveform[plan.sample_start:plan.sample_end]``.

    Returns ``(last_frame - first_frame, D)``, equal (to float rounding) to the same rows of
    ``compute_features(waveform)``: static features are per-window, and the delta context is included.
    """
    expected = plan.sample_end - plan.sample_start
    if segment.numel() != expected:
        raise ValueError(f"segment has {segment.numel()} samples, plan needs {expected}")
    feats = compute_features(segment, sample_rate, cfg)
    return feats[plan.drop_front:plan.drop_front + plan.last_frame - plan.first_frame]
