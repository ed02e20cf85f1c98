"""A VoxCeleb1-layout fixture from speechocean762 speech.

Layout written, as VoxCeleb1 unpacks (dev and test parts merged under ``wav/``)::

    wav/idNNNNN/<video>/NNNNN.wav    16 kHz 16-bit RIFF; <video> an 11-character YouTube-style ID
    iden_split.txt                   "1|2|3 idNNNNN/<video>/NNNNN.wav" (train / val / test)
    veri_test2.txt                   "1|0 enrol test" (Vox1-O, cleaned: target / non-target)
    vox1_meta.csv                    "VoxCeleb1 ID<TAB>VGGFace1 ID<TAB>Gender<TAB>Nationality<TAB>Set"

Speakers are numbered ``id10001``... in speechocean762's order (train/ then test/). The ``test`` part (the
speakers of the trial list, like Vox1-O's 40) is the first ``test_part_speakers`` of speechocean762's
``test/``; all others are ``dev``. A speaker's utterances are spread over four "videos" (5, 3, 1, 1 of 10);
the identification split holds out whole videos, as VoxCeleb1's does: the third video is ``2`` (val), the
fourth ``3`` (test), the rest ``1`` (train). Trials: every same-speaker pair of test-part utterances
(target) and as many different-speaker pairs chosen by a stable hash (non-target), like veri_test2's
balance.
"""
from __future__ import annotations

import base64
import itertools
from pathlib import Path

import soundfile as sf

from .source import SourceUtterance, select_speakers, stable_hash

VIDEO_SIZES = (5, 3, 1, 1)  # utterances per video for a 10-utterance speaker; the split follows the videos


def video_id(speaker_id: str, index: int) -> str:
    raw = stable_hash(f"video/{speaker_id}/{index}").to_bytes(8, "big")
    return base64.urlsafe_b64encode(raw).decode()[:11]


def videos_of(count: int) -> list[int]:
    """Video index of each of a speaker's ``count`` utterances (the last two videos hold one each)."""
    held_out = 2 if count >= 4 else max(0, count - 2)
    first = count - held_out
    split = (first + 1) // 2 + (first // 8)  # 10 -> 5 + 3 in the first two videos
    indices = [0 if i < split else 1 for i in range(first)]
    return indices + [2 + k for k in range(held_out)]


def make_voxceleb1_fixture(source: dict[str, list[SourceUtterance]], out_dir: str | Path, *,
                           train_speakers: int | None = None, test_speakers: int | None = None,
                           utts_per_speaker: int | None = None,
                           test_part_speakers: int = 40) -> dict[str, int]:
    """Write the fixture; returns counts (speakers, utterances, trials...)."""
    out_dir = Path(out_dir)
    train = select_speakers(source["train"], train_speakers, utts_per_speaker)
    test = select_speakers(source["test"], test_speakers, utts_per_speaker)
    test_part = set(list(test)[:test_part_speakers])
    speakers = list(train) + list(test)
    iden_lines, meta_lines = [], []
    test_files: dict[str, list[str]] = {}  # voxceleb speaker -> its files, for the trials
    for number, speaker in enumerate(speakers, start=10001):
        vox_id = f"id{number}"
        utterances = (train | test)[speaker]
        videos = videos_of(len(utterances))
        counters: dict[int, int] = {}
        for utterance, video in zip(utterances, videos):
            counters[video] = counters.get(video, 0) + 1
            relative = f"{vox_id}/{video_id(vox_id, video)}/{counters[video]:05d}.wav"
            path = out_dir / "wav" / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            samples, rate = utterance.read_int16()
            sf.write(str(path), samples, rate, subtype="PCM_16", format="WAV")
            set_number = 3 if video == 3 else 2 if video == 2 else 1
            iden_lines.append(f"{set_number} {relative}")
            if speaker in test_part:
                test_files.setdefault(vox_id, []).append(relative)
        gender = utterances[0].gender
        meta_lines.append(f"{vox_id}\tspeechocean762_{speaker}\t{gender}\tChina\t"
                          f"{'test' if speaker in test_part else 'dev'}")
    targets = [(a, b) for files in test_files.values() for a, b in itertools.combinations(files, 2)]
    everything = sorted(f for files in test_files.values() for f in files)
    nontargets = [(a, b) for a, b in itertools.combinations(everything, 2) if a.split("/")[0] != b.split("/")[0]]
    nontargets = sorted(nontargets, key=lambda pair: stable_hash(f"trial/{pair[0]}/{pair[1]}"))[:len(targets)]
    trials = sorted([(1, a, b) for a, b in targets] + [(0, a, b) for a, b in nontargets],
                    key=lambda t: (t[1], stable_hash(f"order/{t[2]}")))
    (out_dir / "iden_split.txt").write_text("\n".join(iden_lines) + "\n")
    (out_dir / "veri_test2.txt").write_text("".join(f"{label} {a} {b}\n" for label, a, b in trials))
    (out_dir / "vox1_meta.csv").write_text("VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\n"
                                           + "\n".join(meta_lines) + "\n")
    return {"speakers": len(speakers), "test_part_speakers": len(test_files), "utterances": len(iden_lines),
            "target_trials": len(targets), "nontarget_trials": len(nontargets)}
