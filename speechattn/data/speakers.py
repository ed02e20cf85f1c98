"""The closed speaker set of a speaker model (``speakers.txt``: one ID per line, line index = class index)
and the class index of each utterance's speaker."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from speechattn.data.kaldi_dir import KaldiDataError, read_table, read_text_lines
from speechattn.utils.atomic import atomic_write_text

__all__ = ["read_speakers", "write_speakers", "read_speaker_targets"]


def read_speakers(path: str | Path) -> list[str]:
    """The closed speaker set: one ID per line (line index = class index); duplicates are errors."""
    path = Path(path)
    if not path.is_file():
        raise KaldiDataError(f"{path}:0: speaker list not found (written by the data preparation stage)")
    speakers: list[str] = []
    seen: dict[str, int] = {}
    for lineno, line in read_text_lines(path, what="speaker list"):
        fields = line.split()
        if len(fields) != 1:
            raise KaldiDataError(f"{path}:{lineno}: expected one speaker ID per line, got {line!r}")
        if fields[0] in seen:
            raise KaldiDataError(f"{path}:{lineno}: speaker '{fields[0]}' repeated (first on line {seen[fields[0]]})")
        seen[fields[0]] = lineno
        speakers.append(fields[0])
    if not speakers:
        raise KaldiDataError(f"{path}:0: empty speaker list")
    return speakers


def write_speakers(path: str | os.PathLike, speakers: Iterable[str]) -> None:
    """The closed speaker set, one ID per line, sorted; the line index (from 0) is the class index."""
    atomic_write_text(path, "".join(f"{speaker}\n" for speaker in sorted(set(speakers))))


def read_speaker_targets(data_dir: str | Path, utts: list[str], speakers: list[str]) -> dict[str, int]:
    """Class index of each utterance's speaker (``data_dir/utt2spk``, ``speakers`` order).

    Raises KaldiDataError naming ``feats.scp``'s line for an utterance without a speaker in ``utt2spk``,
    and ``utt2spk``'s line for a speaker outside the closed training set.
    """
    data_dir = Path(data_dir)
    utt2spk_path = data_dir / "utt2spk"
    utt2spk = read_table(utt2spk_path)
    utt2spk_lines = {utt: lineno for lineno, utt in enumerate(utt2spk, start=1)}
    feats_lines = {utt: lineno for lineno, utt in enumerate(read_table(data_dir / "feats.scp"), start=1)}
    index = {spk: i for i, spk in enumerate(speakers)}
    targets: dict[str, int] = {}
    for utt in utts:
        if utt not in utt2spk:
            raise KaldiDataError(f"{data_dir / 'feats.scp'}:{feats_lines.get(utt, 0)}: utterance '{utt}' has no "
                                 f"speaker in {utt2spk_path}")
        speaker = utt2spk[utt]
        if speaker not in index:
            raise KaldiDataError(f"{utt2spk_path}:{utt2spk_lines[utt]}: speaker '{speaker}' of '{utt}' is not in "
                                 f"the training speaker list ({len(speakers)} speakers)")
        targets[utt] = index[speaker]
    return targets
