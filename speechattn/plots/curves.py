"""Training curves from the per-epoch history written by the training loop."""
from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from speechattn.plots._style import new_figure, save_png

_LEARNING_RATE_KEYS = ("lr", "learning_rate")
_NOT_PLOTTED = ("epoch", "step", "time", "seconds", "elapsed")
_SPLIT_PREFIXES = ("train_", "valid_", "val_", "dev_", "test_")


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _group_into_panels(keys: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Losses together; other keys grouped by name without the split prefix (train_acc + valid_acc)."""
    panels: dict[str, list[str]] = {}
    for key in keys:
        if "loss" in key:
            name = "loss"
        elif key in _LEARNING_RATE_KEYS:
            name = "learning rate"
        else:
            name = next((key[len(p):] for p in _SPLIT_PREFIXES if key.startswith(p) and len(key) > len(p)), key)
        panels.setdefault(name, []).append(key)
    order = sorted(panels, key=lambda n: (n != "loss", n == "learning rate"))  # loss first, lr last
    return [(name, panels[name]) for name in order]


def plot_training_curves(
    history: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    title: str = "Training curves",
) -> Path:
    """Plot per-epoch values ``[{"epoch": 1, "train_loss": ..., "valid_loss": ..., "valid_acc": ...}, ...]``.

    Panels: every key containing "loss"; then one panel per other quantity, the splits of one
    quantity sharing it (``train_acc`` with ``valid_acc``); the learning rate (``lr`` /
    ``learning_rate``, log scale) last. Non-numeric values and
    keys missing in some epochs are skipped for those epochs. Without an ``epoch`` key the x axis
    is the entry index starting at 1.

    Example:
        >>> import tempfile, os
        >>> history = [{"epoch": e, "train_loss": 2 / e, "valid_loss": 2.2 / e, "valid_acc": 50 + e}
        ...            for e in range(1, 4)]
        >>> out = os.path.join(tempfile.mkdtemp(), "curves.png")
        >>> plot_training_curves(history, out).stat().st_size > 0
        True
    """
    if not history:
        raise ValueError("empty training history: nothing to plot")
    epochs = [entry.get("epoch", k + 1) for k, entry in enumerate(history)]
    keys: list[str] = []
    for entry in history:
        for key, value in entry.items():
            if key not in keys and _is_number(value) and key not in _NOT_PLOTTED:
                keys.append(key)
    panels = _group_into_panels(keys)
    if not panels:
        raise ValueError(f"no numeric values to plot in the training history (keys: {sorted(history[0])})")

    columns = min(len(panels), 3)
    rows = math.ceil(len(panels) / columns)
    fig = new_figure(4.5 * columns, 3.6 * rows + 0.4)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, (name, group) in zip(axes, panels):
        for key in group:
            points = [(x, float(entry[key])) for x, entry in zip(epochs, history) if _is_number(entry.get(key))]
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o" if len(points) <= 50 else None, markersize=3, label=key)
        values = [float(e[k]) for k in group for e in history if _is_number(e.get(k))]
        if name == "learning rate" and min(values) > 0:
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(True, color="0.9")
        ax.legend(fontsize=8)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title)
    return save_png(fig, path)
