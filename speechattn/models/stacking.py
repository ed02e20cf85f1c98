"""Frame stacking: k consecutive 10 ms frames become one encoder position (Kaldi's frame subsampling)."""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["stack_frames", "stacked_lengths", "frames_to_positions", "split_frame_stack", "stacked_receptive_field",
           "FrameStackEncoder"]


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


def stacked_receptive_field(rf: tuple[int, int] | None, k: int) -> tuple[int, int] | None:
    """An encoder's receptive field ``rf`` in positions of ``k`` frames, in 10 ms frames; None stays None.

    A frame sees its own position's k frames plus ``rf`` positions on each side; counting whole positions,
    ``(rf + 1) * k``, keeps chunk boundaries of long-form inference on the stacking grid (an exact bound
    would be one frame less). ``k = 1`` returns ``rf`` unchanged.

    Example:
        >>> stacked_receptive_field((3, 2), 4), stacked_receptive_field((3, 2), 1), stacked_receptive_field(None, 4)
        ((16, 12), (3, 2), None)
    """
    if rf is None or k == 1:
        return rf
    return (rf[0] + 1) * k, (rf[1] + 1) * k


class FrameStackEncoder(nn.Module):
    """Frame-rate reduction before an encoder: every ``factor`` consecutive frames are concatenated.

    ``(B, T, F)`` -> ``(B, ceil(T / factor), factor * F)`` -> ``encoder`` -> ``(B, ceil(T / factor), H)``.
    The last stacked frame of an utterance whose length is not a multiple of ``factor`` is completed with
    zeros (the mean after mean normalisation); padding is zeroed first, so a padded batch gives the same
    output as each utterance alone. ``factor=1`` is the identity front end. Used by the speaker models,
    whose output is one vector per position (the phone models predict k labels per position instead,
    :class:`speechattn.models.frame_classifier.FrameClassifier`).

    Example:
        >>> from speechattn.models.encoders import build_encoder
        >>> inner = build_encoder({"name": "mlp_context", "context": 1, "hidden_dim": 16, "num_layers": 1}, 2 * 80)
        >>> enc = FrameStackEncoder(inner, 2)
        >>> enc(torch.randn(2, 5, 80), torch.tensor([5, 3])).shape
        torch.Size([2, 3, 16])
        >>> enc.output_lengths(torch.tensor([5, 3])).tolist()
        [3, 2]
    """

    def __init__(self, encoder: nn.Module, factor: int) -> None:
        super().__init__()
        if factor < 1:
            raise ValueError(f"model.frame_stack must be >= 1, got {factor}")
        self.encoder = encoder
        self.factor = factor
        self.output_dim = getattr(encoder, "output_dim", None)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Frames after stacking: ``ceil(lengths / factor)``, ``(B,)``."""
        return stacked_lengths(lengths, self.factor)

    def stack(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``x (B, T, F)`` -> ``(B, ceil(T / k), k * F)`` and the stacked lengths ``(B,)`` (:func:`stack_frames`)."""
        return stack_frames(x, lengths, self.factor)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """x ``(B, T, F)``, lengths ``(B,)`` -> ``(B, ceil(T / factor), H)``."""
        stacked, stacked_lengths_ = self.stack(x, lengths)
        return self.encoder(stacked, stacked_lengths_)

    def receptive_field(self) -> tuple[int, int] | None:
        """Input (10 ms) frames an output position depends on, on each side; None when unbounded."""
        return stacked_receptive_field(self.encoder.receptive_field(), self.factor)
