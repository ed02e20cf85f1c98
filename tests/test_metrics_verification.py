"""Verification metrics: EER, minDCF, DET sweep, cosine trial scoring, trial list I/O."""
from __future__ import annotations

import re
from statistics import NormalDist

import numpy as np
import pytest

from speechattn.metrics.verification import (
    compute_eer,
    compute_min_dcf,
    det_curve,
    error_rates,
    score_trials,
)
from speechattn.data.kaldi_dir import KaldiDataError
from speechattn.data.trials import read_trials, write_trials


def brute_force_operating_points(target: np.ndarray, nontarget: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every threshold in (distinct scores + inf), decision "accept when score >= threshold", O(n^2)."""
    thresholds = np.append(np.unique(np.concatenate([target, nontarget])), np.inf)
    p_miss = np.array([(target < t).mean() for t in thresholds])
    p_fa = np.array([(nontarget >= t).mean() for t in thresholds])
    return p_miss, p_fa, thresholds


def brute_force_min_dcf(target, nontarget, p_target, c_miss, c_fa) -> float:
    p_miss, p_fa, _ = brute_force_operating_points(target, nontarget)
    dcf = c_miss * p_target * p_miss + c_fa * (1 - p_target) * p_fa
    return float(dcf.min() / min(c_miss * p_target, c_fa * (1 - p_target)))


@pytest.mark.parametrize("separation", [1.0, 2.0, 3.0])
def test_eer_matches_gaussian_analytic_value(separation):
    # Target ~ N(d, 1), non-target ~ N(0, 1): the EER threshold is d/2 and EER = Phi(-d/2).
    rng = np.random.default_rng(int(separation * 10))
    target = rng.normal(separation, 1.0, 200_000)
    nontarget = rng.normal(0.0, 1.0, 200_000)
    eer, threshold = compute_eer(target, nontarget)
    assert eer == pytest.approx(NormalDist().cdf(-separation / 2), abs=0.003)
    assert threshold == pytest.approx(separation / 2, abs=0.02)


def test_eer_hand_examples():
    assert compute_eer([2.0, 3.0], [0.0, 1.0])[0] == 0.0  # perfectly separated
    assert compute_eer([0.0, 1.0], [2.0, 3.0])[0] == 1.0  # perfectly wrong
    eer, _ = compute_eer([0.9, 0.8, 0.3], [0.1, 0.2, 0.85])
    assert eer == pytest.approx(1 / 3)
    # All scores tied: the only operating points are accept-all and reject-all, EER 50 %.
    eer, threshold = compute_eer([0.5] * 3, [0.5] * 7)
    assert eer == pytest.approx(0.5)
    assert threshold == 0.5


def test_error_rates_match_brute_force_with_ties():
    rng = np.random.default_rng(3)
    # Coarse rounding makes many ties, within and across the two classes.
    target = np.round(rng.normal(1.0, 1.0, 300), 1)
    nontarget = np.round(rng.normal(0.0, 1.0, 500), 1)
    p_miss, p_fa, thresholds = error_rates(target, nontarget)
    expected = brute_force_operating_points(target, nontarget)
    np.testing.assert_allclose(p_miss, expected[0])
    np.testing.assert_allclose(p_fa, expected[1])
    np.testing.assert_array_equal(thresholds, expected[2])


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("p_target, c_miss, c_fa", [(0.01, 1.0, 1.0), (0.05, 1.0, 1.0), (0.5, 10.0, 1.0)])
def test_min_dcf_matches_brute_force(seed, p_target, c_miss, c_fa):
    rng = np.random.default_rng(seed)
    target = np.round(rng.normal(1.5, 1.0, rng.integers(5, 60)), 1)
    nontarget = np.round(rng.normal(0.0, 1.0, rng.integers(20, 300)), 1)
    min_dcf, threshold = compute_min_dcf(target, nontarget, p_target=p_target, c_miss=c_miss, c_fa=c_fa)
    assert min_dcf == pytest.approx(brute_force_min_dcf(target, nontarget, p_target, c_miss, c_fa))
    # The returned threshold achieves the returned cost.
    p_miss, p_fa = (target < threshold).mean(), (nontarget >= threshold).mean()
    cost = (c_miss * p_target * p_miss + c_fa * (1 - p_target) * p_fa) / min(c_miss * p_target, c_fa * (1 - p_target))
    assert cost == pytest.approx(min_dcf)
    assert 0.0 <= min_dcf <= 1.0


def test_det_curve_is_monotonic_and_spans_the_corners():
    rng = np.random.default_rng(7)
    p_miss, p_fa = det_curve(np.round(rng.normal(1, 1, 1000), 2), np.round(rng.normal(0, 1, 1000), 2))
    assert p_miss.shape == p_fa.shape
    assert np.all(np.diff(p_miss) >= 0) and np.all(np.diff(p_fa) <= 0)
    assert (p_miss[0], p_fa[0], p_miss[-1], p_fa[-1]) == (0.0, 1.0, 1.0, 0.0)


def test_metric_input_errors():
    with pytest.raises(ValueError, match="no target scores"):
        compute_eer([], [0.1])
    with pytest.raises(ValueError, match="NaN"):
        compute_min_dcf([0.1, float("nan")], [0.0])
    with pytest.raises(ValueError, match="p_target"):
        compute_min_dcf([1.0], [0.0], p_target=1.0)


def test_score_trials_cosine():
    embeddings = {
        "a": np.array([1.0, 0.0]),
        "b": np.array([3.0, 0.0]),
        "c": np.array([0.0, 2.0]),
        "d": np.array([-1.0, 1.0]),
    }
    trials = [(1, "a", "b"), (0, "a", "c"), (0, "a", "d"), (1, "d", "d")]
    np.testing.assert_allclose(score_trials(trials, embeddings), [1.0, 0.0, -np.sqrt(0.5), 1.0])
    with pytest.raises(KeyError, match="trial 2: no embedding for utterance 'zz'"):
        score_trials([(1, "a", "b"), (0, "a", "zz")], embeddings)
    assert score_trials([], embeddings).shape == (0,)


def test_trials_round_trip(tmp_path):
    trials = [(1, "id10270/x6uYqmx31kE/00001.wav", "id10270/8jEAjG6SegY/00008.wav"), (0, "u1", "u2")]
    path = tmp_path / "trials.txt"
    write_trials(path, trials)
    assert path.read_text() == (
        "1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav\n0 u1 u2\n"
    )
    assert read_trials(path) == trials
    assert [p.name for p in tmp_path.iterdir()] == ["trials.txt"]  # no temporary file left behind
    with pytest.raises(ValueError, match="trial 1: label"):
        write_trials(tmp_path / "bad.txt", [(2, "a", "b")])


@pytest.mark.parametrize(
    "bad_line, message",
    [("1 u1\n", "expected 'LABEL UTT1 UTT2', got 2 fields"), ("target u1 u2\n", "label must be 1"),
     ("1 u1 u2 extra\n", "expected 'LABEL UTT1 UTT2', got 4 fields")],
)
def test_read_trials_reports_file_and_line(tmp_path, bad_line, message):
    path = tmp_path / "trials.txt"
    path.write_text("1 a b\n\n0 a c\n" + bad_line)
    with pytest.raises(KaldiDataError, match=re.escape(f"{path}:4: {message}")):
        read_trials(path)
    assert issubclass(KaldiDataError, ValueError)
