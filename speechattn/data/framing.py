"""Frame arithmetic shared by features, labels and inference (Kaldi ``snip_edges=True``).

At 16 kHz with 25 ms windows and a 10 ms shift, frame ``i`` covers samples ``[160 i, 160 i + 400)``, i.e.
``[10 i, 10 i + 25)`` ms, and its label is the phone under its centre, ``10 i + 12.5`` ms. A signal of
``N`` samples has ``0`` frames if ``N < 400`` and ``1 + (N - 400) // 160`` otherwise: no padding, the tail
shorter than a shift is dropped, exactly as Kaldi's ``compute-fbank-feats`` does by default.

Example:
    >>> num_frames(16000)                 # one second
    98
    >>> frame_span_samples(10, 20)        # samples needed for frames 10..19
    (1600, 3440)
    >>> frame_centre_seconds(0)
    0.0125
"""
from __future__ import annotations


def frame_window_samples(sample_rate: int = 16000, frame_length_ms: float = 25.0) -> int:
    """Window length in samples (400 at 16 kHz / 25 ms), rounded like Kaldi's ``WindowSize()``."""
    _check_rate(sample_rate)
    window = int(sample_rate * frame_length_ms * 0.001)
    if window <= 0:
        raise ValueError(f"frame_length_ms={frame_length_ms} gives an empty window at {sample_rate} Hz")
    return window


def frame_shift_samples(sample_rate: int = 16000, frame_shift_ms: float = 10.0) -> int:
    """Frame shift in samples (160 at 16 kHz / 10 ms), rounded like Kaldi's ``WindowShift()``."""
    _check_rate(sample_rate)
    shift = int(sample_rate * frame_shift_ms * 0.001)
    if shift <= 0:
        raise ValueError(f"frame_shift_ms={frame_shift_ms} gives an empty shift at {sample_rate} Hz")
    return shift


def num_frames(
    num_samples: int, sample_rate: int = 16000, frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0
) -> int:
    """Number of frames of a ``num_samples`` signal: ``0`` if shorter than a window, else
    ``1 + (num_samples - window) // shift`` (Kaldi ``snip_edges=True``)."""
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    window = frame_window_samples(sample_rate, frame_length_ms)
    shift = frame_shift_samples(sample_rate, frame_shift_ms)
    if num_samples < window:
        return 0
    return 1 + (num_samples - window) // shift


def frame_span_samples(
    first_frame: int,
    last_frame_exclusive: int,
    sample_rate: int = 16000,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
) -> tuple[int, int]:
    """Sample range ``[start, end)`` needed to compute exactly frames ``[first_frame, last_frame_exclusive)``.

    ``num_frames(end - start) == last_frame_exclusive - first_frame``, so features computed on
    ``waveform[start:end]`` are those frames (long-form chunked inference relies on this). An empty frame
    range gives an empty sample range at the first frame's start.
    """
    if first_frame < 0 or last_frame_exclusive < first_frame:
        raise ValueError(f"invalid frame range [{first_frame}, {last_frame_exclusive})")
    window = frame_window_samples(sample_rate, frame_length_ms)
    shift = frame_shift_samples(sample_rate, frame_shift_ms)
    start = first_frame * shift
    if last_frame_exclusive == first_frame:
        return start, start
    return start, (last_frame_exclusive - 1) * shift + window


def frame_start_seconds(index: int, frame_shift_ms: float = 10.0) -> float:
    """Start time of frame ``index`` in seconds (``10 i`` ms)."""
    return index * frame_shift_ms * 0.001


def frame_centre_seconds(index: int, frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0) -> float:
    """Centre of frame ``index`` in seconds (``10 i + 12.5`` ms): the time whose phone labels the frame."""
    return (index * frame_shift_ms + 0.5 * frame_length_ms) * 0.001


def _check_rate(sample_rate: int) -> None:
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
