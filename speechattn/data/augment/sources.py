"""Where additive noise comes from: training speech in memory (babble, non-speech), or noise files.

- :class:`SpeechBank`: the training recordings as 16-bit PCM in memory with their speakers. Babble is
  other speakers' speech from it; non-speech noise is its pauses (:class:`SegmentPool`).
- :class:`SegmentPool`: sample ranges of the bank's recordings (pauses from alignments or energy,
  :mod:`speechattn.data.augment.nonspeech`); a noise of any length is made by concatenating random
  ranges, each brought to the same power, with short crossfades.
- :class:`FileNoisePool`: noise files on disk (MUSAN parts, RIRS_NOISES point-source noises); a random
  window of a random file is read with soundfile without decoding the whole file.

Every draw takes a ``numpy.random.Generator``: the augmenter passes one seeded by ``(seed, epoch,
index)``, so a draw never depends on what was drawn before (exact resume, any number of workers).

Handling of short sources (documented, not an error): a recording or noise file shorter than the crop is
looped (:func:`~speechattn.data.augment.mixing.loop_to_length`), as Kaldi and WeSpeaker do; sources
shorter than ``min_duration`` seconds are left out when the pool is built (counted and logged with the
first one's name), because looping a few hundred samples makes a buzz, not a noise.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from torch import Tensor

from speechattn.data.audio import AudioError, load_audio
from speechattn.data.kaldi_dir import KaldiDataDir
from speechattn.data.augment.mixing import SILENT_POWER, concatenate_with_crossfade, loop_to_length, mean_power

log = logging.getLogger(__name__)

__all__ = ["SpeechBank", "SegmentPool", "NoiseFile", "FileNoisePool"]

_INT16_SCALE = 32767.0


def _to_int16(waveform: Tensor) -> np.ndarray:
    return np.clip(np.rint(waveform.numpy() * _INT16_SCALE), -32768, 32767).astype(np.int16)


class SpeechBank:
    """Training recordings in memory (int16: 2 bytes a sample, ~256 MB for speechocean762's 2,000
    training utterances) with their speaker, for babble and non-speech noise.

    Args:
        utts: utterance ids.
        speakers: the speaker of each utterance.
        audio: each utterance's waveform ``(N,)`` float in [-1, 1] (converted to int16) or int16 array.
        sample_rate: their sample rate.

    Example:
        >>> bank = SpeechBank(["a", "b"], ["s1", "s2"], [torch.zeros(800), torch.ones(1600) * 0.5])
        >>> rng = np.random.default_rng(0)
        >>> bank.draw_other_speaker(rng, 1000, exclude_speaker="s1")[:3]
        tensor([0.5000, 0.5000, 0.5000])
    """

    def __init__(self, utts: Sequence[str], speakers: Sequence[str], audio: Sequence[Tensor | np.ndarray],
                 sample_rate: int = 16000) -> None:
        if not len(utts) == len(speakers) == len(audio):
            raise ValueError(f"{len(utts)} utterances, {len(speakers)} speakers, {len(audio)} waveforms")
        if not utts:
            raise ValueError("empty speech bank")
        self.utts = list(utts)
        self.speakers = list(speakers)
        self.audio = [a if isinstance(a, np.ndarray) and a.dtype == np.int16 else _to_int16(torch.as_tensor(a))
                      for a in audio]
        self.sample_rate = sample_rate
        self.index = {u: i for i, u in enumerate(self.utts)}
        self._by_speaker: dict[str, list[int]] = {}
        for i, spk in enumerate(self.speakers):
            self._by_speaker.setdefault(spk, []).append(i)
        self.speaker_list = sorted(self._by_speaker)
        self._speaker_position = {spk: k for k, spk in enumerate(self.speaker_list)}

    @classmethod
    def from_data_dir(cls, data_dir: str | os.PathLike, utts: Iterable[str] | None = None,
                      sample_rate: int = 16000, allow_pipes: bool = False) -> "SpeechBank":
        """Load ``wav.scp`` + ``utt2spk`` of a Kaldi data dir (all utterances, or ``utts``).

        Errors name ``wav.scp``'s line (:class:`~speechattn.data.audio.AudioError`). ``utt2speed``
        copies are refused: the bank holds original recordings (speed is applied per crop).
        """
        data = KaldiDataDir.load(data_dir, require=("wav.scp", "utt2spk"))
        if (Path(data_dir) / "utt2speed").is_file():
            raise AudioError(f"{Path(data_dir) / 'utt2speed'}:1: speed-perturbed data dir; give the original one "
                             f"(speed perturbation is applied per crop)")
        wanted = list(data.utterances) if utts is None else list(utts)
        line_of = {u: i for i, u in enumerate(data.wav_scp, start=1)}
        audio, speakers = [], []
        for utt in wanted:
            where = f"{Path(data_dir) / 'wav.scp'}:{line_of.get(utt, 0)}"
            if utt not in data.wav_scp:
                raise AudioError(f"{where}: utterance '{utt}' is not in wav.scp")
            audio.append(_to_int16(load_audio(data.wav_scp[utt], sample_rate, allow_pipes=allow_pipes, where=where)))
            speakers.append(data.utt2spk[utt])
        log.info("speech bank: %d recordings of %d speakers, %.1f min, %.0f MB", len(wanted), len(set(speakers)),
                 sum(a.size for a in audio) / sample_rate / 60, sum(a.nbytes for a in audio) / 2**20)
        return cls(wanted, speakers, audio, sample_rate)

    def __len__(self) -> int:
        return len(self.utts)

    @property
    def num_speakers(self) -> int:
        return len(self.speaker_list)

    def waveform(self, i: int, start: int = 0, end: int | None = None) -> Tensor:
        """Samples ``[start, end)`` of recording ``i`` as float32 ``(n,)``."""
        return torch.from_numpy(self.audio[i][start:end].astype(np.float32) / _INT16_SCALE)

    def draw_other_speaker(self, rng: np.random.Generator, length: int, exclude_speaker: str | None) -> Tensor:
        """``length`` samples of a random recording of a random speaker other than ``exclude_speaker``,
        from a random offset (looped when the recording is shorter)."""
        skip = self._speaker_position.get(exclude_speaker) if exclude_speaker is not None else None
        choices = self.num_speakers - (skip is not None)
        if choices == 0:
            raise ValueError(f"babble needs a speaker other than '{exclude_speaker}'; the bank has only that one")
        k = int(rng.integers(choices))
        if skip is not None and k >= skip:
            k += 1  # uniform over the other speakers, without a rejection loop
        speaker = self.speaker_list[k]
        utts = self._by_speaker[speaker]
        i = utts[int(rng.integers(len(utts)))]
        n = self.audio[i].size
        offset = int(rng.integers(n)) if n > length else 0
        return loop_to_length(self.waveform(i), length, offset)


class SegmentPool:
    """Sample ranges of a :class:`SpeechBank`'s recordings used as noise (their pauses).

    Args:
        bank: the recordings.
        ranges: utterance id -> ``[(start, end), ...]`` sample ranges (from
            :mod:`~speechattn.data.augment.nonspeech`); ranges shorter than ``min_duration`` s or silent
            are left out (counted in the log).
        crossfade: samples of linear crossfade between concatenated ranges (10 ms).

    ``draw(rng, length) -> (length,)``: random ranges, each scaled to unit power, joined with crossfades
    until ``length`` samples are reached (a single long-enough range is used as a window).
    """

    def __init__(self, bank: SpeechBank, ranges: Mapping[str, Sequence[tuple[int, int]]],
                 min_duration: float = 0.2, crossfade: int = 160) -> None:
        self.bank = bank
        self.crossfade = crossfade
        min_samples = max(int(min_duration * bank.sample_rate), crossfade + 1)
        self.ranges: list[tuple[int, int, int]] = []
        short = silent = 0
        for utt, spans in ranges.items():
            if utt not in bank.index:
                raise KeyError(f"non-speech ranges given for '{utt}', which is not in the speech bank")
            i = bank.index[utt]
            for start, end in spans:
                end = min(end, bank.audio[i].size)
                if end - start < min_samples:
                    short += 1
                elif mean_power(bank.waveform(i, start, end)) < SILENT_POWER:
                    silent += 1  # digital silence cannot be brought to an SNR
                else:
                    self.ranges.append((i, start, end))
        if short or silent:
            log.info("non-speech pool: %d ranges kept, %d shorter than %.2f s and %d digitally silent left out",
                     len(self.ranges), short, min_duration, silent)
        if not self.ranges:
            raise ValueError(f"no usable non-speech range (of {short + silent}, {short} shorter than "
                             f"{min_duration} s, {silent} silent)")
        self.total_samples = sum(e - s for _, s, e in self.ranges)

    def __len__(self) -> int:
        return len(self.ranges)

    def _piece(self, k: int) -> Tensor:
        i, start, end = self.ranges[k]
        piece = self.bank.waveform(i, start, end)
        return piece / math.sqrt(mean_power(piece))

    def draw(self, rng: np.random.Generator, length: int) -> Tensor:
        pieces: list[Tensor] = []
        total = 0
        while total < length:
            piece = self._piece(int(rng.integers(len(self.ranges))))
            if not pieces and piece.numel() >= length:
                offset = int(rng.integers(piece.numel() - length + 1))
                return piece[offset:offset + length]
            pieces.append(piece)
            total += piece.numel() - (self.crossfade if len(pieces) > 1 else 0)
        return concatenate_with_crossfade(pieces, self.crossfade)[:length]


@dataclass(frozen=True)
class NoiseFile:
    """A noise recording on disk: ``num_samples`` and ``sample_rate`` are the file's own (from its header)."""

    id: str
    path: Path
    num_samples: int
    sample_rate: int
    where: str = ""   # "list:line" that named it, for errors


class FileNoisePool:
    """Noise files read in random windows (MUSAN ``noise``/``music``/``speech``, point-source noises).

    Files shorter than ``min_duration`` s are left out (counted; the first is named in the log). A window
    longer than its file is the file looped. Files at another rate than ``sample_rate`` are read at theirs
    and resampled (noise has no timing to preserve).

    Example:
        >>> import tempfile, soundfile as sf
        >>> path = Path(tempfile.mkdtemp()) / "n.wav"
        >>> sf.write(path, np.full(8000, 0.1, dtype=np.float32), 16000)
        >>> pool = FileNoisePool([NoiseFile("n", path, 8000, 16000)])
        >>> pool.draw(np.random.default_rng(0), 20000).shape
        torch.Size([20000])
    """

    def __init__(self, files: Sequence[NoiseFile], sample_rate: int = 16000, min_duration: float = 0.2,
                 name: str = "noise") -> None:
        self.sample_rate = sample_rate
        self.name = name
        too_short = [f for f in files if f.num_samples < min_duration * f.sample_rate]
        self.files = [f for f in files if f.num_samples >= min_duration * f.sample_rate]
        if too_short:
            log.warning("%s pool: %d of %d files shorter than %.2f s left out (first: %s)", name, len(too_short),
                        len(files), min_duration, too_short[0].path)
        if not self.files:
            raise ValueError(f"{name} pool: no file of at least {min_duration} s among {len(files)}")

    def __len__(self) -> int:
        return len(self.files)

    def _read(self, f: NoiseFile, start: int, frames: int) -> Tensor:
        prefix = f"{f.where}: {f.path}" if f.where else str(f.path)
        try:
            data, rate = sf.read(f.path, start=start, frames=frames, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise AudioError(f"{prefix}: cannot read noise: {e}") from e
        if data.shape[0] == 0:
            raise AudioError(f"{prefix}: no samples at offset {start} (file shorter than its header says)")
        if not np.isfinite(data).all():
            raise AudioError(f"{prefix}: non-finite (NaN/inf) noise samples")
        mono = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]))
        if rate != self.sample_rate:
            mono = AF.resample(mono, rate, self.sample_rate)
        return mono

    def draw(self, rng: np.random.Generator, length: int) -> Tensor:
        """``length`` samples (at the pool's rate) of a random file from a random offset."""
        f = self.files[int(rng.integers(len(self.files)))]
        native = math.ceil(length * f.sample_rate / self.sample_rate)
        if f.num_samples > native:
            start = int(rng.integers(f.num_samples - native + 1))
            noise = self._read(f, start, native)
            return loop_to_length(noise, length) if noise.numel() < length else noise[:length]
        return loop_to_length(self._read(f, 0, f.num_samples), length, int(rng.integers(max(1, length))))
