"""CMVN: Kaldi-format stats by hand, kaldiio round trip, the four modes, mean-only, the compute_cmvn stage."""
from __future__ import annotations

from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch

from speechattn.features.cmvn import (CmvnApplier, CmvnError, accumulate_stats, apply_cmvn, combine, read_stats,
                                      stats_to_transform, write_stats_ark)


def test_stats_by_hand() -> None:
    feats = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 10.0]], dtype=np.float32)
    stats = accumulate_stats(feats)
    expected = np.array([[1 + 3 + 5, 2 + 6 + 10, 3],
                         [1 + 9 + 25, 4 + 36 + 100, 0]], dtype=np.float64)
    np.testing.assert_array_equal(stats, expected)
    assert stats.dtype == np.float64 and stats.shape == (2, 3)
    # mean (3, 6), variance (8/3, 32/3): normalised = (x - mean) / std
    out = apply_cmvn(feats, stats)
    std = np.sqrt([8 / 3, 32 / 3])
    np.testing.assert_allclose(out, (feats - [3.0, 6.0]) / std, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(out.std(axis=0), 1.0, rtol=1e-6)


def test_mean_only_and_identity() -> None:
    feats = np.random.default_rng(0).normal(3.0, 5.0, size=(50, 4)).astype(np.float32)
    stats = accumulate_stats(feats)
    mean_only = apply_cmvn(feats, stats, norm_vars=False)
    np.testing.assert_allclose(mean_only, feats - feats.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(mean_only.std(axis=0), feats.std(axis=0), rtol=1e-5)  # scale untouched
    np.testing.assert_array_equal(apply_cmvn(feats, stats, norm_means=False, norm_vars=False), feats)
    with pytest.raises(CmvnError, match="variance but not the mean"):
        apply_cmvn(feats, stats, norm_means=False, norm_vars=True)


def test_combine_equals_stats_of_concatenation() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(7, 3)), rng.normal(size=(11, 3))
    np.testing.assert_allclose(combine([accumulate_stats(a), accumulate_stats(b)]),
                               accumulate_stats(np.concatenate([a, b])))
    with pytest.raises(CmvnError):
        combine([accumulate_stats(a), accumulate_stats(rng.normal(size=(2, 4)))])
    with pytest.raises(CmvnError):
        combine([])


def test_variance_floor_on_constant_dimension() -> None:
    feats = np.array([[1.0, 7.0], [3.0, 7.0]], dtype=np.float32)
    out = apply_cmvn(feats, accumulate_stats(feats))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[:, 1], 0.0)
    np.testing.assert_allclose(out[:, 0], [-1.0, 1.0])


def test_insufficient_and_bad_stats() -> None:
    with pytest.raises(CmvnError, match="insufficient"):
        stats_to_transform(np.zeros((2, 3)))
    with pytest.raises(CmvnError, match=r"\(2, D\+1\)"):
        stats_to_transform(np.zeros((3, 3)))
    with pytest.raises(CmvnError, match="do not match"):
        apply_cmvn(np.zeros((4, 5), dtype=np.float32), accumulate_stats(np.ones((4, 3))))


def test_torch_input_keeps_type() -> None:
    feats = torch.randn(20, 3) * 4 + 2
    out = apply_cmvn(feats, accumulate_stats(feats))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    torch.testing.assert_close(out.mean(0), torch.zeros(3), atol=1e-5, rtol=0)


def test_kaldiio_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    stats = {"spk1": accumulate_stats(rng.normal(size=(9, 5))), "spk2": accumulate_stats(rng.normal(size=(4, 5)))}
    write_stats_ark(tmp_path / "cmvn_spk.ark", stats, scp_path=tmp_path / "cmvn_spk.scp")
    for path in (tmp_path / "cmvn_spk.scp", tmp_path / "cmvn_spk.ark"):
        loaded = read_stats(path)
        assert list(loaded) == ["spk1", "spk2"]
        for key in stats:
            np.testing.assert_array_equal(loaded[key], stats[key])  # float64, bit exact
    # The scp is plain Kaldi: any Kaldi reader (here kaldiio directly) can load each entry.
    for key, matrix in kaldiio.load_scp(str(tmp_path / "cmvn_spk.scp")).items():
        assert matrix.dtype == np.float64
        np.testing.assert_array_equal(matrix, stats[key])
    assert not list(tmp_path.glob(".*.tmp"))


# ---------------------------------------------------------------------------------- modes and the stage

def make_feats_dir(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A data dir with feats.scp (kaldiio) of 2 speakers with different means."""
    from speechattn.data.kaldi_dir import utt2spk_to_spk2utt, write_table

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    rng = np.random.default_rng(3)
    feats = {"a-1": rng.normal(10.0, 2.0, size=(30, 4)).astype(np.float32),
             "a-2": rng.normal(10.0, 2.0, size=(20, 4)).astype(np.float32),
             "b-1": rng.normal(-5.0, 0.5, size=(25, 4)).astype(np.float32)}
    kaldiio.save_ark(str(data_dir / "raw.ark"), feats, scp=str(data_dir / "feats.scp"))
    utt2spk = {utt: utt.split("-")[0] for utt in feats}
    write_table(data_dir / "utt2spk", utt2spk)
    write_table(data_dir / "spk2utt", utt2spk_to_spk2utt(utt2spk))
    return data_dir, feats


def test_modes_with_compute_cmvn_stats(tmp_path: Path) -> None:
    from speechattn.bin.compute_cmvn import compute_cmvn_stats

    data_dir, feats = make_feats_dir(tmp_path)
    assert compute_cmvn_stats(data_dir, "global") == data_dir / "cmvn_global.ark"
    assert compute_cmvn_stats(data_dir, "speaker") == data_dir / "cmvn_spk.scp"
    assert compute_cmvn_stats(data_dir, "utterance") is None and compute_cmvn_stats(data_dir, "none") is None

    everything = np.concatenate(list(feats.values()))
    global_cmvn = CmvnApplier("global", data_dir)
    out = np.concatenate([global_cmvn(utt, m) for utt, m in feats.items()])
    np.testing.assert_allclose(out.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.std(0), 1.0, rtol=1e-4)
    np.testing.assert_allclose(read_stats(data_dir / "cmvn_global.ark")["global"], accumulate_stats(everything))

    speaker_cmvn = CmvnApplier("speaker", data_dir)
    b = speaker_cmvn("b-1", feats["b-1"])
    np.testing.assert_allclose(b.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(b.std(0), 1.0, rtol=1e-4)
    a = np.concatenate([speaker_cmvn("a-1", feats["a-1"]), speaker_cmvn("a-2", feats["a-2"])])
    np.testing.assert_allclose(a.mean(0), 0.0, atol=1e-4)

    mean_only = CmvnApplier("speaker", data_dir, norm_vars=False)
    np.testing.assert_allclose(mean_only("b-1", feats["b-1"]), feats["b-1"] - feats["b-1"].mean(0), atol=1e-4)

    utt_cmvn = CmvnApplier("utterance", norm_vars=True)
    np.testing.assert_allclose(utt_cmvn("a-2", feats["a-2"]).mean(0), 0.0, atol=1e-5)
    assert CmvnApplier("none")("a-1", feats["a-1"]) is feats["a-1"]

    with pytest.raises(CmvnError, match="'zz-9'"):
        speaker_cmvn("zz-9", feats["a-1"])


def test_nan_features_name_the_utterance(tmp_path: Path) -> None:
    bad = np.ones((5, 4), dtype=np.float32)
    bad[2, 1] = np.nan
    for applier in (CmvnApplier("utterance"), CmvnApplier("none")):
        with pytest.raises(CmvnError, match="'utt-bad'.*NaN"):
            applier("utt-bad", bad)
    from speechattn.bin.compute_cmvn import compute_cmvn_stats

    data_dir, feats = make_feats_dir(tmp_path)
    feats["a-2"][3, 0] = np.inf
    kaldiio.save_ark(str(data_dir / "raw.ark"), feats, scp=str(data_dir / "feats.scp"))
    with pytest.raises(CmvnError, match="feats.scp:2: utterance 'a-2'"):
        compute_cmvn_stats(data_dir, "global")
    assert not (data_dir / "cmvn_global.ark").exists()


def test_compute_cmvn_hydra_app_is_idempotent(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    from speechattn.bin import compute_cmvn
    from speechattn.bin._hydra import CONF_DIR

    data_dir, _ = make_feats_dir(tmp_path)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose("compute_cmvn", overrides=[f"data_dir={data_dir}", "cmvn=speaker", "cmvn.norm_vars=false"])
        cfg_force = compose("compute_cmvn", overrides=[f"data_dir={data_dir}", "cmvn=speaker", "force=true"])
    assert cfg.cmvn.mode == "speaker" and cfg.cmvn.norm_vars is False
    target = compute_cmvn.run(cfg)
    mtime = target.stat().st_mtime_ns
    assert compute_cmvn.run(cfg) == target and target.stat().st_mtime_ns == mtime  # skipped
    compute_cmvn.run(cfg_force)
    assert target.stat().st_mtime_ns > mtime
    applier = CmvnApplier.from_config(cfg.cmvn, data_dir)
    assert applier.mode == "speaker" and applier.norm_vars is False
