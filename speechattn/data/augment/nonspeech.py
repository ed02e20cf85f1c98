"""Non-speech regions of training recordings, used as additive noise: from phone alignments or energy.

Speaker corpora recorded in one place (speechocean762, FSDD) carry their own channel and room noise in the
pauses between words. Those pauses, taken from *other* recordings and mixed into a crop, are noise the
model has to ignore, without any external noise corpus.

- :func:`nonspeech_from_alignments`: ``SIL`` segments of a CTM (speechocean762 ``alignments/phones.ctm``),
  shrunk by a margin at both ends because alignment boundaries are only accurate to a few frames.
- :func:`nonspeech_from_energy`: for corpora without alignments (FSDD), frames whose log energy stays
  below a threshold set between the recording's noise floor and its speech level, away from speech.

Both return sample ranges ``[(start, end), ...]`` at the given sample rate, each at least
``min_duration`` seconds long.

Example:
    >>> from speechattn.data.alignments import Segment
    >>> segs = [Segment(0.0, 0.67, "SIL"), Segment(0.67, 0.5, "AA"), Segment(1.17, 0.1, "SIL")]
    >>> nonspeech_from_alignments(segs, num_samples=20000, margin=0.03, min_duration=0.2)
    [(480, 10240)]
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from speechattn.data.alignments import SILENCE, Segment

__all__ = ["nonspeech_from_alignments", "frame_log_energy", "nonspeech_from_energy"]


def nonspeech_from_alignments(segments: Sequence[Segment], num_samples: int, *, sample_rate: int = 16000,
                              margin: float = 0.03, min_duration: float = 0.2,
                              label: str = SILENCE) -> list[tuple[int, int]]:
    """Sample ranges of the ``label`` segments, each shrunk by ``margin`` seconds at both ends, clipped to
    the recording, and kept when at least ``min_duration`` seconds remain. Adjacent ``label`` segments
    are merged first."""
    merged: list[list[float]] = []
    for seg in segments:
        if seg.label != label:
            continue
        if merged and abs(merged[-1][1] - seg.start) < 1e-6:
            merged[-1][1] = seg.end
        else:
            merged.append([seg.start, seg.end])
    ranges = []
    for start, end in merged:
        first = max(0, round((start + margin) * sample_rate))
        last = min(num_samples, round((end - margin) * sample_rate))
        if last - first >= min_duration * sample_rate:
            ranges.append((first, last))
    return ranges


def frame_log_energy(waveform: Tensor, frame_length: int = 400, frame_shift: int = 160) -> Tensor:
    """Log energy in dB of each 25 ms frame every 10 ms (the toolkit's frames, ``snip_edges``): ``(T,)``."""
    if waveform.numel() < frame_length:
        return torch.zeros(0)
    frames = waveform.double().unfold(0, frame_length, frame_shift)
    return (10.0 * torch.log10(frames.pow(2).mean(dim=1) + 1e-12)).float()


def nonspeech_from_energy(waveform: Tensor, *, sample_rate: int = 16000, threshold: float = 0.3,
                          min_contrast_db: float = 15.0, hangover: float = 0.05,
                          min_duration: float = 0.2) -> list[tuple[int, int]]:
    """Sample ranges of ``waveform (N,)`` that are not speech, by frame energy.

    The noise floor is the 10th percentile of the frame log energies and the speech level the 95th; a
    frame is speech when its energy is above ``floor + threshold * (speech - floor)`` dB. Speech frames are
    widened by ``hangover`` seconds on each side (word onsets and decays are quiet), and the remaining
    runs of at least ``min_duration`` seconds are returned. A recording whose speech level is less than
    ``min_contrast_db`` above its floor (no pauses, or noise as loud as speech) gives no range: better no
    noise than speech used as noise.
    """
    shift = sample_rate // 100
    length = sample_rate * 25 // 1000
    energy = frame_log_energy(waveform, length, shift)
    if energy.numel() == 0:
        return []
    floor, speech = torch.quantile(energy, torch.tensor([0.10, 0.95])).tolist()
    if speech - floor < min_contrast_db:
        return []
    is_speech = energy > floor + threshold * (speech - floor)
    widen = int(round(hangover * 100))
    if widen:
        kernel = torch.ones(1, 1, 2 * widen + 1)
        is_speech = torch.nn.functional.conv1d(is_speech.float()[None, None], kernel, padding=widen)[0, 0] > 0
    ranges = []
    t, frames = 0, is_speech.numel()
    min_frames = math.ceil(min_duration * 100)
    while t < frames:
        if is_speech[t]:
            t += 1
            continue
        start = t
        while t < frames and not is_speech[t]:
            t += 1
        if t - start >= min_frames:
            # frame i covers samples [i * shift, i * shift + length)
            ranges.append((start * shift, min(waveform.numel(), (t - 1) * shift + length)))
    return ranges
