"""Frame stacking: k consecutive 10 ms frames become one encoder position (Kaldi's frame subsampling)."""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["stack_frames", "stacked_lengths", "frames_to_positions", "split_frame_stack"]


def frames_to_positions(frames: int, k: int) -> int:
    """Attention context given in 10 ms frames, rounded up to whole positions of ``k`` frames."""
    return -(-int(frames) // k)


def split_frame_stack(model_cfg: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    """``(k, encoder config)`` from a ``model`` group entry: pops ``frame_stack`` (default 1) and converts
    ``left``/``right`` (10 ms frames in the configs) to encoder positions, as the encoders count them."""
    cfg = dict(model_cfg)
    k = int(cfg.pop("frame_stack", 1) or 1)
    for side in ("left", "right"):
        if cfg.get(side) is not None:
            cfg[side] = frames_to_positions(cfg[side], k)
    return k, cfg


def stacked_lengths(lengths: Tensor, k: int) -> Tensor:
    """Positions after stacking ``k`` frames: ``ceil(lengths / k)``, ``(B,)``."""
    return torch.div(lengths + k - 1, k, rounding_mode="floor")


def stack_frames(x: Tensor, lengths: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``x (B, T, F)``, ``lengths (B,)`` -> ``(B, ceil(T / k), k·F)`` and the stacked lengths ``(B,)``.

    Frames past each length are zeroed first, so the last position of an utterance whose length is not a
    multiple of k is completed with zeros (the mean after mean normalisation), and a padded batch gives
    the same positions as each utterance alone::

        frames     0 1 2 | 3 4 5 | 6 7 .        (T = 8, k = 3: the last position is zero-padded)
        positions    0   |   1   |   2

    ``k = 1`` returns ``x`` with its padding zeroed.
    """
    if k < 1:
        raise ValueError(f"frame_stack must be >= 1, got {k}")
    B, T, dim = x.shape
    x = x.masked_fill(torch.arange(T, device=x.device)[None, :, None] >= lengths[:, None, None], 0.0)
    if k == 1:
        return x, lengths
    P = -(-T // k)
    x = F.pad(x, (0, 0, 0, P * k - T))
    return x.reshape(B, P, k * dim), stacked_lengths(lengths, k)
