"""Exact chunked inference for long recordings (an hour = 360,000 frames) with bounded memory.

A model with a finite receptive field ``(L, R)`` (frame ``t``'s output depends only on input frames
``[t - L, t + R]``) gives for frames ``[a, b)`` exactly the whole-utterance output when it is run on frames
``[a - L, b + R)`` (clipped to the utterance): whatever the model does at the edges of that window cannot
reach the central frames. Features are the same story one level down: frames ``[a, b)`` are computed
exactly from samples ``framing.frame_span_samples(a, b)`` (snip_edges), and features with extra context
(deltas: ``feature_context_frames`` on each side) are computed on a window widened by that much and cut.
So the audio is read in blocks, each chunk of ``chunk_frames`` frames is computed with its context, and
only the central frames are yielded: every frame exactly once, in order, identical to whole-utterance
inference up to floating-point summation order (~1e-6 on logits). Only O(chunk + context) samples,
features and logits are alive at any time.

Exactness needs every step to be local in time. Normalisation must use fixed statistics (global or
speaker CMVN computed beforehand, applied inside ``feature_fn``); per-utterance CMVN over the whole
recording is not chunkable. Models with unbounded context (BLSTM, full attention) have no finite
receptive field and are refused. Files at another sample rate are resampled block by block by
``iter_audio_blocks``, which is not bit-identical to resampling the whole file near block edges.

Example:
    >>> import torch
    >>> conv = torch.nn.Conv1d(80, 5, kernel_size=7, padding=3)         # receptive field (3, 3)
    >>> feature_fn = lambda w: torch.randn(1, 80).expand(max(0, 1 + (len(w) - 400) // 160), 80)
    >>> frame_fn = lambda x, lengths: conv(x.transpose(1, 2)).transpose(1, 2)
    >>> blocks = [torch.zeros(16000)] * 3                                 # 3 s of audio in 1 s blocks
    >>> with torch.no_grad():
    ...     out = list(iter_chunked_predictions(blocks, feature_fn=feature_fn, frame_fn=frame_fn,
    ...                                         receptive_field=(3, 3), chunk_frames=100))
    >>> [(first, len(labels)) for first, labels in out]
    [(0, 100), (100, 100), (200, 98)]
    >>> runs_to_ctm("utt1", ["SIL", "SIL", "AH", "SIL"])
    ['utt1 1 0.00 0.02 SIL', 'utt1 1 0.02 0.01 AH', 'utt1 1 0.03 0.01 SIL']
"""
from __future__ import annotations

import logging
import math
import os
from typing import Callable, Iterable, Iterator, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from speechattn.data.audio import audio_info, iter_audio_blocks
from speechattn.data.framing import frame_shift_samples, frame_span_samples, num_frames

logger = logging.getLogger(__name__)

FeatureFn = Callable[[Tensor], Union[Tensor, np.ndarray]]
"""waveform ``(N,)`` float32 -> features ``(num_frames(N), F)`` (CMVN with fixed statistics included)."""
FrameFn = Callable[[Tensor, Tensor], Tensor]
"""features ``(1, T, F)``, lengths ``(1,)`` -> logits ``(1, T, C)``."""
AudioSource = Union[str, os.PathLike, Iterable[Union[Tensor, np.ndarray, tuple[int, Union[Tensor, np.ndarray]]]]]


def iter_chunked_logits(
    audio: AudioSource,
    *,
    feature_fn: FeatureFn,
    frame_fn: FrameFn,
    receptive_field: tuple[int, int] | None,
    chunk_frames: int = 6000,
    sample_rate: int = 16000,
    feature_context_frames: int = 0,
) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(first_frame, logits (n, C))`` for consecutive chunks; together they equal
    ``frame_fn(feature_fn(whole_waveform)[None], ...)[0]`` and cover frames ``[0, num_frames(N))`` once.

    Args:
        audio: a path (read in blocks with ``speechattn.data.audio.iter_audio_blocks``, resampled to
            ``sample_rate``; a corrupt block raises its ``AudioError`` naming the time offset, after the
            chunks before it were yielded), or an iterable of consecutive 1-D sample blocks of any sizes,
            or of ``(start_sample, block)`` pairs like ``iter_audio_blocks`` yields (overlaps are skipped).
        feature_fn: waveform ``(N,)`` -> ``(num_frames(N), F)``, frame-local except for
            ``feature_context_frames`` of context on each side.
        frame_fn: ``(1, T, F)``, ``(1,)`` -> ``(1, T, C)``; called in whatever grad mode the caller set.
        receptive_field: ``(left, right)`` frames of the model (``encoder.receptive_field()``); ``None``
            (unbounded) is refused.
        chunk_frames: central frames per chunk (the memory knob; overhead is ``(L + R) / chunk_frames``).
        sample_rate: sample rate of the blocks / target rate of the file.
        feature_context_frames: extra frames each feature depends on, per side (4 for Δ + ΔΔ).
    """
    if receptive_field is None:
        raise ValueError("receptive_field is None (unbounded context, e.g. BLSTM or full attention): chunked "
                         "inference would not match whole-utterance inference")
    left, right = (int(v) for v in receptive_field)
    if left < 0 or right < 0 or feature_context_frames < 0:
        raise ValueError(f"receptive_field {receptive_field} and feature_context_frames "
                         f"{feature_context_frames} must be >= 0")
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    context = feature_context_frames
    shift = frame_shift_samples(sample_rate)
    buffer = _SampleBuffer(_blocks(audio, chunk_frames * shift, sample_rate))

    first = 0
    total: int | None = None            # frames in the recording, known once the audio is exhausted
    while total is None or first < total:
        # Read far enough for the chunk's last frame plus right context (or to the end of the audio).
        wanted_end = first + chunk_frames + right + context
        buffer.fill_to(frame_span_samples(0, wanted_end, sample_rate)[1])
        if buffer.exhausted:
            total = num_frames(buffer.end, sample_rate)
        last = first + chunk_frames if total is None else min(first + chunk_frames, total)
        if last <= first:
            break
        limit = math.inf if total is None else total
        model_lo, model_hi = max(0, first - left), int(min(last + right, limit))
        feat_lo, feat_hi = max(0, model_lo - context), int(min(model_hi + context, limit))

        start_sample, end_sample = frame_span_samples(feat_lo, feat_hi, sample_rate)
        feats = torch.as_tensor(feature_fn(buffer.slice(start_sample, end_sample)))
        if feats.ndim != 2 or feats.shape[0] != feat_hi - feat_lo:
            raise ValueError(f"feature_fn returned shape {tuple(feats.shape)} for {end_sample - start_sample} "
                             f"samples; expected ({feat_hi - feat_lo}, F) (snip_edges frame count)")
        feats = feats[model_lo - feat_lo:model_hi - feat_lo]
        logits = frame_fn(feats[None], torch.tensor([feats.shape[0]]))
        if logits.ndim != 3 or logits.shape[:2] != (1, feats.shape[0]):
            raise ValueError(f"frame_fn returned shape {tuple(logits.shape)} for input {tuple(feats[None].shape)}; "
                             f"expected (1, {feats.shape[0]}, C)")
        logger.debug("chunk frames [%d, %d) computed on [%d, %d)", first, last, model_lo, model_hi)
        yield first, logits[0, first - model_lo:last - model_lo]
        # Samples before the next chunk's earliest feature frame are never needed again.
        buffer.drop_before(max(0, last - left - context) * shift)
        first = last


def iter_chunked_predictions(
    audio: AudioSource,
    *,
    feature_fn: FeatureFn,
    frame_fn: FrameFn,
    receptive_field: tuple[int, int] | None,
    chunk_frames: int = 6000,
    sample_rate: int = 16000,
    feature_context_frames: int = 0,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_frame, labels (n,) int64)``: the argmax of :func:`iter_chunked_logits`'s chunks.

    Same arguments as :func:`iter_chunked_logits`. Frames are yielded exactly once, in order, and their
    total is ``num_frames(N)`` (nothing at all for audio shorter than one 25 ms window).
    """
    for first, logits in iter_chunked_logits(
            audio, feature_fn=feature_fn, frame_fn=frame_fn, receptive_field=receptive_field,
            chunk_frames=chunk_frames, sample_rate=sample_rate, feature_context_frames=feature_context_frames):
        yield first, logits.argmax(dim=-1).cpu().numpy()


def runs_to_ctm(utt: str, labels: Sequence[str], frame_shift: float = 0.01, *,
                time_offset: float = 0.0) -> list[str]:
    """Merge runs of equal frame labels into CTM lines ``"UTT 1 START DUR LABEL"``.

    Frame ``i`` is reported as ``[i · frame_shift, (i + 1) · frame_shift)`` (plus ``time_offset``), so the
    runs tile the recording without gaps; this is Kaldi's ``ali-to-phones --ctm-output`` convention. Note
    that a frame's label is the phone under its *centre* ``i · 10 + 12.5`` ms: reading such a CTM back
    with a centre-based rule shifts labels by one frame. ``time_offset=0.0075`` centres each frame's
    10 ms span on its window centre, which makes the CTM invertible by the centre rule.
    Times are printed with as many decimals as ``frame_shift`` / ``time_offset`` need (2 for 10 ms).

    Example:
        >>> runs_to_ctm("u", ["a", "a", "b"])
        ['u 1 0.00 0.02 a', 'u 1 0.02 0.01 b']
    """
    if frame_shift <= 0:
        raise ValueError(f"frame_shift must be positive, got {frame_shift}")
    decimals = max(_decimals(frame_shift), _decimals(time_offset))
    lines: list[str] = []
    run_start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[run_start]:
            start = run_start * frame_shift + time_offset
            duration = (i - run_start) * frame_shift
            lines.append(f"{utt} 1 {start:.{decimals}f} {duration:.{decimals}f} {labels[run_start]}")
            run_start = i
    return lines


def _decimals(value: float, max_decimals: int = 6) -> int:
    """Smallest number of decimals (>= 2) that prints ``value`` exactly, e.g. 0.01 -> 2, 0.0075 -> 4."""
    for decimals in range(2, max_decimals + 1):
        if abs(round(value, decimals) - value) < 1e-12:
            return decimals
    return max_decimals


def _blocks(audio: AudioSource, block_samples: int, sample_rate: int) -> Iterator[Tensor]:
    """Consecutive non-overlapping 1-D float32 blocks from a path or a block iterable."""
    if isinstance(audio, (str, os.PathLike)):
        _, file_rate, _ = audio_info(str(audio), sample_rate)
        if file_rate != sample_rate:
            logger.warning("%s: %d Hz resampled to %d Hz block by block; labels near block edges may differ "
                           "slightly from whole-file inference", audio, file_rate, sample_rate)
        source: Iterable = iter_audio_blocks(audio, block_samples, 0, sample_rate)
    else:
        source = audio
    position = 0
    for item in source:
        if isinstance(item, tuple):
            start, block = item
            block = _as_samples(block)
            if start > position:
                raise ValueError(f"audio blocks leave a gap: block starts at sample {start}, expected {position}")
            block = block[position - start:]                     # skip the overlap with what was read
        else:
            block = _as_samples(item)
        position += block.shape[0]
        if block.shape[0]:
            yield block


def _as_samples(block: Tensor | np.ndarray) -> Tensor:
    samples = torch.as_tensor(block, dtype=torch.float32)
    if samples.ndim != 1:
        raise ValueError(f"audio blocks must be 1-D (mono samples), got shape {tuple(samples.shape)}")
    return samples


class _SampleBuffer:
    """The part of the sample stream still needed: absolute samples ``[start, end)``."""

    def __init__(self, blocks: Iterator[Tensor]) -> None:
        self._blocks = blocks
        self._data = torch.zeros(0)
        self.start = 0
        self.exhausted = False

    @property
    def end(self) -> int:
        return self.start + self._data.shape[0]

    def fill_to(self, end: int) -> None:
        """Read blocks until ``end`` samples are buffered or the stream ends."""
        pieces = [self._data]
        available = self.end
        while available < end and not self.exhausted:
            block = next(self._blocks, None)
            if block is None:
                self.exhausted = True
            else:
                pieces.append(block)
                available += block.shape[0]
        if len(pieces) > 1:
            self._data = torch.cat(pieces)

    def slice(self, start: int, end: int) -> Tensor:
        if start < self.start or end > self.end:
            raise AssertionError(f"samples [{start}, {end}) not buffered ([{self.start}, {self.end}))")
        return self._data[start - self.start:end - self.start]

    def drop_before(self, sample: int) -> None:
        if sample > self.start:
            self._data = self._data[sample - self.start:].clone()   # clone: release the old storage
            self.start = sample
