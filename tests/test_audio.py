"""Audio loading: formats, pipes, bad audio, channel mixing, resampling, header info, block reads."""
from __future__ import annotations

import logging
import os
import re
import shlex

import numpy as np
import pytest
import soundfile as sf
import torch

from speechattn.data.audio import AudioError, audio_info, iter_audio_blocks, load_audio

torch.set_num_threads(1)


def noise(num_samples: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    data = np.random.default_rng(seed).uniform(-0.5, 0.5, size=(num_samples, channels)).astype(np.float32)
    return data[:, 0] if channels == 1 else data


def write(path, data, sample_rate=16000, subtype=None) -> str:
    sf.write(str(path), data, sample_rate, subtype=subtype)
    return str(path)


def test_load_flac_and_wav(tmp_path):
    data = noise(16000)
    for name in ("a.flac", "a.WAV"):
        waveform = load_audio(write(tmp_path / name, data))
        assert waveform.dtype == torch.float32 and waveform.shape == (16000,)
        np.testing.assert_allclose(waveform.numpy(), data, atol=1 / 32768)  # 16-bit quantisation


def test_missing_file_error_names_the_wav_scp_line(tmp_path):
    with pytest.raises(AudioError, match=re.escape("data/wav.scp:7: ") + ".*not found"):
        load_audio(str(tmp_path / "missing.flac"), where="data/wav.scp:7")


def test_unreadable_file(tmp_path):
    path = tmp_path / "garbage.flac"
    path.write_bytes(b"this is not audio" * 10)
    with pytest.raises(AudioError, match=re.escape("scp:1: ") + ".*cannot read"):
        load_audio(str(path), where="scp:1")
    with pytest.raises(AudioError, match="cannot read audio header"):
        audio_info(str(path))


def test_pipe_refused_unless_allowed(tmp_path):
    data = noise(4000)
    path = write(tmp_path / "a.wav", data)
    spec = f"cat {shlex.quote(path)} |"
    with pytest.raises(AudioError, match=re.escape("wav.scp:3: ") + ".*pipes .* refused"):
        load_audio(spec, where="wav.scp:3")
    torch.testing.assert_close(load_audio(spec, allow_pipes=True), load_audio(path))
    assert audio_info(spec, allow_pipes=True) == (4000, 16000, 1)
    with pytest.raises(AudioError, match="exit code"):
        load_audio(f"cat {shlex.quote(str(tmp_path / 'missing.wav'))} |", allow_pipes=True)


def test_empty_audio(tmp_path):
    with pytest.raises(AudioError, match="empty audio"):
        load_audio(write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32)), where="x:2")


def test_too_short_audio(tmp_path):
    with pytest.raises(AudioError, match="too short: 399 samples"):
        load_audio(write(tmp_path / "short.flac", noise(399)))
    assert load_audio(write(tmp_path / "ok.flac", noise(400))).shape == (400,)
    with pytest.raises(AudioError, match="too short"):  # the limit applies after resampling: 199 -> 398
        load_audio(write(tmp_path / "short8k.flac", noise(199), 8000))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_samples(tmp_path, bad):
    data = noise(8000)
    data[4000] = bad
    path = write(tmp_path / "nan.wav", data, subtype="FLOAT")
    with pytest.raises(AudioError, match=re.escape("w:1: ") + r".*non-finite .* at 0\.250 s"):
        load_audio(path, where="w:1")


def test_multichannel_is_averaged_and_logged_once(tmp_path, caplog):
    data = noise(3200, channels=3)
    path = write(tmp_path / "multi.wav", data, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="speechattn.data.audio"):
        waveform = load_audio(path)
    np.testing.assert_allclose(waveform.numpy(), data.mean(axis=1), rtol=1e-6, atol=1e-7)
    assert len([r for r in caplog.records if "3 channels" in r.getMessage()]) == 1
    assert audio_info(path) == (3200, 16000, 3)


@pytest.mark.parametrize("sample_rate, num_samples", [(8000, 8000), (8000, 8001), (22050, 22051), (44100, 4411)])
def test_resampling_length_matches_audio_info(tmp_path, sample_rate, num_samples):
    path = write(tmp_path / "x.flac", noise(num_samples), sample_rate)
    num_target, rate, channels = audio_info(path)
    assert (rate, channels) == (sample_rate, 1)
    assert load_audio(path).shape[0] == num_target
    frames = lambda n: 0 if n < 400 else 1 + (n - 400) // 160  # noqa: E731  (architecture.md)
    assert frames(num_target) == frames(load_audio(path).shape[0])


def test_resampling_is_announced_once_per_rate(tmp_path, caplog, monkeypatch):
    import speechattn.data.audio as audio

    monkeypatch.setattr(audio, "_announced_resampling", set())
    paths = [write(tmp_path / f"{i}.flac", noise(8000, seed=i), 8000) for i in range(3)]
    paths.append(write(tmp_path / "22k.flac", noise(22050), 22050))
    with caplog.at_level(logging.INFO, logger="speechattn.data.audio"):
        for path in paths:
            load_audio(path)
    announced = [r.getMessage() for r in caplog.records if "resampling" in r.getMessage()]
    assert len(announced) == 2, announced  # one per source rate, not one per file
    assert "8000 Hz -> 16000 Hz" in announced[0] and "0.flac" in announced[0]
    assert "22050 Hz -> 16000 Hz" in announced[1]


def test_8khz_sine_keeps_its_frequency(tmp_path, caplog):
    t8 = np.arange(8000) / 8000
    path = write(tmp_path / "sine.wav", (0.5 * np.sin(2 * np.pi * 440 * t8)).astype(np.float32), 8000,
                 subtype="FLOAT")
    with caplog.at_level(logging.DEBUG, logger="speechattn.data.audio"):
        waveform = load_audio(path)
    assert any("8000 Hz -> 16000 Hz" in r.getMessage() for r in caplog.records)
    t16 = np.arange(16000) / 16000
    expected = 0.5 * np.sin(2 * np.pi * 440 * t16)
    middle = slice(1000, 15000)  # the resampling filter sees zeros beyond the edges
    np.testing.assert_allclose(waveform.numpy()[middle], expected[middle], atol=5e-3)


# --- block reads -----------------------------------------------------------------------------------------------

def test_blocks_reassemble_the_file(tmp_path):
    data = noise(16000 * 3 + 123)
    path = write(tmp_path / "long.flac", data)
    whole = load_audio(path)
    blocks = list(iter_audio_blocks(path, block_samples=16000, overlap_samples=4000))
    assert [start for start, _ in blocks] == [0, 12000, 24000, 36000]
    for start, block in blocks:
        torch.testing.assert_close(block, whole[start:start + 16000])
    assert blocks[-1][0] + len(blocks[-1][1]) == len(whole)


def test_blocks_of_8khz_file_are_resampled(tmp_path):
    path = write(tmp_path / "long8k.flac", noise(8000 * 2), 8000)
    blocks = list(iter_audio_blocks(path, block_samples=8000))
    assert [(start, len(block)) for start, block in blocks] == [(0, 8000), (8000, 8000), (16000, 8000),
                                                                  (24000, 8000)]
    whole = load_audio(path)
    # Away from block edges the per-block resampling agrees with resampling the whole file.
    torch.testing.assert_close(blocks[1][1][500:-500], whole[8500:15500], atol=2e-3, rtol=0)


def test_corrupt_block_reports_time_offset(tmp_path):
    data = noise(16000 * 4)
    data[40000] = np.nan  # 2.5 s
    path = write(tmp_path / "nan.wav", data, subtype="FLOAT")
    seen = []
    with pytest.raises(AudioError, match=r"corrupt audio block at 2\.000 s: non-finite sample at 2\.500 s"):
        for start, _ in iter_audio_blocks(path, block_samples=16000):
            seen.append(start)
    assert seen == [0, 16000]


def test_truncated_file_reports_time_offset(tmp_path):
    path = write(tmp_path / "trunc.flac", noise(16000 * 4))
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)  # the header still says 4 s
    seen = []
    with pytest.raises(AudioError, match=r"corrupt audio block at (\d+\.\d+) s") as error:
        for start, _ in iter_audio_blocks(path, block_samples=16000):
            seen.append(start)
    offset = float(re.search(r"at (\d+\.\d+) s", str(error.value)).group(1))
    assert 1.0 <= offset <= 3.0 and seen and seen[-1] / 16000 < offset
