"""LDA + PLDA verification back-end (speechattn.metrics.plda): exact LLR, LDA, storage and refusal."""
from __future__ import annotations

import doctest
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from speechattn.data.kaldi_dir import KaldiDataError
from speechattn.metrics import plda as plda_module
from speechattn.metrics.plda import PldaBackend, fit_plda_backend, load_plda_backend, save_plda_backend


def _speakers(num_speakers: int = 30, per_speaker: int = 8, dim: int = 12, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_speakers, dim)) * 2
    labels = np.repeat(np.arange(num_speakers), per_speaker)
    return centres[labels] + rng.standard_normal((len(labels), dim)), labels


def test_docstring_examples() -> None:
    assert doctest.testmod(plda_module).failed == 0


def test_score_is_the_exact_gaussian_log_likelihood_ratio() -> None:
    x, labels = _speakers()
    backend = fit_plda_backend(x, labels, lda_dim=6)
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((5, 12)), rng.standard_normal((5, 12))
    llr = backend.score(a, b)
    ta, tb = backend.transform(a) - backend.plda_mean, backend.transform(b) - backend.plda_mean
    total = backend.between + backend.within
    joint = np.block([[total, backend.between], [backend.between, total]])
    for i in range(5):  # direct evaluation of the densities the module's closed form stands for
        same = multivariate_normal(np.zeros(12), joint).logpdf(np.concatenate([ta[i], tb[i]]))
        different = (multivariate_normal(np.zeros(6), total).logpdf(ta[i])
                     + multivariate_normal(np.zeros(6), total).logpdf(tb[i]))
        assert llr[i] == pytest.approx(same - different, rel=1e-8, abs=1e-8)
    np.testing.assert_allclose(backend.score(b, a), llr, rtol=1e-10)  # symmetric


def test_same_speaker_pairs_outscore_different_speaker_pairs() -> None:
    x, labels = _speakers(seed=2)
    backend = fit_plda_backend(x[labels < 20], labels[labels < 20], lda_dim=8)
    held = labels >= 20  # speakers the back-end never saw, as in verification
    xh, lh = x[held], labels[held]
    i, j = np.triu_indices(len(xh), 1)
    scores = backend.score(xh[i], xh[j])
    same = lh[i] == lh[j]
    assert scores[same].mean() > scores[~same].mean() + 3


def test_lda_keeps_the_speaker_directions() -> None:
    # speakers differ only in the first two of 10 dimensions; LDA must find that plane
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(40), 6)
    centres = np.zeros((40, 10))
    centres[:, :2] = rng.standard_normal((40, 2)) * 4
    x = centres[labels] + 0.3 * rng.standard_normal((len(labels), 10)) + 5  # offset: centring matters
    backend = fit_plda_backend(x, labels, lda_dim=2)
    weights = np.abs(backend.lda)
    assert np.all(weights[:2].max(0) > 3 * weights[2:].max(0))  # both directions lie in the speaker plane


def test_lda_dimension_is_capped_and_bad_training_sets_are_refused(caplog: pytest.LogCaptureFixture) -> None:
    x, labels = _speakers(num_speakers=5, dim=12)
    with caplog.at_level(logging.INFO):
        backend = fit_plda_backend(x, labels, lda_dim=100)
    assert backend.lda.shape == (12, 4) and backend.lda_dim_asked == 100 and "capped at 4" in caplog.text
    with pytest.raises(ValueError, match="at least 3 speakers"):
        fit_plda_backend(x[labels < 2], labels[labels < 2])
    with pytest.raises(ValueError, match="more utterances than speakers"):
        fit_plda_backend(x[::8], labels[::8])
    with pytest.raises(ValueError, match="do not match"):
        fit_plda_backend(x, labels[:-1])


def test_round_trip_and_refusals(tmp_path: Path) -> None:
    x, labels = _speakers()
    backend = fit_plda_backend(x, labels, lda_dim=6)
    save_plda_backend(tmp_path / "plda", backend, "a" * 64, source="data/train", num_utterances=len(x),
                      num_speakers=30)
    loaded = load_plda_backend(tmp_path / "plda", "a" * 64)
    np.testing.assert_array_equal(loaded.score(x[:4], x[4:8]), backend.score(x[:4], x[4:8]))
    assert loaded.lda_dim_asked == 6
    np.testing.assert_array_equal(loaded.speaker_log_likelihoods(x[:4], [3, 0]),  # enrolled speakers kept
                                  backend.speaker_log_likelihoods(x[:4], [3, 0]))
    meta = json.loads((tmp_path / "plda" / "plda.json").read_text())
    assert meta["lda_dim"] == 6 and meta["num_speakers"] == 30 and meta["source"] == "data/train"
    with pytest.raises(KaldiDataError, match=r"plda.json:0: .*retrain it with this model"):
        load_plda_backend(tmp_path / "plda", "b" * 64)
    with pytest.raises(KaldiDataError, match=r"nowhere/plda.json:0: no PLDA back-end"):
        load_plda_backend(tmp_path / "nowhere")
    (tmp_path / "plda" / "plda.npz").write_bytes(b"not an npz")
    with pytest.raises(KaldiDataError, match=r"plda.npz:0: unreadable"):
        load_plda_backend(tmp_path / "plda")
    (tmp_path / "plda" / "plda.json").write_text("{")
    with pytest.raises(KaldiDataError, match=r"plda.json:0: not a PLDA description"):
        load_plda_backend(tmp_path / "plda")


def test_arrays_are_read_without_pickle(tmp_path: Path) -> None:
    x, labels = _speakers()
    save_plda_backend(tmp_path, fit_plda_backend(x, labels, 4), "c" * 64)
    np.savez(tmp_path / "plda.npz", mean=np.array([object()], dtype=object), lda=np.zeros((12, 4)),
             plda_mean=np.zeros(4), between=np.eye(4), within=np.eye(4))
    with pytest.raises(KaldiDataError, match="unreadable"):
        load_plda_backend(tmp_path)


def test_backend_dataclass_shapes() -> None:
    backend = PldaBackend(np.zeros(3), np.eye(3)[:, :2], np.zeros(2), np.eye(2), np.eye(2))
    assert backend.transform(np.ones((4, 3))).shape == (4, 2) and backend.score(np.ones((4, 3)), np.ones((4, 3))).shape == (4,)


def test_speaker_log_likelihoods_are_the_predictive_densities() -> None:
    x, labels = _speakers(seed=5)
    backend = fit_plda_backend(x, labels, lda_dim=6)
    rng = np.random.default_rng(6)
    test, enrol = rng.standard_normal((4, 12)), rng.standard_normal((5, 12))
    enrol_labels = np.array(["a", "b", "b", "b", "c"])
    ll = backend.enrol(enrol, enrol_labels).speaker_log_likelihoods(test, ["c", "b", "a"])
    assert ll.shape == (4, 3)
    # one enrolment vector: minus the marginal density of the test vector, it is the pairwise LLR
    total = backend.between + backend.within
    marginal = multivariate_normal(np.zeros(6), total).logpdf(backend.transform(test) - backend.plda_mean)
    np.testing.assert_allclose(ll[:, 2] - marginal, backend.score(enrol[:1].repeat(4, 0), test), rtol=1e-8, atol=1e-8)
    # three enrolment vectors: the Gaussian posterior predictive, evaluated directly
    t = backend.transform(test) - backend.plda_mean
    e = backend.transform(enrol[1:4]) - backend.plda_mean
    b_inv, w_inv = np.linalg.inv(backend.between), np.linalg.inv(backend.within)
    post = np.linalg.inv(b_inv + 3 * w_inv)
    mean = post @ (3 * w_inv @ e.mean(0))
    direct = multivariate_normal(mean, post + backend.within).logpdf(t)
    np.testing.assert_allclose(ll[:, 1], direct, rtol=1e-8, atol=1e-8)
    with pytest.raises(ValueError, match="not enrolled.*'d'"):
        backend.enrol(enrol, enrol_labels).speaker_log_likelihoods(test, ["a", "d"])


def test_enrolled_speakers_are_identified() -> None:
    x, labels = _speakers(num_speakers=25, per_speaker=9, seed=7)
    enrol = np.arange(len(labels)) % 9 != 0       # 8 enrolment vectors per speaker, the 9th to identify
    backend = fit_plda_backend(x[enrol], labels[enrol], lda_dim=10)  # enrols its training speakers
    ll = backend.speaker_log_likelihoods(x[~enrol], list(range(25)))
    assert np.mean(ll.argmax(1) == labels[~enrol]) >= 0.9
    assert list(backend.enrol_counts) == [8] * 25


def test_cohort_scores_are_the_pairwise_llrs_against_the_enrolment_recordings(tmp_path: Path) -> None:
    x, labels = _speakers(seed=8)
    backend = fit_plda_backend(x, labels, lda_dim=6)  # enrols its training recordings: they are the cohort
    assert backend.enrol_vectors.shape == (len(x), 6) and backend.enrol_vectors.dtype == np.float32
    test = np.random.default_rng(9).standard_normal((3, 12))
    matrix = backend.cohort_scores(test)
    assert matrix.shape == (3, len(x))
    for i in range(3):  # enrol_vectors are float32: the same LLR up to that rounding
        np.testing.assert_allclose(matrix[i], backend.score(test[i:i + 1].repeat(len(x), 0), x), rtol=1e-4, atol=1e-4)
    save_plda_backend(tmp_path, backend, "d" * 64)
    np.testing.assert_array_equal(load_plda_backend(tmp_path).cohort_scores(test), matrix)  # stored with it
    with pytest.raises(ValueError, match="no enrolment recordings"):
        PldaBackend(np.zeros(3), np.eye(3)[:, :2], np.zeros(2), np.eye(2), np.eye(2)).cohort_scores(np.ones((1, 3)))


def test_class_statistics_match_a_loop_over_speakers() -> None:
    x, labels = _speakers(num_speakers=7, per_speaker=5, seed=10)
    order = np.random.default_rng(11).permutation(len(x))  # speakers interleaved, not in blocks
    x, labels = x[order], labels[order]
    mean, within, between = plda_module._scatter(x, labels)
    w = sum((x[labels == c] - x[labels == c].mean(0)).T @ (x[labels == c] - x[labels == c].mean(0)) for c in range(7))
    b = sum(np.outer(x[labels == c].mean(0) - x.mean(0), x[labels == c].mean(0) - x.mean(0)) for c in range(7))
    np.testing.assert_allclose(within, w / (len(x) - 7), atol=1e-12)
    np.testing.assert_allclose(between, b / 7, atol=1e-12)
    np.testing.assert_allclose(mean, x.mean(0))
