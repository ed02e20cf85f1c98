"""Phone metrics: run collapsing, edit distance, PER, frame scores, frame-file scoring, top-k."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from speechattn.metrics.identification import topk_accuracy
from speechattn.metrics.phone import (
    FrameScores,
    accuracy_by_boundary_distance,
    boundary_distances,
    collapse_runs,
    edit_distance,
    phone_error_counts,
    phone_error_rate,
    score_frame_files,
)


def brute_force_distance(ref: list[str], hyp: list[str]) -> int:
    """Plain recursive Levenshtein distance (memoised) as an independent check."""
    from functools import lru_cache

    @lru_cache(maxsize=None)
    def d(i: int, j: int) -> int:
        if i == 0 or j == 0:
            return i + j
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (ref[i - 1] != hyp[j - 1]))

    return d(len(ref), len(hyp))


def test_collapse_runs():
    assert collapse_runs([]) == []
    assert collapse_runs(["a"]) == ["a"]
    assert collapse_runs(["SIL", "SIL", "a", "a", "a", "b", "a", "a", "SIL"]) == ["SIL", "a", "b", "a", "SIL"]


@pytest.mark.parametrize(
    "ref, hyp, expected",
    [
        ("abc", "abc", (0, 0, 0)),
        ("abc", "axc", (1, 0, 0)),
        ("abc", "ac", (0, 1, 0)),
        ("abc", "abxc", (0, 0, 1)),
        ("abc", "", (0, 3, 0)),
        ("", "ab", (0, 0, 2)),
        ("kitten", "sitting", (2, 0, 1)),
        ("abcd", "bcde", (0, 1, 1)),  # shift: cheaper as 1 deletion + 1 insertion than 4 substitutions
    ],
)
def test_edit_distance_hand_examples(ref, hyp, expected):
    assert edit_distance(list(ref), list(hyp)) == expected


def test_edit_distance_total_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(200):
        ref = list(rng.choice(list("abcd"), size=rng.integers(0, 9)))
        hyp = list(rng.choice(list("abcd"), size=rng.integers(0, 9)))
        s, d, i = edit_distance(ref, hyp)
        assert s + d + i == brute_force_distance(ref, hyp)
        # The alignment is consistent: every reference symbol is matched, substituted or deleted.
        assert len(ref) - d == len(hyp) - i


def test_phone_error_rate_ignores_silence_after_collapsing():
    refs = [["SIL", "SIL", "a", "a", "SIL", "a", "b", "b", "SIL"]]  # phones: a a b (SIL between the a's)
    hyps = [["SIL", "a", "a", "a", "a", "a", "b", "c", "c"]]  # phones: a b c
    counts = phone_error_counts(refs, hyps)
    assert counts.ref_length == 3
    # ref a a b vs hyp a b c: two edits (delete an a, insert c; or substitute twice).
    assert counts.errors == 2
    assert phone_error_rate(refs, hyps) == pytest.approx(2 / 3)
    # Scoring silence too: ref SIL a SIL a b SIL (6), hyp SIL a b c (4).
    with_silence = phone_error_counts(refs, hyps, ignore=())
    assert with_silence.ref_length == 6
    assert with_silence.errors == brute_force_distance(
        ["SIL", "a", "SIL", "a", "b", "SIL"], ["SIL", "a", "b", "c"]
    )


def test_phone_error_rate_over_corpus_is_pooled_not_averaged():
    refs = [["a", "b", "c", "d"], ["a"]]
    hyps = [["a", "b", "c", "d"], ["b"]]
    assert phone_error_rate(refs, hyps) == pytest.approx(1 / 5)
    assert phone_error_rate([["a", "a"]], [["a"]], collapse=False) == pytest.approx(0.5)


def test_phone_error_rate_errors():
    with pytest.raises(ValueError, match="2 reference sequences but 1"):
        phone_error_rate([["a"], ["b"]], [["a"]])
    with pytest.raises(ValueError, match="no scored phones"):
        phone_error_rate([["SIL"]], [["a"]])


def test_frame_scores_hand_example():
    phones = ["SIL", "a", "b"]
    scores = FrameScores(phones)
    scores.update(np.array([0, 0, 1, 1, 1, 2]), np.array([0, 1, 1, 1, 0, 1]))
    scores.update(np.array([2, 0]), np.array([2, 0]))
    expected_confusion = np.array([[2, 1, 0], [1, 2, 0], [0, 1, 1]])
    np.testing.assert_array_equal(scores.confusion, expected_confusion)
    assert scores.confusion.dtype == np.int64
    assert scores.num_frames == 8
    assert scores.frame_accuracy == pytest.approx(5 / 8)
    # Non-silence reference frames: a,a,a,b,b -> correct a,a,b = 3 of 5 (hyp SIL on an "a" is an error).
    assert scores.num_non_silence_frames == 5
    assert scores.non_silence_frame_accuracy == pytest.approx(3 / 5)
    np.testing.assert_allclose(scores.per_phone_accuracy, [2 / 3, 2 / 3, 1 / 2])
    np.testing.assert_array_equal(scores.per_phone_count, [3, 3, 2])

    summary = json.loads(json.dumps(scores.to_dict(include_confusion=True)))  # JSON-serialisable
    assert summary["frame_accuracy"] == 62.5
    assert summary["non_silence_frame_accuracy"] == 60.0
    assert summary["per_phone"]["b"] == {"accuracy": 50.0, "count": 2}
    assert summary["confusion"] == expected_confusion.tolist()


def test_frame_scores_unseen_phone_and_no_silence_class():
    scores = FrameScores(["SIL", "a", "b"])
    scores.update(np.array([1, 1]), np.array([1, 2]))
    assert np.isnan(scores.per_phone_accuracy[2]) and np.isnan(scores.per_phone_accuracy[0])
    assert scores.to_dict()["per_phone"]["b"] == {"accuracy": None, "count": 0}
    no_sil = FrameScores(["x", "y"], silence=None)
    no_sil.update(np.array([0, 1]), np.array([0, 0]))
    assert no_sil.non_silence_frame_accuracy == no_sil.frame_accuracy == 0.5


def test_frame_scores_rejects_bad_input():
    scores = FrameScores(["SIL", "a"])
    with pytest.raises(ValueError, match="3 frames, hypothesis has 2"):
        scores.update(np.array([0, 1, 1]), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        scores.update(np.array([0, 2]), np.array([0, 1]))
    with pytest.raises(TypeError):
        scores.update(np.array([0.0, 1.0]), np.array([0, 1]))
    assert scores.num_frames == 0


def test_frame_scores_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    scores = FrameScores(["SIL", "a"])
    scores.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
    assert scores.frame_accuracy == pytest.approx(2 / 3)


def test_score_frame_files():
    phones = ["SIL", "a", "b"]
    ref = {"u1": ["SIL", "a", "a", "b", "SIL"], "u2": ["a", "a", "b"]}
    hyp = {"u2": ["a", "b", "b"], "u1": ["SIL", "a", "a", "a", "SIL"], "extra": ["a"]}
    result = score_frame_files(ref, hyp, phones)
    json.dumps(result)
    assert result["utterances"] == 2
    assert result["frames"] == 8
    assert result["frame_accuracy"] == 75.0  # 6 of 8
    assert result["non_silence_frame_accuracy"] == pytest.approx(round(100 * 4 / 6, 2))
    # u1: ref a b / hyp a -> 1 deletion; u2: a b / a b -> 0. PER = 1 / 4.
    assert result["per"]["per"] == 25.0
    assert (result["per"]["deletions"], result["per"]["ref_phones"]) == (1, 4)
    assert result["per"]["ignored"] == ["SIL"]
    assert np.asarray(result["confusion"]).sum() == 8
    # Non-silence frames: u1 a(0) a(0) b(0); u2 a(1) a(0) b(0). Wrong: u1 b, u2 a(0).
    by_distance = result["accuracy_by_boundary_distance"]
    assert by_distance["0"] == {"share": round(100 * 5 / 6, 2), "accuracy": 60.0, "frames": 5}
    assert by_distance["1"] == {"share": round(100 / 6, 2), "accuracy": 100.0, "frames": 1}
    assert by_distance["4+"]["frames"] == 0 and by_distance["4+"]["accuracy"] is None


@pytest.mark.parametrize(
    "labels, expected",
    [
        ("SIL SIL a a a a b", [1, 0, 0, 1, 1, 0, 0]),
        ("a a a", [3, 3, 3]),  # no boundary: every frame counts as far away
        ("a", [1]),
        ("a b", [0, 0]),
        ("a a a a a a a b", [6, 5, 4, 3, 2, 1, 0, 0]),
    ],
)
def test_boundary_distances(labels, expected):
    assert boundary_distances(labels.split()).tolist() == expected


def test_boundary_distances_match_a_direct_search():
    rng = np.random.default_rng(0)
    labels = list(rng.choice(["a", "b", "c"], size=200, p=[0.8, 0.1, 0.1]))
    boundary = [i for i in range(200) if (i > 0 and labels[i] != labels[i - 1]) or (i < 199 and labels[i] != labels[i + 1])]
    direct = [min(abs(i - j) for j in boundary) for i in range(200)]
    assert boundary_distances(labels).tolist() == direct


def test_accuracy_by_boundary_distance_groups_far_frames():
    ref = [["a"] * 6 + ["b"] * 6]
    hyp = [["a"] * 5 + ["b"] * 7]  # the boundary is placed one frame early: only a boundary frame is wrong
    result = accuracy_by_boundary_distance(ref, hyp, max_distance=3)
    assert result["0"] == {"share": round(100 * 2 / 12, 2), "accuracy": 50.0, "frames": 2}
    assert result["3+"] == {"share": round(100 * 6 / 12, 2), "accuracy": 100.0, "frames": 6}


def test_score_frame_files_errors_name_the_utterance():
    phones = ["SIL", "a"]
    with pytest.raises(ValueError, match="utterance u2: no hypothesis"):
        score_frame_files({"u1": ["a"], "u2": ["a"]}, {"u1": ["a"]}, phones)
    with pytest.raises(ValueError, match="utterance u1: reference has 3 frames, hypothesis has 2"):
        score_frame_files({"u1": ["a", "a", "SIL"]}, {"u1": ["a", "a"]}, phones)
    with pytest.raises(ValueError, match="utterance u1: hypothesis label 'zz'"):
        score_frame_files({"u1": ["a"]}, {"u1": ["zz"]}, phones)


def test_topk_accuracy():
    scores = np.array(
        [
            [0.1, 0.5, 0.3, 0.1],  # target 1: rank 0
            [0.4, 0.3, 0.2, 0.1],  # target 2: rank 2
            [0.1, 0.2, 0.3, 0.4],  # target 0: rank 3
        ]
    )
    targets = np.array([1, 2, 0])
    assert topk_accuracy(scores, targets, ks=(1, 2, 3, 4, 10)) == {
        1: pytest.approx(1 / 3), 2: pytest.approx(1 / 3), 3: pytest.approx(2 / 3), 4: 1.0, 10: 1.0
    }
    # Ties count against the target: a constant scorer is not 100 % correct.
    assert topk_accuracy(np.zeros((5, 4)), np.arange(5) % 4, ks=(1,)) == {1: 0.0}
    # Against a sort-based reference on random data.
    rng = np.random.default_rng(1)
    random_scores, random_targets = rng.normal(size=(300, 20)), rng.integers(0, 20, 300)
    order = np.argsort(-random_scores, axis=1)
    for k, value in topk_accuracy(random_scores, random_targets, ks=(1, 5)).items():
        assert value == pytest.approx(np.mean([t in row[:k] for t, row in zip(random_targets, order)]))


def test_topk_accuracy_torch_and_errors():
    torch = pytest.importorskip("torch")
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0]], requires_grad=True)
    assert topk_accuracy(logits, torch.tensor([0, 0]), ks=(1,)) == {1: 0.5}
    with pytest.raises(ValueError, match="2 score rows but 3 targets"):
        topk_accuracy(np.zeros((2, 3)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        topk_accuracy(np.zeros((1, 3)), np.array([3]))
    with pytest.raises(ValueError, match="k must be"):
        topk_accuracy(np.zeros((1, 3)), np.array([0]), ks=(0,))


def test_brute_force_helper_sanity():
    # Guard against a helper that agrees with the implementation by being wrong the same way.
    assert brute_force_distance(list("kitten"), list("sitting")) == 3
    assert all(brute_force_distance(list(p), list(p)) == 0 for p in itertools.permutations("abc"))
