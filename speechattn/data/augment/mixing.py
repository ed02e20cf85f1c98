"""Waveform mixing primitives for augmentation: power, SNR scaling, looping, concatenation, reverberation.

All functions take and return mono float32 waveforms ``(N,)`` (torch) and never modify their inputs.

Example:
    >>> speech, noise = torch.randn(16000), torch.randn(4000)
    >>> mixed = add_at_snr(speech, loop_to_length(noise, 16000), snr=10.0)
    >>> round(snr_db(speech, mixed - speech), 3)
    10.0
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

__all__ = [
    "SILENT_POWER",
    "mean_power",
    "snr_db",
    "scale_to_snr",
    "add_at_snr",
    "loop_to_length",
    "concatenate_with_crossfade",
    "prepare_rir",
    "next_fast_length",
    "fft_convolve",
    "reverberate",
]

SILENT_POWER = 1e-10
"""Mean power (float32 full scale = 1) below which a signal counts as digital silence (-100 dB)."""


def mean_power(waveform: Tensor) -> float:
    """Mean of the squared samples of ``(N,)``; 0 for an empty signal."""
    if waveform.numel() == 0:
        return 0.0
    return float(waveform.double().pow(2).mean())


def snr_db(signal: Tensor, noise: Tensor) -> float:
    """``10 log10(P_signal / P_noise)`` in dB (inf for a silent noise)."""
    noise_power = mean_power(noise)
    if noise_power == 0.0:
        return math.inf
    return 10.0 * math.log10(max(mean_power(signal), 1e-300) / noise_power)


def scale_to_snr(signal: Tensor, noise: Tensor, snr: float) -> Tensor | None:
    """``noise`` scaled so that ``signal`` is ``snr`` dB above it (same length as ``noise``).

    Returns None when either signal is digital silence (power below :data:`SILENT_POWER`): no gain puts
    silence at a given SNR, and amplifying silence would only amplify rounding noise. The caller counts it.
    """
    signal_power, noise_power = mean_power(signal), mean_power(noise)
    if signal_power < SILENT_POWER or noise_power < SILENT_POWER:
        return None
    gain = math.sqrt(signal_power / (noise_power * 10.0 ** (snr / 10.0)))
    return noise * gain


def add_at_snr(signal: Tensor, noise: Tensor, snr: float) -> Tensor:
    """``signal + noise`` with the noise scaled to ``snr`` dB below the signal (powers over the whole
    signal, as Kaldi's ``wav-reverberate`` and WeSpeaker do). Unchanged when either is silent.

    Args:
        signal: ``(N,)``.
        noise: ``(N,)``, the same length (see :func:`loop_to_length`).
    """
    if noise.shape != signal.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} != signal shape {tuple(signal.shape)}")
    scaled = scale_to_snr(signal, noise, snr)
    return signal if scaled is None else signal + scaled


def loop_to_length(noise: Tensor, length: int, offset: int = 0) -> Tensor:
    """``length`` samples of ``noise`` read from ``offset`` on, wrapping around to its start as often as
    needed (Kaldi and WeSpeaker repeat a noise shorter than the speech the same way)."""
    if noise.numel() == 0:
        raise ValueError("cannot loop an empty noise")
    n = noise.numel()
    offset %= n
    if offset + length <= n:
        return noise[offset:offset + length]
    repeats = math.ceil((offset + length) / n)
    return noise.repeat(repeats)[offset:offset + length]


def concatenate_with_crossfade(pieces: Sequence[Tensor], crossfade: int) -> Tensor:
    """Join ``pieces`` end to end, overlapping consecutive pieces by ``crossfade`` samples with linear
    fades (no click at the joins). A piece shorter than ``crossfade + 1`` is an error.

    Output length: ``sum(len) - crossfade * (len(pieces) - 1)``.
    """
    if not pieces:
        raise ValueError("nothing to concatenate")
    if crossfade < 0:
        raise ValueError(f"crossfade must be >= 0, got {crossfade}")
    if crossfade and min(p.numel() for p in pieces) <= crossfade:
        raise ValueError(f"every piece must be longer than the {crossfade}-sample crossfade")
    out = pieces[0]
    if crossfade == 0:
        return torch.cat(list(pieces))
    fade_in = torch.linspace(0.0, 1.0, crossfade + 2, dtype=out.dtype)[1:-1]
    for piece in pieces[1:]:
        overlap = out[-crossfade:] * (1.0 - fade_in) + piece[:crossfade] * fade_in
        out = torch.cat([out[:-crossfade], overlap, piece[crossfade:]])
    return out


def prepare_rir(rir: Tensor) -> tuple[Tensor, int]:
    """Unit-energy RIR and the index of its direct path (largest absolute sample).

    The direct-path index is what :func:`reverberate` removes as delay, so the reverberant crop stays
    aligned with the dry one (SpeechBrain aligns the same way). A silent RIR is an error.
    """
    if rir.dim() != 1 or rir.numel() == 0:
        raise ValueError(f"RIR must be a non-empty (N,) tensor, got shape {tuple(rir.shape)}")
    energy = float(rir.double().pow(2).sum())
    if energy <= 0.0 or not math.isfinite(energy):
        raise ValueError("RIR has no energy (all zeros) or non-finite samples")
    return (rir / math.sqrt(energy)).to(torch.float32), int(rir.abs().argmax())


def next_fast_length(n: int) -> int:
    """Smallest ``2^a 3^b 5^c >= n``: sizes the FFT (pocketfft) handles fastest.

    Example:
        >>> next_fast_length(64000), next_fast_length(68000), next_fast_length(1)
        (64000, 69120, 1)
    """
    best = 1 << max(n - 1, 0).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def fft_convolve(x: Tensor, h: Tensor, num_out: int | None = None) -> Tensor:
    """First ``num_out`` samples (default all ``len(x) + len(h) - 1``) of the linear convolution ``x * h``.

    The FFT size is :func:`next_fast_length` of the full length: ``torchaudio.functional.fftconvolve``
    uses exactly ``len(x) + len(h) - 1``, often a size with large prime factors (measured 3-6x slower on
    crop-sized signals), and the next power of two can be almost twice too long (1.3-2x slower).
    """
    full = x.numel() + h.numel() - 1
    num_out = full if num_out is None else min(num_out, full)
    n_fft = next_fast_length(full)
    spectrum = torch.fft.rfft(x, n=n_fft) * torch.fft.rfft(h, n=n_fft)
    return torch.fft.irfft(spectrum, n=n_fft)[:num_out]


def reverberate(signal: Tensor, rir: Tensor, direct_index: int = 0) -> Tensor:
    """``signal`` convolved with ``rir`` (unit energy, see :func:`prepare_rir`), delay-compensated and
    rescaled to the dry signal's power: ``(N,)`` -> ``(N,)``.

    The output is ``(signal * rir)[direct_index : direct_index + N]``: the direct sound lines up with the
    dry signal and the tail that rings past the crop's end is cut (the crop is a window of a longer
    recording). FFT convolution at a power-of-two size (:func:`fft_convolve`): deterministic on CPU.
    """
    n = signal.numel()
    if n == 0:
        return signal
    wet = fft_convolve(signal.to(torch.float32), rir.to(torch.float32), direct_index + n)[direct_index:]
    dry_power, wet_power = mean_power(signal), mean_power(wet)
    if wet_power < SILENT_POWER or dry_power < SILENT_POWER:
        return wet
    return wet * math.sqrt(dry_power / wet_power)
