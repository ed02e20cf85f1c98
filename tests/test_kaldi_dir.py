"""Kaldi tables and data directories: reading errors name file and line, validation, splitting."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from speechattn.data.kaldi_dir import (KaldiDataDir, KaldiDataError, read_table, read_table_lists,
                                       split_data_dir, utt2spk_to_spk2utt, validate_data_dir, write_table)


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


# --- table reading -------------------------------------------------------------------------------------------

def test_read_table_value_is_rest_of_line_with_tabs_or_spaces(tmp_path):
    path = write_lines(tmp_path / "text", "u1\tHELLO  WORLD ", "u2 BYE", "u3   A\tB")
    table = read_table(path)
    assert table == {"u1": "HELLO  WORLD", "u2": "BYE", "u3": "A\tB"}
    assert list(table) == ["u1", "u2", "u3"]
    assert read_table_lists(path)["u3"] == ["A", "B"]


@pytest.mark.parametrize("lines, line, what", [
    (("b x", "a y"), 2, "not sorted"),
    (("a x", "b y", "a z"), 3, "duplicated key 'a'"),
    (("a x", "", "b y"), 2, "empty line"),
    (("a x", "b"), 2, "missing value"),
])
def test_read_table_errors_name_file_and_line(tmp_path, lines, line, what):
    path = write_lines(tmp_path / "utt2spk", *lines)
    with pytest.raises(KaldiDataError, match=re.escape(f"{path}:{line}: ") + ".*" + re.escape(what)):
        read_table(path)


def test_sort_order_is_c_locale_bytes(tmp_path):
    # C locale: uppercase before lowercase, '-' (0x2d) before '_' (0x5f); a natural-language sort disagrees.
    assert read_table(write_lines(tmp_path / "a", "B x", "a x", "u-1 x", "u_1 x"))
    with pytest.raises(KaldiDataError, match=":2: key 'u-1' is not sorted"):
        read_table(write_lines(tmp_path / "b", "u_1 x", "u-1 x"))
    assert list(read_table(write_lines(tmp_path / "c", "b x", "a y"), check_sorted=False)) == ["b", "a"]


def test_missing_table_file_is_a_clear_error(tmp_path):
    with pytest.raises(KaldiDataError, match="not found"):
        read_table(tmp_path / "nope")


def test_min_fields_one_allows_key_without_value(tmp_path):
    assert read_table(write_lines(tmp_path / "t", "a", "b x"), min_fields=1) == {"a": "", "b": "x"}


def test_write_table_sorts_joins_lists_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "sub" / "frame_labels"
    write_table(path, {"u2": ["SIL", "AH"], "U1": "SIL"})
    assert path.read_text() == "U1 SIL\nu2 SIL AH\n"
    assert read_table_lists(path) == {"U1": ["SIL"], "u2": ["SIL", "AH"]}
    assert os.listdir(path.parent) == ["frame_labels"]
    with pytest.raises(KaldiDataError, match="whitespace"):
        write_table(tmp_path / "bad", {"a b": "x"})


def test_utt2spk_to_spk2utt():
    assert utt2spk_to_spk2utt({"a1": "a", "b1": "b", "a2": "a"}) == {"a": ["a1", "a2"], "b": ["b1"]}


# --- data directories ----------------------------------------------------------------------------------------

def make_data_dir(root: Path, num_utts: int = 5, *, with_audio: bool = True) -> Path:
    """spk s1 has utts 0,1,2..., s2 the rest; audio files are empty placeholders (existence is checked)."""
    data = root / "data"
    utts = [f"s{1 + (i >= 3)}-u{i}" for i in range(num_utts)]
    wav = {}
    for utt in utts:
        audio = root / "audio" / f"{utt}.flac"
        if with_audio:
            audio.parent.mkdir(parents=True, exist_ok=True)
            audio.touch()
        wav[utt] = str(audio)
    utt2spk = {utt: utt.split("-")[0] for utt in utts}
    write_table(data / "wav.scp", wav)
    write_table(data / "utt2spk", utt2spk)
    write_table(data / "spk2utt", utt2spk_to_spk2utt(utt2spk))
    write_table(data / "text", {utt: "HELLO" for utt in utts})
    write_table(data / "utt2num_frames", {utt: str(2 + i) for i, utt in enumerate(utts)})
    write_table(data / "frame_labels", {utt: ["SIL"] * (2 + i) for i, utt in enumerate(utts)})
    write_table(data / "spk2gender", {"s1": "m", "s2": "f"})
    return data


def test_load_data_dir(tmp_path):
    data = make_data_dir(tmp_path)
    (data / "spk2utt").unlink()
    loaded = KaldiDataDir.load(data)
    assert loaded.utterances == ["s1-u0", "s1-u1", "s1-u2", "s2-u3", "s2-u4"]
    assert loaded.spk2utt == {"s1": ["s1-u0", "s1-u1", "s1-u2"], "s2": ["s2-u3", "s2-u4"]}
    assert loaded.text["s1-u0"] == "HELLO" and loaded.segments is None
    assert loaded.utt2num_frames["s2-u4"] == 6
    with pytest.raises(KaldiDataError, match=re.escape(f"{data / 'segments'}:0: required")):
        KaldiDataDir.load(data, require=("wav.scp", "segments"))


def test_validate_accepts_consistent_dir(tmp_path):
    validate_data_dir(make_data_dir(tmp_path), require_labels="frame_labels")


def test_validate_utt_missing_from_utt2spk(tmp_path):
    data = make_data_dir(tmp_path)
    utt2spk = read_table(data / "utt2spk")
    del utt2spk["s1-u1"]
    write_table(data / "utt2spk", utt2spk)
    with pytest.raises(KaldiDataError, match=re.escape(f"{data / 'wav.scp'}:2: utterance 's1-u1' has no speaker")):
        validate_data_dir(data)


def test_validate_spk2utt_disagreeing_with_utt2spk(tmp_path):
    data = make_data_dir(tmp_path)
    write_table(data / "spk2utt", {"s1": "s1-u0 s1-u1 s1-u2 s2-u3", "s2": "s2-u4"})
    with pytest.raises(KaldiDataError, match=re.escape(f"{data / 'spk2utt'}:1: utterance 's2-u3'")):
        validate_data_dir(data)


def test_validate_frame_labels_key_mismatch(tmp_path):
    data = make_data_dir(tmp_path)
    labels = read_table(data / "frame_labels")
    del labels["s2-u3"]
    write_table(data / "frame_labels", labels)
    validate_data_dir(data)  # a subset is fine unless frame_labels are required
    with pytest.raises(KaldiDataError, match=re.escape(f"{data / 'wav.scp'}:4: utterance 's2-u3' is missing "
                                                       f"from {data / 'frame_labels'}")):
        validate_data_dir(data, require_labels="frame_labels")
    labels["zz-extra"] = "SIL SIL"
    write_table(data / "frame_labels", labels)
    with pytest.raises(KaldiDataError, match=re.escape(f"{data / 'frame_labels'}:5: utterance 'zz-extra' is not in")):
        validate_data_dir(data)


def test_validate_frame_label_count_against_utt2num_frames(tmp_path):
    data = make_data_dir(tmp_path)
    labels = read_table_lists(data / "frame_labels")
    labels["s1-u1"].append("SIL")
    write_table(data / "frame_labels", labels)
    with pytest.raises(KaldiDataError, match=r"frame_labels:2: utterance 's1-u1' has 4 frame labels but "
                                             r"utt2num_frames says 3"):
        validate_data_dir(data)


def test_validate_missing_audio_file_and_pipes(tmp_path):
    data = make_data_dir(tmp_path)
    wav = read_table(data / "wav.scp")
    os.unlink(wav["s1-u2"])
    with pytest.raises(KaldiDataError, match=re.escape(f"{data / 'wav.scp'}:3: audio file of 's1-u2' not found")):
        validate_data_dir(data)
    validate_data_dir(data, check_audio=False)
    wav["s1-u2"] = "sox missing.wav -t wav - |"
    write_table(data / "wav.scp", wav)
    validate_data_dir(data)  # pipes are not checked


def test_validate_unsorted_table_names_line(tmp_path):
    data = make_data_dir(tmp_path)
    text = (data / "text").read_text().splitlines()
    text[1], text[2] = text[2], text[1]
    write_lines(data / "text", *text)
    with pytest.raises(KaldiDataError, match=re.escape(f"{data / 'text'}:3: key 's1-u1' is not sorted")):
        validate_data_dir(data)


def test_validate_segments_recordings(tmp_path):
    data = make_data_dir(tmp_path, num_utts=2)
    reco = read_table(data / "wav.scp")
    write_table(data / "wav.scp", {"rec1": reco["s1-u0"]})
    write_table(data / "segments", {"s1-u0": "rec1 0.0 1.5", "s1-u1": "rec2 1.5 3.0"})
    with pytest.raises(KaldiDataError, match=re.escape(f"{data / 'segments'}:2: recording 'rec2'")):
        validate_data_dir(data)
    write_table(data / "segments", {"s1-u0": "rec1 0.0 1.5", "s1-u1": "rec1 1.5 3.0"})
    validate_data_dir(data)


# --- splitting -------------------------------------------------------------------------------------------------

def test_split_data_dir_by_utterance(tmp_path):
    data = make_data_dir(tmp_path)
    jobs = split_data_dir(data, 2)
    assert jobs == [data / "split2" / "1", data / "split2" / "2"]
    parts = [list(read_table(job / "wav.scp")) for job in jobs]
    assert parts == [["s1-u0", "s1-u1", "s1-u2"], ["s2-u3", "s2-u4"]]
    assert read_table(jobs[1] / "spk2gender") == {"s2": "f"}
    for job in jobs:
        validate_data_dir(job, require_labels="frame_labels")
        assert read_table(job / "frame_labels") == {k: v for k, v in read_table(data / "frame_labels").items()
                                                    if k in read_table(job / "wav.scp")}

    three = split_data_dir(data, 3)  # speaker s1 is cut between jobs 1 and 2: split by utterance
    assert [len(read_table(job / "utt2spk")) for job in three] == [2, 2, 1]
    assert read_table_lists(three[1] / "spk2utt") == {"s1": ["s1-u2"], "s2": ["s2-u3"]}


def test_split_data_dir_is_idempotent_and_redone_when_sources_change(tmp_path):
    data = make_data_dir(tmp_path)
    jobs = split_data_dir(data, 2)
    stamp = (jobs[0] / "text").stat().st_mtime_ns
    assert split_data_dir(data, 2) == jobs
    assert (jobs[0] / "text").stat().st_mtime_ns == stamp  # reused, not rewritten

    write_table(data / "text", {utt: "CHANGED" for utt in read_table(data / "wav.scp")})
    later = stamp + 10_000_000
    os.utime(data / "text", ns=(later, later))
    split_data_dir(data, 2)
    assert set(read_table(jobs[0] / "text").values()) == {"CHANGED"}


def test_split_more_jobs_than_utterances(tmp_path):
    with pytest.raises(KaldiDataError, match="cannot split 5 utterances into 6 jobs"):
        split_data_dir(make_data_dir(tmp_path), 6)
