"""A LibriSpeech-layout fixture with Montreal Forced Aligner TextGrids, from speechocean762 speech.

Corpus (``--corpus-dir``, LibriSpeech's layout, openslr resource 12)::

    LibriSpeech/SPEAKERS.TXT  CHAPTERS.TXT
    LibriSpeech/<subset>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac
    LibriSpeech/<subset>/<spk>/<chapter>/<spk>-<chapter>.trans.txt      ("<utt-id> WORDS IN UPPER CASE")

Alignments (``--alignments-dir``, as MFA writes them for that corpus)::

    ALIGN/<subset>/<spk>/<chapter>/<utt-id>.TextGrid   tiers "words" and "phones" (ARPAbet with stress
                                                        digits from speechocean762's lexicon; silence =
                                                        empty intervals), xmax = the audio's duration

Subsets: speechocean762 ``train/`` speakers go to ``train-clean-100`` except a tenth (at least one, chosen by
a stable hash), which form ``dev-clean``; ``test/`` speakers form ``test-clean``. Speaker IDs are the speechocean762 IDs as
integers plus 1000 (LibriSpeech IDs have no leading zeros); each speaker's utterances are split over two
chapters.
"""
from __future__ import annotations

import re
from pathlib import Path

import soundfile as sf
from praatio import textgrid as praat_textgrid

from .source import VOWELS, SourceUtterance, select_speakers, stable_hash

SUBSETS = ("train-clean-100", "dev-clean", "test-clean")


def librispeech_speaker(speaker: str) -> str:
    return str(1000 + int(speaker))


def chapter_of(speaker_id: str, index: int, count: int) -> str:
    """Two chapters per speaker: the first half of its utterances, then the rest."""
    return str(int(speaker_id) * 10 + (0 if index < (count + 1) // 2 else 1))


def dev_speakers(train_speakers: list[str]) -> set[str]:
    """A tenth of speechocean762's train/ speakers (at least one), chosen by a stable hash of the ID."""
    ranked = sorted(train_speakers, key=lambda spk: stable_hash(f"dev/{spk}"))
    return set(ranked[:max(1, len(ranked) // 10)])


def subset_of(utterance: SourceUtterance, dev: set[str]) -> str:
    if utterance.part == "test":
        return "test-clean"
    return "dev-clean" if utterance.speaker in dev else "train-clean-100"


def stressed_phones(utterance: SourceUtterance) -> list[tuple[float, float, str]]:
    """Phone intervals with stress digits: vowels take the digit of the lexicon's pronunciation of their
    word when the aligned phones match it, else 1; SIL becomes an empty interval (dropped here)."""
    words = [w for w in utterance.words if w.label != "<sil>"]
    digits: dict[int, str] = {}  # phone index -> stress digit
    phones = list(utterance.phones)
    for word_index, word in enumerate(words):
        inside = [i for i, p in enumerate(phones) if p.start >= word.start - 1e-6 and p.end <= word.end + 1e-6]
        if word_index < len(utterance.stressed):
            canonical = utterance.stressed[word_index]
            if [phones[i].label for i in inside] == [p.rstrip("012") for p in canonical]:
                for i, stressed in zip(inside, canonical):
                    if stressed[-1] in "012":
                        digits[i] = stressed[-1]
    intervals = []
    for i, phone in enumerate(phones):
        if phone.label == "SIL":
            continue
        label = phone.label + (digits.get(i, "1") if phone.label in VOWELS else "")
        intervals.append((phone.start, phone.end, label))
    return intervals


def write_textgrid(path: Path, utterance: SourceUtterance, duration: float) -> None:
    """words + phones tiers, clipped to the audio's duration, silence as gaps (written empty)."""
    def clip(entries: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
        clipped = []
        for start, end, label in entries:
            start, end = round(start, 6), round(min(end, duration), 6)
            if end > start:
                clipped.append((start, end, label))
        return clipped

    # pocketsphinx marks alternative pronunciations as "word(2)"; MFA's word tier holds the plain word.
    words = clip([(w.start, w.end, re.sub(r"\(\d+\)$", "", w.label.lower())) for w in utterance.words
                  if w.label != "<sil>"])
    grid = praat_textgrid.Textgrid(minTimestamp=0.0, maxTimestamp=duration)
    grid.addTier(praat_textgrid.IntervalTier("words", words, 0.0, duration))
    grid.addTier(praat_textgrid.IntervalTier("phones", clip(stressed_phones(utterance)), 0.0, duration))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(str(path), format="long_textgrid", includeBlankSpaces=True)


def make_librispeech_fixture(source: dict[str, list[SourceUtterance]], corpus_dir: str | Path,
                             alignments_dir: str | Path, *, train_speakers: int | None = None,
                             test_speakers: int | None = None,
                             utts_per_speaker: int | None = None) -> dict[str, list[str]]:
    """Write the corpus and its alignments; returns ``{subset: [utterance ids]}``."""
    corpus_dir, alignments_dir = Path(corpus_dir), Path(alignments_dir)
    train = select_speakers(source["train"], train_speakers, utts_per_speaker)
    dev = dev_speakers(list(train))
    selected = {**train, **select_speakers(source["test"], test_speakers, utts_per_speaker)}
    written: dict[str, list[str]] = {subset: [] for subset in SUBSETS}
    speaker_lines, chapter_lines = [], []
    for speaker, utterances in selected.items():
        spk = librispeech_speaker(speaker)
        subset = subset_of(utterances[0], dev)
        minutes = 0.0
        transcripts: dict[str, list[str]] = {}
        for index, utterance in enumerate(utterances):
            chapter = chapter_of(spk, index, len(utterances))
            utt_id = f"{spk}-{chapter}-{index:04d}"
            chapter_dir = corpus_dir / subset / spk / chapter
            chapter_dir.mkdir(parents=True, exist_ok=True)
            samples, rate = utterance.read_int16()
            sf.write(str(chapter_dir / f"{utt_id}.flac"), samples, rate, subtype="PCM_16", format="FLAC")
            duration = len(samples) / rate
            minutes += duration / 60
            transcripts.setdefault(chapter, []).append(f"{utt_id} {utterance.text}")
            write_textgrid(alignments_dir / subset / spk / chapter / f"{utt_id}.TextGrid", utterance, duration)
            written[subset].append(utt_id)
        for chapter, lines in transcripts.items():
            (corpus_dir / subset / spk / chapter / f"{spk}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
            chapter_lines.append(f"{chapter:<7}| {spk:<6}| {0.0:6.2f} | {subset:<16}| 0 | 0 | speechocean762 | "
                                 f"speechocean762")
        sex = "F" if utterances[0].gender == "f" else "M"
        speaker_lines.append(f"{spk:<5}| {sex} | {subset:<17}| {minutes:6.2f} | speechocean762 speaker {speaker}")
    corpus_dir.mkdir(parents=True, exist_ok=True)
    (corpus_dir / "SPEAKERS.TXT").write_text(
        "; Re-laid speechocean762 speech (NOT LibriSpeech), LibriSpeech's SPEAKERS.TXT format\n"
        ";ID  |SEX| SUBSET           |MINUTES| NAME\n" + "\n".join(speaker_lines) + "\n")
    (corpus_dir / "CHAPTERS.TXT").write_text(
        "; Re-laid speechocean762 speech (NOT LibriSpeech)\n"
        ";ID    |READER|MINUTES| SUBSET           | PROJ.|BOOK ID| CH. TITLE | PROJECT TITLE\n"
        + "\n".join(chapter_lines) + "\n")
    return written
