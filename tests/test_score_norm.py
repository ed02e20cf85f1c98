"""Adaptive s-norm against a direct per-trial reference, its effect on a channel-biased toy set, and the
stored cohort (fingerprint checks)."""
from __future__ import annotations

import doctest
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import speechattn.metrics.score_norm
import speechattn.utils.fingerprint
from speechattn.data.kaldi_dir import KaldiDataError
from speechattn.metrics.score_norm import (cohort_statistics, load_cohort, make_cohort, save_cohort,
                                           score_trials_asnorm, speaker_means)
from speechattn.metrics.verification import compute_eer, score_trials
from speechattn.utils.fingerprint import state_dict_fingerprint


def test_docstring_examples() -> None:
    for module in (speechattn.metrics.score_norm, speechattn.utils.fingerprint):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def reference_asnorm(trials, embeddings, cohort, top_n, mean=None):
    """Per trial, straight from the definition: sorted cohort scores of each side, top n, mean and std."""
    out_raw, out_norm = [], []
    shift = np.zeros(cohort.shape[1]) if mean is None else mean
    for _, u1, u2 in trials:
        e, t = embeddings[u1] - shift, embeddings[u2] - shift
        s = _cos(e, t)
        stats = []
        for x in (e, t):
            scores = sorted((_cos(x, c - shift) for c in cohort), reverse=True)[:top_n]
            stats.append((np.mean(scores), np.std(scores)))
        out_raw.append(s)
        out_norm.append(0.5 * ((s - stats[0][0]) / stats[0][1] + (s - stats[1][0]) / stats[1][1]))
    return np.array(out_raw), np.array(out_norm)


@pytest.mark.parametrize("top_n", [2, 7, 30, 500])
@pytest.mark.parametrize("centre", [False, True])
def test_asnorm_equals_the_direct_reference(top_n: int, centre: bool) -> None:
    rng = np.random.default_rng(top_n)
    embeddings = {f"u{i}": rng.standard_normal(16) + 0.3 for i in range(12)}
    cohort = rng.standard_normal((40, 16)) + 0.3
    trials = [(int(rng.integers(2)), f"u{rng.integers(12)}", f"u{rng.integers(12)}") for _ in range(50)]
    mean = cohort.mean(axis=0) if centre else None
    raw, norm = score_trials_asnorm(trials, embeddings, cohort, top_n=top_n, subtract_mean=mean)
    ref_raw, ref_norm = reference_asnorm(trials, embeddings, cohort, top_n, mean)
    assert np.allclose(raw, ref_raw, atol=1e-12) and np.allclose(norm, ref_norm, atol=1e-9)
    if not centre:
        assert np.allclose(raw, score_trials(trials, embeddings), atol=1e-12)  # the toolkit's raw cosine


def test_asnorm_removes_a_channel_bias_that_raw_cosine_suffers_from() -> None:
    rng = np.random.default_rng(0)
    dim, common = 32, np.eye(32)[0] * 3.0

    def utterance(speaker_vector: np.ndarray) -> np.ndarray:
        # half the recordings carry a strong shared 'channel' component
        return speaker_vector + 0.6 * rng.standard_normal(dim) + common * rng.integers(2)

    test_speakers = rng.standard_normal((40, dim))
    embeddings, utt2spk = {}, {}
    for s, vector in enumerate(test_speakers):
        for k in range(4):
            embeddings[f"s{s}-{k}"] = utterance(vector)
            utt2spk[f"s{s}-{k}"] = f"s{s}"
    cohort_embeddings = {f"c{s}-{k}": utterance(v) for s, v in enumerate(rng.standard_normal((100, dim)))
                         for k in range(3)}
    _, cohort = speaker_means(cohort_embeddings, {u: u.split("-")[0] for u in cohort_embeddings})
    utts = sorted(embeddings)
    trials = [(int(utt2spk[a] == utt2spk[b]), a, b) for i, a in enumerate(utts) for b in utts[i + 1:]]
    raw, norm = score_trials_asnorm(trials, embeddings, cohort, top_n=20)
    labels = np.array([t[0] for t in trials], dtype=bool)
    eer_raw, _ = compute_eer(raw[labels], raw[~labels])
    eer_norm, _ = compute_eer(norm[labels], norm[~labels])
    assert eer_norm < 0.8 * eer_raw, (eer_raw, eer_norm)


def test_cohort_statistics_errors() -> None:
    with pytest.raises(ValueError, match="top_n must be >= 2"):
        cohort_statistics(np.ones((1, 4)), np.ones((5, 4)), 1)
    with pytest.raises(ValueError, match="dimension 4 != cohort dimension 3"):
        cohort_statistics(np.ones((1, 4)), np.ones((5, 3)), 3)
    with pytest.raises(KeyError, match="trial 1: no embedding for utterance 'b'"):
        score_trials_asnorm([(1, "a", "b")], {"a": np.ones(3)}, np.ones((4, 3)))


def test_speaker_means_are_means_of_unit_vectors() -> None:
    emb = {"a1": np.array([2.0, 0.0]), "a2": np.array([0.0, 5.0]), "b1": np.array([0.0, -1.0])}
    speakers, vectors = speaker_means(emb, {"a1": "A", "a2": "A", "b1": "B"})
    assert speakers == ["A", "B"] and np.allclose(vectors, [[0.5, 0.5], [0.0, -1.0]])
    with pytest.raises(KeyError, match="'b1' has an embedding but no speaker"):
        speaker_means(emb, {"a1": "A", "a2": "A"})


def _model_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3)).state_dict()


def test_cohort_round_trip_and_refusal_of_another_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    emb = {f"s{s}-{k}": rng.standard_normal(8).astype(np.float32) for s in range(5) for k in range(3)}
    fingerprint = state_dict_fingerprint(_model_state(0))
    cohort = make_cohort(emb, {u: u.split("-")[0] for u in emb}, fingerprint, source="data/verif_train")
    save_cohort(tmp_path / "cohort", cohort)
    loaded = load_cohort(tmp_path / "cohort", fingerprint)
    assert loaded.speakers == ["s0", "s1", "s2", "s3", "s4"] and loaded.num_utterances == 15
    assert np.allclose(loaded.vectors, cohort.vectors, atol=1e-6) and np.allclose(loaded.mean, cohort.mean)
    assert loaded.source == "data/verif_train"
    other = state_dict_fingerprint(_model_state(1))
    with pytest.raises(KaldiDataError, match=r"cohort.json:0: cohort made with model weights .* recompute"):
        load_cohort(tmp_path / "cohort", other)
    load_cohort(tmp_path / "cohort")  # without a fingerprint to check: accepted
    ark = tmp_path / "cohort" / "cohort.ark"
    ark.write_bytes(ark.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(KaldiDataError, match=r"cohort.ark:0: changed since cohort.json"):
        load_cohort(tmp_path / "cohort", fingerprint)
    with pytest.raises(KaldiDataError, match="no cohort here"):
        load_cohort(tmp_path / "elsewhere")
    (tmp_path / "cohort" / "cohort.json").write_text(json.dumps({"format": 1}))
    with pytest.raises(KaldiDataError, match="not a cohort description"):
        load_cohort(tmp_path / "cohort")


def test_fingerprint_sees_every_value_and_ignores_order() -> None:
    state = _model_state(0)
    base = state_dict_fingerprint(state)
    assert base == state_dict_fingerprint(dict(reversed(list(state.items()))))
    changed = {k: v.clone() for k, v in state.items()}
    changed["1.num_batches_tracked"] += 1  # a 0-dim integer buffer counts too
    assert state_dict_fingerprint(changed) != base
    with pytest.raises(TypeError, match="not a tensor"):
        state_dict_fingerprint({"x": 1.0})


@pytest.mark.parametrize("chunk", [1, 5, 256])
def test_normalising_given_scores_equals_asnorm_of_cosine_scores(chunk: int) -> None:
    from speechattn.metrics.score_norm import normalise_trial_scores

    rng = np.random.default_rng(chunk)
    embeddings = {f"u{i}": rng.standard_normal(16) for i in range(12)}
    cohort = rng.standard_normal((40, 16))
    trials = [(int(rng.integers(2)), f"u{rng.integers(12)}", f"u{rng.integers(12)}") for _ in range(50)]
    raw, norm = score_trials_asnorm(trials, embeddings, cohort, top_n=7)
    cosine_to_cohort = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (
        cohort / np.linalg.norm(cohort, axis=1, keepdims=True)).T
    np.testing.assert_allclose(normalise_trial_scores(trials, embeddings, raw, cosine_to_cohort, 7, chunk=chunk),
                               norm, atol=1e-12)
    with pytest.raises(KeyError, match="trial 1: no embedding for utterance 'nobody'"):
        normalise_trial_scores([(1, "nobody", "u1")], embeddings, np.zeros(1), cosine_to_cohort, 7)
