"""Synthetic RIR set with pyroomacoustics (speechattn/data/augment/rir.py, local/make_rir_set.py)."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechattn.data.augment.corpora import read_rirs_noises
from speechattn.data.augment.rir import (DEFAULT_ROOM_CLASSES, RirBank, RirSetParams, generate_rir_set,
                                         rir_set_is_complete, truncate_rir)

ROOT = Path(__file__).resolve().parents[1]
# one room per class, two microphones, short RT60s: the layout of the default set at a fraction of its cost
SMALL = RirSetParams(seed=3, classes=tuple(dataclasses.replace(c, num_rooms=1, rirs_per_room=2,
                                                               rt60=(c.rt60[0], c.rt60[0] + 0.05))
                                           for c in DEFAULT_ROOM_CLASSES))


@pytest.fixture(scope="module")
def rir_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rirs") / "rirs"
    generate_rir_set(out, SMALL)
    return out


def test_truncate_rir_cuts_at_minus_60_db() -> None:
    decay = np.exp(-np.arange(10000) / 500.0)  # energy falls 10 log10(e^2) = 8.7 dB per 500 samples
    cut = truncate_rir(decay)
    assert 3400 <= cut.size <= 3500  # 60 dB of energy decay: 500 * 60 / 8.69 = 3454
    assert truncate_rir(np.zeros(5)).size == 5


def test_rir_set_layout_is_read_like_rirs_noises(rir_set: Path) -> None:
    entries = read_rirs_noises(rir_set)
    assert [e.rir_id for e in entries] == [f"{c}-Room001-0000{k}" for c in ("smallroom", "mediumroom", "largeroom")
                                           for k in (1, 2)]
    assert all(e.path.is_file() and e.rt60 is not None for e in entries)
    bank = RirBank.from_entries(entries)
    assert len(bank) == 6
    info = sf.info(entries[0].path)
    assert info.samplerate == 16000 and info.subtype == "PCM_16" and info.channels == 1


def test_rir_set_manifest_records_rooms_and_measured_rt60(rir_set: Path) -> None:
    manifest = json.loads((rir_set / "rir_set.json").read_text())
    assert manifest["params"]["seed"] == 3 and len(manifest["files"]) == 6
    for name, room in manifest["rooms"].items():
        cls = next(c for c in SMALL.classes if name.startswith(c.name + "-"))
        assert cls.size[0] <= room["dims_m"][0] <= cls.size[1] and cls.height[0] <= room["dims_m"][2] <= cls.height[1]
        assert cls.rt60[0] <= room["target_rt60"] <= cls.rt60[1]
        for p in room["placements"]:
            assert 0.5 <= p["distance_m"] <= 4.0
            # the image method with air absorption: measured within a factor ~1.5 of Sabine's target
            assert 0.6 * room["target_rt60"] <= p["measured_rt60"] <= 1.6 * room["target_rt60"]
    lines = (rir_set / "simulated_rirs" / "largeroom" / "rir_list").read_text().splitlines()
    assert lines[0].startswith("--rir-id largeroom-Room001-00001 --room-id largeroom-Room001 --rt60 ")
    assert lines[0].endswith(" simulated_rirs/largeroom/Room001/Room001-00001.wav")


def test_rir_set_is_idempotent_and_regenerated_when_parameters_change(rir_set: Path) -> None:
    first = rir_set / "simulated_rirs" / "smallroom" / "Room001" / "Room001-00001.wav"
    stamp = first.stat().st_mtime_ns
    generate_rir_set(rir_set, SMALL)
    assert first.stat().st_mtime_ns == stamp  # complete: nothing rewritten
    assert rir_set_is_complete(rir_set, SMALL) and not rir_set_is_complete(rir_set, dataclasses.replace(SMALL, seed=4))
    data = first.read_bytes()
    first.unlink()
    assert not rir_set_is_complete(rir_set, SMALL)
    generate_rir_set(rir_set, SMALL)
    assert first.read_bytes() == data  # the same parameters give the same RIRs
    assert not (rir_set.parent / "rirs.tmp").exists() and not (rir_set.parent / "rirs.old").exists()


def _script():
    spec = importlib.util.spec_from_file_location("make_rir_set", ROOT / "local" / "make_rir_set.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_rir_set_script(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "rirs8k"
    script = _script()
    assert script.main(["--num-rooms", "1", "--rirs-per-room", "1", "--sample-rate", "8000", str(out)]) == 0
    entries = read_rirs_noises(out)
    assert len(entries) == 3 and sf.info(entries[0].path).samplerate == 8000
    assert script.main(["--num-rooms", "0", str(out)]) == 2
    assert "--num-rooms must be >= 1" in capsys.readouterr().err
