"""Audio loading for wav.scp entries: files via soundfile, optional shell pipes, resampling, block reads.

Resampling uses ``torchaudio.functional.resample`` (windowed-sinc, Hann): it is pure torch (no numpy round
trip, same result on every machine), and its output length is exactly ``ceil(N * target / rate)``, which
:func:`audio_info` reproduces without decoding so that data preparation counts the same frames as
feature extraction.

Example:
    >>> import tempfile, numpy as np, soundfile as sf
    >>> path = tempfile.mktemp(suffix=".flac")
    >>> sf.write(path, np.zeros(8000, dtype="float32"), 8000)
    >>> load_audio(path).shape        # 8 kHz is resampled to 16 kHz
    torch.Size([16000])
    >>> audio_info(path)
    (16000, 8000, 1)
"""
from __future__ import annotations

import io
import logging
import math
import re
import subprocess
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from speechattn.data.kaldi_io import is_command

logger = logging.getLogger(__name__)


class AudioError(ValueError):
    """Unreadable or unusable audio; the message names the wav.scp entry ("file:line") when known."""


# Float audio is expected in [-1, 1]. A peak above this is not a loud recording but a scale error (float
# samples written in integer units, e.g. +-32768): refused rather than turned into features silently.
# Slight overshoot (resampling, a gain of a few dB) stays accepted.
MAX_FLOAT_PEAK = 2.0

# libsndfile's header log line for a data chunk whose declared size exceeds the bytes in the file, e.g.
# "data : 32000 (should be 15978)" (WAV/RF64) or "SSND : ..." (AIFF): the file was cut short.
_SHORT_DATA_CHUNK = re.compile(r"^\s*(data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
# Streaming writers put a placeholder size in the header before the length is known.
_PLACEHOLDER_SIZES = {0, 0xFFFFFFFF, 0x7FFFFFFF}


def _prefix(spec: str, where: str) -> str:
    return f"{where}: {spec}: " if where else f"{spec}: "


def _is_pipe(spec: str) -> bool:
    return spec.rstrip().endswith("|")


def _check_complete(f: sf.SoundFile, prefix: str) -> None:
    """AudioError if the header promises more audio than the file holds (a truncated copy or download).

    libsndfile reads such a WAV up to where it ends without an error, so its first part would silently be
    used as the whole utterance.
    """
    match = _SHORT_DATA_CHUNK.search(f.extra_info or "")
    if match is None:
        return
    declared, present = int(match.group(2)), int(match.group(3))
    if declared in _PLACEHOLDER_SIZES or declared <= present:
        return
    raise AudioError(f"{prefix}truncated file: the header declares {declared} bytes of audio but only {present} "
                     f"are present ({100 * present / declared:.0f} %); re-copy or re-download it")


def _check_range(data: np.ndarray, f: sf.SoundFile, prefix: str) -> None:
    """AudioError for float audio far outside [-1, 1] (integer-scaled floats); integer PCM cannot be."""
    if f.subtype not in ("FLOAT", "DOUBLE") or data.size == 0 or not np.isfinite(data).all():
        return  # NaN/inf are reported by the caller
    peak = float(np.abs(data).max())
    if peak > MAX_FLOAT_PEAK:
        hint = ("integer-scaled floats? divide by 32768 or re-export as PCM" if peak > 100
                else "normalise it to [-1, 1]")
        raise AudioError(f"{prefix}{f.subtype.lower()} samples reach {peak:.6g}, far outside [-1, 1] (limit "
                         f"{MAX_FLOAT_PEAK:g}): {hint}")


def resampled_length(num_samples: int, sample_rate: int, target_sample_rate: int) -> int:
    """Length after ``torchaudio.functional.resample``: ``ceil(N * target / rate)``, in exact integers."""
    if sample_rate == target_sample_rate:
        return num_samples
    return -(-num_samples * target_sample_rate // sample_rate)


def _run_pipe(spec: str, prefix: str) -> bytes:
    command = spec.rstrip()[:-1]
    try:
        result = subprocess.run(command, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    except OSError as e:
        raise AudioError(f"{prefix}cannot run pipe command: {e}") from e
    if result.returncode != 0:
        stderr = result.stderr.decode(errors="replace").strip()[-500:]
        raise AudioError(f"{prefix}pipe command failed with exit code {result.returncode}: {stderr}")
    return result.stdout


def _open_source(spec: str, allow_pipes: bool, prefix: str) -> str | io.BytesIO:
    """Path (checked to exist) or the WAV bytes written by a pipe."""
    if is_command(spec) and not _is_pipe(spec):  # "| cmd", "cmd |:OFFSET", "-": never meaningful for audio
        raise AudioError(f"{prefix}not an audio file or a 'cmd |' pipe (offsets into commands and stdin are "
                         f"not supported)")
    if _is_pipe(spec):
        if not allow_pipes:
            raise AudioError(f"{prefix}shell pipes in wav.scp are refused (allow_pipes=False); "
                             f"convert the audio to files or enable pipes explicitly")
        return io.BytesIO(_run_pipe(spec, prefix))
    path = Path(spec.strip())
    if not path.is_file():
        raise AudioError(f"{prefix}audio file not found" if not path.exists() else f"{prefix}not a regular file")
    return str(path)


def _to_mono(data: np.ndarray, prefix: str) -> np.ndarray:
    """(N, C) -> (N,) as the mean of channels (logged: the caller may have wanted one channel)."""
    if data.shape[1] > 1:
        logger.warning("%s%d channels, using their mean", prefix, data.shape[1])
    return data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]


# Rate pairs already announced at INFO: a corpus at 8 kHz would otherwise log one line per file.
_announced_resampling: set[tuple[int, int]] = set()


def _resample(waveform: torch.Tensor, sample_rate: int, target_sample_rate: int, prefix: str) -> torch.Tensor:
    if sample_rate == target_sample_rate:
        return waveform
    pair = (sample_rate, target_sample_rate)
    if pair in _announced_resampling:
        logger.debug("%sresampling %d Hz -> %d Hz", prefix, sample_rate, target_sample_rate)
    else:
        _announced_resampling.add(pair)
        logger.info("%sresampling %d Hz -> %d Hz (further files at %d Hz: logged at DEBUG level)", prefix,
                    sample_rate, target_sample_rate, sample_rate)
    return AF.resample(waveform, sample_rate, target_sample_rate)


def load_audio(spec: str, target_sample_rate: int = 16000, *, allow_pipes: bool = False, min_samples: int = 400,
               where: str = "") -> torch.Tensor:
    """Load a wav.scp value as a mono float32 waveform ``(N,)`` at ``target_sample_rate``, in [-1, 1].

    ``spec`` is a path (any format soundfile reads: FLAC, WAV, ...) or a shell pipe ``"cmd |"`` writing a
    WAV file to stdout (refused unless ``allow_pipes``). ``where`` is the "file:line" of the wav.scp entry,
    included in every error. Raises :class:`AudioError` for a missing/unreadable file, a file shorter than
    its header says (truncated), empty audio, NaN/inf samples, float samples beyond ``MAX_FLOAT_PEAK`` in
    magnitude, or fewer than ``min_samples`` samples after resampling (400 = one 25 ms window).
    Multi-channel audio is averaged to mono (logged); other sample rates are resampled (logged).
    """
    prefix = _prefix(spec, where)
    source = _open_source(spec, allow_pipes, prefix)
    try:
        with sf.SoundFile(source) as f:
            if isinstance(source, str):  # a pipe's WAV header has placeholder sizes (streamed)
                _check_complete(f, prefix)
            data, sample_rate = f.read(dtype="float32", always_2d=True), f.samplerate
            _check_range(data, f, prefix)
    except (sf.LibsndfileError, RuntimeError, EOFError) as e:
        raise AudioError(f"{prefix}cannot read audio: {e}") from e
    if data.shape[0] == 0:
        raise AudioError(f"{prefix}empty audio (0 samples)")
    if not np.isfinite(data).all():
        first_bad = int(np.flatnonzero(~np.isfinite(data).all(axis=1))[0])
        raise AudioError(f"{prefix}non-finite (NaN/inf) sample at {first_bad / sample_rate:.3f} s")
    waveform = torch.from_numpy(np.ascontiguousarray(_to_mono(data, prefix)))
    waveform = _resample(waveform, sample_rate, target_sample_rate, prefix)
    if waveform.shape[0] < min_samples:
        raise AudioError(f"{prefix}too short: {waveform.shape[0]} samples at {target_sample_rate} Hz "
                         f"< {min_samples} (one analysis window)")
    return waveform


def audio_info(spec: str, target_sample_rate: int = 16000, *, allow_pipes: bool = False,
               where: str = "") -> tuple[int, int, int]:
    """``(num_samples_at_target_rate, sample_rate, channels)`` from the header, without decoding.

    ``num_samples_at_target_rate`` equals ``load_audio(spec, target_sample_rate).shape[0]``. For a pipe
    (only with ``allow_pipes``) the command has to be run, so it is not cheap.
    """
    prefix = _prefix(spec, where)
    source = _open_source(spec, allow_pipes, prefix)
    try:
        with sf.SoundFile(source) as f:
            if isinstance(source, str):
                _check_complete(f, prefix)
            frames, rate, channels = f.frames, f.samplerate, f.channels
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"{prefix}cannot read audio header: {e}") from e
    num_samples = resampled_length(frames, rate, target_sample_rate)
    return num_samples, rate, channels


def iter_audio_blocks(path: str | Path, block_samples: int, overlap_samples: int = 0,
                      target_sample_rate: int = 16000) -> Iterator[tuple[int, torch.Tensor]]:
    """Read a long file in blocks with bounded memory: yields ``(start_sample, block (n,))``.

    ``block_samples``, ``overlap_samples`` and ``start_sample`` are at ``target_sample_rate``; consecutive
    blocks start ``block_samples - overlap_samples`` apart and share ``overlap_samples`` samples (the last
    block may be shorter). Multi-channel is averaged. If the file's rate differs, each block is read at
    the file's rate and resampled on its own (edges of a block are slightly less accurate than a
    whole-file resample, and a block starts exactly at ``start_sample`` only when
    ``start_sample * rate / target_sample_rate`` is an integer; give the consumer enough overlap).
    A block that cannot be decoded, ends before the length in the header, or contains NaN/inf raises
    :class:`AudioError` with its time offset in seconds.
    """
    if block_samples <= 0 or not 0 <= overlap_samples < block_samples:
        raise ValueError(f"need block_samples > overlap_samples >= 0, got {block_samples}, {overlap_samples}")
    prefix = _prefix(str(path), "")
    source = _open_source(str(path), False, prefix)
    try:
        f = sf.SoundFile(source)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"{prefix}cannot open audio: {e}") from e
    with f:
        _check_complete(f, prefix)
        rate, total = f.samplerate, f.frames
        if total == 0:
            raise AudioError(f"{prefix}empty audio (0 samples)")
        if f.channels > 1:
            logger.warning("%s%d channels, using their mean", prefix, f.channels)
        total_target = resampled_length(total, rate, target_sample_rate)
        hop = block_samples - overlap_samples
        start = 0
        while start < total_target:
            # Native-rate sample range covering target samples [start, start + block_samples).
            native_start = start * rate // target_sample_rate
            native_end = min(total, math.ceil((start + block_samples) * rate / target_sample_rate))
            offset_s = native_start / rate
            try:
                f.seek(native_start)
                data = f.read(native_end - native_start, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as e:
                raise AudioError(f"{prefix}corrupt audio block at {offset_s:.3f} s: {e}") from e
            if data.shape[0] < native_end - native_start:
                raise AudioError(f"{prefix}corrupt audio block at {offset_s:.3f} s: got {data.shape[0]} of "
                                 f"{native_end - native_start} samples (file shorter than its header says)")
            finite = np.isfinite(data).all(axis=1)
            if not finite.all():
                bad_s = (native_start + int(np.flatnonzero(~finite)[0])) / rate
                raise AudioError(f"{prefix}corrupt audio block at {offset_s:.3f} s: non-finite sample at "
                                 f"{bad_s:.3f} s")
            _check_range(data, f, f"{prefix}block at {offset_s:.3f} s: ")
            mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
            block = torch.from_numpy(np.ascontiguousarray(mono))
            if rate != target_sample_rate:
                block = AF.resample(block, rate, target_sample_rate)
                block = block[:min(block_samples, total_target - start)]
            yield start, block
            if start + block_samples >= total_target:
                break
            start += hop
