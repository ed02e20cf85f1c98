"""Frame arithmetic (Kaldi snip_edges=True) against the formula and torchaudio's actual frame counts."""
from __future__ import annotations

import pytest
import torch
import torchaudio.compliance.kaldi as kaldi

from speechattn.data.framing import (frame_centre_seconds, frame_shift_samples, frame_span_samples,
                                         frame_start_seconds, frame_window_samples, num_frames)


@pytest.mark.parametrize("num_samples, expected", [
    (0, 0), (1, 0), (399, 0),    # shorter than one 400-sample window: no frame at all
    (400, 1), (559, 1),          # a window plus less than one shift
    (560, 2),                    # exactly one more shift
    (16000, 98),                 # 1 s: 1 + (16000 - 400) // 160
    (16160, 99),
])
def test_num_frames_edge_cases(num_samples: int, expected: int) -> None:
    assert num_frames(num_samples) == expected


@pytest.mark.parametrize("num_samples", [400, 401, 559, 560, 561, 4000, 12345])
def test_num_frames_matches_torchaudio_row_count(num_samples: int) -> None:
    waveform = torch.randn(1, num_samples)
    assert kaldi.fbank(waveform, num_mel_bins=23).shape[0] == num_frames(num_samples)


@pytest.mark.parametrize("sample_rate", [8000, 22050, 44100])
def test_num_frames_other_rates_match_torchaudio(sample_rate: int) -> None:
    window, shift = frame_window_samples(sample_rate), frame_shift_samples(sample_rate)
    assert window == int(sample_rate * 25 * 0.001) and shift == int(sample_rate * 10 * 0.001)
    for n in (window, window + shift - 1, window + shift, 3 * sample_rate + 7):
        rows = kaldi.fbank(torch.randn(1, n), num_mel_bins=23, sample_frequency=float(sample_rate)).shape[0]
        assert num_frames(n, sample_rate) == rows
    assert num_frames(window - 1, sample_rate) == 0


def test_window_and_shift_at_16k() -> None:
    assert frame_window_samples() == 400
    assert frame_shift_samples() == 160


@pytest.mark.parametrize("first, last", [(0, 1), (0, 98), (10, 20), (97, 98), (5, 6)])
def test_frame_span_gives_exactly_those_frames(first: int, last: int) -> None:
    start, end = frame_span_samples(first, last)
    assert start == first * 160
    assert num_frames(end - start) == last - first
    # One sample less would lose the last frame: the span is minimal.
    assert num_frames(end - start - 1) == last - first - 1


def test_frame_span_empty_and_invalid() -> None:
    assert frame_span_samples(7, 7) == (1120, 1120)
    with pytest.raises(ValueError):
        frame_span_samples(5, 4)
    with pytest.raises(ValueError):
        frame_span_samples(-1, 3)


def test_frame_times() -> None:
    assert frame_centre_seconds(0) == pytest.approx(0.0125)
    assert frame_centre_seconds(10) == pytest.approx(0.1125)
    assert frame_start_seconds(10) == pytest.approx(0.1)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        num_frames(-1)
    with pytest.raises(ValueError):
        num_frames(1000, sample_rate=0)
    with pytest.raises(ValueError):
        num_frames(1000, frame_shift_ms=0.0)
