"""The speechocean762 corpus in ``../shared`` as the source of every fixture: utterances with speaker,
gender, transcript, audio and phone / word alignments (``alignments/*.ctm``)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from speechattn.data.alignments import PHONES, Segment, read_ctm
from speechattn.data.kaldi_dir import read_table

DEFAULT_SOURCE = Path(__file__).resolve().parents[3] / "shared" / "corpora" / "speechocean762"
PARTS = ("train", "test")
VOWELS = frozenset({"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"})


@dataclass(frozen=True)
class SourceUtterance:
    """One aligned speechocean762 utterance."""

    utt: str
    speaker: str
    part: str                      # train / test of speechocean762
    gender: str                    # "m" / "f"
    audio: Path
    text: str                      # upper case words
    phones: tuple[Segment, ...]    # 39 ARPAbet + SIL, seconds (10 ms steps)
    words: tuple[Segment, ...]     # lower-case words and "<sil>", seconds
    stressed: tuple[tuple[str, ...], ...]  # per transcript word: canonical phones with stress (AH0 ...)

    def read_int16(self) -> tuple[np.ndarray, int]:
        """Samples as int16 (the corpus is 16-bit PCM losslessly stored as FLAC) and the sample rate."""
        data, rate = sf.read(str(self.audio), dtype="int16")
        return data, rate


def stable_hash(text: str) -> int:
    """A process-independent hash (fixtures must not change between runs)."""
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "big")


def _read_text_phone(path: Path) -> dict[str, dict[int, tuple[str, ...]]]:
    """``resource/text-phone``: ``UTT.K  PH_B PH_I ... PH_E`` -> ``{utt: {k: (PH, ...)}}``."""
    result: dict[str, dict[int, tuple[str, ...]]] = {}
    if not path.is_file():
        return result
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) < 2 or "." not in fields[0]:
            continue
        utt, _, index = fields[0].rpartition(".")
        result.setdefault(utt, {})[int(index)] = tuple(p.split("_")[0] for p in fields[1:])
    return result


def load_source(source_dir: Path = DEFAULT_SOURCE) -> dict[str, list[SourceUtterance]]:
    """``{"train": [...], "test": [...]}``: aligned utterances of each part, sorted by (speaker, utt)."""
    source_dir = Path(source_dir)
    phones = read_ctm(source_dir / "alignments" / "phones.ctm", phones=PHONES)
    words = read_ctm(source_dir / "alignments" / "words.ctm")
    stressed = _read_text_phone(source_dir / "resource" / "text-phone")
    result: dict[str, list[SourceUtterance]] = {}
    for part in PARTS:
        part_dir = source_dir / part
        wav_scp = read_table(part_dir / "wav.scp", check_sorted=False)
        utt2spk = read_table(part_dir / "utt2spk", check_sorted=False)
        text = read_table(part_dir / "text", check_sorted=False, min_fields=1)
        spk2gender = read_table(part_dir / "spk2gender", check_sorted=False)
        utterances = []
        for utt, audio in wav_scp.items():
            if utt not in phones or utt not in words:
                continue  # the aligner failed on it: no labels to re-lay
            speaker = utt2spk[utt]
            per_word = stressed.get(utt, {})
            utterances.append(SourceUtterance(
                utt, speaker, part, spk2gender.get(speaker, "m"), source_dir / audio, text.get(utt, "").upper(),
                tuple(phones[utt]), tuple(words[utt]), tuple(per_word[k] for k in sorted(per_word))))
        result[part] = sorted(utterances, key=lambda u: (u.speaker, u.utt))
    return result


def by_speaker(utterances: list[SourceUtterance]) -> dict[str, list[SourceUtterance]]:
    """``{speaker: [utterances]}`` in speaker order."""
    grouped: dict[str, list[SourceUtterance]] = {}
    for utterance in utterances:
        grouped.setdefault(utterance.speaker, []).append(utterance)
    return dict(sorted(grouped.items()))


def select_speakers(utterances: list[SourceUtterance], max_speakers: int | None,
                    max_utts_per_speaker: int | None = None) -> dict[str, list[SourceUtterance]]:
    """The first ``max_speakers`` speakers (all when None), each with at most ``max_utts_per_speaker``."""
    grouped = by_speaker(utterances)
    speakers = list(grouped)[:max_speakers] if max_speakers is not None else list(grouped)
    return {spk: grouped[spk][:max_utts_per_speaker] if max_utts_per_speaker else grouped[spk] for spk in speakers}
