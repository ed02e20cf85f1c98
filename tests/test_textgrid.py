"""speechattn.data.textgrid: MFA phone tiers in, frame labels out as TextGrids (praatio both ways)."""
from __future__ import annotations

import random

import pytest
from praatio import textgrid as praat_textgrid

from speechattn.data.alignments import frame_labels_from_segments
from speechattn.data.textgrid import (SPOKEN_NOISE, MissingTierError, TextGridError, frame_label_segments,
                                      mfa_arpabet_phone, read_interval_tier, read_phone_tier,
                                      write_frame_labels_textgrid)


def write_mfa_textgrid(path, phones, words=(("", 0.0, 0.0),), duration=None, tier_prefix="", fmt="long_textgrid"):
    """A TextGrid as MFA writes it: 'words' and 'phones' interval tiers, silence as empty intervals."""
    duration = duration if duration is not None else phones[-1][1]
    grid = praat_textgrid.Textgrid(minTimestamp=0.0, maxTimestamp=duration)
    grid.addTier(praat_textgrid.IntervalTier(f"{tier_prefix}words", [w for w in words if w[0]] and
                                             [(s, e, w) for w, s, e in words if w], 0.0, duration))
    grid.addTier(praat_textgrid.IntervalTier(f"{tier_prefix}phones", [p for p in phones if p[2]], 0.0, duration))
    grid.save(str(path), format=fmt, includeBlankSpaces=True)


PHONES = [(0.0, 0.3, ""), (0.3, 0.35, "HH"), (0.35, 0.5, "AH0"), (0.5, 0.62, "L"), (0.62, 0.8, "OW1"), (0.8, 1.0, "")]
WORDS = (("hello", 0.3, 0.8),)


def test_mfa_labels():
    assert [mfa_arpabet_phone(x) for x in ("AH0", "iy1", "EY2", "NG", "", "sil", "sp", "spn", "ʔ", "AX")] == \
        ["AH", "IY", "EY", "NG", "SIL", "SIL", "SIL", SPOKEN_NOISE, None, None]


@pytest.mark.parametrize("fmt", ["long_textgrid", "short_textgrid"])
def test_read_mfa_phone_tier(tmp_path, fmt):
    path = tmp_path / "103-1240-0000.TextGrid"
    write_mfa_textgrid(path, PHONES, WORDS, fmt=fmt)
    segments = read_phone_tier(path)
    assert [s.label for s in segments] == ["SIL", "HH", "AH", "L", "OW", "SIL"]
    assert segments[0].start == 0 and abs(segments[-1].end - 1.0) < 1e-9
    words = read_interval_tier(path, "words")
    assert [w.label for w in words] == ["", "hello", ""]
    labels = frame_labels_from_segments(segments, 98)
    assert labels[28:35] == ["SIL", "HH", "HH", "HH", "HH", "HH", "AH"]  # centres 292.5 ... 352.5 ms


def test_speaker_prefixed_tiers_of_mfa1(tmp_path):
    path = tmp_path / "u.TextGrid"
    write_mfa_textgrid(path, PHONES, WORDS, tier_prefix="103 - ")
    assert [s.label for s in read_phone_tier(path)][1] == "HH"


def test_textgrid_without_phones_tier_names_the_file(tmp_path):
    path = tmp_path / "19-198-0001.TextGrid"
    grid = praat_textgrid.Textgrid(minTimestamp=0.0, maxTimestamp=1.0)
    grid.addTier(praat_textgrid.IntervalTier("words", [(0.1, 0.5, "hi")], 0.0, 1.0))
    grid.save(str(path), format="long_textgrid", includeBlankSpaces=True)
    with pytest.raises(MissingTierError, match=r"19-198-0001.TextGrid:0: no tier 'phones' \(tiers: words\)"):
        read_phone_tier(path)


def test_unknown_phone_names_file_and_line(tmp_path):
    path = tmp_path / "u.TextGrid"
    write_mfa_textgrid(path, [(0.0, 0.3, ""), (0.3, 0.5, "ʔ"), (0.5, 1.0, "")])
    with pytest.raises(TextGridError, match=r"u.TextGrid:(\d+): phone 'ʔ' of tier 'phones'") as info:
        read_phone_tier(path)
    line = int(info.value.args[0].split(":")[1])
    assert 'text = "ʔ"' in path.read_text(encoding="utf-8").splitlines()[line - 1]


def test_unreadable_textgrid(tmp_path):
    path = tmp_path / "bad.TextGrid"
    path.write_text("this is not a TextGrid\n")
    with pytest.raises(TextGridError, match=r"bad.TextGrid:0: not a readable TextGrid"):
        read_phone_tier(path)
    with pytest.raises(TextGridError, match=r"missing.TextGrid:0: TextGrid file not found"):
        read_phone_tier(tmp_path / "missing.TextGrid")


def test_frame_label_segments_boundaries():
    runs = frame_label_segments(["SIL", "AA", "AA", "B"], duration=0.058)
    assert runs == [(0.0, 0.0175, "SIL"), (0.0175, 0.0375, "AA"), (0.0375, 0.058, "B")]
    with pytest.raises(ValueError, match="shorter than the 4 frames"):
        frame_label_segments(["SIL"] * 4, duration=0.04)


def test_write_read_round_trip_is_exact(tmp_path):
    rng = random.Random(3)
    inventory = ["SIL", "AA", "B", "IY", "SH"]
    for trial in range(30):
        num_frames = rng.randint(1, 500)
        labels: list[str] = []
        while len(labels) < num_frames:
            labels += [rng.choice(inventory)] * rng.randint(1, 15)
        labels = labels[:num_frames]
        duration = ((num_frames - 1) * 160 + 400 + rng.randint(0, 159)) / 16000
        path = tmp_path / f"u{trial}.TextGrid"
        write_frame_labels_textgrid(path, labels, duration)
        segments = read_phone_tier(path)
        assert list(frame_labels_from_segments(segments, num_frames)) == labels
        grid = praat_textgrid.openTextgrid(str(path), includeEmptyIntervals=False)
        assert list(grid.tierNames) == ["phones"] and abs(grid.maxTimestamp - duration) < 1e-9
        assert all(entry.label != "SIL" for entry in grid.getTier("phones").entries)  # silence is empty, as MFA


def test_written_textgrid_is_praat_long_format(tmp_path):
    path = tmp_path / "u.TextGrid"
    write_frame_labels_textgrid(path, ["SIL", "AA", "AA", "SIL"], duration=0.055)
    text = path.read_text()
    assert text.startswith('File type = "ooTextFile"\nObject class = "TextGrid"')
    assert 'name = "phones"' in text and 'text = "AA"' in text
