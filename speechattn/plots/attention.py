"""Attention maps on the query x key (T x T) plane, banded (truncated) or full attention.

Truncated attention returns weights ``(H, T, L+R+1)``: entry ``[h, t, j]`` is the weight of key
frame ``t + j - L`` for query frame ``t`` (see ``speechattn.models.attention``). They are scattered
onto the T x T plane so the diagonal band is visible; cells outside the band (or keys outside the
utterance) are left blank.
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from speechattn.plots._style import new_figure, save_png, to_numpy


def banded_to_dense(weights: np.ndarray, left: int, right: int) -> np.ndarray:
    """``(H, T, L+R+1)`` banded weights -> ``(H, T, T)``, NaN where a key is outside the band.

    Band positions whose key frame falls outside ``[0, T)`` (padding at the utterance edges,
    including when T is shorter than the window) are dropped.
    """
    num_heads, num_frames, width = weights.shape
    if width != left + right + 1:
        raise ValueError(f"banded weights have width {width}, expected left + right + 1 = {left + right + 1}")
    dense = np.full((num_heads, num_frames, num_frames), np.nan, dtype=np.float64)
    queries = np.arange(num_frames)
    for j in range(width):
        keys = queries + j - left
        valid = (keys >= 0) & (keys < num_frames)
        dense[:, queries[valid], keys[valid]] = weights[:, queries[valid], j]
    return dense


def _phone_segments(frame_labels: Sequence[str]) -> list[tuple[int, int, str]]:
    """Runs of equal labels as ``(start, end_exclusive, label)``."""
    segments: list[tuple[int, int, str]] = []
    start = 0
    for t in range(1, len(frame_labels) + 1):
        if t == len(frame_labels) or frame_labels[t] != frame_labels[start]:
            segments.append((start, t, frame_labels[start]))
            start = t
    return segments


def plot_attention_map(
    weights: Any,
    path: str | os.PathLike,
    *,
    banded: bool,
    left: int | None = None,
    right: int | None = None,
    frame_labels: Sequence[str] | None = None,
    title: str = "Self-attention weights",
    average_heads: bool = False,
    max_frames: int | None = None,
) -> Path:
    """Draw attention weights of one utterance, one panel per head (or their mean), as a PNG.

    Args:
        weights: ``(H, T, L+R+1)`` when ``banded`` (``(T, L+R+1)`` for one head), else ``(H, T, T)``
            (or ``(T, T)``); numpy or tensor. Take one batch item of the model's ``(B, H, T, ...)``.
        banded: layout of ``weights`` (see module docstring).
        left, right: attention context in frames; required when ``banded``. For full weights they
            are optional and, when given, drawn as dashed lines marking the truncation window.
            Query frames run down the rows, key frames along the columns.
        frame_labels: optional reference phone per frame ``(T,)``; ticks mark phone boundaries and
            phone names are written at segment centres on both axes.
        average_heads: draw the mean over heads in a single panel.
        max_frames: keep only the first ``max_frames`` query/key frames (long utterances).

    Example:
        >>> import numpy as np, tempfile, os
        >>> w = np.full((2, 6, 3), 1 / 3)              # 2 heads, T=6, left=right=1
        >>> out = os.path.join(tempfile.mkdtemp(), "attention.png")
        >>> plot_attention_map(w, out, banded=True, left=1, right=1).stat().st_size > 0
        True
    """
    array = to_numpy(weights).astype(np.float64)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"attention weights must be (H, T, K), got shape {array.shape}")
    if banded:
        if left is None or right is None:
            raise ValueError("banded attention weights need left and right")
        dense = banded_to_dense(array, left, right)
    else:
        if array.shape[1] != array.shape[2]:
            raise ValueError(f"full attention weights must be (H, T, T), got shape {array.shape}")
        dense = array
    num_frames = dense.shape[1]
    if frame_labels is not None and len(frame_labels) != num_frames:
        raise ValueError(f"{len(frame_labels)} frame labels for {num_frames} attention frames")
    if max_frames is not None and num_frames > max_frames:
        dense = dense[:, :max_frames, :max_frames]
        frame_labels = None if frame_labels is None else list(frame_labels)[:max_frames]
        num_frames = max_frames
    if average_heads:
        with warnings.catch_warnings():  # cells outside the band are NaN in every head
            warnings.simplefilter("ignore", RuntimeWarning)
            dense = np.nanmean(dense, axis=0, keepdims=True)
        panel_titles = [f"mean of {array.shape[0]} heads"]
    else:
        panel_titles = [f"head {h}" for h in range(dense.shape[0])]

    num_panels = dense.shape[0]
    columns = min(num_panels, 4)
    rows = math.ceil(num_panels / columns)
    panel_size = 3.2 if frame_labels is None else 4.2
    fig = new_figure(columns * panel_size + 1.0, rows * panel_size + 0.6)
    axes = fig.subplots(rows, columns, squeeze=False)
    finite = dense[np.isfinite(dense)]
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    image = None
    for panel, ax in enumerate(axes.flat):
        if panel >= num_panels:
            ax.set_visible(False)
            continue
        image = ax.imshow(
            np.ma.masked_invalid(dense[panel]), cmap="viridis", vmin=0.0, vmax=vmax,
            interpolation="nearest", origin="upper", aspect="equal",
        )
        ax.set_facecolor("0.92")  # blank (outside the band) cells
        ax.set_title(panel_titles[panel], fontsize=9)
        ax.set_xlabel("key frame")
        ax.set_ylabel("query frame")
        if not banded and left is not None and right is not None:
            # Outline of the truncation window on full attention (banded maps show it as blank cells).
            diagonal = np.array([-0.5, num_frames - 0.5])
            for offset in (-left - 0.5, right + 0.5):
                ax.plot(diagonal + offset, diagonal, color="white", linestyle="--", linewidth=0.8)
            ax.set_xlim(-0.5, num_frames - 0.5)
            ax.set_ylim(num_frames - 0.5, -0.5)
        if frame_labels is not None:
            _label_axes_with_phones(ax, frame_labels)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="attention weight")
    context = ""
    if left is not None and right is not None:
        context = f" (L={left}, R={right})" if banded else f" (dashed: window L={left}, R={right})"
    fig.suptitle(title + context)
    return save_png(fig, path)


def _label_axes_with_phones(ax: Any, frame_labels: Sequence[str]) -> None:
    segments = _phone_segments(list(frame_labels))
    boundaries = [start - 0.5 for start, _, _ in segments[1:]]
    centres = [(start + end - 1) / 2 for start, end, _ in segments]
    names = [label for _, _, label in segments]
    font_size = 7 if len(segments) <= 40 else 5
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_ticks(centres, labels=names, fontsize=font_size)
        axis.set_ticks(boundaries, minor=True)
    ax.tick_params(axis="x", labelrotation=90)
    ax.tick_params(which="major", length=0)
    ax.tick_params(which="minor", length=4)
    ax.grid(which="minor", color="white", linewidth=0.3, alpha=0.5)
