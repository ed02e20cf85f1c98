"""Padding masks shared by the encoders, attention and pooling layers."""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["padding_mask"]


def padding_mask(lengths: Tensor, max_len: int) -> Tensor:
    """``(B, max_len)`` bool, True = padding frame (index >= length).

    lengths = [3, 1], max_len = 4 ->
        [[F, F, F, T],
         [F, T, T, T]]

    Raises ``ValueError`` unless ``lengths`` is ``(B,)`` with ``1 <= lengths <= max_len`` (a softmax or a
    mean over zero frames is undefined).
    """
    if lengths.dim() != 1:
        raise ValueError(f"lengths must be (B,), got shape {tuple(lengths.shape)}")
    if lengths.numel() and (int(lengths.min()) < 1 or int(lengths.max()) > max_len):
        raise ValueError(f"lengths must lie in [1, T={max_len}], got {lengths.tolist()}")
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]
