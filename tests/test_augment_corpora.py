"""MUSAN and RIRS_NOISES readers on fixtures in their documented layouts, the RIR bank, and bad input."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from augment_data import make_musan, make_rirs_noises, synthetic_rir
from speechattn.data.audio import AudioError
from speechattn.data.augment.corpora import (find_rir_lists, read_musan, read_noise_list, read_rir_list,
                                             read_rirs_noises)
from speechattn.data.augment.pipeline import AugmentConfig, WaveAugmenter
from speechattn.data.augment.rir import RirBank
from speechattn.data.augment.sources import FileNoisePool, SpeechBank
from speechattn.data.kaldi_dir import KaldiDataError


# ---------------------------------------------------------------------------------------------- MUSAN

def test_read_musan_finds_every_part(tmp_path: Path) -> None:
    musan = make_musan(tmp_path, per_part=3)
    parts = read_musan(musan)
    assert sorted(parts) == ["music", "noise", "speech"]
    assert [f.id for f in parts["music"]] == ["music-fma-0000", "music-fma-0001", "music-fma-0002"]
    assert all(f.num_samples == 16000 and f.sample_rate == 16000 for p in parts.values() for f in p)
    assert read_musan(musan, parts=["noise"]).keys() == {"noise"}


def test_read_musan_without_vocals_uses_the_annotations(tmp_path: Path) -> None:
    musan = make_musan(tmp_path, per_part=4, vocals=("Y", "N"))
    music = read_musan(musan, parts=["music"], use_vocals=False)["music"]
    assert [f.id for f in music] == ["music-fma-0001", "music-fma-0003"]


def test_musan_dir_without_the_layout_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KaldiDataError, match="MUSAN directory not found"):
        read_musan(tmp_path / "nowhere")
    flat = tmp_path / "flat"
    flat.mkdir()
    sf.write(flat / "a.wav", np.zeros(1600, np.float32), 16000)
    with pytest.raises(KaldiDataError, match=r"not a MUSAN directory: no music/, noise/, speech/.*expected music/"):
        read_musan(flat)
    musan = make_musan(tmp_path)
    for wav in (musan / "noise").rglob("*.wav"):
        wav.unlink()
    with pytest.raises(KaldiDataError, match=r"noise: no \*\.wav files"):
        read_musan(musan)


def test_malformed_or_missing_music_annotations(tmp_path: Path) -> None:
    musan = make_musan(tmp_path, per_part=2)
    annotations = musan / "music" / "fma" / "ANNOTATIONS"
    annotations.write_text("music-fma-0000 Jazz Y Artist\nmusic-fma-0001 Jazz maybe Artist\n")
    with pytest.raises(KaldiDataError, match=r"ANNOTATIONS:2: expected 'UTT GENRES VOCALS"):
        read_musan(musan, parts=["music"], use_vocals=False)
    annotations.write_text("music-fma-0000 Jazz Y Artist\n")
    with pytest.raises(KaldiDataError, match=r"music-fma-0001.wav: music file without an ANNOTATIONS line"):
        read_musan(musan, parts=["music"], use_vocals=False)
    assert len(read_musan(musan, parts=["music"])["music"]) == 2  # with vocals allowed, no annotation needed


def test_musan_noise_shorter_than_a_crop_is_looped_and_tiny_files_are_skipped(tmp_path: Path,
                                                                              caplog: pytest.LogCaptureFixture) -> None:
    musan = make_musan(tmp_path, per_part=2, seconds=0.5)
    tiny = musan / "noise" / "free-sound" / "noise-free-sound-0009.wav"
    sf.write(tiny, np.full(160, 0.1, np.float32), 16000)  # 10 ms
    with caplog.at_level(logging.WARNING):
        pool = FileNoisePool(read_musan(musan, parts=["noise"])["noise"], name="MUSAN noise")
    assert len(pool) == 2 and "noise-free-sound-0009.wav" in caplog.text and "1 of 3 files" in caplog.text
    assert pool.draw(np.random.default_rng(0), 48000).shape == (48000,)  # 3 s crop from 0.5 s files


def test_augmenter_reads_musan_from_the_config(tmp_path: Path) -> None:
    musan = make_musan(tmp_path, per_part=2)
    bank = SpeechBank(["a", "b"], ["s1", "s2"], [torch.randn(16000) * 0.1, torch.randn(16000) * 0.1])
    cfg = AugmentConfig.from_dict({"musan_dir": str(musan), "musan_noise": {"prob": 0.3},
                                   "musan_music": {"prob": 0.3}, "musan_speech": {"prob": 0.3}})
    aug = WaveAugmenter(cfg, seed=0, bank=bank)
    applied = {aug(torch.randn(8000) * 0.1, 0, i, "s1").applied for i in range(60)}
    assert {("musan_noise",), ("musan_music",), ("musan_speech",), ()} == applied


# ---------------------------------------------------------------------------------------------- RIRS_NOISES

def test_read_rirs_noises_in_the_openslr_layout(tmp_path: Path) -> None:
    root = make_rirs_noises(tmp_path)
    entries = read_rirs_noises(root, rooms=("smallroom", "mediumroom"))
    assert len(entries) == 8 and entries[0].rir_id == "smallroom-Room001-00001"
    assert entries[0].room_id == "smallroom-Room001" and entries[0].path.is_file()
    assert entries[0].where.endswith("simulated_rirs/smallroom/rir_list:1")
    with_real = read_rirs_noises(root, rooms=("smallroom",), real=True)
    assert with_real[-1].rir_id == "RVB2014_type1_rir_largeroom1_near_angla"
    # largeroom is absent from the fixture: skipped as long as one room list exists
    assert len(read_rirs_noises(root)) == 8
    noises = read_noise_list(root / "pointsource_noises" / "noise_list")
    assert [n.id for n in noises] == ["noise-free-sound-0000", "noise-free-sound-0001"]
    assert read_noise_list(root / "real_rirs_isotropic_noises" / "noise_list") == []
    assert len(read_noise_list(root / "real_rirs_isotropic_noises" / "noise_list", noise_type=None)) == 1


def test_rir_lists_resolve_when_the_corpus_is_renamed_or_lists_are_absolute(tmp_path: Path) -> None:
    root = make_rirs_noises(tmp_path, name="my_rirs")  # lists still say RIRS_NOISES/...
    assert len(read_rirs_noises(root, rooms=("smallroom",))) == 4
    rir_list = root / "simulated_rirs" / "smallroom" / "rir_list"
    absolute = [e.path for e in read_rir_list(rir_list)]
    rir_list.write_text("".join(f"--rir-id r{i} --room-id room {p}\n" for i, p in enumerate(absolute)))
    assert [e.path for e in read_rir_list(rir_list)] == absolute


@pytest.mark.parametrize("line, message", [
    ("--rir-id r1 --room-id room1 RIRS_NOISES/simulated_rirs/smallroom/Room009/x.wav", r"rir_list:2: file .* not found"),
    ("--rir-id r1 RIRS_NOISES/simulated_rirs/smallroom/Room001/Room001-00001.wav", r"rir_list:2: --room-id is required"),
    ("--rir-id r1 --room-id room1 --colour red RIRS_NOISES/x.wav", r"rir_list:2: unknown option --colour"),
    ("--rir-id r1 --room-id room1 --rt60 slow RIRS_NOISES/simulated_rirs/smallroom/Room001/Room001-00001.wav",
     r"rir_list:2: --rt60 must be a number"),
    ("--rir-id r1 --room-id", r"rir_list:2: expected"),
])
def test_bad_rir_list_lines_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    root = make_rirs_noises(tmp_path, rooms=("smallroom",), per_room=1)
    rir_list = root / "simulated_rirs" / "smallroom" / "rir_list"
    first = rir_list.read_text().splitlines()[0]
    rir_list.write_text(f"{first}\n{line}\n")
    with pytest.raises(KaldiDataError, match=message):
        read_rir_list(rir_list)


def test_rir_dir_without_the_layout_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KaldiDataError, match="RIR directory not found"):
        find_rir_lists(tmp_path / "missing")
    (tmp_path / "wavs").mkdir()
    with pytest.raises(KaldiDataError, match=r"no simulated_rirs/\{smallroom,mediumroom,largeroom\}/rir_list"):
        find_rir_lists(tmp_path / "wavs")
    root = make_rirs_noises(tmp_path, rooms=("smallroom",))
    shutil.rmtree(root / "real_rirs_isotropic_noises")
    with pytest.raises(KaldiDataError, match="real_rirs_isotropic_noises/rir_list:0: not found"):
        find_rir_lists(root, real=True)


def test_rir_bank_refuses_another_sample_rate_naming_the_file(tmp_path: Path) -> None:
    root = make_rirs_noises(tmp_path, rooms=("smallroom",), per_room=1)
    entries = read_rirs_noises(root, rooms=("smallroom",))
    bank = RirBank.from_entries(entries)
    assert len(bank) == 2
    rir, direct = bank.draw(np.random.default_rng(0))
    assert direct == 40 and float(rir.pow(2).sum()) == pytest.approx(1.0, abs=1e-5)
    sf.write(entries[1].path, synthetic_rir(np.random.default_rng(0)), 8000)
    with pytest.raises(AudioError, match=r"smallroom/rir_list:2: .*Room002-00001.wav: RIR sampled at 8000 Hz"):
        RirBank.from_entries(entries)
    sf.write(entries[1].path, np.zeros(100, np.float32), 16000)
    with pytest.raises(AudioError, match=r"Room002-00001.wav: RIR is empty, silent"):
        RirBank.from_entries(entries)


def test_multichannel_real_rirs_use_the_first_channel(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_rirs_noises(tmp_path, rooms=("smallroom",), per_room=1)
    real = [e for e in read_rirs_noises(root, rooms=("smallroom",), real=True) if e.rir_id.startswith("RVB")]
    with caplog.at_level(logging.INFO):
        bank = RirBank.from_entries(real)
    assert "1 multi-channel RIRs: their first channel" in caplog.text
    first = sf.read(real[0].path, dtype="float32")[0][:, 0]
    assert torch.allclose(bank.rirs[0], torch.from_numpy(first) / float(np.sqrt((first.astype(np.float64) ** 2).sum())),
                          atol=1e-6)


def test_rir_probabilities_weight_the_draws(tmp_path: Path) -> None:
    rirs = [torch.from_numpy(synthetic_rir(np.random.default_rng(k))) for k in range(2)]
    from speechattn.data.augment.corpora import RirEntry
    entries = [RirEntry("a", "r", tmp_path, probability=0.9), RirEntry("b", "r", tmp_path, probability=0.1)]
    bank = RirBank(rirs, entries)
    rng = np.random.default_rng(0)
    picks = [int(torch.equal(bank.draw(rng)[0], bank.rirs[1])) for _ in range(1000)]
    assert 0.06 < sum(picks) / 1000 < 0.14
