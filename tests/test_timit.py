"""speechattn.data.timit: phone folding against the published map, .PHN files and frame labels, corpus layout."""
from __future__ import annotations

import random

import numpy as np
import pytest
import soundfile as sf

from speechattn.data.alignments import Segment, frame_labels_from_segments
from speechattn.data.kaldi_dir import KaldiDataError
from speechattn.data.timit import (CORE_TEST_SPEAKERS, DEV_SPEAKERS, FOLD_48_TO_39, FOLD_61_TO_48, TIMIT39, TIMIT48,
                                   TIMIT61, PhnOverhangError, PhnSegment, audio_format, fold_61_to_39, fold_61_to_48,
                                   frame_labels_from_phn, merge_glottal_stops, phn_from_frame_labels, phone_table_39,
                                   phone_table_48, read_phn, read_speaker_list, read_txt, scan_corpus,
                                   scoring_map_48_to_39, write_phn)

# Kaldi egs/timit/s5/conf/phones.60-48-39.map, verbatim (columns: TIMIT phone, 48-set, 39-set; q has no
# mapping: deleted). The reference the folding tables are checked against; written independently of them.
KALDI_MAP = """\
aa\taa\taa
ae\tae\tae
ah\tah\tah
ao\tao\taa
aw\taw\taw
ax\tax\tah
ax-h\tax\tah
axr\ter\ter
ay\tay\tay
b\tb\tb
bcl\tvcl\tsil
ch\tch\tch
d\td\td
dcl\tvcl\tsil
dh\tdh\tdh
dx\tdx\tdx
eh\teh\teh
el\tel\tl
em\tm\tm
en\ten\tn
eng\tng\tng
epi\tepi\tsil
er\ter\ter
ey\tey\tey
f\tf\tf
g\tg\tg
gcl\tvcl\tsil
h#\tsil\tsil
hh\thh\thh
hv\thh\thh
ih\tih\tih
ix\tix\tih
iy\tiy\tiy
jh\tjh\tjh
k\tk\tk
kcl\tcl\tsil
l\tl\tl
m\tm\tm
n\tn\tn
ng\tng\tng
nx\tn\tn
ow\tow\tow
oy\toy\toy
p\tp\tp
pau\tsil\tsil
pcl\tcl\tsil
q
r\tr\tr
s\ts\ts
sh\tsh\tsh
t\tt\tt
tcl\tcl\tsil
th\tth\tth
uh\tuh\tuh
uw\tuw\tuw
ux\tuw\tuw
v\tv\tv
w\tw\tw
y\ty\ty
z\tz\tz
zh\tzh\tsh
"""

# Kaldi egs/timit/s5/conf/test_spk.list and dev_spk.list, verbatim.
KALDI_TEST_SPK = ("mdab0 mwbt0 felc0 mtas1 mwew0 fpas0 mjmp0 mlnt0 fpkt0 mlll0 mtls0 fjlm0 mbpm0 mklt0 fnlp0 mcmj0 "
                  "mjdh0 fmgd0 mgrt0 mnjm0 fdhc0 mjln0 mpam0 fmld0").split()
KALDI_DEV_SPK = ("faks0 fdac1 fjem0 mgwt0 mjar0 mmdb1 mmdm2 mpdf0 fcmh0 fkms0 mbdg0 mbwm0 mcsh0 fadg0 fdms0 fedw0 "
                 "mgjf0 mglb0 mrtk0 mtaa0 mtdt0 mthc0 mwjg0 fnmr0 frew0 fsem0 mbns0 mmjr0 mdls0 mdlf0 mdvc0 mers0 "
                 "fmah0 fdrw0 mrcs0 mrjm4 fcal1 mmwh0 fjsj0 majc0 mjsw0 mreb0 fgjd0 fjmg0 mroa0 mteb0 mjfc0 mrjr0 "
                 "fmml0 mrws1").split()


def published_map() -> dict[str, tuple[str, str] | None]:
    table = {}
    for line in KALDI_MAP.splitlines():
        fields = line.split("\t")
        table[fields[0]] = (fields[1], fields[2]) if len(fields) == 3 else None
    return table


# ------------------------------------------------------------------------------------------------ folding


def test_folding_matches_the_published_map_entry_by_entry():
    reference = published_map()
    assert set(reference) == set(TIMIT61) and len(TIMIT61) == 61
    for phone, expected in reference.items():
        if expected is None:
            assert fold_61_to_48(phone) is None and fold_61_to_39(phone) is None, phone
        else:
            assert (fold_61_to_48(phone), fold_61_to_39(phone)) == expected, phone


def test_set_sizes_and_48_to_39_consistency():
    reference = published_map()
    assert set(TIMIT48) == {v[0] for v in reference.values() if v} and len(TIMIT48) == 48
    assert set(TIMIT39) == {v[1] for v in reference.values() if v} and len(TIMIT39) == 39
    # The 48 -> 39 table is a function: every 48-set phone folds to one class in the published map.
    for p61, folded in reference.items():
        if folded:
            assert FOLD_48_TO_39[folded[0]] == folded[1]
    assert FOLD_61_TO_48["q"] is None


def test_lee_hon_39_classes():
    """Lee & Hon (1989)'s merged groups, spelled out: each group is one scoring class."""
    groups = [("aa", "ao"), ("ah", "ax", "ax-h"), ("er", "axr"), ("hh", "hv"), ("ih", "ix"), ("l", "el"),
              ("m", "em"), ("n", "en", "nx"), ("ng", "eng"), ("sh", "zh"), ("uw", "ux"),
              ("sil", "pcl", "tcl", "kcl", "bcl", "dcl", "gcl", "h#", "pau", "epi")]
    for group in groups:
        classes = {fold_61_to_39(p) if p != "sil" else "sil" for p in group}
        assert len(classes) == 1, group
    merged = {p for group in groups for p in group}
    singletons = [p for p in TIMIT61 if p not in merged and p != "q"]
    assert len(singletons) + len(groups) == 39


def test_data_dir_symbols():
    table48, table39 = phone_table_48(), phone_table_39()
    assert table48[0] == "SIL" and table39[0] == "SIL" and len(table48) == 48 and len(table39) == 39
    assert len(set(table48)) == 48
    mapping = scoring_map_48_to_39()
    assert set(mapping) == set(table48) and set(mapping.values()) == set(table39)
    assert mapping["VCL"] == "SIL" and mapping["AO"] == "AA" and mapping["ZH"] == "SH" and mapping["DX"] == "DX"


def test_standard_speaker_lists_are_kaldis(tmp_path):
    assert list(CORE_TEST_SPEAKERS) == [s.upper() for s in KALDI_TEST_SPK]
    assert list(DEV_SPEAKERS) == [s.upper() for s in KALDI_DEV_SPK]
    assert not set(CORE_TEST_SPEAKERS) & set(DEV_SPEAKERS)
    # Core test set: 2 men and 1 woman from each of the 8 dialect regions.
    assert sum(s[0] == "F" for s in CORE_TEST_SPEAKERS) == 8
    path = tmp_path / "test_spk.list"
    path.write_text("\n".join(KALDI_TEST_SPK) + "\n")
    assert read_speaker_list(path) == list(CORE_TEST_SPEAKERS)
    path.write_text("mdab0\nnot a speaker\n")
    with pytest.raises(KaldiDataError, match=r"test_spk.list:2: "):
        read_speaker_list(path)


# ------------------------------------------------------------------------------------------------ .PHN


def random_segments(rng: random.Random, num_samples: int, gaps: bool = False) -> list[PhnSegment]:
    segments, start = [], 0
    while start < num_samples:
        end = min(num_samples, start + rng.randint(1, 2500))
        segments.append(PhnSegment(start, end, rng.choice(["h#", "aa", "bcl", "b", "ix", "q"])))
        start = end + (rng.randint(0, 300) if gaps and rng.random() < 0.2 else 0)
    return segments


def test_frame_labels_agree_with_the_ctm_convention():
    """Sample-based labelling == alignments.frame_labels_from_segments (seconds, frame centres) everywhere,
    including boundaries that fall exactly on a frame centre (sample 160 i + 200)."""
    rng = random.Random(0)
    for trial in range(200):
        num_samples = rng.randint(400, 40000)
        segments = random_segments(rng, num_samples, gaps=trial % 2 == 1)
        if trial % 3 == 0:  # force boundaries onto frame centres
            segments = [PhnSegment(s.start - s.start % 160 + 40 if s.start % 160 > 40 and s.start else s.start,
                                   s.end, s.phone) for s in segments]
            segments = [s for s in segments if s.end > s.start]
            segments = [s for i, s in enumerate(segments) if i == 0 or s.start >= segments[i - 1].end]
        num_frames = 1 + (num_samples - 400) // 160
        ours = frame_labels_from_phn(segments, num_frames, fill="h#")
        reference = frame_labels_from_segments(
            [Segment(s.start / 16000, (s.end - s.start) / 16000, s.phone) for s in segments], num_frames, fill="h#")
        assert list(ours) == list(reference)
        assert ours.num_filled == reference.num_filled


def test_boundary_on_a_frame_centre_goes_to_the_later_segment():
    segments = [PhnSegment(0, 360, "h#"), PhnSegment(360, 1000, "aa")]  # frame 1's centre is sample 360
    assert frame_labels_from_phn(segments, 3) == ["h#", "aa", "aa"]


def test_frames_to_phn_to_frames_is_exact():
    rng = random.Random(1)
    for _ in range(300):
        num_frames = rng.randint(1, 400)
        labels = []
        while len(labels) < num_frames:
            labels += [rng.choice(["h#", "aa", "b", "s"])] * rng.randint(1, 12)
        labels = labels[:num_frames]
        num_samples = (num_frames - 1) * 160 + 400 + rng.randint(0, 159)
        segments = phn_from_frame_labels(labels, num_samples)
        assert segments[0].start == 0 and segments[-1].end == num_samples
        assert all(a.end == b.start for a, b in zip(segments, segments[1:]))
        assert frame_labels_from_phn(segments, num_frames) == labels


def test_phn_file_round_trip(tmp_path):
    segments = [PhnSegment(0, 2260, "h#"), PhnSegment(2260, 4400, "sh"), PhnSegment(4400, 5800, "ix"),
                PhnSegment(5800, 7000, "q"), PhnSegment(7000, 9000, "ax-h")]
    write_phn(tmp_path / "SA1.PHN", segments)
    assert (tmp_path / "SA1.PHN").read_text().splitlines()[1] == "2260 4400 sh"
    assert read_phn(tmp_path / "SA1.PHN") == segments
    assert read_phn(tmp_path / "SA1.PHN", num_samples=9000) == segments


@pytest.mark.parametrize("content, line, message", [
    ("0 100 h#\n100 200\n", 2, "expected 'START END LABEL'"),
    ("0 100 h#\n100 2x0 aa\n", 2, "must be integers"),
    ("0 100 h#\n100 100 aa\n", 2, "START < END"),
    ("0 100 h#\n50 200 aa\n", 2, "overlapping"),
    ("0 100 h#\n100 200 xx\n", 2, "unknown phone 'xx'"),
])
def test_malformed_phn_names_file_and_line(tmp_path, content, line, message):
    path = tmp_path / "SX10.PHN"
    path.write_text(content)
    with pytest.raises(KaldiDataError, match=rf"SX10.PHN:{line}: .*{message}"):
        read_phn(path)


def test_phn_ending_after_the_audio(tmp_path):
    path = tmp_path / "SI943.PHN"
    path.write_text("0 3000 h#\n3000 5000 aa\n5000 7120 h#\n")
    with pytest.raises(PhnOverhangError, match=r"SI943.PHN:3: .*ends after the audio \(7000 samples\)"):
        read_phn(path, num_samples=7000)
    assert read_phn(path, num_samples=7120)[-1].end == 7120


def test_missing_phn_is_an_error_naming_it(tmp_path):
    with pytest.raises(KaldiDataError, match=r"SA2.PHN:0: file not found"):
        read_phn(tmp_path / "SA2.PHN")


def test_glottal_stops_join_a_neighbour():
    segments = [PhnSegment(0, 10, "q"), PhnSegment(10, 20, "aa"), PhnSegment(20, 30, "q"), PhnSegment(30, 40, "b"),
                PhnSegment(45, 50, "q"), PhnSegment(50, 60, "s")]
    merged, count = merge_glottal_stops(segments)
    assert count == 3
    # leading q -> the next phone; q after a phone it touches -> that phone; q after a gap -> the next phone
    assert merged == [PhnSegment(0, 30, "aa"), PhnSegment(30, 40, "b"), PhnSegment(45, 60, "s")]


def test_read_txt(tmp_path):
    (tmp_path / "SA1.TXT").write_text("0 46797 She had your dark suit in greasy wash water all year.\n")
    assert read_txt(tmp_path / "SA1.TXT") == "SHE HAD YOUR DARK SUIT IN GREASY WASH WATER ALL YEAR"
    (tmp_path / "SA2.TXT").write_text("Don't ask me\n")
    with pytest.raises(KaldiDataError, match=r"SA2.TXT:1: "):
        read_txt(tmp_path / "SA2.TXT")


# ------------------------------------------------------------------------------------------------ layout


def make_sentence(directory, name, exts=("WAV", "PHN", "WRD", "TXT")):
    directory.mkdir(parents=True, exist_ok=True)
    for ext in exts:
        path = directory / f"{name}.{ext}"
        if ext.upper() == "WAV":
            sf.write(str(path), np.zeros(1600, dtype=np.int16), 16000, format="NIST", subtype="PCM_16")
        else:
            path.write_text("0 1600 h#\n")


def test_scan_accepts_upper_lower_and_mixed_case(tmp_path):
    make_sentence(tmp_path / "TRAIN" / "DR1" / "FCJF0", "SA1")
    make_sentence(tmp_path / "TRAIN" / "dr1" / "mdpk0", "si1234", exts=("wav", "phn", "wrd", "txt"))
    make_sentence(tmp_path / "TRAIN" / "DR2" / "Faem0", "Sx91", exts=("Wav", "PHN", "wrd", "TXT"))
    make_sentence(tmp_path / "test" / "DR1" / "MDAB0", "SI1039")
    utterances = scan_corpus(tmp_path)
    # DR1 and dr1 are one dialect folder (copies merged from several sources have both spellings)
    assert [u.utt_id for u in utterances] == ["FAEM0_SX91", "FCJF0_SA1", "MDPK0_SI1234", "MDAB0_SI1039"]
    assert [u.dialect for u in utterances] == ["DR2", "DR1", "DR1", "DR1"]
    assert [u.part for u in utterances] == ["TRAIN", "TRAIN", "TRAIN", "TEST"]
    assert all(u.phn is not None and u.phn.is_file() for u in utterances)
    assert utterances[1].is_sa and not utterances[0].is_sa


def test_scan_reports_names_differing_only_in_case(tmp_path):
    make_sentence(tmp_path / "TRAIN" / "DR1" / "FCJF0", "SA1")
    make_sentence(tmp_path / "TRAIN" / "DR1" / "FCJF0", "sa1", exts=("phn",))
    (tmp_path / "TEST").mkdir()
    with pytest.raises(KaldiDataError, match=r"FCJF0/(SA1|sa1)\.(PHN|phn):0: .*differ only in letter case"):
        scan_corpus(tmp_path)


def test_scan_needs_train_and_test(tmp_path):
    (tmp_path / "TRAIN").mkdir()
    with pytest.raises(KaldiDataError, match=r":0: expected TRAIN/ and TEST/"):
        scan_corpus(tmp_path)


def test_missing_phn_is_reported_as_none(tmp_path):
    make_sentence(tmp_path / "TRAIN" / "DR1" / "FCJF0", "SA1", exts=("WAV", "TXT"))
    (tmp_path / "TEST").mkdir()
    [utterance] = scan_corpus(tmp_path)
    assert utterance.phn is None and utterance.txt is not None


def test_audio_formats(tmp_path):
    samples = (np.arange(3200) % 200 - 100).astype(np.int16)
    sf.write(str(tmp_path / "a.WAV"), samples, 16000, format="NIST", subtype="PCM_16")
    sf.write(str(tmp_path / "b.WAV"), samples, 16000, format="WAV", subtype="PCM_16")
    sf.write(str(tmp_path / "c.flac"), samples, 16000, format="FLAC", subtype="PCM_16")
    assert audio_format(tmp_path / "a.WAV") == "NIST" and audio_format(tmp_path / "b.WAV") == "WAV"
    with pytest.raises(KaldiDataError, match=r"c.flac:0: expected a NIST SPHERE or RIFF"):
        audio_format(tmp_path / "c.flac")
    (tmp_path / "d.WAV").write_bytes(b"NIST_1A\n   1024\ngarbage")
    with pytest.raises(KaldiDataError, match=r"d.WAV:0: cannot read the audio header"):
        audio_format(tmp_path / "d.WAV")


def test_score_map_errors_name_file_and_line(tmp_path):
    from speechattn.data.kaldi_dir import KaldiDataError
    from speechattn.data.phone_data_dir import read_score_map

    path = tmp_path / "score_map"
    path.write_text("SIL SIL\nAA AA\n")
    assert read_score_map(path, ["SIL", "AA"]) == ({"SIL": "SIL", "AA": "AA"}, ["SIL", "AA"])
    path.write_text("SIL SIL\nZZ AA\n")
    with pytest.raises(KaldiDataError, match=r"score_map:2: 'ZZ' is not a training phone"):
        read_score_map(path, ["SIL", "AA"])
    path.write_text("SIL SIL\n")
    with pytest.raises(KaldiDataError, match=r"score_map:0: 1 training phone\(s\) not mapped \(first: AA\)"):
        read_score_map(path, ["SIL", "AA"])
