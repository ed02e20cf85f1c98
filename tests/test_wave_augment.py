"""Waveform augmentation for speaker crops (speechattn/data/augment/: mixing, nonspeech, sources, pipeline)."""
from __future__ import annotations

import doctest
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

import speechattn.data.augment.corpora
import speechattn.data.augment.mixing
import speechattn.data.augment.nonspeech
import speechattn.data.augment.pipeline
import speechattn.data.augment.sources
from augment_data import make_speaker_dir, speech_with_pauses, synthetic_rir
from speechattn.data.alignments import Segment
from speechattn.data.audio import AudioError
from speechattn.data.augment.mixing import (add_at_snr, concatenate_with_crossfade, fft_convolve, loop_to_length,
                                            mean_power, next_fast_length, prepare_rir, reverberate, snr_db)
from speechattn.data.augment.nonspeech import nonspeech_from_alignments, nonspeech_from_energy
from speechattn.data.augment.pipeline import AugmentConfig, WaveAugmenter, build_nonspeech_pool
from speechattn.data.augment.rir import RirBank
from speechattn.data.augment.sources import FileNoisePool, NoiseFile, SegmentPool, SpeechBank
from speechattn.data.speed_perturb import apply_speed, perturbed_num_samples

CONF = Path(__file__).resolve().parents[1] / "speechattn" / "conf" / "augment"


@pytest.mark.parametrize("module", [speechattn.data.augment.mixing, speechattn.data.augment.nonspeech,
                                    speechattn.data.augment.sources, speechattn.data.augment.corpora,
                                    speechattn.data.augment.pipeline])
def test_docstring_examples(module) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------------------------------------- mixing

@pytest.mark.parametrize("snr", [-5.0, 0.0, 13.0, 20.0])
def test_add_at_snr_reaches_the_snr(snr: float) -> None:
    g = torch.Generator().manual_seed(0)
    speech, noise = torch.randn(16000, generator=g) * 0.3, torch.randn(16000, generator=g) * 0.01
    mixed = add_at_snr(speech, noise, snr)
    assert snr_db(speech, mixed - speech) == pytest.approx(snr, abs=1e-3)


def test_silent_signal_or_noise_is_left_unchanged() -> None:
    speech = torch.randn(1000)
    assert torch.equal(add_at_snr(speech, torch.zeros(1000), 10.0), speech)
    assert torch.equal(add_at_snr(torch.zeros(1000), torch.randn(1000), 10.0), torch.zeros(1000))
    with pytest.raises(ValueError, match="shape"):
        add_at_snr(speech, torch.randn(999), 10.0)


def test_loop_to_length_wraps_around() -> None:
    x = torch.arange(5.0)
    assert loop_to_length(x, 12, offset=3).tolist() == [3, 4, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
    assert loop_to_length(x, 2, offset=1).tolist() == [1, 2]


def test_crossfade_concatenation_length_and_joins() -> None:
    a, b = torch.ones(100), torch.full((50,), 3.0)
    out = concatenate_with_crossfade([a, b], crossfade=10)
    assert out.numel() == 140
    assert torch.all(out[:90] == 1) and torch.all(out[100:] == 3)
    assert torch.all(torch.diff(out[89:101]) > 0)  # a monotone ramp from 1 to 3, no click
    with pytest.raises(ValueError, match="longer than"):
        concatenate_with_crossfade([a, torch.ones(5)], crossfade=10)


@pytest.mark.parametrize("n, m", [(1, 1), (7, 3), (1600, 9640), (4801, 2000)])
def test_fft_convolve_equals_direct_convolution(n: int, m: int) -> None:
    rng = np.random.default_rng(n + m)
    x, h = rng.standard_normal(n), rng.standard_normal(m)
    expected = np.convolve(x, h)
    out = fft_convolve(torch.from_numpy(x), torch.from_numpy(h))
    assert out.shape == expected.shape and np.allclose(out.numpy(), expected, atol=1e-8)
    assert fft_convolve(torch.from_numpy(x), torch.from_numpy(h), 5).shape == (min(5, n + m - 1),)


def test_next_fast_length_is_the_smallest_5_smooth_size() -> None:
    def smooth(m: int) -> bool:
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        return m == 1

    for n in list(range(1, 2000)) + [53000, 64001, 68000]:
        best = next_fast_length(n)
        assert best >= n and smooth(best) and not any(smooth(k) for k in range(n, best)), n


def test_reverberation_with_a_delayed_impulse_is_the_identity() -> None:
    x = torch.randn(4000)
    rir = torch.zeros(300)
    rir[120] = 0.5
    prepared, direct = prepare_rir(rir)
    assert direct == 120 and float(prepared.pow(2).sum()) == pytest.approx(1.0)
    assert torch.allclose(reverberate(x, prepared, direct), x, atol=1e-5)


def test_reverberation_adds_the_echo_and_keeps_power() -> None:
    x = torch.randn(4000)
    rir = torch.zeros(300)
    rir[10], rir[210] = 1.0, 0.5
    prepared, direct = prepare_rir(rir)
    out = reverberate(x, prepared, direct)
    expected = x.clone()
    expected[200:] += 0.5 * x[:-200]
    expected *= math.sqrt(mean_power(x) / mean_power(expected))
    assert out.shape == x.shape and torch.allclose(out, expected, atol=1e-4)
    with pytest.raises(ValueError, match="no energy"):
        prepare_rir(torch.zeros(10))


# ---------------------------------------------------------------------------------------------- non-speech

def test_nonspeech_from_alignments_merges_shrinks_and_drops_short() -> None:
    segs = [Segment(0.0, 0.3, "SIL"), Segment(0.3, 0.2, "SIL"), Segment(0.5, 1.0, "AA"), Segment(1.5, 0.2, "SIL")]
    # first SIL run 0-0.5 s merged, shrunk by 30 ms; the last (0.2 s -> 0.14 s) is too short
    assert nonspeech_from_alignments(segs, 40000) == [(480, 7520)]
    assert nonspeech_from_alignments(segs, 40000, margin=0.0, min_duration=0.1) == [(0, 8000), (24000, 27200)]
    assert nonspeech_from_alignments(segs, 5000, margin=0.0) == [(0, 5000)]  # clipped to the recording


def test_energy_detector_finds_the_pauses_and_nothing_in_speech() -> None:
    audio, pauses = speech_with_pauses(np.random.default_rng(0), 150.0)
    ranges = nonspeech_from_energy(torch.from_numpy(audio))
    assert len(ranges) == 3
    for (start, end), (p0, p1) in zip(ranges, pauses):
        assert p0 * 16000 <= start and end <= p1 * 16000  # inside the pause
        assert end - start >= 0.6 * (p1 - p0) * 16000      # most of it (hangover 50 ms at speech edges)


def test_energy_detector_refuses_recordings_without_contrast() -> None:
    steady = torch.from_numpy(np.random.default_rng(0).standard_normal(32000).astype(np.float32)) * 0.1
    assert nonspeech_from_energy(steady) == []
    assert nonspeech_from_energy(torch.zeros(100)) == []


# ---------------------------------------------------------------------------------------------- sources

def _bank(num_speakers: int = 4, seconds: float = 1.0) -> SpeechBank:
    # speaker k's audio is the constant (k + 1) / 10: a draw tells which speaker it came from
    utts = [f"u{k}{j}" for k in range(num_speakers) for j in range(2)]
    spks = [f"s{k}" for k in range(num_speakers) for _ in range(2)]
    audio = [torch.full((int(seconds * 16000),), (k + 1) / 10) for k in range(num_speakers) for _ in range(2)]
    return SpeechBank(utts, spks, audio)


def test_babble_source_never_draws_the_excluded_speaker_and_covers_the_others() -> None:
    bank = _bank()
    rng = np.random.default_rng(0)
    seen = {round(float(bank.draw_other_speaker(rng, 100, "s2")[0]) * 10) - 1 for _ in range(200)}
    assert seen == {0, 1, 3}
    assert bank.draw_other_speaker(rng, 40000, None).numel() == 40000  # longer than a recording: looped
    with pytest.raises(ValueError, match="only that one"):
        SpeechBank(["a"], ["s"], [torch.ones(10)]).draw_other_speaker(rng, 5, "s")


def test_speech_bank_from_data_dir_and_its_errors(tmp_path: Path) -> None:
    data_dir, _ = make_speaker_dir(tmp_path, speakers=2, per_speaker=2)
    bank = SpeechBank.from_data_dir(data_dir)
    assert len(bank) == 4 and bank.num_speakers == 2 and bank.audio[0].dtype == np.int16
    assert bank.waveform(0).abs().max() <= 1.0
    (data_dir / "utt2speed").write_text("spk0-utt0 0.9\n")
    with pytest.raises(AudioError, match="utt2speed"):
        SpeechBank.from_data_dir(data_dir)
    (data_dir / "utt2speed").unlink()
    (tmp_path / "wav" / "spk1-utt1.flac").unlink()
    with pytest.raises(AudioError, match=r"wav.scp:4: .*spk1-utt1.flac"):
        SpeechBank.from_data_dir(data_dir)


def test_segment_pool_draws_unit_power_noise_of_any_length(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(0)
    audio = [torch.from_numpy(rng.standard_normal(16000).astype(np.float32)) * s for s in (0.01, 0.2)]
    audio[1][:4000] = 0.0  # a digitally silent pause
    bank = SpeechBank(["a", "b"], ["s1", "s2"], audio)
    with caplog.at_level(logging.INFO):
        pool = SegmentPool(bank, {"a": [(0, 4000), (5000, 5500)], "b": [(0, 4000)]}, min_duration=0.2)
    assert len(pool) == 1 and "1 shorter than 0.20 s and 1 digitally silent" in caplog.text
    for length in (1000, 4000, 20000):
        out = pool.draw(rng, length)
        assert out.numel() == length and mean_power(out) == pytest.approx(1.0, rel=0.3)
    with pytest.raises(ValueError, match="no usable non-speech"):
        SegmentPool(bank, {"a": [(0, 100)]})
    with pytest.raises(KeyError, match="not in the speech bank"):
        SegmentPool(bank, {"zz": [(0, 4000)]})


def test_file_noise_pool_windows_loops_resamples_and_skips_short(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ramp = (np.arange(16000, dtype=np.float32) / 16000) - 0.5
    sf.write(tmp_path / "long.wav", ramp, 16000)
    sf.write(tmp_path / "short.wav", ramp[:4000], 16000)     # 0.25 s: looped
    sf.write(tmp_path / "tiny.wav", ramp[:800], 16000)       # 0.05 s: left out
    sf.write(tmp_path / "low.wav", ramp[::2].copy(), 8000)   # 8 kHz: resampled
    files = [NoiseFile(p.stem, p, sf.info(p).frames, sf.info(p).samplerate) for p in sorted(tmp_path.glob("*.wav"))]
    with caplog.at_level(logging.WARNING):
        pool = FileNoisePool(files, min_duration=0.2)
    assert len(pool) == 3 and "tiny.wav" in caplog.text
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert pool.draw(rng, 6000).shape == (6000,)
    long_only = FileNoisePool([f for f in files if f.id == "long"])
    window = long_only.draw(np.random.default_rng(1), 1000)
    start = int(np.argmin(np.abs(ramp - float(window[0]))))
    assert torch.allclose(window, torch.from_numpy(ramp[start:start + 1000]), atol=1e-4)
    short_only = FileNoisePool([f for f in files if f.id == "short"])
    looped = short_only.draw(rng, 10000)
    assert torch.allclose(looped[:4000], looped[4000:8000])


# ---------------------------------------------------------------------------------------------- config

def test_config_files_of_the_augment_group_are_valid() -> None:
    from hydra import compose, initialize_config_dir

    names = sorted(p.stem for p in CONF.glob("*.yaml"))
    assert {"none", "speaker", "speaker_musan"} <= set(names)
    with initialize_config_dir(config_dir=str(CONF.parent), version_base=None):
        for name in names:
            cfg = compose("train_sid", overrides=[f"augment={name}", "++augment.musan_dir=/data/musan"]).augment
            parsed = AugmentConfig.from_dict(OmegaConf.to_container(cfg, resolve=True))
            assert parsed.enabled == (name != "none")
        musan = compose("train_sid", overrides=["augment=speaker_musan", "augment.musan_dir=/m"]).augment
    parsed = AugmentConfig.from_dict(OmegaConf.to_container(musan, resolve=True))
    # speaker_musan inherits speaker.yaml and changes only the probabilities
    assert parsed.speed.prob == pytest.approx(0.667) and parsed.musan_music.snr == (5.0, 15.0)
    assert parsed.active_kinds == ("reverb", "musan_noise", "musan_music", "musan_speech")


@pytest.mark.parametrize("overrides, message", [
    ({"babble": {"prob": 1.5}}, r"babble.prob: probability"),
    ({"babble": {"snr": [20, 13]}}, r"babble.snr"),
    ({"babble": {"loudness": 3}}, r"unknown option"),
    ({"colour": 1}, r"unknown option"),
    ({"reverb": {"prob": 0.6}, "babble": {"prob": 0.6}}, r"sum to 1.200 > 1"),
    ({"musan_noise": {"prob": 0.2}}, r"needs augment.musan_dir"),
    ({"speed": {"factors": [1.0, 1.1]}}, r"other than 1.0"),
    ({"reverb": {"rooms": ["hall"]}}, r"reverb.rooms"),
    ({"combine": "all"}, r"exclusive' or 'independent"),
])
def test_config_errors(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AugmentConfig.from_dict(overrides)


def test_augmenter_needs_its_sources() -> None:
    with pytest.raises(ValueError, match="need the training recordings"):
        WaveAugmenter(AugmentConfig.from_dict({"babble": {"prob": 0.5}}), seed=0)
    with pytest.raises(ValueError, match="at least 2 training speakers"):
        WaveAugmenter(AugmentConfig.from_dict({"babble": {"prob": 0.5}}), seed=0,
                      bank=SpeechBank(["a"], ["s"], [torch.ones(100)]))
    with pytest.raises(ValueError, match="rir_dir"):
        WaveAugmenter(AugmentConfig.from_dict({"reverb": {"prob": 0.5}}), seed=0)


# ---------------------------------------------------------------------------------------------- augmenter

def _augmenter(cfg: dict, seed: int = 7) -> WaveAugmenter:
    rng = np.random.default_rng(0)
    bank = _bank()
    pool = SegmentPool(bank, {u: [(0, 8000)] for u in bank.utts})
    rirs = RirBank([torch.from_numpy(synthetic_rir(rng, rt)) for rt in (0.2, 0.4, 0.6)])
    return WaveAugmenter(AugmentConfig.from_dict(cfg), seed=seed, bank=bank, nonspeech=pool, rirs=rirs)


ALL = {"speed": {"prob": 0.5}, "reverb": {"prob": 0.2}, "nonspeech": {"prob": 0.2}, "babble": {"prob": 0.2}}


def test_augmentation_is_a_pure_function_of_seed_epoch_and_index() -> None:
    crop = torch.from_numpy(np.random.default_rng(3).standard_normal(16000).astype(np.float32)) * 0.1
    a, b = _augmenter(ALL), _augmenter(ALL)
    forward = [a(crop, 2, i, "s0") for i in range(30)]
    backward = [b(crop, 2, i, "s0") for i in reversed(range(30))][::-1]  # another order, fresh object
    for x, y in zip(forward, backward):
        assert x.applied == y.applied and torch.equal(x.waveform, y.waveform)
    other_epoch = [a(crop, 3, i, "s0") for i in range(30)]
    assert any(x.applied != y.applied or not torch.equal(x.waveform, y.waveform)
               for x, y in zip(forward, other_epoch))
    other_seed = _augmenter(ALL, seed=8)
    assert any(not torch.equal(x.waveform, other_seed(crop, 2, i, "s0").waveform) for i, x in enumerate(forward))


def test_exclusive_mode_applies_at_most_one_kind_at_its_probability() -> None:
    aug = _augmenter({"reverb": {"prob": 0.2}, "nonspeech": {"prob": 0.3}, "babble": {"prob": 0.1}})
    crop = torch.randn(1600) * 0.1
    n = 2000
    applied = [aug(crop, 0, i, "s0").applied for i in range(n)]
    assert all(len(a) <= 1 for a in applied)
    for kind, p in (("reverb", 0.2), ("nonspeech", 0.3), ("babble", 0.1)):
        rate = sum(a == (kind,) for a in applied) / n
        assert abs(rate - p) < 4 * math.sqrt(p * (1 - p) / n), (kind, rate)
    assert aug.counts["crops"] == n


def test_independent_mode_combines_kinds_in_order() -> None:
    aug = _augmenter({"combine": "independent", "reverb": {"prob": 0.5}, "nonspeech": {"prob": 0.5},
                      "babble": {"prob": 0.5}})
    crop = torch.randn(1600) * 0.1
    applied = [aug(crop, 0, i, "s0").applied for i in range(800)]
    assert ("reverb", "nonspeech", "babble") in applied
    order = {"reverb": 0, "nonspeech": 1, "babble": 2}
    assert all([order[k] for k in a] == sorted(order[k] for k in a) for a in applied)
    both = sum(set(a) >= {"reverb", "babble"} for a in applied) / 800
    assert abs(both - 0.25) < 0.07


def test_noise_and_babble_snr_ranges() -> None:
    crop = torch.from_numpy(np.random.default_rng(5).standard_normal(8000).astype(np.float32)) * 0.2
    aug = _augmenter({"nonspeech": {"prob": 1.0, "snr": [5, 10]}})
    for i in range(50):
        out = aug(crop, 0, i, "s0")
        assert 5 - 1e-3 <= snr_db(crop, out.waveform - crop) <= 10 + 1e-3
    babble = _augmenter({"babble": {"prob": 1.0, "snr": [13, 20], "num_speakers": [3, 3]}})
    for i in range(50):
        out = babble(crop, 0, i, "s0")
        # three talkers, each 13-20 dB below the crop; constant talkers (bank) add coherently at worst
        assert 13 - 20 * math.log10(3) - 1e-3 <= snr_db(crop, out.waveform - crop) <= 20 + 1e-3


def test_speed_perturbation_lengths_and_classes() -> None:
    aug = _augmenter({"speed": {"prob": 1.0, "factors": [0.9, 1.1]}})
    crop = torch.randn(16000)
    seen = set()
    for i in range(40):
        out = aug(crop, 0, i)
        seen.add(out.speed_factor)
        assert out.speed_index in (1, 2) and out.applied == ("speed",)
        assert out.waveform.numel() == perturbed_num_samples(16000, out.speed_factor)
        assert torch.allclose(out.waveform, apply_speed(crop, 16000, out.speed_factor), atol=1e-5)
        assert abs(aug.source_length(16000, 0, i) - 16000 * out.speed_factor) <= 0.5
    assert seen == {0.9, 1.1}
    assert aug.num_classes(10) == 30 and aug.target(4, 2, 10) == 24 and aug.target(4, 0, 10) == 4
    same = _augmenter({"speed": {"prob": 1.0, "as_new_speaker": False}})
    assert same.num_classes(10) == 10 and same.target(4, 2, 10) == 4
    off = _augmenter({"speed": {"prob": 0.0}})
    assert off.speed(0, 1) == (0, 1.0) and off.num_classes(10) == 10


def test_disabled_augmentation_returns_the_crop() -> None:
    aug = _augmenter({**ALL, "enabled": False})
    crop = torch.randn(1000)
    out = aug(crop, 0, 0, "s0")
    assert out.waveform is crop and out.applied == () and aug.num_classes(5) == 5


def test_nonspeech_pool_from_ctm_and_from_energy(tmp_path: Path) -> None:
    data_dir, ctm = make_speaker_dir(tmp_path)
    bank = SpeechBank.from_data_dir(data_dir)
    cfg = AugmentConfig.from_dict({"nonspeech": {"prob": 1.0, "ctm": ctm}})
    from_ctm = build_nonspeech_pool(bank, cfg.nonspeech)
    from_energy = build_nonspeech_pool(bank, AugmentConfig.from_dict({"nonspeech": {"prob": 1.0}}).nonspeech)
    assert len(from_ctm) == len(from_energy) == 3 * len(bank)
    # every range lies inside a pause: its audio is the low background noise, not the harmonic 'speech'
    for pool in (from_ctm, from_energy):
        for i, start, end in pool.ranges:
            assert bank.waveform(i, start, end).abs().max() < 0.02
    aug = WaveAugmenter(cfg, seed=1, bank=bank)
    out = aug(bank.waveform(0), 0, 0, bank.speakers[0])
    assert out.applied == ("nonspeech",) and 0 - 1e-3 <= snr_db(bank.waveform(0), out.waveform - bank.waveform(0)) <= 15.001
