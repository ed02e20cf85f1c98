"""Confusion matrix heat map (reference along rows, hypothesis along columns)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from speechattn.plots._style import new_figure, save_png, to_numpy

_NORMALISATIONS = ("true", "pred", "all", None)


def normalise_confusion(confusion: np.ndarray, normalise: str | None) -> np.ndarray:
    """Row ("true": recall per reference class), column ("pred") or total ("all") normalisation.

    Rows/columns without any count stay 0 instead of becoming NaN.
    """
    counts = confusion.astype(np.float64)
    if normalise is None:
        return counts
    if normalise == "true":
        totals = counts.sum(axis=1, keepdims=True)
    elif normalise == "pred":
        totals = counts.sum(axis=0, keepdims=True)
    elif normalise == "all":
        totals = np.array(counts.sum())
    else:
        raise ValueError(f"normalise must be one of {_NORMALISATIONS}, got {normalise!r}")
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def plot_confusion(
    confusion: Any,
    labels: Sequence[str],
    path: str | os.PathLike,
    normalise: str | None = "true",
    title: str = "Frame confusion matrix",
) -> Path:
    """Draw a ``(C, C)`` confusion matrix (rows: reference, columns: hypothesis) as a PNG.

    The figure grows with C so that 40 phones keep legible tick labels; cell values are written in
    the cells only when C <= 15.

    Example:
        >>> import numpy as np, tempfile, os
        >>> out = os.path.join(tempfile.mkdtemp(), "confusion.png")
        >>> plot_confusion(np.array([[5, 1], [2, 7]]), ["SIL", "a"], out).stat().st_size > 0
        True
    """
    matrix = to_numpy(confusion)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"confusion must be square (C, C), got shape {matrix.shape}")
    num_classes = matrix.shape[0]
    if len(labels) != num_classes:
        raise ValueError(f"{len(labels)} labels for a {num_classes}x{num_classes} confusion matrix")
    values = normalise_confusion(matrix, normalise)

    side = max(5.0, 0.3 * num_classes + 2.5)
    fig = new_figure(side + 1.2, side)
    ax = fig.add_subplot()
    vmax = 1.0 if normalise is not None else max(float(values.max()), 1.0)
    image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    colorbar = fig.colorbar(image, ax=ax, shrink=0.8)
    colorbar.set_label({"true": "fraction of reference frames", "pred": "fraction of hypothesis frames",
                        "all": "fraction of all frames", None: "frames"}[normalise])

    font_size = 9 if num_classes <= 20 else 7
    ticks = np.arange(num_classes)
    ax.set_xticks(ticks, labels=list(labels), rotation=90, fontsize=font_size)
    ax.set_yticks(ticks, labels=list(labels), fontsize=font_size)
    ax.set_xlabel("Hypothesis")
    ax.set_ylabel("Reference")
    ax.set_title(title)
    # Thin cell borders help reading across a 40x40 grid.
    ax.set_xticks(ticks[:-1] + 0.5, minor=True)
    ax.set_yticks(ticks[:-1] + 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=0.4)
    ax.tick_params(which="minor", length=0)

    if num_classes <= 15:
        for r in range(num_classes):
            for c in range(num_classes):
                text = f"{values[r, c]:.2f}" if normalise is not None else f"{int(values[r, c])}"
                colour = "white" if values[r, c] > 0.5 * vmax else "black"
                ax.text(c, r, text, ha="center", va="center", fontsize=7, color=colour)
    return save_png(fig, path)
