"""local/make_fixture.py: builds each layout, is idempotent, never writes into a directory it did not make."""
from __future__ import annotations

import logging

import pytest

from corpus_layouts import load_script, needs_shared

make_fixture = load_script("make_fixture")


def test_timit_speaker_names_are_unique_at_full_size():
    """250 speakers (125 per part) get 250 distinct TIMIT-shaped IDs; TEST takes all 24 core and 50 dev names."""
    from corpus_fixtures.timit import assign_test_names, made_up_speaker
    from speechattn.data.timit import CORE_TEST_SPEAKERS, DEV_SPEAKERS, SPEAKER_ID
    test = assign_test_names({f"{k:04d}": "mf"[k % 2] for k in range(125)})
    train = [made_up_speaker("mf"[k % 2], k) for k in range(125)]
    names = list(test.values()) + train
    assert len(set(names)) == 250 and all(SPEAKER_ID.match(n) for n in names)
    assert set(CORE_TEST_SPEAKERS) | set(DEV_SPEAKERS) <= set(test.values())


@needs_shared
@pytest.mark.parametrize("corpus, probe", [("timit", "TEST/DR1/MDAB0/SA1.WAV"),
                                           ("librispeech", "LibriSpeech/SPEAKERS.TXT"),
                                           ("voxceleb1", "veri_test2.txt")])
def test_small_fixture_and_rerun(tmp_path, caplog, corpus, probe):
    out = tmp_path / corpus
    assert make_fixture.main([corpus, "--out-dir", str(out), "--size", "small"]) == 0
    assert (out / probe).is_file()
    with caplog.at_level(logging.INFO):
        assert make_fixture.main([corpus, "--out-dir", str(out), "--size", "small"]) == 0
    assert "already holds" in caplog.text


@needs_shared
def test_refuses_a_directory_it_did_not_make(tmp_path, caplog):
    (tmp_path / "mine.txt").write_text("keep me\n")
    with caplog.at_level(logging.ERROR):
        assert make_fixture.main(["timit", "--out-dir", str(tmp_path), "--size", "small"]) == 1
    assert "refusing to write into it" in caplog.text and (tmp_path / "mine.txt").read_text() == "keep me\n"
