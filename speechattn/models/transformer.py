"""Self-attention encoder stack (pre-norm Transformer) with truncated or full self-attention.

Positional information comes from a depthwise convolution added to the input (wav2vec 2.0's
"convolutional positional embedding"), not from absolute position encodings: the encoder is then
translation invariant, so chunked long-form inference with ``receptive_field()`` frames of context on
each side reproduces whole-utterance outputs exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechattn.models.attention import ENGINES, TruncatedSelfAttention
from speechattn.models.masks import padding_mask

__all__ = ["ConvPositionalEmbedding", "ConvModule", "SelfAttentionEncoderLayer", "SelfAttentionEncoder", "padding_mask"]

# Frames per time chunk of the no-grad (inference) path. Measured (bench/README.md, inference_chunk
# sweep): 2048 keeps peak memory ~115 MB at T = 16,000 (313 MB unchunked) with no loss of speed.
DEFAULT_INFERENCE_CHUNK = 2048


def map_time_chunks(
    fn: Callable[[Tensor, Tensor | None], Tensor],
    x: Tensor,
    pad: Tensor | None,
    left: int,
    right: int,
    chunk: int,
) -> Tensor:
    """Apply a time-local ``fn`` chunk by chunk: ``fn`` sees ``[a - left, b + right)`` for output ``[a, b)``.

    Exact whenever output frame t of ``fn`` depends only on input frames ``[t - left, t + right]`` and
    ``fn`` treats the sequence ends as absent frames (attention masks them, the convolution zero-pads
    them). Temporaries are O(chunk); the result is written into one preallocated ``(B, T, D')``.

    x ``(B, T, D)``, pad ``(B, T)`` bool True = padding (passed to ``fn`` sliced, or None where a chunk
    has no padding) -> ``(B, T, D')``.
    """
    B, T, _ = x.shape
    out: Tensor | None = None
    for start in range(0, T, chunk):
        end = min(T, start + chunk)
        lo, hi = max(0, start - left), min(T, end + right)
        chunk_pad = None if pad is None else pad[:, lo:hi]
        if chunk_pad is not None and not bool(chunk_pad.any()):
            chunk_pad = None
        y = fn(x[:, lo:hi], chunk_pad)
        if out is None:
            out = y.new_empty(B, T, y.shape[-1])
        out[:, start:end] = y[:, start - lo : end - lo]
    assert out is not None
    return out


class ConvPositionalEmbedding(nn.Module):
    """Depthwise ``Conv1d`` over time + GELU, added to the input; padded frames read as zeros.

    Input and output ``(B, T, D)``; ``pad`` ``(B, T)`` bool, True = padding. ``kernel_size`` must be odd
    (centred, ``kernel_size // 2`` frames each side); 0 disables it (identity)."""

    def __init__(self, d_model: int, kernel_size: int) -> None:
        super().__init__()
        if kernel_size < 0 or (kernel_size and kernel_size % 2 == 0):
            raise ValueError(f"pos_conv_kernel must be 0 (off) or odd, got {kernel_size}")
        self.kernel_size = kernel_size
        self.conv = (
            nn.Conv1d(d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model)
            if kernel_size
            else None
        )

    def forward(self, x: Tensor, pad: Tensor | None) -> Tensor:
        if self.conv is None:
            return x
        if pad is not None:
            x = x.masked_fill(pad[..., None], 0.0)  # padding must not leak into valid frames
        return x + F.gelu(self.conv(x.transpose(1, 2)).transpose(1, 2))


class ConvModule(nn.Module):
    """Conformer convolution module (Gulati et al., 2020) with LayerNorm instead of BatchNorm.

    ``LN -> pointwise (D -> 2D) -> GLU -> depthwise Conv1d(k) -> LN -> SiLU -> pointwise (D -> D)``.
    LayerNorm, not BatchNorm: batch statistics would mix in padded frames, and per-frame normalisation
    keeps chunked inference exact. Padded frames are zeroed before the depthwise convolution, so they
    read as the same zeros as the utterance edges. Output frame t depends on ``[t - k//2, t + k//2]``.

    x ``(B, T, D)``, pad ``(B, T)`` bool True = padding, or None -> ``(B, T, D)`` (the residual branch
    only; the caller adds it).
    """

    def __init__(self, d_model: int, kernel_size: int) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"conv_kernel must be odd and >= 1, got {kernel_size}")
        self.kernel_size = kernel_size
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model)
        self.conv_norm = nn.LayerNorm(d_model)
        self.pointwise_out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, pad: Tensor | None) -> Tensor:
        h = F.glu(self.pointwise_in(self.norm(x)), dim=-1)
        if pad is not None:
            h = h.masked_fill(pad[..., None], 0.0)
        h = self.depthwise(h.transpose(1, 2)).transpose(1, 2)
        return self.pointwise_out(F.silu(self.conv_norm(h)))


class SelfAttentionEncoderLayer(nn.Module):
    """Pre-norm layer: ``x + Drop(Attn(LN(x)))``, [``x + Drop(Conv(x))``], then ``x + Drop(FFN(LN(x)))``.

    FFN = Linear-GELU-Linear. With ``conv_kernel > 0`` a :class:`ConvModule` follows the attention (the
    Conformer's order without its second, macaron FFN); it widens the layer's context by ``k // 2``
    frames on each side."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        ffn_dim: int,
        left: int | None,
        right: int | None,
        dropout: float,
        engine: str,
        conv_kernel: int = 0,
        attention_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = TruncatedSelfAttention(d_model, num_heads, left, right, dropout=attention_dropout, engine=engine)
        self.conv = ConvModule(d_model, conv_kernel) if conv_kernel else None
        self.ffn_norm = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, d_model)
        )
        self.dropout = nn.Dropout(dropout)

    def context(self) -> tuple[int, int]:
        """(left, right) input frames one output frame of this layer depends on (truncated attention)."""
        assert self.attn.left is not None and self.attn.right is not None
        half = self.conv.kernel_size // 2 if self.conv is not None else 0
        return self.attn.left + half, self.attn.right + half

    def forward(
        self, x: Tensor, pad: Tensor | None, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """x ``(B, T, D)``, pad ``(B, T)`` -> ``(B, T, D)``, weights (see TruncatedSelfAttention)."""
        attended, weights = self.attn(self.attn_norm(x), pad, need_weights=need_weights)
        x = x + self.dropout(attended)
        if self.conv is not None:
            x = x + self.dropout(self.conv(x, pad))
        x = x + self.dropout(self.ffn(self.ffn_norm(x)))
        return x, weights


class SelfAttentionEncoder(nn.Module):
    """Linear projection -> convolutional positional embedding -> pre-norm self-attention layers -> LayerNorm.

    Each frame attends to ``left`` past and ``right`` future frames per layer (``None, None`` = full
    attention). Output frames beyond each utterance's length are zero.

    Args:
        input_dim: feature dimension F.
        d_model: width D (= ``output_dim``).
        num_layers, num_heads, ffn_dim: stack size.
        left, right: attention context per layer in frames, or both None for full attention.
        dropout: dropout on the input, residual branches and FFN hidden units.
        attention_dropout: dropout on the attention probabilities (default 0: the fused CUDA kernels,
            flex and varlen, cannot apply it, so 0 lets every device train the same model; README
            "Devices and precision" measures its effect).
        pos_conv_kernel: odd kernel of the depthwise positional convolution (0 = none).
        conv_kernel: odd kernel of a Conformer convolution module in every layer (0 = none, the plain
            Transformer layer); adds ``conv_kernel // 2`` frames of context per layer and side.
        engine: attention engine, see :mod:`speechattn.models.attention`.
        inference_chunk: without autograd (``torch.no_grad`` / ``inference_mode``), a truncated
            encoder evaluates every layer in time chunks of this many frames plus its L / R halo
            (exact, see :func:`map_time_chunks`): peak memory ~2 (B, T, D) activations + O(chunk)
            instead of several (B, T, ffn_dim) ones. None disables it.

    Example:
        >>> encoder = SelfAttentionEncoder(input_dim=80, d_model=64, num_layers=2, num_heads=4,
        ...                                ffn_dim=128, left=16, right=16)
        >>> feats = torch.randn(2, 300, 80)                  # (B, T, F)
        >>> lengths = torch.tensor([300, 210])
        >>> encoder(feats, lengths).shape                    # (B, T, output_dim)
        torch.Size([2, 300, 64])
        >>> encoder.receptive_field()                        # (2*16 + 15//2, 2*16 + 15//2)
        (39, 39)
        >>> y, weights = encoder(feats, lengths, return_attention=1)
        >>> weights.shape                                    # (B, H, T, L + R + 1) of layer 1
        torch.Size([2, 4, 300, 33])
    """

    def __init__(
        self,
        input_dim: int,
        d_model: int = 256,
        num_layers: int = 6,
        num_heads: int = 4,
        ffn_dim: int = 1024,
        left: int | None = 32,
        right: int | None = 32,
        dropout: float = 0.1,
        pos_conv_kernel: int = 15,
        engine: str = "auto",
        conv_kernel: int = 0,
        attention_dropout: float = 0.0,
        *,
        inference_chunk: int | None = DEFAULT_INFERENCE_CHUNK,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        self.input_dim = input_dim
        self.output_dim = d_model
        self.num_layers = num_layers
        self.left = left
        self.right = right
        self.inference_chunk = inference_chunk
        self.input_proj = nn.Linear(input_dim, d_model)
        self.pos_conv = ConvPositionalEmbedding(d_model, pos_conv_kernel)
        self.input_dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            SelfAttentionEncoderLayer(
                d_model, num_heads, ffn_dim, left, right, dropout, engine, conv_kernel, attention_dropout
            )
            for _ in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(d_model)

    def receptive_field(self) -> tuple[int, int] | None:
        """(left_frames, right_frames) an output frame depends on: ``(layers*(L + c//2) + k//2, ...)``
        for positional kernel k and convolution-module kernel c (0 when absent); None for full attention
        (unbounded), as for every unbounded encoder."""
        if self.left is None or self.right is None:
            return None
        half = self.pos_conv.kernel_size // 2
        left, right = (sum(side) for side in zip(*(layer.context() for layer in self.layers)))
        return left + half, right + half

    def describe_context(self, frame_stack: int = 1) -> str:
        """The context of one output frame in 10 ms frames, for results tables (``frame_stack`` frames per
        position): ``"[t-33, t+33] + conv ±21 × 4 layers"``, or ``"whole utterance"`` for full attention."""
        if self.left is None or self.right is None:
            return "whole utterance"
        k = frame_stack
        conv = self.layers[0].conv
        reach = (conv.kernel_size // 2) * k if conv is not None else 0
        window = f"[t-{self.left * k}, t+{self.right * k}]" + (f" + conv ±{reach}" if reach else "")
        return f"{window} × {self.num_layers} layers"

    def attention_window(self) -> tuple[int, int] | None:
        """(L, R) positions of the banded ``(B, H, T, L + R + 1)`` weights of :meth:`attention_weights`;
        None for full attention (``(B, H, T, T)`` weights)."""
        return None if self.left is None or self.right is None else (self.left, self.right)

    def forward(
        self, x: Tensor, lengths: Tensor, return_attention: int | None = None
    ) -> Tensor | tuple[Tensor, Tensor]:
        """x ``(B, T, F)``, lengths ``(B,)`` long -> ``(B, T, output_dim)`` (padded frames 0).

        With ``return_attention=i`` (0-based layer index) returns ``(output, weights)`` where weights
        are layer i's ``(B, H, T, L + R + 1)`` band weights (``(B, H, T, T)`` for full attention)."""
        if x.dim() != 3 or x.shape[-1] != self.input_dim:
            raise ValueError(f"expected x of shape (B, T, {self.input_dim}), got {tuple(x.shape)}")
        if lengths.shape != (x.shape[0],):
            raise ValueError(f"lengths must be ({x.shape[0]},), got {tuple(lengths.shape)}")
        if return_attention is not None and not 0 <= return_attention < self.num_layers:
            raise ValueError(f"return_attention must be in [0, {self.num_layers}), got {return_attention}")
        pad = padding_mask(lengths.to(x.device), x.shape[1])
        attn_pad = pad if bool(pad.any()) else None
        chunk = self.inference_chunk
        if (chunk and x.shape[1] > chunk and return_attention is None and self.left is not None
                and not torch.is_grad_enabled()):  # fmt: skip
            return self._forward_in_time_chunks(x, attn_pad, chunk).masked_fill_(pad[..., None], 0.0)
        h = self.input_dropout(self.pos_conv(self.input_proj(x), attn_pad))
        weights = None
        for index, layer in enumerate(self.layers):
            h, layer_weights = layer(h, attn_pad, need_weights=index == return_attention)
            if layer_weights is not None:
                weights = layer_weights
        h = self.final_norm(h).masked_fill(pad[..., None], 0.0)
        if return_attention is None:
            return h
        assert weights is not None
        return h, weights

    def _forward_in_time_chunks(self, x: Tensor, pad: Tensor | None, chunk: int) -> Tensor:
        """No-grad forward, layer by layer, each in time chunks with its receptive-field halo."""
        assert self.left is not None and self.right is not None
        half = self.pos_conv.kernel_size // 2

        def front_end(xc: Tensor, pc: Tensor | None) -> Tensor:
            return self.input_dropout(self.pos_conv(self.input_proj(xc), pc))

        h = map_time_chunks(front_end, x, pad, half, half, chunk)
        for layer in self.layers:
            h = map_time_chunks(lambda hc, pc: layer(hc, pc)[0], h, pad, *layer.context(), chunk)
        return self.final_norm(h)

    @torch.no_grad()
    def attention_weights(self, x: Tensor, lengths: Tensor, layer: int) -> Tensor:
        """Layer ``layer``'s attention weights ``(B, H, T, L + R + 1)`` (eval mode, no grad), for pictures;
        ``layer`` counts from the end when negative (-1 = last)."""
        layer = layer % self.num_layers
        was_training = self.training
        self.eval()
        try:
            _, weights = self.forward(x, lengths, return_attention=layer)
        finally:
            self.train(was_training)
        return weights
