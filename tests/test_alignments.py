"""Alignments to frame labels: CTM and HTS parsing, the frame-centre rule, phone tables."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import soundfile as sf

from speechattn.data.alignments import (PHONES, SILENCE, Segment, festival_to_arpabet, frame_labels_from_segments,
                                        read_ctm, read_hts_lab, read_phone_table, write_phone_table)
from speechattn.data.kaldi_dir import KaldiDataError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ARCTIC = SHARED / "fixtures" / "cmu_arctic_slt"


def test_phone_inventory():
    assert len(PHONES) == 40 and PHONES[0] == SILENCE == "SIL"
    assert list(PHONES[1:]) == sorted(PHONES[1:]) and len(set(PHONES)) == 40
    assert {"AA", "ZH", "HH", "NG"} <= set(PHONES)


# --- frame labels ----------------------------------------------------------------------------------------------

def test_centre_rule_on_boundaries():
    # Frame i covers [10i, 10i + 25) ms, centre 10i + 12.5 ms. A 20 ms phone from 20 to 40 ms covers the
    # centres 22.5 and 32.5 ms, i.e. frames 1 and 2, although frames 0..3 all overlap it.
    segments = [Segment(0.00, 0.02, "SIL"), Segment(0.02, 0.02, "AH"), Segment(0.04, 0.03, "T")]
    assert frame_labels_from_segments(segments, 6) == ["SIL", "AH", "AH", "T", "T", "T"]


def test_floating_point_boundaries_from_ctm_decimals():
    # 0.67 + 0.04 = 0.7100000000000001 in floats; the boundary must still be exactly 710 ms.
    segments = [Segment(0.0, 0.67, "SIL"), Segment(0.67, 0.04, "HH"), Segment(0.71, 0.2, "IY")]
    labels = frame_labels_from_segments(segments, 91)
    assert labels[65] == "SIL" and labels[66] == "HH"  # centres 662.5 / 672.5 ms
    assert labels[69] == "HH" and labels[70] == "IY"  # centres 702.5 / 712.5 ms
    assert labels.count("HH") == 4
    assert labels[89] == "IY" and labels[90] == "SIL" and labels.num_filled == 1  # 902.5 < 910 < 912.5 ms


def test_centre_exactly_on_boundary_goes_to_later_segment():
    segments = [Segment(0.0, 0.0125, "SIL"), Segment(0.0125, 0.05, "AA")]
    assert frame_labels_from_segments(segments, 2) == ["AA", "AA"]


def test_gaps_and_tail_are_filled_and_counted():
    segments = [Segment(0.00, 0.02, "AA"), Segment(0.05, 0.02, "B")]  # gap 20-50 ms, ends at 70 ms
    labels = frame_labels_from_segments(segments, 8, fill="SIL")
    assert labels == ["AA", "SIL", "SIL", "SIL", "B", "B", "SIL", "SIL"]
    assert labels.num_filled == 5
    assert frame_labels_from_segments(segments, 8, fill="<gap>")[2] == "<gap>"


def test_segments_past_the_last_frame_are_ignored_and_zero_frames():
    segments = [Segment(0.0, 1.0, "AA"), Segment(1.0, 1.0, "B")]
    assert frame_labels_from_segments(segments, 3) == ["AA"] * 3
    assert frame_labels_from_segments(segments, 0) == []


def test_other_frame_geometry():
    segments = [Segment(0.0, 0.03, "AA"), Segment(0.03, 0.1, "B")]
    # 20 ms shift, 40 ms window: centres 20, 40, 60 ms.
    assert frame_labels_from_segments(segments, 3, frame_shift=0.02, frame_length=0.04) == ["AA", "B", "B"]


def test_overlapping_segments_rejected():
    with pytest.raises(ValueError, match="starts before the previous one ends"):
        frame_labels_from_segments([Segment(0.0, 0.05, "AA"), Segment(0.04, 0.05, "B")], 5)


# --- CTM -------------------------------------------------------------------------------------------------------

def test_read_ctm(tmp_path):
    path = tmp_path / "phones.ctm"
    path.write_text("u2 1 0.00 0.30 SIL\nu1 1 0.00 0.10 SIL\nu2 1 0.30 0.05 AH 0.93\nu1 1 0.10 0.2 K\n")
    ctm = read_ctm(path, phones=PHONES)
    assert list(ctm) == ["u2", "u1"]
    assert ctm["u1"] == [Segment(0.0, 0.1, "SIL"), Segment(0.1, 0.2, "K")]
    assert ctm["u2"][1].label == "AH" and ctm["u2"][1].end == pytest.approx(0.35)


@pytest.mark.parametrize("bad_line, what", [
    ("u1 1 0.10 AH", "expected 'UTT CHANNEL START DURATION LABEL'"),
    ("u1 1 0.10 x AH", "must be numbers"),
    ("u1 1 0.10 -0.01 AH", "negative"),
    ("u1 1 0.10 0.05 XX", "unknown phone 'XX'"),
    ("u1 1 0.05 0.05 AH", "starts before the previous one ends"),
])
def test_read_ctm_errors_name_file_and_line(tmp_path, bad_line, what):
    path = tmp_path / "phones.ctm"
    path.write_text(f"u1 1 0.00 0.10 SIL\n{bad_line}\n")
    with pytest.raises(KaldiDataError, match=re.escape(f"{path}:2: ") + ".*" + re.escape(what)):
        read_ctm(path, phones=PHONES)


def test_read_ctm_without_phone_set_accepts_any_label(tmp_path):
    path = tmp_path / "words.ctm"
    path.write_text("u1 1 0.00 0.10 <sil>\nu1 1 0.10 0.20 hello\n")
    assert [s.label for s in read_ctm(path)["u1"]] == ["<sil>", "hello"]


# --- HTS labels ------------------------------------------------------------------------------------------------

def test_festival_mapping():
    assert [festival_to_arpabet(p) for p in ("ax", "pau", "sil", "hh", "ng")] == ["AH", "SIL", "SIL", "HH", "NG"]


def test_hts_fixture():
    lab, wav = ARCTIC / "arctic_a0009_phone.lab", ARCTIC / "arctic_a0009.wav"
    if not lab.is_file():
        pytest.skip(f"../shared not found: {lab}")
    segments = read_hts_lab(lab)
    labels = [s.label for s in segments]
    assert labels[:6] == ["SIL", "HH", "IY", "T", "ER", "N"]  # "He turned ..."
    assert labels[-1] == "SIL" and set(labels) <= set(PHONES)
    assert "AH" in labels  # from Festival "ax"
    assert segments[0].start == 0 and segments[1].start == pytest.approx(0.13)
    for previous, current in zip(segments, segments[1:]):
        assert current.start == pytest.approx(previous.end)  # contiguous
    last_end = int(lab.read_text().split("\n")[-2].split()[1])
    assert segments[-1].end == pytest.approx(last_end * 1e-7)
    audio_seconds = sf.info(str(wav)).duration
    assert abs(segments[-1].end - audio_seconds) < 0.05  # the labels span the recording
    num_frames = 1 + (sf.info(str(wav)).frames - 400) // 160
    frame_labels = frame_labels_from_segments(segments, num_frames)
    assert len(frame_labels) == num_frames and frame_labels[0] == "SIL" and frame_labels[14] == "HH"


def test_hts_errors(tmp_path):
    path = tmp_path / "bad.lab"
    path.write_text("0 100000 x^x-pau+hh=iy\n100000 50000 x^pau-hh+iy=t\n")
    with pytest.raises(KaldiDataError, match=re.escape(f"{path}:2: ") + ".*reversed"):
        read_hts_lab(path)
    path.write_text("0 100000 x^x-qq+hh=iy\n")
    with pytest.raises(KaldiDataError, match=re.escape(f"{path}:1: unknown phone 'QQ'")):
        read_hts_lab(path)
    path.write_text("0 100000 pau\n100000 300000 ax\n")  # monophone labels
    assert read_hts_lab(path) == [Segment(0.0, 0.01, "SIL"), Segment(0.01, 0.02, "AH")]


# --- phone table -----------------------------------------------------------------------------------------------

def test_phone_table_roundtrip(tmp_path):
    path = tmp_path / "lang" / "phones.txt"
    write_phone_table(path)
    lines = path.read_text().splitlines()
    assert lines[0] == "SIL 0" and lines[-1] == "ZH 39" and len(lines) == 40
    assert read_phone_table(path) == list(PHONES)


def test_phone_table_errors(tmp_path):
    path = tmp_path / "phones.txt"
    path.write_text("SIL 0\nAA 2\n")
    with pytest.raises(KaldiDataError, match=re.escape(f"{path}:2: expected id 1 for 'AA'")):
        read_phone_table(path)
    path.write_text("SIL 0\nAA\n")
    with pytest.raises(KaldiDataError, match=re.escape(f"{path}:2: expected 'SYMBOL ID'")):
        read_phone_table(path)
