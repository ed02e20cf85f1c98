"""2-D projections of speaker embeddings (PCA or t-SNE), coloured by speaker."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from speechattn.plots._style import new_figure, save_png, to_numpy

MAX_LEGEND_SPEAKERS = 20


def pca_2d(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project ``(N, D)`` onto the top two principal components: ``((N, 2), explained_variance_ratio (2,))``.

    Uses the SVD of the centred data; missing dimensions (D < 2 or N < 3) are filled with zeros.
    """
    centred = embeddings - embeddings.mean(axis=0, keepdims=True)
    _, singular_values, vt = np.linalg.svd(centred, full_matrices=False)
    components = min(2, vt.shape[0])
    projected = np.zeros((embeddings.shape[0], 2))
    projected[:, :components] = centred @ vt[:components].T
    variance = singular_values**2
    ratio = np.zeros(2)
    if variance.sum() > 0:
        ratio[:components] = variance[:components] / variance.sum()
    return projected, ratio


def tsne_2d(embeddings: np.ndarray, seed: int = 0, num_threads: int | None = None) -> np.ndarray:
    """t-SNE projection ``(N, 2)`` with scikit-learn (installed with librosa); cosine distances.

    ``num_threads`` caps scikit-learn's OpenMP threads (None: its default). On a busy machine, 1
    avoids oversubscription: measured 0.7 s instead of 9 s for 60 points on 2 loaded cores.
    """
    try:
        from sklearn.manifold import TSNE
    except ImportError as err:
        raise ImportError("method='tsne' needs scikit-learn; use method='pca' or install scikit-learn") from err
    num_points = embeddings.shape[0]
    if num_points < 3:
        raise ValueError(f"t-SNE needs at least 3 embeddings, got {num_points}")
    perplexity = float(min(30.0, (num_points - 1) / 3))  # must be < N
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", metric="cosine", random_state=seed)
    if num_threads is None:
        return tsne.fit_transform(embeddings.astype(np.float32))
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    with threadpool_limits(limits=num_threads):
        return tsne.fit_transform(embeddings.astype(np.float32))


def plot_embeddings(
    embeddings: Any,
    speakers: Sequence[str],
    path: str | os.PathLike,
    method: str = "pca",
    title: str | None = None,
    seed: int = 0,
    num_threads: int | None = None,
) -> Path:
    """Scatter a 2-D projection of ``(N, D)`` embeddings, one colour per speaker, as a PNG.

    ``method="pca"`` (numpy SVD) or ``"tsne"`` (needs scikit-learn; ``seed`` and ``num_threads``
    apply to it). A legend is drawn when there are at most 20 speakers; above that colours repeat
    and only the speaker count is shown.

    Example:
        >>> import numpy as np, tempfile, os
        >>> x = np.random.default_rng(0).normal(size=(12, 8))
        >>> out = os.path.join(tempfile.mkdtemp(), "emb.png")
        >>> plot_embeddings(x, ["a", "b", "c"] * 4, out).stat().st_size > 0
        True
    """
    points = to_numpy(embeddings).astype(np.float64)
    if points.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {points.shape}")
    if len(speakers) != points.shape[0]:
        raise ValueError(f"{len(speakers)} speaker labels for {points.shape[0]} embeddings")
    if points.shape[0] == 0:
        raise ValueError("no embeddings to plot")

    if method == "pca":
        projected, ratio = pca_2d(points)
        axis_labels = [f"PC{k + 1} ({100 * ratio[k]:.1f} % variance)" for k in range(2)]
    elif method == "tsne":
        projected = tsne_2d(points, seed=seed, num_threads=num_threads)
        axis_labels = ["t-SNE 1", "t-SNE 2"]
    else:
        raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")

    speaker_names = sorted(set(speakers))
    speaker_index = {name: k for k, name in enumerate(speaker_names)}
    colour_ids = np.array([speaker_index[s] for s in speakers])
    with_legend = len(speaker_names) <= MAX_LEGEND_SPEAKERS

    fig = new_figure(8.0 if with_legend else 6.5, 6.0)
    ax = fig.add_subplot()
    if with_legend:
        colours = _tab20()
        for name, k in speaker_index.items():
            mask = colour_ids == k
            ax.scatter(projected[mask, 0], projected[mask, 1], s=14, color=colours[k % len(colours)],
                       label=name, alpha=0.85, edgecolors="none")
        ax.legend(title="speaker", loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8,
                  markerscale=1.5, frameon=False)
    else:
        ax.scatter(projected[:, 0], projected[:, 1], s=10, c=colour_ids, cmap="hsv", alpha=0.8,
                   edgecolors="none")
        ax.text(0.01, 0.99, f"{len(speaker_names)} speakers", transform=ax.transAxes, va="top", fontsize=9)
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_title(title or f"Speaker embeddings ({method.upper()}, {points.shape[0]} utterances)")
    return save_png(fig, path)


def _tab20() -> list[Any]:
    from matplotlib import colormaps

    return list(colormaps["tab20"].colors)
