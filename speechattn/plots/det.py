"""DET curves (miss vs false-alarm probability) on normal-deviate axes."""
from __future__ import annotations

import os
from pathlib import Path
from statistics import NormalDist
from typing import Any, Mapping

import numpy as np

from speechattn.plots._style import new_figure, save_png, to_numpy

_TICK_PERCENTS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 40, 60, 80, 90, 95, 98, 99)


def normal_deviate(probabilities: Any) -> np.ndarray:
    """Inverse standard normal CDF (probit), elementwise; scipy when installed, else the stdlib."""
    p = np.asarray(probabilities, dtype=np.float64)
    try:
        from scipy.stats import norm
    except ImportError:  # scipy comes with librosa, but the plots must not require it
        inv_cdf = np.vectorize(NormalDist().inv_cdf, otypes=[np.float64])
        return inv_cdf(p) if p.size else p
    return norm.ppf(p)


def plot_det(
    curves: Mapping[str, tuple[Any, Any]],
    path: str | os.PathLike,
    eer_points: Mapping[str, float] | None = None,
    title: str = "DET curve",
) -> Path:
    """Draw one or more DET curves ``{name: (p_miss, p_fa)}`` on probit axes as a PNG.

    Args:
        curves: per system, the arrays of :func:`speechattn.metrics.verification.det_curve`.
        eer_points: optional ``{name: eer}`` (fractions), marked on the diagonal p_miss = p_fa.

    Probabilities are clipped away from 0 and 1 so the extreme operating points stay on the plot.

    Example:
        >>> import numpy as np, tempfile, os
        >>> out = os.path.join(tempfile.mkdtemp(), "det.png")
        >>> curve = (np.array([0.0, 0.1, 0.3, 1.0]), np.array([1.0, 0.2, 0.05, 0.0]))
        >>> plot_det({"sys": curve}, out, eer_points={"sys": 0.15}).stat().st_size > 0
        True
    """
    if not curves:
        raise ValueError("plot_det needs at least one curve")
    eer_points = dict(eer_points or {})
    all_points = []
    for name, (p_miss, p_fa) in curves.items():
        p_miss, p_fa = to_numpy(p_miss).reshape(-1), to_numpy(p_fa).reshape(-1)
        if p_miss.shape != p_fa.shape:
            raise ValueError(f"curve {name!r}: {p_miss.size} miss rates but {p_fa.size} false-alarm rates")
        all_points.append((name, p_miss, p_fa))

    # Axis range: down to 0.1 % (or below the best EER), up to 50 % (or 99 % for poor systems).
    positive_eers = [v for v in eer_points.values() if v > 0]
    low = max(1e-5, min(1e-3, 0.5 * min(positive_eers))) if positive_eers else 1e-3
    high = 0.5 if max(eer_points.values(), default=0.0) < 0.3 else 0.99
    clip_low, clip_high = low / 2, 1 - (1 - high) / 2

    fig = new_figure(6.0, 6.0)
    ax = fig.add_subplot()
    for name, p_miss, p_fa in all_points:
        x = normal_deviate(np.clip(p_fa, clip_low, clip_high))
        y = normal_deviate(np.clip(p_miss, clip_low, clip_high))
        (line,) = ax.plot(x, y, label=name, linewidth=1.5)
        if name in eer_points:
            deviate = float(normal_deviate(np.clip(eer_points[name], clip_low, clip_high)))
            ax.plot([deviate], [deviate], marker="o", color=line.get_color(), markersize=6,
                    label=f"{name} EER {100 * eer_points[name]:.2f} %")
    limits = normal_deviate(np.array([low, high]))
    ax.plot(limits, limits, color="0.6", linestyle=":", linewidth=0.8)  # p_miss = p_fa

    ticks = [t / 100 for t in _TICK_PERCENTS if low <= t / 100 <= high]
    tick_positions = normal_deviate(np.array(ticks))
    tick_labels = [f"{100 * t:g}" for t in ticks]
    ax.set_xticks(tick_positions, labels=tick_labels)
    ax.set_yticks(tick_positions, labels=tick_labels)
    ax.set_xlim(*limits)
    ax.set_ylim(*limits)
    ax.set_aspect("equal")
    ax.grid(True, color="0.85", linewidth=0.6)
    ax.set_xlabel("False alarm probability (%)")
    ax.set_ylabel("Miss probability (%)")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    return save_png(fig, path)
