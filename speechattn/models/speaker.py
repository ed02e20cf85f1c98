"""Speaker models: frame pooling, utterance embedding, AAM-softmax / softmax heads.

The encoder (any module with ``forward(x (B, T, F), lengths (B,)) -> (B, T, H)`` and ``output_dim``) gives
one vector per frame; a pooling layer turns them into one vector per utterance, a linear layer + batch norm
makes the speaker embedding, and a classification head (AAM-softmax or plain softmax) scores the closed set
of training speakers. For verification the embeddings are compared by cosine similarity.

Every pooling layer ignores padding: frames at index >= ``lengths[b]`` get weight 0 and their content never
reaches the output (it is zeroed before any arithmetic, so even NaN padding is harmless).
"""
from __future__ import annotations

import logging
import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechattn.models.encoders import build_encoder
from speechattn.models.masks import padding_mask
from speechattn.models.stacking import FrameStackEncoder, split_frame_stack

logger = logging.getLogger(__name__)

__all__ = [
    "MeanPooling",
    "AttentiveStatsPooling",
    "SelfAttentionPooling",
    "build_pooling",
    "AAMSoftmax",
    "SoftmaxHead",
    "SpeakerModel",
    "build_sid_model",
]


def _masked_softmax(scores: Tensor, pad: Tensor) -> Tensor:
    """Softmax over the time axis (dim 1) of ``scores`` (B, T, ...) with padding frames set to -inf."""
    while pad.dim() < scores.dim():
        pad = pad.unsqueeze(-1)
    return torch.softmax(scores.masked_fill(pad, float("-inf")), dim=1)


def _weighted_mean_std(h: Tensor, w: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Weighted mean and std over time: ``h`` (B, T, D), ``w`` (B, T, 1) or (B, T, D) summing to 1 over T."""
    mean = (w * h).sum(dim=1)
    second_moment = (w * h * h).sum(dim=1)
    std = torch.sqrt((second_moment - mean * mean).clamp(min=eps))
    return mean, std


class MeanPooling(nn.Module):
    """Average of the valid frames. ``forward(h (B, T, D), lengths (B,)) -> (B, D)``; ``out_dim = D``.

    Example:
        >>> pool = MeanPooling(in_dim=8)
        >>> pooled, w = pool(torch.randn(2, 5, 8), torch.tensor([5, 3]), return_weights=True)
        >>> pooled.shape, w.shape
        (torch.Size([2, 8]), torch.Size([2, 5]))
    """

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = in_dim

    def forward(self, h: Tensor, lengths: Tensor, return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        pad = padding_mask(lengths, h.size(1))
        w = (~pad).to(h.dtype) / lengths.to(h.dtype).unsqueeze(1)  # (B, T): 1/len on valid frames
        pooled = (w.unsqueeze(-1) * h.masked_fill(pad.unsqueeze(-1), 0.0)).sum(dim=1)
        return (pooled, w) if return_weights else pooled


class AttentiveStatsPooling(nn.Module):
    """Attentive statistics pooling (Okabe et al. 2018; ECAPA-TDNN variant, Desplanques et al. 2020).

    A small MLP ``Linear(D, hidden) -> tanh -> Linear(hidden, 1 or D)`` scores each frame; a softmax over
    the valid frames gives weights ``w``; the output is ``[sum_t w_t h_t, sqrt(clamp(E_w[h^2] - mu^2, eps))]``.

    Args:
        in_dim: frame vector size D.
        hidden_dim: MLP width.
        channel_wise: one weight per frame *and channel* (ECAPA) instead of one per frame.
        global_context: also feed the utterance's (unweighted) mean and std to the MLP (ECAPA).
        eps: variance floor, keeps sqrt differentiable for constant inputs.

    ``forward(h (B, T, D), lengths (B,), return_weights=False) -> (B, 2D)`` (and weights ``(B, T)``, or
    ``(B, T, D)`` when ``channel_wise``). ``out_dim = 2 * D``.

    Example:
        >>> pool = AttentiveStatsPooling(in_dim=8, hidden_dim=16)
        >>> pooled, w = pool(torch.randn(2, 5, 8), torch.tensor([5, 3]), return_weights=True)
        >>> pooled.shape, w.shape
        (torch.Size([2, 16]), torch.Size([2, 5]))
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 128,
        channel_wise: bool = False,
        global_context: bool = False,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = 2 * in_dim
        self.channel_wise = channel_wise
        self.global_context = global_context
        self.eps = eps
        mlp_in = 3 * in_dim if global_context else in_dim
        self.attention = nn.Sequential(
            nn.Linear(mlp_in, hidden_dim),
            nn.Tanh(),
            nn.Linear(hidden_dim, in_dim if channel_wise else 1),
        )

    def forward(self, h: Tensor, lengths: Tensor, return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        pad = padding_mask(lengths, h.size(1))
        h = h.masked_fill(pad.unsqueeze(-1), 0.0)
        mlp_input = h
        if self.global_context:
            uniform = ((~pad).to(h.dtype) / lengths.to(h.dtype).unsqueeze(1)).unsqueeze(-1)
            mean, std = _weighted_mean_std(h, uniform, self.eps)
            context = torch.cat([mean, std], dim=-1).unsqueeze(1).expand(-1, h.size(1), -1)
            mlp_input = torch.cat([h, context], dim=-1)
        w = _masked_softmax(self.attention(mlp_input), pad)  # (B, T, 1) or (B, T, D)
        mean, std = _weighted_mean_std(h, w, self.eps)
        pooled = torch.cat([mean, std], dim=-1)
        if not return_weights:
            return pooled
        return pooled, (w if self.channel_wise else w.squeeze(-1))


class SelfAttentionPooling(nn.Module):
    """Self-attentive pooling with learned query vectors (Zhu et al. 2018; multi-head: India et al. 2019).

    Each head scores every frame with a learned vector, ``e_t = u . tanh(W h_t)`` (or ``u . h_t`` when
    ``hidden_dim`` is None), softmaxes over the valid frames and sums its slice of the frame vectors. With
    ``num_heads`` H the D channels are split into H slices of D/H (one per head), so ``out_dim = D``.

    ``forward(h (B, T, D), lengths (B,), return_weights=False) -> (B, D)`` (and weights ``(B, T)`` for one
    head, ``(B, H, T)`` for several).

    Example:
        >>> pool = SelfAttentionPooling(in_dim=8, num_heads=2)
        >>> pooled, w = pool(torch.randn(2, 5, 8), torch.tensor([5, 3]), return_weights=True)
        >>> pooled.shape, w.shape
        (torch.Size([2, 8]), torch.Size([2, 2, 5]))
    """

    def __init__(self, in_dim: int, num_heads: int = 1, hidden_dim: int | None = None) -> None:
        super().__init__()
        if in_dim % num_heads:
            raise ValueError(f"in_dim {in_dim} is not divisible by num_heads {num_heads}")
        self.in_dim = in_dim
        self.out_dim = in_dim
        self.num_heads = num_heads
        self.head_dim = in_dim // num_heads
        score_in = self.head_dim
        self.projection = None
        if hidden_dim is not None:
            self.projection = nn.Linear(self.head_dim, hidden_dim)
            score_in = hidden_dim
        # One query vector per head; small random init so heads differ from the start.
        self.query = nn.Parameter(torch.randn(num_heads, score_in) / math.sqrt(score_in))

    def forward(self, h: Tensor, lengths: Tensor, return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        batch, frames, _ = h.shape
        pad = padding_mask(lengths, frames)
        h = h.masked_fill(pad.unsqueeze(-1), 0.0)
        heads = h.view(batch, frames, self.num_heads, self.head_dim)  # (B, T, H, D/H)
        keys = torch.tanh(self.projection(heads)) if self.projection is not None else heads
        scores = (keys * self.query).sum(dim=-1)  # (B, T, H)
        w = _masked_softmax(scores, pad)  # (B, T, H)
        pooled = (w.unsqueeze(-1) * heads).sum(dim=1).reshape(batch, self.in_dim)
        if not return_weights:
            return pooled
        w = w.transpose(1, 2)  # (B, H, T)
        return pooled, (w.squeeze(1) if self.num_heads == 1 else w)


def build_pooling(name: str, in_dim: int, **kwargs) -> nn.Module:
    """Pooling layer by name: ``"attentive_stats"``, ``"self_attention"`` or ``"mean"``."""
    layers = {"attentive_stats": AttentiveStatsPooling, "self_attention": SelfAttentionPooling, "mean": MeanPooling}
    if name not in layers:
        raise ValueError(f"unknown pooling {name!r}; choose one of {sorted(layers)}")
    return layers[name](in_dim, **kwargs)


class AAMSoftmax(nn.Module):
    """Additive angular margin softmax (ArcFace, Deng et al. 2019).

    Embeddings and class weights are L2-normalised, so ``cos(theta_j) = <e/|e|, w_j/|w_j|>``. With targets
    the target column becomes ``s * cos(theta_y + m)`` and every other column ``s * cos(theta_j)``. Because
    ``cos(theta + m)`` is not monotonic once ``theta + m > pi``, the target logit falls back to
    ``s * (cos(theta) - m * sin(m))`` when ``theta > pi - m`` (InsightFace), or, with ``easy_margin``, to
    ``s * cos(theta)`` when ``theta > pi/2``. Without targets (inference) the logits are ``s * cos(theta_j)``,
    i.e. scaled cosine scores.

    ``forward(emb (B, E), targets (B,) | None) -> logits (B, C)``.

    Example:
        >>> head = AAMSoftmax(embed_dim=192, num_classes=10)
        >>> emb, targets = torch.randn(4, 192), torch.tensor([0, 3, 3, 9])
        >>> loss = F.cross_entropy(head(emb, targets), targets)
    """

    def __init__(
        self, embed_dim: int, num_classes: int, margin: float = 0.2, scale: float = 30.0, easy_margin: bool = False
    ) -> None:
        super().__init__()
        if not 0.0 <= margin < math.pi / 2:
            raise ValueError(f"margin must be in [0, pi/2) radians, got {margin}")
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.margin = margin
        self.scale = scale
        self.easy_margin = easy_margin
        self.weight = nn.Parameter(torch.empty(num_classes, embed_dim))
        nn.init.xavier_normal_(self.weight)

    def cosine(self, emb: Tensor) -> Tensor:
        """Cosine similarity ``(B, C)`` between embeddings and class weights."""
        return F.linear(F.normalize(emb, dim=-1), F.normalize(self.weight, dim=-1))

    def forward(self, emb: Tensor, targets: Tensor | None = None) -> Tensor:
        cos = self.cosine(emb)
        if targets is None:
            return self.scale * cos
        # Keep |cos| < 1 so sin = sqrt(1 - cos^2) has a finite gradient.
        cos = cos.clamp(-1.0 + 1e-7, 1.0 - 1e-7)
        sin = torch.sqrt(1.0 - cos * cos)
        cos_plus_margin = cos * math.cos(self.margin) - sin * math.sin(self.margin)
        if self.easy_margin:
            target_cos = torch.where(cos > 0.0, cos_plus_margin, cos)
        else:
            # theta > pi - m  <=>  cos(theta) < cos(pi - m): use a linear penalty instead.
            threshold = math.cos(math.pi - self.margin)
            target_cos = torch.where(cos > threshold, cos_plus_margin, cos - math.sin(math.pi - self.margin) * self.margin)
        is_target = F.one_hot(targets, self.num_classes).bool()
        return self.scale * torch.where(is_target, target_cos, cos)


class SoftmaxHead(nn.Module):
    """Plain linear classifier with the :class:`AAMSoftmax` interface (``targets`` is ignored).

    Example:
        >>> head = SoftmaxHead(embed_dim=192, num_classes=10)
        >>> head(torch.randn(4, 192)).shape
        torch.Size([4, 10])
    """

    def __init__(self, embed_dim: int, num_classes: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.linear = nn.Linear(embed_dim, num_classes)

    def forward(self, emb: Tensor, targets: Tensor | None = None) -> Tensor:
        return self.linear(emb)


class SpeakerModel(nn.Module):
    """Encoder -> pooling -> embedding (Linear + BatchNorm) -> speaker classification head.

    Args:
        encoder: ``forward(x (B, T, F), lengths (B,)) -> (B, T, H)`` with attribute ``output_dim`` = H. If it
            changes the frame rate it must provide ``output_lengths(lengths) -> lengths``.
        num_speakers: size of the closed training speaker set.
        pooling: ``"attentive_stats"``, ``"self_attention"`` or ``"mean"``; ``pooling_kwargs`` go to it.
        embed_dim: speaker embedding size E.
        head: ``"aam"`` (:class:`AAMSoftmax`) or ``"softmax"`` (:class:`SoftmaxHead`).
        margin, scale, easy_margin: AAM-softmax parameters (ignored by ``"softmax"``).

    ``forward(x, lengths) -> embeddings (B, E)``; ``logits(emb, targets=None) -> (B, num_speakers)``;
    ``loss(x, lengths, targets) -> scalar`` cross entropy (margin applied).

    Example:
        >>> class TinyEncoder(nn.Module):
        ...     output_dim = 16
        ...     def __init__(self):
        ...         super().__init__(); self.proj = nn.Linear(40, 16)
        ...     def forward(self, x, lengths):
        ...         return self.proj(x)
        >>> model = SpeakerModel(TinyEncoder(), num_speakers=5, embed_dim=8)
        >>> x, lengths, spk = torch.randn(3, 50, 40), torch.tensor([50, 42, 30]), torch.tensor([0, 4, 2])
        >>> model(x, lengths).shape
        torch.Size([3, 8])
        >>> model.loss(x, lengths, spk).backward()
    """

    def __init__(
        self,
        encoder: nn.Module,
        num_speakers: int,
        pooling: str = "attentive_stats",
        embed_dim: int = 192,
        head: str = "aam",
        margin: float = 0.2,
        scale: float = 30.0,
        easy_margin: bool = False,
        pooling_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        if not hasattr(encoder, "output_dim"):
            raise ValueError(f"encoder {type(encoder).__name__} has no attribute 'output_dim'")
        self.encoder = encoder
        self.pooling = build_pooling(pooling, encoder.output_dim, **(pooling_kwargs or {}))
        self.embedding = nn.Linear(self.pooling.out_dim, embed_dim)
        self.embedding_norm = nn.BatchNorm1d(embed_dim)
        self.embed_dim = embed_dim
        self.num_speakers = num_speakers
        if head == "aam":
            self.head: nn.Module = AAMSoftmax(embed_dim, num_speakers, margin, scale, easy_margin)
        elif head == "softmax":
            self.head = SoftmaxHead(embed_dim, num_speakers)
        else:
            raise ValueError(f"unknown head {head!r}; choose 'aam' or 'softmax'")

    def encode_frames(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder output ``(B, T', H)`` and its lengths ``(B,)``."""
        h = self.encoder(x, lengths)
        out_lengths = self.encoder.output_lengths(lengths) if hasattr(self.encoder, "output_lengths") else lengths
        if int(out_lengths.max()) > h.size(1):
            raise ValueError(f"encoder returned {h.size(1)} frames but lengths go up to {int(out_lengths.max())}")
        return h, out_lengths

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """Speaker embeddings ``(B, E)`` for features ``x`` (B, T, F) with valid lengths ``(B,)``."""
        h, out_lengths = self.encode_frames(x, lengths)
        return self.embedding_norm(self.embedding(self.pooling(h, out_lengths)))

    def logits(self, emb: Tensor, targets: Tensor | None = None) -> Tensor:
        """Head scores ``(B, num_speakers)``; margin applied only when ``targets`` is given."""
        return self.head(emb, targets)

    def loss(self, x: Tensor, lengths: Tensor, targets: Tensor) -> Tensor:
        """Mean cross entropy of the (margin-penalised) logits against speaker indices ``targets`` (B,)."""
        return F.cross_entropy(self.logits(self(x, lengths), targets), targets)


def build_sid_model(model_cfg: Mapping[str, Any], sid_cfg: Mapping[str, Any], input_dim: int,
                    num_speakers: int) -> SpeakerModel:
    """Speaker model from the ``model`` group (encoder) and the ``sid`` group (pooling, embedding, head).

    As for the phone models, ``model.frame_stack`` (default 1) stacks that many 10 ms frames per encoder
    position, and ``model.left``/``model.right`` are in 10 ms frames, rounded up to whole positions.

    Example:
        >>> model = build_sid_model({"name": "truncated_transformer", "frame_stack": 2, "d_model": 32,
        ...                          "num_layers": 1, "num_heads": 2, "ffn_dim": 64, "left": 8, "right": 8},
        ...                         {"pooling": "attentive_stats", "embed_dim": 16}, 80, 5)
        >>> model(torch.randn(3, 50, 80), torch.tensor([50, 31, 7])).shape
        torch.Size([3, 16])
        >>> model.encoder.encoder.left                       # 8 frames = 4 positions of 20 ms
        4
    """
    sid_cfg = dict(sid_cfg)
    factor, model_cfg = split_frame_stack(model_cfg)
    encoder = FrameStackEncoder(build_encoder(model_cfg, input_dim * factor), factor)
    return SpeakerModel(encoder, num_speakers, pooling=sid_cfg.get("pooling", "attentive_stats"),
                        embed_dim=int(sid_cfg.get("embed_dim", 192)), head=sid_cfg.get("head", "aam"),
                        margin=float(sid_cfg.get("margin", 0.2)), scale=float(sid_cfg.get("scale", 30.0)),
                        easy_margin=bool(sid_cfg.get("easy_margin", False)),
                        pooling_kwargs=dict(sid_cfg.get("pooling_kwargs") or {}))
