"""Frame classifier: an encoder (``speechattn.models.encoders``) followed by a linear layer to the classes,
one label per 10 ms frame (phone classification; the loss is in :mod:`speechattn.tasks.phone`).

Example:
    >>> from speechattn.models.encoders import MLPContextEncoder
    >>> model = FrameClassifier(MLPContextEncoder(80, context=2, hidden_dim=64, num_layers=1), num_classes=40)
    >>> logits = model(torch.randn(2, 50, 80), torch.tensor([50, 20]))
    >>> logits.shape
    torch.Size([2, 50, 40])
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from speechattn.models.encoders import build_encoder
from speechattn.models.stacking import split_frame_stack, stack_frames, stacked_receptive_field


class FrameClassifier(nn.Module):
    """Encoder + per-frame linear classifier, optionally over stacked frames.

    With ``frame_stack = k > 1`` every k consecutive 10 ms frames are concatenated into one encoder
    position (the encoder runs at 100/k positions a second, k times cheaper), and the classifier predicts
    the k frame labels of each position — Kaldi's "frame subsampling" for chain models, with the output
    still one label per 10 ms frame::

        frames     0 1 2 | 3 4 5 | 6 7 .        (T = 8, k = 3: the last position is zero-padded)
        positions    0   |   1   |   2          encoder input (B, ceil(T/k), k·F)
        logits     0 1 2 | 3 4 5 | 6 7 (8)      (B, ceil(T/k)·k, C), cropped to T

    Args:
        encoder: module with ``forward(x (B, P, k·F), lengths (B,)) -> (B, P, H)``, ``output_dim`` and
            ``receptive_field()`` in positions.
        num_classes: C, number of phone classes (SIL included).
        frame_stack: k, frames per encoder position.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, frame_stack: int = 1) -> None:
        super().__init__()
        if frame_stack < 1:
            raise ValueError(f"frame_stack must be >= 1, got {frame_stack}")
        self.encoder = encoder
        self.frame_stack = frame_stack
        self.num_classes = num_classes
        self.classifier = nn.Linear(encoder.output_dim, num_classes * frame_stack)

    def stack(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F), (B,) -> (B, ceil(T/k), k·F), (B,) positions (:func:`stack_frames`)."""
        return stack_frames(x, lengths, self.frame_stack)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x: (B, T, F), lengths: (B,) -> logits (B, T, C)."""
        if self.frame_stack == 1:
            return self.classifier(self.encoder(x, lengths))
        T = x.shape[1]
        xs, positions = self.stack(x, lengths)
        logits = self.classifier(self.encoder(xs, positions))  # (B, P, k·C)
        return logits.reshape(x.shape[0], -1, self.num_classes)[:, :T]

    def receptive_field(self) -> tuple[int, int] | None:
        """Frames of context (left, right) an output frame depends on; None when unbounded."""
        return stacked_receptive_field(self.encoder.receptive_field(), self.frame_stack)


def build_phone_model(model_cfg: Mapping[str, Any], input_dim: int, num_classes: int) -> FrameClassifier:
    """Encoder + classifier from the ``model`` config group. ``frame_stack`` (default 1) stacks that many
    frames per encoder position; ``left``/``right`` stay in 10 ms frames and are converted to positions."""
    k, cfg = split_frame_stack(model_cfg)
    return FrameClassifier(build_encoder(cfg, input_dim * k), num_classes, frame_stack=k)
