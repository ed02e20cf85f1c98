"""torchaudio's Conformer (``torchaudio.models.Conformer``) as a phone encoder: the peer we measure against.

The layers are torchaudio's own (macaron feed-forward, full multi-head self-attention, depthwise
convolution module); this file only adapts them to the encoder interface of
:mod:`speechattn.models.encoders`::

    forward(x: (B, P, F), lengths: (B,)) -> (B, P, d_model)      # padded positions are zero

An input projection maps the (stacked) features to ``d_model``; torchaudio's Conformer has no positional
encoding of its own (the convolution module supplies relative position). Attention is over the whole
utterance, so ``receptive_field()`` is ``None`` and long-form inference runs it in one piece.

Registered under the config name ``torchaudio_conformer`` (``conf/model/torchaudio_conformer.yaml``).

Example:
    >>> enc = TorchaudioConformerEncoder(80, d_model=32, num_layers=2, num_heads=2, ffn_dim=64, conv_kernel=7)
    >>> enc(torch.randn(2, 50, 80), torch.tensor([50, 20])).shape
    torch.Size([2, 50, 32])
    >>> enc.attention_weights(torch.randn(1, 50, 80), torch.tensor([50]), layer=-1).shape
    torch.Size([1, 2, 50, 50])
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchaudio.models import Conformer
from torchaudio.models.conformer import ConformerLayer

from speechattn.models.encoders import register_encoder
from speechattn.models.masks import padding_mask


def _layer_forward(layer: ConformerLayer, h: Tensor, pad: Tensor, need_weights: bool = False) -> Any:
    """torchaudio's ``ConformerLayer.forward`` with padded positions zeroed before the depthwise convolution.

    h: (P, B, D), pad: (B, P) True on padding -> (P, B, D) (and the attention weights (B, H, P, P) when
    ``need_weights``). torchaudio's layer lets the depthwise convolution read padded positions (which hold
    whatever the feed-forward and attention made of them), so a batched utterance would differ from the
    same utterance alone; zeroing them there (as ESPnet's convolution module masks) makes padding invisible in eval mode
    (in training, torchaudio's BatchNorm still counts padded positions in its batch statistics).
    Only the order of torchaudio's own sub-modules is replayed here; their weights and maths are theirs.
    """
    conv = layer.conv_module

    def convolution(x: Tensor) -> Tensor:
        y = conv.sequential[:2](conv.layer_norm(x.transpose(0, 1)).transpose(1, 2))  # pointwise + GLU: (B, D, P)
        y = conv.sequential[2:](y.masked_fill(pad[:, None, :], 0.0))  # depthwise conv sees zeros past the end
        return x + y.permute(2, 0, 1)

    h = layer.ffn1(h) * 0.5 + h
    if layer.convolution_first:
        h = convolution(h)
    q = layer.self_attn_layer_norm(h)
    a, weights = layer.self_attn(q, q, q, key_padding_mask=pad, need_weights=need_weights,
                                 average_attn_weights=False)
    h = layer.self_attn_dropout(a) + h
    if not layer.convolution_first:
        h = convolution(h)
    h = layer.final_layer_norm(layer.ffn2(h) * 0.5 + h)
    return (h, weights) if need_weights else h


@register_encoder("torchaudio_conformer")
class TorchaudioConformerEncoder(nn.Module):
    """Linear input projection + ``torchaudio.models.Conformer`` (full attention).

    Args:
        input_dim: feature dimension F of each encoder position (k·80 with frame stacking).
        d_model: model width (torchaudio's ``input_dim``).
        num_layers: Conformer layers.
        num_heads: attention heads per layer.
        ffn_dim: hidden width of the two feed-forward modules.
        conv_kernel: depthwise convolution kernel, in positions (odd).
        dropout: dropout everywhere torchaudio applies it (attention probabilities included).
    """

    def __init__(self, input_dim: int, d_model: int = 144, num_layers: int = 4, num_heads: int = 4,
                 ffn_dim: int = 576, conv_kernel: int = 15, dropout: float = 0.1) -> None:
        super().__init__()
        self.input_proj = nn.Linear(input_dim, d_model)
        self.conformer = Conformer(input_dim=d_model, num_heads=num_heads, ffn_dim=ffn_dim, num_layers=num_layers,
                                   depthwise_conv_kernel_size=conv_kernel, dropout=dropout)
        self.output_dim = d_model
        self.num_layers = num_layers

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """x: (B, P, F), lengths: (B,) -> (B, P, d_model), zero on padding."""
        # The mask is built for the padded length P (torchaudio's own assumes P == max(lengths)).
        pad = padding_mask(lengths, x.size(1))  # (B, P), True on padding
        h = self.input_proj(x.masked_fill(pad[..., None], 0.0)).transpose(0, 1)  # (P, B, D)
        for layer in self.conformer.conformer_layers:
            h = _layer_forward(layer, h, pad)
        return h.transpose(0, 1).masked_fill(pad[..., None], 0.0)

    def receptive_field(self) -> None:
        """Full attention: every output depends on the whole utterance."""
        return None

    def describe_context(self, frame_stack: int = 1) -> str:
        """The context column of the results table."""
        return "whole utterance"

    @torch.no_grad()
    def attention_weights(self, x: Tensor, lengths: Tensor, layer: int) -> Tensor:
        """Layer ``layer``'s attention probabilities ``(B, H, P, P)`` (eval mode), for pictures."""
        was_training = self.training
        self.eval()
        try:
            layers = self.conformer.conformer_layers
            index = layer % len(layers)
            pad = padding_mask(lengths, x.size(1))
            h = self.input_proj(x.masked_fill(pad[..., None], 0.0)).transpose(0, 1)
            for current in layers[:index]:
                h = _layer_forward(current, h, pad)
            _, weights = _layer_forward(layers[index], h, pad, need_weights=True)
            return weights
        finally:
            self.train(was_training)
