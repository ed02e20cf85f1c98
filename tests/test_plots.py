"""Every plot function writes a real PNG atomically (no temporary file left) and returns its path."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from speechattn.metrics.verification import compute_eer, det_curve
from speechattn.plots.attention import banded_to_dense, plot_attention_map
from speechattn.plots.confusion import normalise_confusion, plot_confusion
from speechattn.plots.curves import plot_training_curves
from speechattn.plots.det import normal_deviate, plot_det
from speechattn.plots.embeddings import pca_2d, plot_embeddings

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, returned: Path) -> None:
    assert Path(returned) == path
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 2000
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temp files


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_plot_confusion_40_phones(tmp_path):
    rng = np.random.default_rng(0)
    labels = ["SIL"] + [f"ph{k}" for k in range(1, 40)]
    confusion = rng.integers(0, 20, (40, 40)) + np.diag(rng.integers(50, 500, 40))
    confusion[5] = 0  # a phone never seen in the reference
    path = tmp_path / "confusion.png"
    assert_png(path, plot_confusion(confusion, labels, path))
    small = tmp_path / "small.png"
    assert_png(small, plot_confusion(np.array([[3, 1], [0, 4]]), ["SIL", "a"], small, normalise=None))
    with pytest.raises(ValueError, match="3 labels"):
        plot_confusion(np.eye(2), ["a", "b", "c"], tmp_path / "x.png")


def test_normalise_confusion():
    matrix = np.array([[3, 1], [0, 0]])
    np.testing.assert_allclose(normalise_confusion(matrix, "true"), [[0.75, 0.25], [0.0, 0.0]])
    np.testing.assert_allclose(normalise_confusion(matrix, "pred"), [[1.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(normalise_confusion(matrix, "all"), [[0.75, 0.25], [0.0, 0.0]])
    with pytest.raises(ValueError, match="normalise"):
        normalise_confusion(matrix, "rows")


def test_banded_to_dense_places_keys_on_the_band():
    left, right, frames = 2, 1, 5
    weights = np.arange(frames * (left + right + 1), dtype=float).reshape(1, frames, -1)
    dense = banded_to_dense(weights, left, right)
    for t in range(frames):
        for j in range(left + right + 1):
            key = t + j - left
            if 0 <= key < frames:
                assert dense[0, t, key] == weights[0, t, j]
    queries, keys = np.meshgrid(np.arange(frames), np.arange(frames), indexing="ij")
    outside = (keys - queries < -left) | (keys - queries > right)
    assert np.isnan(dense[0][outside]).all() and np.isfinite(dense[0][~outside]).all()
    with pytest.raises(ValueError, match="width 4"):
        banded_to_dense(weights, 1, 1)


@pytest.mark.parametrize("frames", [4, 30])  # 4 < window L+R+1 = 9
@pytest.mark.parametrize("average_heads", [False, True])
def test_plot_attention_map_banded(tmp_path, frames, average_heads):
    left, right, heads = 6, 2, 3
    weights = softmax(np.random.default_rng(frames).normal(size=(heads, frames, left + right + 1)))
    labels = (["SIL"] * 2 + ["AA"] * 5 + ["B"] * 8 + ["SIL"] * 15)[:frames]
    path = tmp_path / "banded.png"
    returned = plot_attention_map(weights, path, banded=True, left=left, right=right, frame_labels=labels,
                                  average_heads=average_heads)
    assert_png(path, returned)


@pytest.mark.parametrize("frames", [3, 25])
def test_plot_attention_map_full(tmp_path, frames):
    weights = softmax(np.random.default_rng(frames).normal(size=(2, frames, frames)))
    path = tmp_path / "full.png"
    assert_png(path, plot_attention_map(weights, path, banded=False, left=4, right=4))
    no_window = tmp_path / "full_plain.png"
    assert_png(no_window, plot_attention_map(weights[0], no_window, banded=False, max_frames=2))


def test_plot_attention_map_accepts_a_torch_batch_item(tmp_path):
    torch = pytest.importorskip("torch")
    weights = torch.softmax(torch.randn(2, 3, 10, 5, requires_grad=True), dim=-1)  # (B, H, T, L+R+1)
    path = tmp_path / "torch.png"
    assert_png(path, plot_attention_map(weights[0], path, banded=True, left=2, right=2))


def test_plot_attention_map_errors(tmp_path):
    weights = np.full((1, 5, 3), 1 / 3)
    with pytest.raises(ValueError, match="need left and right"):
        plot_attention_map(weights, tmp_path / "a.png", banded=True)
    with pytest.raises(ValueError, match="4 frame labels for 5"):
        plot_attention_map(weights, tmp_path / "a.png", banded=True, left=1, right=1, frame_labels=["a"] * 4)
    with pytest.raises(ValueError, match=r"\(H, T, T\)"):
        plot_attention_map(weights, tmp_path / "a.png", banded=False)
    assert not (tmp_path / "a.png").exists()


def test_normal_deviate_matches_stdlib():
    from statistics import NormalDist

    probabilities = np.array([0.001, 0.1, 0.5, 0.9])
    np.testing.assert_allclose(normal_deviate(probabilities), [NormalDist().inv_cdf(p) for p in probabilities],
                               atol=1e-9)


def test_normal_deviate_without_scipy(monkeypatch):
    import sys
    from statistics import NormalDist

    monkeypatch.setitem(sys.modules, "scipy.stats", None)  # makes "from scipy.stats import norm" fail
    np.testing.assert_allclose(normal_deviate(np.array([0.02, 0.5])), [NormalDist().inv_cdf(0.02), 0.0], atol=1e-12)
    assert normal_deviate(np.array([])).shape == (0,)


def test_plot_det(tmp_path):
    rng = np.random.default_rng(0)
    curves, eers = {}, {}
    for name, separation in (("baseline", 1.5), ("truncated", 3.0)):
        target, nontarget = rng.normal(separation, 1, 2000), rng.normal(0, 1, 20000)
        curves[name] = det_curve(target, nontarget)
        eers[name] = compute_eer(target, nontarget)[0]
    path = tmp_path / "det.png"
    assert_png(path, plot_det(curves, path, eer_points=eers))
    perfect = tmp_path / "perfect.png"  # EER 0 and probabilities exactly 0/1 must not break the axes
    assert_png(perfect, plot_det({"s": det_curve([2.0, 3.0], [0.0, 1.0])}, perfect, eer_points={"s": 0.0}))


def test_pca_2d_recovers_the_main_direction():
    rng = np.random.default_rng(0)
    direction = np.array([3.0, 4.0, 0.0]) / 5
    points = np.outer(rng.normal(0, 10, 500), direction) + rng.normal(0, 0.1, (500, 3))
    projected, ratio = pca_2d(points)
    assert ratio[0] > 0.99
    # The first component is the projection on +-direction of the centred points.
    expected = (points - points.mean(axis=0)) @ direction
    assert abs(np.corrcoef(projected[:, 0], expected)[0, 1]) > 0.999


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_plot_embeddings(tmp_path, method):
    if method == "tsne":
        pytest.importorskip("sklearn")
    rng = np.random.default_rng(0)
    speakers = [f"spk{k % 5}" for k in range(60)]
    centres = rng.normal(0, 3, (5, 16))
    embeddings = centres[[int(s[3:]) for s in speakers]] + rng.normal(size=(60, 16))
    path = tmp_path / f"{method}.png"
    assert_png(path, plot_embeddings(embeddings, speakers, path, method=method, num_threads=1))


def test_plot_embeddings_many_speakers_and_errors(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "many.png"
    assert_png(path, plot_embeddings(rng.normal(size=(90, 8)), [f"s{k % 30}" for k in range(90)], path))
    with pytest.raises(ValueError, match="2 speaker labels for 3"):
        plot_embeddings(np.zeros((3, 2)), ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="method"):
        plot_embeddings(np.zeros((3, 2)), ["a", "b", "c"], tmp_path / "x.png", method="umap")


def test_plot_training_curves(tmp_path):
    history = [
        {"epoch": e, "train_loss": 3 / e, "valid_loss": 3.3 / e, "train_acc": 40 + 4 * e, "valid_acc": 38 + 4 * e,
         "valid_eer": 0.3 / e, "lr": 1e-3 * 0.9**e, "note": "text is ignored"}
        for e in range(1, 6)
    ]
    history[2].pop("valid_acc")  # a missing value in one epoch
    path = tmp_path / "curves.png"
    assert_png(path, plot_training_curves(history, path))
    with pytest.raises(ValueError, match="empty"):
        plot_training_curves([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="no numeric values"):
        plot_training_curves([{"epoch": 1, "note": "x"}], tmp_path / "x.png")
