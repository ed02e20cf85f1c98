"""A TIMIT-layout fixture (LDC93S1) from speechocean762 speech.

Layout written, exactly LDC's: ``TIMIT/{TRAIN,TEST}/DR<n>/<SPEAKER>/<SENTENCE>.{WAV,PHN,WRD,TXT}``, with

* ``.WAV``: NIST SPHERE (``NIST_1A`` 1024-byte header with TIMIT's fields, 16-bit little-endian PCM, 16 kHz);
  ``riff=True`` writes RIFF WAV instead (as converted copies do);
* ``.PHN``: ``START END PHONE`` in samples, TIMIT's 61 symbols: speechocean762's ARPAbet phones lower-cased,
  its SIL as ``h#`` at the edges and ``pau`` inside, each stop split into closure + release
  (``bcl b``, ``tcl t``...) as TIMIT transcribes them; the first segment starts at 0 and the last ends at
  the last sample, like TIMIT's;
* ``.WRD`` (``START END word``), ``.TXT`` (``0 N Sentence.``).

Speakers get TIMIT IDs (gender letter + 3 letters + digit): corpus ``test/`` speakers take the names of the
24-speaker core test set, then of the 50-speaker dev set (gender-matched when possible), then made-up
``[FM]SP??`` names; ``train/`` speakers made-up ``[FM]SO??`` names under ``TRAIN/``. Sentences: a speaker's first two
utterances are ``SA1``/``SA2``, the next three ``SI...``, the rest ``SX...``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechattn.data.timit import CORE_TEST_SPEAKERS, DEV_SPEAKERS, PhnSegment, write_phn
from speechattn.utils.atomic import atomic_write_text

from .source import SourceUtterance, select_speakers

STOP_CLOSURES = {"b": "bcl", "d": "dcl", "g": "gcl", "p": "pcl", "t": "tcl", "k": "kcl"}
MIN_SPLIT_SAMPLES = 320  # split a stop into closure + release only when it lasts at least 2 frames


@dataclass(frozen=True)
class FixtureSentence:
    """What was written for one sentence (the tests compare the prepared data with it)."""

    part: str
    speaker: str
    sentence: str
    directory: Path
    num_samples: int
    phn: tuple[PhnSegment, ...]
    source_utt: str


def made_up_speaker(gender: str, index: int, part: str = "TRAIN") -> str:
    """``MSOA0``, ``FSOA1``... (TRAIN), ``MSPA0``... (TEST): TIMIT-shaped IDs outside the real core/dev lists,
    unique for ``index`` < 260 within a part, never shared between the parts."""
    if not 0 <= index < 260:
        raise ValueError(f"speaker index {index} outside [0, 260)")
    middle = "SO" if part == "TRAIN" else "SP"
    return f"{'F' if gender == 'f' else 'M'}{middle}{chr(ord('A') + index // 10)}{index % 10}"


def assign_test_names(speakers: dict[str, str]) -> dict[str, str]:
    """speechocean762 speaker -> TIMIT ID for the TEST part: core names first (about a fifth of the
    speakers, at most 24), then dev names (about two fifths, at most 50), then made-up ones.

    ``speakers`` maps source speaker -> gender; a name goes to the first unused speaker of its gender
    (any speaker when none is left).
    """
    n = len(speakers)
    wanted = list(CORE_TEST_SPEAKERS[:min(24, math.ceil(n / 5))]) + list(DEV_SPEAKERS[:min(50, math.ceil(2 * n / 5))])
    wanted = wanted[:n]
    unused = list(speakers)
    names: dict[str, str] = {}
    for name in wanted:
        gender = "f" if name[0] == "F" else "m"
        pick = next((s for s in unused if speakers[s] == gender), unused[0])
        unused.remove(pick)
        names[pick] = name
    for index, speaker in enumerate(unused):
        names[speaker] = made_up_speaker(speakers[speaker], index, "TEST")
    return names


def dialect_of(name: str, index: int) -> str:
    """Core speakers sit in their real dialect region (three per region, in Kaldi's list order)."""
    if name in CORE_TEST_SPEAKERS:
        return f"DR{CORE_TEST_SPEAKERS.index(name) // 3 + 1}"
    return f"DR{index % 8 + 1}"


def sentence_names(count: int, speaker_index: int) -> list[str]:
    names = []
    for k in range(count):
        if k < 2:
            names.append(f"SA{k + 1}")
        elif k < 5:
            names.append(f"SI{1000 + 3 * speaker_index + k - 2}")
        else:
            names.append(f"SX{10 + 5 * (speaker_index % 88) + k - 5}")
    return names


def sphere_header(num_samples: int, utterance_id: str, samples: np.ndarray) -> bytes:
    """The 1024-byte NIST_1A header of a TIMIT ``.WAV`` file (same fields as LDC's)."""
    fields = [
        "NIST_1A", "   1024",
        "database_id -s5 TIMIT", "database_version -s3 1.0",
        f"utterance_id -s{len(utterance_id)} {utterance_id}",
        "channel_count -i 1", f"sample_count -i {num_samples}", "sample_rate -i 16000",
        f"sample_min -i {int(samples.min()) if samples.size else 0}",
        f"sample_max -i {int(samples.max()) if samples.size else 0}",
        "sample_n_bytes -i 2", "sample_byte_format -s2 01", "sample_sig_bits -i 16", "end_head",
    ]
    text = ("\n".join(fields) + "\n").encode("ascii")
    return text + b" " * (1024 - len(text))


def write_sphere(path: Path, samples: np.ndarray, utterance_id: str) -> None:
    """SPHERE file: header + 16-bit little-endian PCM."""
    samples = np.asarray(samples, dtype="<i2")
    path.write_bytes(sphere_header(len(samples), utterance_id, samples) + samples.tobytes())


def write_riff(path: Path, samples: np.ndarray) -> None:
    import soundfile as sf
    sf.write(str(path), samples, 16000, subtype="PCM_16", format="WAV")


def to_samples(seconds: float) -> int:
    return round(seconds * 16000)


def timit_segments(utterance: SourceUtterance, num_samples: int) -> list[PhnSegment]:
    """speechocean762 phone alignment -> TIMIT 61-symbol segments in samples covering ``[0, num_samples)``."""
    segments: list[PhnSegment] = []
    phones = list(utterance.phones)
    for index, segment in enumerate(phones):
        start, end = to_samples(segment.start), min(to_samples(segment.end), num_samples)
        if end <= start:
            continue
        if segment.label == "SIL":
            label = "h#" if index in (0, len(phones) - 1) else "pau"
            segments.append(PhnSegment(start, end, label))
            continue
        label = segment.label.lower()
        if label in STOP_CLOSURES and end - start >= MIN_SPLIT_SAMPLES:
            middle = (start + end) // 2
            segments.append(PhnSegment(start, middle, STOP_CLOSURES[label]))
            segments.append(PhnSegment(middle, end, label))
        else:
            segments.append(PhnSegment(start, end, label))
    if not segments or segments[0].start > 0:
        segments.insert(0, PhnSegment(0, segments[0].start if segments else num_samples, "h#"))
    if segments[-1].end < num_samples:
        last = segments[-1]
        if last.phone == "h#":
            segments[-1] = PhnSegment(last.start, num_samples, "h#")
        else:
            segments.append(PhnSegment(last.end, num_samples, "h#"))
    return segments


def word_segments(utterance: SourceUtterance, num_samples: int) -> list[PhnSegment]:
    words = []
    for segment in utterance.words:
        start, end = to_samples(segment.start), min(to_samples(segment.end), num_samples)
        if segment.label != "<sil>" and end > start:
            words.append(PhnSegment(start, end, segment.label.lower()))
    return words


def write_sentence(directory: Path, sentence: str, utterance: SourceUtterance, *, riff: bool, lower_case: bool,
                   utterance_id: str) -> FixtureSentence:
    samples, rate = utterance.read_int16()
    if rate != 16000:
        raise ValueError(f"{utterance.audio}: expected 16 kHz, got {rate}")
    name = sentence.lower() if lower_case else sentence
    ext = (lambda e: e.lower()) if lower_case else (lambda e: e)
    directory.mkdir(parents=True, exist_ok=True)
    if riff:
        write_riff(directory / f"{name}.{ext('WAV')}", samples)
    else:
        write_sphere(directory / f"{name}.{ext('WAV')}", samples, utterance_id)
    phn = timit_segments(utterance, len(samples))
    write_phn(directory / f"{name}.{ext('PHN')}", phn)
    write_phn(directory / f"{name}.{ext('WRD')}", word_segments(utterance, len(samples)))
    atomic_write_text(directory / f"{name}.{ext('TXT')}", f"0 {len(samples)} {utterance.text.capitalize()}.\n")
    return FixtureSentence("", "", sentence, directory, len(samples), tuple(phn), utterance.utt)


def make_timit_fixture(source: dict[str, list[SourceUtterance]], out_dir: str | Path, *,
                       train_speakers: int | None = None, test_speakers: int | None = None,
                       utts_per_speaker: int | None = None, riff: bool = False,
                       lower_case: bool = False) -> list[FixtureSentence]:
    """Write the fixture under ``out_dir`` (the directory a user passes as ``--corpus-dir``).

    ``train_speakers`` / ``test_speakers`` limit the speakers taken from speechocean762's train/ and test/
    (None: all 125 each); ``lower_case`` writes every folder and file name in lower case (as some copies
    have them). Returns what was written, sentence by sentence.
    """
    out_dir = Path(out_dir)
    written: list[FixtureSentence] = []
    parts = {"TRAIN": select_speakers(source["train"], train_speakers, utts_per_speaker),
             "TEST": select_speakers(source["test"], test_speakers, utts_per_speaker)}
    for part, grouped in parts.items():
        genders = {spk: utts[0].gender for spk, utts in grouped.items()}
        names = (assign_test_names(genders) if part == "TEST"
                 else {spk: made_up_speaker(g, i) for i, (spk, g) in enumerate(genders.items())})
        for index, (speaker, utterances) in enumerate(grouped.items()):
            name = names[speaker]
            dialect = dialect_of(name, index)
            speaker_dir = out_dir / part / dialect / name
            if lower_case:
                speaker_dir = out_dir / part.lower() / dialect.lower() / name.lower()
            for sentence, utterance in zip(sentence_names(len(utterances), index), utterances):
                result = write_sentence(speaker_dir, sentence, utterance, riff=riff, lower_case=lower_case,
                                        utterance_id=f"{name[1:].lower()}_{sentence.lower()}")
                written.append(FixtureSentence(part, name, sentence, result.directory, result.num_samples,
                                               result.phn, result.source_utt))
    return written
