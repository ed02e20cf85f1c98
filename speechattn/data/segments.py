"""Audio of ``segments`` entries (``UTT RECORDING START END``, seconds; Kaldi's ``extract-segments``).

Consecutive segments usually share a recording, so the last recording read is kept.

Example:
    >>> reader = SegmentReader(data, sample_rate=16000)        # data: a KaldiDataDir with segments  # doctest: +SKIP
    >>> waveform = reader("seg1")                              # samples [round(16000 START), round(16000 END))  # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path

from torch import Tensor

from speechattn.data.audio import AudioError, load_audio
from speechattn.data.kaldi_dir import KaldiDataDir

__all__ = ["SegmentReader"]


class SegmentReader:
    """``reader(utt) -> waveform (n,)`` of a segment of ``data`` (which must have ``segments``).

    ``where_dir`` names the directory in error messages (default ``data.path``). A recording missing from
    ``wav.scp`` or a segment outside its recording raises :class:`AudioError` (the utterance is skipped and
    counted); a segment shorter than one analysis window is the caller's to refuse.
    """

    def __init__(self, data: KaldiDataDir, sample_rate: int, *, allow_pipes: bool = False,
                 where_dir: Path | None = None) -> None:
        if data.segments is None:
            raise ValueError(f"{data.path}: no segments file")
        self.data = data
        self.sample_rate = sample_rate
        self.allow_pipes = allow_pipes
        self.where_dir = Path(where_dir) if where_dir is not None else Path(data.path)
        self._wav_lines = {key: i for i, key in enumerate(data.wav_scp, start=1)}
        self._cache: tuple[str, Tensor] | None = None

    def __call__(self, utt: str) -> Tensor:
        recording, start, end = self.data.segments[utt]
        if recording not in self.data.wav_scp:
            raise AudioError(f"{self.where_dir / 'segments'}: recording '{recording}' of '{utt}' is not in wav.scp")
        if self._cache is None or self._cache[0] != recording:
            where = f"{self.where_dir / 'wav.scp'}:{self._wav_lines[recording]}"
            self._cache = (recording, load_audio(self.data.wav_scp[recording], self.sample_rate,
                                                 allow_pipes=self.allow_pipes, min_samples=0, where=where))
        audio = self._cache[1]
        first = int(round(start * self.sample_rate))
        last = audio.numel() if end == -1 else min(audio.numel(), int(round(end * self.sample_rate)))
        if first >= last:
            raise AudioError(f"{self.where_dir / 'segments'}: segment '{utt}' [{start}, {end}] s is outside "
                             f"recording '{recording}' ({audio.numel() / self.sample_rate:.2f} s)")
        return audio[first:last]
