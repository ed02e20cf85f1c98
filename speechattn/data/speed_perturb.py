"""Speed-perturbed copies of a Kaldi data directory, like Kaldi's ``utils/data/perturb_data_dir_speed_3way.sh``.

Kaldi writes ``sox ... speed 0.9 |`` pipes into ``wav.scp``; speechattn refuses pipes by default, so the
copy keeps the plain audio path and records the factor in ``utt2speed`` (``UTT FACTOR``), which
``speechattn-compute-features`` applies right after reading the audio (``torchaudio.functional.speed``:
resampling, so tempo and pitch change together, as with ``sox speed``).

Utterance and speaker IDs get Kaldi's prefix (``sp0.9-UTT``, ``sp0.9-SPK``: a perturbed speaker is a new
speaker for per-speaker CMVN). Frame labels are stretched in time instead of re-aligned: frame ``i`` of
the copy takes the label of the original frame whose centre is nearest to ``factor ×`` its own centre
(at most half a frame, 5 ms, from the exact time; the labels themselves have 10 ms resolution).

Example:
    >>> stretch_frame_labels(["a", "a", "b", "b"], 0.5, 7)  # half speed: twice as long
    ['a', 'a', 'a', 'a', 'a', 'b', 'b']
    >>> speed_prefix(1.1), perturbed_num_samples(48000, 1.1)
    ('sp1.1-', 43637)
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from speechattn.data.audio import AudioError, audio_info, resampled_length
from speechattn.data.kaldi_dir import (
    KaldiDataDir,
    KaldiDataError,
    read_table,
    read_table_lists,
    utt2spk_to_spk2utt,
    write_table,
)
from speechattn.data.framing import num_frames

__all__ = ["speed_prefix", "perturbed_num_samples", "apply_speed", "stretch_frame_labels", "perturb_data_dir"]

log = logging.getLogger(__name__)

# Tables carried over to the copy under perturbed keys: frame labels are stretched in time, the other
# utterance tables and the speaker tables are copied as they are.
_STRETCHED = ("frame_labels",)
_UTT_COPIED = ("text",)
_SPK_COPIED = ("spk2gender", "spk2age")
# Outputs of later stages made from an earlier copy: removed when the copy is rewritten.
_STALE = ("feats.scp", "utt2dur", "cmvn_global.ark", "cmvn_spk.scp", "cmvn_spk.ark")


def speed_prefix(factor: float) -> str:
    """Kaldi's ID prefix for a speed factor: ``sp0.9-``; factor 1 keeps the original IDs (empty prefix)."""
    return "" if factor == 1.0 else f"sp{factor:g}-"


def _source_rate(factor: float, sample_rate: int) -> int:
    # torchaudio.functional.speed resamples from int(factor * rate) to rate
    return int(factor * sample_rate)


def perturbed_num_samples(num_samples: int, factor: float, sample_rate: int = 16000) -> int:
    """Samples after ``apply_speed``: ``ceil(num_samples × rate / int(factor × rate))``."""
    if factor == 1.0:
        return num_samples
    return resampled_length(num_samples, _source_rate(factor, sample_rate), sample_rate)


def apply_speed(waveform: Tensor, sample_rate: int, factor: float) -> Tensor:
    """Speed ``factor`` (> 1 faster and shorter) of a mono waveform ``(n,)`` -> ``(perturbed_num_samples,)``."""
    if factor <= 0.0:
        raise ValueError(f"speed factor must be > 0, got {factor}")
    if factor == 1.0:
        return waveform
    import torchaudio.functional as AF

    out, _ = AF.speed(waveform.unsqueeze(0), sample_rate, factor,
                      torch.tensor([waveform.numel()]))
    return out[0]


def stretch_frame_labels(labels: Sequence[str], factor: float, num_out: int,
                         frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0) -> list[str]:
    """Labels of the ``factor``-speed copy: ``num_out`` frames, frame ``i`` labelled by the original frame
    whose centre is nearest to ``factor × centre(i)``, clipped to the original frames."""
    if not labels:
        raise ValueError("cannot stretch an empty label sequence")
    half = 0.5 * frame_length_ms
    out = []
    for i in range(num_out):
        original_centre = (i * frame_shift_ms + half) * factor
        j = math.floor((original_centre - half) / frame_shift_ms + 0.5)
        out.append(labels[min(max(j, 0), len(labels) - 1)])
    return out


def _num_samples(data: KaldiDataDir, utt: str, sample_rate: int, allow_pipes: bool, lineno: int) -> int:
    where = f"{data.path / 'wav.scp'}:{lineno}"
    return audio_info(data.wav_scp[utt], sample_rate, allow_pipes=allow_pipes, where=where)[0]


def _is_complete(dst: Path, stamp: str) -> bool:
    marker = dst / ".speed_perturb_done"
    return marker.is_file() and marker.read_text() == stamp


def perturb_data_dir(src: str | os.PathLike, dst: str | os.PathLike, factors: Sequence[float],
                     sample_rate: int = 16000, allow_pipes: bool = False, force: bool = False) -> int:
    """Write ``dst``: the union of ``src``'s utterances at every speed in ``factors``; returns the number
    of utterances written (``len(factors) ×`` those of ``src``, minus any too short for one frame at a
    speed, which are skipped with a count in the log).

    ``src`` must not have ``segments`` (Kaldi scales segment times instead; not supported yet) nor an
    ``utt2speed`` of its own. Skips the work when ``dst`` is complete for the same ``src`` and factors.
    """
    src, dst = Path(src), Path(dst)
    factors = [float(f) for f in factors]
    if not factors or any(f <= 0 for f in factors) or len(set(factors)) != len(factors):
        raise ValueError(f"speed factors must be distinct and > 0, got {factors}")
    stamp = f"src={src.resolve()} factors={factors} sample_rate={sample_rate}\n"
    if not force and _is_complete(dst, stamp):
        log.info("%s is complete (factors %s): nothing to do", dst, factors)
        return len(read_table(dst / "wav.scp"))
    data = KaldiDataDir.load(src, require=("wav.scp", "utt2spk"))
    if data.segments is not None:
        raise KaldiDataError(f"{src / 'segments'}:1: speed perturbation of segmented data dirs is not supported")
    if (src / "utt2speed").is_file():
        raise KaldiDataError(f"{src / 'utt2speed'}:1: {src} is already speed-perturbed")
    tables = {name: read_table_lists(src / name) for name in _STRETCHED if (src / name).is_file()}
    utt_copied = {name: read_table(src / name, min_fields=1) for name in _UTT_COPIED if (src / name).is_file()}
    spk_copied = {name: read_table(src / name) for name in _SPK_COPIED if (src / name).is_file()}

    line_of = {utt: i for i, utt in enumerate(data.wav_scp, start=1)}
    wav_scp, utt2spk, utt2speed, utt2num_frames = {}, {}, {}, {}
    out_tables: dict[str, dict[str, list[str]]] = {name: {} for name in tables}
    out_copied: dict[str, dict[str, str]] = {name: {} for name in utt_copied}
    skipped = 0
    for utt in data.utterances:
        try:
            samples = _num_samples(data, utt, sample_rate, allow_pipes, line_of[utt])
        except AudioError as e:
            raise KaldiDataError(str(e)) from None
        for factor in factors:
            new = speed_prefix(factor) + utt
            frames = num_frames(perturbed_num_samples(samples, factor, sample_rate), sample_rate)
            if frames == 0:
                skipped += 1
                continue
            wav_scp[new] = data.wav_scp[utt]
            utt2spk[new] = speed_prefix(factor) + data.utt2spk[utt]
            utt2speed[new] = f"{factor:g}"
            utt2num_frames[new] = str(frames)
            for name, table in tables.items():
                if utt in table:
                    out_tables[name][new] = stretch_frame_labels(table[utt], factor, frames)
            for name, table in utt_copied.items():
                if utt in table:
                    out_copied[name][new] = table[utt]
    for name, table in spk_copied.items():
        out_copied[name] = {speed_prefix(f) + spk: value for spk, value in table.items() for f in factors}
    if skipped:
        log.warning("%d perturbed copies shorter than one frame were skipped", skipped)

    dst.mkdir(parents=True, exist_ok=True)
    (dst / ".speed_perturb_done").unlink(missing_ok=True)
    for stale in _STALE:
        (dst / stale).unlink(missing_ok=True)
    write_table(dst / "wav.scp", wav_scp)
    write_table(dst / "utt2spk", utt2spk)
    # spk2utt lists each speaker's utterances in sorted order, as Kaldi's utt2spk_to_spk2utt.pl does
    write_table(dst / "spk2utt", utt2spk_to_spk2utt({u: utt2spk[u] for u in sorted(utt2spk, key=str.encode)}))
    write_table(dst / "utt2speed", utt2speed)
    write_table(dst / "utt2num_frames", utt2num_frames)
    for name, table in out_tables.items():
        write_table(dst / name, table)
    for name, table in out_copied.items():
        write_table(dst / name, table)
    (dst / ".speed_perturb_done").write_text(stamp)
    log.info("%s: %d utterances at speeds %s from %s", dst, len(wav_scp), factors, src)
    return len(wav_scp)
