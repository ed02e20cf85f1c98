"""local/prepare_librispeech_mfa.py on a LibriSpeech + MFA fixture re-laid from speechocean762."""
from __future__ import annotations

import logging
import shutil

import pytest
from praatio import textgrid as praat_textgrid

from corpus_layouts import load_script, needs_shared, source
from speechattn.data.alignments import PHONES, frame_labels_from_segments, read_phone_table
from speechattn.data.kaldi_dir import read_table, read_table_lists, validate_data_dir

pytestmark = needs_shared
prepare = load_script("prepare_librispeech_mfa")


@pytest.fixture(scope="module")
def libri(tmp_path_factory):
    """4 train/ speakers (3 train-clean-100, 1 dev-clean) and 3 test/ speakers (test-clean), 10 utterances each."""
    from corpus_fixtures.librispeech import make_librispeech_fixture
    root = tmp_path_factory.mktemp("libri")
    subsets = make_librispeech_fixture(source(), root / "LibriSpeech", root / "alignments", train_speakers=4,
                                       test_speakers=3)
    return root, subsets


def run(root, out, *extra):
    return prepare.main(["--corpus-dir", str(root / "LibriSpeech"), "--alignments-dir", str(root / "alignments"),
                         "--out-dir", str(out), *extra])


def test_sets_and_exact_labels(libri, tmp_path):
    root, subsets = libri
    assert run(root, tmp_path / "data", "--nj", "2") == 0
    data = tmp_path / "data"
    for name, subset in (("train", "train-clean-100"), ("dev", "dev-clean"), ("test", "test-clean")):
        validate_data_dir(data / name, require_labels="frame_labels")
        assert sorted(read_table(data / name / "wav.scp")) == sorted(subsets[subset])
    assert read_phone_table(data / "lang" / "phones.txt") == list(PHONES)
    # Labels equal the frame rule applied to the source alignment the TextGrids were written from.
    by_speaker = {}
    for utterance in source()["test"]:
        by_speaker.setdefault(str(1000 + int(utterance.speaker)), []).append(utterance)
    labels = read_table_lists(data / "test" / "frame_labels")
    frames = read_table(data / "test" / "utt2num_frames")
    for utt, utt_labels in labels.items():
        speaker, _, index = utt.split("-")
        original = by_speaker[speaker][int(index)]
        assert utt_labels == list(frame_labels_from_segments(list(original.phones), int(frames[utt]))), utt
    text = read_table(data / "test" / "text")
    assert all(t == t.upper() and t for t in text.values())
    assert set(read_table(data / "test" / "spk2gender").values()) <= {"m", "f"}


def test_subset_options_merge_subsets(libri, tmp_path):
    root, subsets = libri
    assert run(root, tmp_path / "data", "--train-sets", "train-clean-100 dev-clean", "--dev-sets", "dev-clean") == 0
    assert len(read_table(tmp_path / "data" / "train" / "wav.scp")) == \
        len(subsets["train-clean-100"]) + len(subsets["dev-clean"])


@pytest.fixture
def copy(libri, tmp_path):
    root, _ = libri
    shutil.copytree(root, tmp_path / "fixture")
    return tmp_path / "fixture"


def grids(copy, subset="train-clean-100"):
    return sorted((copy / "alignments" / subset).rglob("*.TextGrid"))


def test_bad_textgrids_are_skipped_counted_and_listed(copy, tmp_path, caplog):
    no_phones, missing, noise, ipa = grids(copy)[:4]
    grid = praat_textgrid.openTextgrid(str(no_phones), includeEmptyIntervals=True)
    grid.removeTier("phones")
    grid.save(str(no_phones), format="long_textgrid", includeBlankSpaces=True)
    missing.unlink()
    for path, label in ((noise, "spn"), (ipa, "ɐ")):
        grid = praat_textgrid.openTextgrid(str(path), includeEmptyIntervals=True)
        tier = grid.getTier("phones")
        start, end, _ = tier.entries[1]
        grid.replaceTier("phones", tier.new(entries=[*tier.entries[:1], (start, end, label), *tier.entries[2:]]))
        grid.save(str(path), format="long_textgrid", includeBlankSpaces=True)
    with caplog.at_level(logging.INFO):
        assert run(copy, tmp_path / "data") == 0
    skipped = (tmp_path / "data" / "train" / "skipped.txt").read_text().splitlines()
    assert len(skipped) == 4
    reasons = {line.split()[0]: line for line in skipped}
    assert f"{no_phones}:0: no tier 'phones' (tiers: words)" in reasons[no_phones.stem]
    assert "no alignment" in reasons[missing.stem] and str(missing) in reasons[missing.stem]
    assert "spoken noise (spn)" in reasons[noise.stem]
    line = int(reasons[ipa.stem].split(f"{ipa}:")[1].split(":")[0])
    assert 'text = "ɐ"' in ipa.read_text().splitlines()[line - 1]
    assert "no 'phones' tier: 1" in caplog.text and "spoken noise (spn): 1" in caplog.text
    assert len(read_table(tmp_path / "data" / "train" / "wav.scp")) == 30 - 4


def test_alignment_past_the_audio_end(copy, tmp_path):
    path = grids(copy)[0]
    grid = praat_textgrid.openTextgrid(str(path), includeEmptyIntervals=True)
    tier = grid.getTier("phones")
    entries = list(tier.entries)
    start, end, label = entries[-1]
    grid = praat_textgrid.Textgrid(0.0, end + 0.5)
    grid.addTier(praat_textgrid.IntervalTier("phones", entries[:-1] + [(start, end + 0.5, "AH0")], 0.0, end + 0.5))
    grid.save(str(path), format="long_textgrid", includeBlankSpaces=True)
    assert run(copy, tmp_path / "data") == 0
    assert "alignment ends after the audio" in (tmp_path / "data" / "train" / "skipped.txt").read_text()
    assert run(copy, tmp_path / "strict", "--strict") == 1


def test_malformed_transcript_line(copy, tmp_path, caplog):
    trans = sorted((copy / "LibriSpeech" / "test-clean").rglob("*.trans.txt"))[0]
    trans.write_text(trans.read_text() + "9999-1-0000 WRONG SPEAKER\n")
    with caplog.at_level(logging.ERROR):
        assert run(copy, tmp_path / "data") == 1
    count = len(trans.read_text().splitlines())
    assert f"{trans}:{count}: expected a new utterance ID" in caplog.text
