"""local/prepare_timit.py on a TIMIT-layout fixture re-laid from speechocean762 (local/corpus_fixtures/timit.py)."""
from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import soundfile as sf

from corpus_layouts import load_script, needs_shared, source
from speechattn.data.alignments import Segment, frame_labels_from_segments
from speechattn.data.kaldi_dir import read_table, read_table_lists, validate_data_dir
from speechattn.data.timit import CORE_TEST_SPEAKERS, DEV_SPEAKERS
from test_timit import published_map

pytestmark = needs_shared
prepare = load_script("prepare_timit")


@pytest.fixture(scope="module")
def timit(tmp_path_factory):
    """Small fixture: 6 TRAIN speakers, 6 TEST speakers (2 core, 3 dev, 1 other), 10 sentences each."""
    from corpus_fixtures.timit import make_timit_fixture
    root = tmp_path_factory.mktemp("timit") / "TIMIT"
    written = make_timit_fixture(source(), root, train_speakers=6, test_speakers=6)
    return root, written


def run(corpus, out, *extra):
    return prepare.main(["--corpus-dir", str(corpus), "--out-dir", str(out), *extra])


def expected_labels(sentence) -> list[str]:
    """The frame labels the fixture's .PHN must give, computed without speechattn.data.timit: the CTM frame
    rule on the segments in seconds, phones folded with the published 61 -> 48 map (upper-cased)."""
    table = published_map()
    segments = [Segment(s.start / 16000, (s.end - s.start) / 16000, table[s.phone][0].upper())
                for s in sentence.phn]
    num_frames = 1 + (sentence.num_samples - 400) // 160
    return list(frame_labels_from_segments(segments, num_frames))


def test_sets_labels_and_tables(timit, tmp_path):
    corpus, written = timit
    assert run(corpus, tmp_path / "data") == 0
    data = tmp_path / "data"
    for name in ("train", "dev", "test"):
        validate_data_dir(data / name, require_labels="frame_labels")
    speakers = {name: set(read_table(data / name / "spk2gender")) for name in ("train", "dev", "test")}
    test_part = {s.speaker for s in written if s.part == "TEST"}
    assert speakers["test"] == test_part & set(CORE_TEST_SPEAKERS) and len(speakers["test"]) == 2
    assert speakers["dev"] == test_part & set(DEV_SPEAKERS) and len(speakers["dev"]) == 3
    assert speakers["train"] == {s.speaker for s in written if s.part == "TRAIN"}
    assert all(read_table(data / "test" / "spk2gender")[s] == s[0].lower() for s in speakers["test"])

    labels = read_table_lists(data / "train" / "frame_labels")
    frames = read_table(data / "train" / "utt2num_frames")
    by_id = {f"{s.speaker}_{s.sentence}": s for s in written}
    assert not any(u.split("_")[1].startswith("SA") for u in labels)  # SA excluded by default
    assert len(labels) == 6 * 8
    for utt, utt_labels in labels.items():
        assert utt_labels == expected_labels(by_id[utt]), utt
        assert int(frames[utt]) == len(utt_labels)
    assert (data / "lang" / "phones.txt").read_text().splitlines()[0] == "SIL 0"
    assert len((data / "lang" / "phones.txt").read_text().splitlines()) == 48
    assert read_table(data / "lang" / "score_map")["VCL"] == "SIL"
    assert read_table(data / "test" / "text")["MDAB0_SI1000"].isupper()


def test_labels_follow_the_source_alignment(timit, tmp_path):
    """Re-laid as TIMIT and prepared, every frame still carries speechocean762's phone (39-folded), except
    the first half of stops, which the fixture marks as closures (scored as silence)."""
    corpus, written = timit
    assert run(corpus, tmp_path / "data") == 0
    fold39 = {p48.upper(): p39.upper() for p48, p39 in (v for v in published_map().values() if v)}
    labels = read_table_lists(tmp_path / "data" / "test" / "frame_labels")
    utterances = {u.utt: u for part in source().values() for u in part}
    compared = agreed = 0
    for sentence in written:
        utt = f"{sentence.speaker}_{sentence.sentence}"
        if utt not in labels:
            continue
        reference = frame_labels_from_segments(list(utterances[sentence.source_utt].phones), len(labels[utt]))
        for ours, theirs in zip(labels[utt], reference):
            ours39 = fold39[ours]
            theirs39 = fold39.get(theirs, theirs)
            compared += 1
            agreed += ours39 == theirs39 or (ours39 == "SIL" and theirs in ("B", "D", "G", "P", "T", "K"))
    assert compared > 1000 and agreed == compared


def test_sphere_audio_is_the_source_audio(timit):
    corpus, written = timit
    sentence = written[0]
    wav = next(sentence.directory.glob(f"{sentence.sentence}.WAV"))
    assert wav.read_bytes()[:8] == b"NIST_1A\n"
    samples, rate = sf.read(str(wav), dtype="int16")
    original, _ = next(u for part in source().values() for u in part if u.utt == sentence.source_utt).read_int16()
    assert rate == 16000 and np.array_equal(samples, original)


def test_lower_case_riff_copy_gives_the_same_labels(timit, tmp_path):
    from corpus_fixtures.timit import make_timit_fixture
    corpus, _ = timit
    lower = tmp_path / "timit"
    make_timit_fixture(source(), lower, train_speakers=6, test_speakers=6, riff=True, lower_case=True)
    assert (lower / "train").is_dir() and next((lower / "test").rglob("*.wav")).read_bytes()[:4] == b"RIFF"
    assert run(corpus, tmp_path / "upper") == 0 and run(lower, tmp_path / "lower") == 0
    for name in ("train", "dev", "test"):
        assert (tmp_path / "upper" / name / "frame_labels").read_text() == \
               (tmp_path / "lower" / name / "frame_labels").read_text()


def test_options_sa_and_complete_test_set(timit, tmp_path):
    corpus, written = timit
    assert run(corpus, tmp_path / "sa", "--include-sa") == 0
    assert len(read_table(tmp_path / "sa" / "train" / "wav.scp")) == 60
    assert run(corpus, tmp_path / "complete", "--test-set", "complete", "--complete-dev-speakers", "1") == 0
    test_speakers = set(read_table(tmp_path / "complete" / "test" / "spk2gender"))
    assert test_speakers == {s.speaker for s in written if s.part == "TEST"}
    dev = set(read_table(tmp_path / "complete" / "dev" / "spk2gender"))
    train = set(read_table(tmp_path / "complete" / "train" / "spk2gender"))
    assert len(dev) == 1 and not dev & train and dev | train == {s.speaker for s in written if s.part == "TRAIN"}


def test_second_run_does_nothing(timit, tmp_path, caplog):
    corpus, _ = timit
    assert run(corpus, tmp_path / "data") == 0
    before = (tmp_path / "data" / "train" / "frame_labels").stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        assert run(corpus, tmp_path / "data") == 0
    assert "up to date, nothing to do" in caplog.text
    assert (tmp_path / "data" / "train" / "frame_labels").stat().st_mtime_ns == before


# ------------------------------------------------------------------------------------------------ bad input


@pytest.fixture
def copy(timit, tmp_path):
    corpus, _ = timit
    target = tmp_path / "TIMIT"
    shutil.copytree(corpus, target)
    return target


def test_mixed_case_copy(copy, tmp_path):
    speaker_dir = next((copy / "TRAIN").glob("DR*/*"))
    speaker_dir.rename(speaker_dir.with_name(speaker_dir.name.lower()))
    for path in list(next((copy / "TEST").glob("DR*/*")).iterdir())[:6]:
        path.rename(path.with_name(path.name.lower()))
    (copy / "TEST").rename(copy / "Test")
    assert run(copy, tmp_path / "data") == 0
    assert len(read_table(tmp_path / "data" / "train" / "wav.scp")) == 48
    assert len(read_table(tmp_path / "data" / "test" / "wav.scp")) + len(read_table(tmp_path / "data" / "dev" / "wav.scp")) == 40


def test_phn_ending_after_the_audio_is_skipped_and_listed(copy, tmp_path, caplog):
    phn = sorted((copy / "TRAIN").rglob("SI*.PHN"))[0]
    lines = phn.read_text().splitlines()
    start, end, phone = lines[-1].split()
    lines[-1] = f"{start} {int(end) + 800} {phone}"
    phn.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.INFO):
        assert run(copy, tmp_path / "data") == 0
    utt = f"{phn.parent.name}_{phn.stem}"
    skipped = (tmp_path / "data" / "train" / "skipped.txt").read_text()
    assert skipped.startswith(f"{utt} .PHN ends after the audio: {phn}:{len(lines)}: ")
    assert utt not in read_table(tmp_path / "data" / "train" / "wav.scp")
    assert ".PHN ends after the audio: 1" in caplog.text


def test_missing_phn_is_skipped_and_counted(copy, tmp_path, caplog):
    phn = sorted((copy / "TEST").rglob("SX*.PHN"))[0]
    phn.unlink()
    with caplog.at_level(logging.INFO):
        assert run(copy, tmp_path / "data") == 0
    assert "missing .PHN: 1" in caplog.text
    assert f"{phn}:0: phone transcription missing" in caplog.text


def test_strict_stops_at_the_first_bad_utterance(copy, tmp_path, caplog):
    phn = sorted((copy / "TRAIN").rglob("SX*.PHN"))[0]
    phn.write_text("0 100 h#\n100 200 xyz\n")
    with caplog.at_level(logging.ERROR):
        assert run(copy, tmp_path / "data", "--strict") == 1
    assert f"{phn}:2: unknown phone 'xyz'" in caplog.text


def test_files_differing_only_in_case_are_an_error(copy, tmp_path, caplog):
    phn = sorted((copy / "TRAIN").rglob("SX*.PHN"))[0]
    shutil.copy(phn, phn.with_name(phn.name.lower()))
    with caplog.at_level(logging.ERROR):
        assert run(copy, tmp_path / "data") == 1
    assert "differ only in letter case" in caplog.text


def test_not_a_timit_directory(tmp_path, caplog):
    (tmp_path / "corpus").mkdir()
    with caplog.at_level(logging.ERROR):
        assert run(tmp_path / "corpus", tmp_path / "data") == 1
    assert "expected TRAIN/ and TEST/" in caplog.text
