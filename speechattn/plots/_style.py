"""Shared matplotlib setup for the plots: Agg backend, figure creation, atomic PNG saving.

Figures are built with the object-oriented ``matplotlib.figure.Figure`` API rather than pyplot, so
no global figure state accumulates when a stage draws hundreds of plots.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: recipes run on servers without a display

from matplotlib.figure import Figure  # noqa: E402  (after the backend is chosen)

from speechattn.utils.atomic import atomic_open  # noqa: E402

DPI = 120


def to_numpy(array: Any) -> Any:
    """numpy view of a numpy array, list or (CPU/GPU, grad-tracking) torch tensor."""
    import numpy as np

    if hasattr(array, "detach"):  # torch.Tensor, without importing torch here
        array = array.detach().cpu()
        if array.is_floating_point():  # bfloat16/half have no (or a lossy) numpy dtype
            array = array.float()
        array = array.numpy()
    return np.asarray(array)


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches with a constrained layout (labels never clipped)."""
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save_png(figure: Figure, path: str | os.PathLike, dpi: int = DPI) -> Path:
    """Write ``figure`` to ``path`` as a PNG atomically and return the path."""
    path = Path(path)
    with atomic_open(path, "wb") as f:
        figure.savefig(f, format="png", dpi=dpi)
    return path
