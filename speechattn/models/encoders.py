"""Frame encoders compared by the phone recipe, behind one interface.

Every encoder maps padded frame features to frame vectors::

    forward(x: (B, T, F), lengths: (B,)) -> (B, T, H)     # padded frames are zero

and exposes ``output_dim`` (H) and ``receptive_field() -> (left, right)`` in frames (``None`` when it
is unbounded, e.g. a BLSTM or full self-attention), which chunked long-form inference uses as overlap.

Optional, found by scoring and results tables without knowing the encoder's name:

- ``describe_context(frame_stack) -> str``: the context column of the results table (default: derived
  from ``receptive_field()``, see :func:`describe_context`);
- ``attention_weights(x, lengths, layer) -> (B, H, T, W)``: one layer's attention, drawn as the attention
  map; with ``attention_window() -> (L, R)`` the weights are banded (``W = L + R + 1``), without it (or
  when it returns None) full (``W = T``).

Models:
    ``mlp_context``            the classic frame classifier: ±k frames concatenated, then an MLP.
    ``blstm``                  bidirectional LSTM (unbounded context, sequential).
    ``transformer``            full self-attention over the whole utterance.
    ``truncated_transformer``  frame t attends to [t-L, t+R] in every layer (blockwise, O(T·(L+R))).

Example:
    >>> enc = build_encoder({"name": "mlp_context", "context": 5, "hidden_dim": 256, "num_layers": 2}, 80)
    >>> enc(torch.randn(2, 100, 80), torch.tensor([100, 60])).shape
    torch.Size([2, 100, 256])
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, TypeVar

import torch
from torch import nn

from speechattn.models.masks import padding_mask
from speechattn.models.stacking import stacked_receptive_field
from speechattn.utils.plugins import import_plugin
from speechattn.models.transformer import SelfAttentionEncoder


_ENCODERS: dict[str, Callable[..., nn.Module]] = {}
_E = TypeVar("_E", bound=Callable[..., nn.Module])


def register_encoder(name: str) -> Callable[[_E], _E]:
    """Class decorator: make an encoder buildable as ``model.name=<name>``.

    An encoder in its own module ``speechattn/models/<name>.py`` is found by its config name without being
    listed anywhere else: :func:`build_encoder` imports that module when the name is not yet registered.
    """
    def register(cls: _E) -> _E:
        if name in _ENCODERS and _ENCODERS[name] is not cls:
            raise ValueError(f"encoder name '{name}' is registered twice")
        _ENCODERS[name] = cls
        return cls
    return register


def registered_encoders() -> list[str]:
    """Names of the encoders registered so far (the built-in ones and every one imported)."""
    return sorted(_ENCODERS)


@register_encoder("mlp_context")
class MLPContextEncoder(nn.Module):
    """±k frames concatenated, then an MLP: the fixed-context-window frame classifier.

    Splicing 2k+1 frames and applying a linear layer equals one ``Conv1d`` with kernel 2k+1 (zero-padded
    at the utterance edges), so the first layer is written that way; the rest are per-frame layers.

    Args:
        input_dim: feature dimension F.
        context: k, frames of context on each side.
        hidden_dim: width H of every hidden layer (and of the output).
        num_layers: number of hidden layers (>= 1).
        dropout: dropout after each hidden layer.
    """

    def __init__(self, input_dim: int, context: int = 5, hidden_dim: int = 1024, num_layers: int = 3,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.context = context
        self.splice = nn.Conv1d(input_dim, hidden_dim, kernel_size=2 * context + 1, padding=context)
        layers: list[nn.Module] = [nn.LayerNorm(hidden_dim), nn.ReLU(), nn.Dropout(dropout)]
        for _ in range(num_layers - 1):
            layers += [nn.Linear(hidden_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.ReLU(), nn.Dropout(dropout)]
        self.mlp = nn.Sequential(*layers)
        self.output_dim = hidden_dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x: (B, T, F), lengths: (B,) -> (B, T, H)."""
        pad = padding_mask(lengths, x.size(1))
        x = x.masked_fill(pad[..., None], 0.0)  # padding must not leak into the last real frames
        h = self.mlp(self.splice(x.transpose(1, 2)).transpose(1, 2))
        return h.masked_fill(pad[..., None], 0.0)

    def receptive_field(self) -> tuple[int, int]:
        return self.context, self.context

    def describe_context(self, frame_stack: int = 1) -> str:
        return f"±{self.context}" if frame_stack == 1 else f"±{self.context} positions of {frame_stack} frames"


@register_encoder("blstm")
class BLSTMEncoder(nn.Module):
    """Bidirectional LSTM over the whole utterance (packed, so padding is never read).

    Args:
        input_dim: feature dimension F.
        hidden_dim: LSTM units per direction; output H = 2 * hidden_dim.
        num_layers: stacked BLSTM layers.
        dropout: dropout between layers.
    """

    def __init__(self, input_dim: int, hidden_dim: int = 256, num_layers: int = 3, dropout: float = 0.2) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_dim, hidden_dim, num_layers=num_layers, batch_first=True,
                            bidirectional=True, dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.output_dim = 2 * hidden_dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x: (B, T, F), lengths: (B,) -> (B, T, 2·hidden)."""
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        h, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
        return self.dropout(h)

    def receptive_field(self) -> None:
        return None


def _full_attention(input_dim: int, **kwargs: Any) -> nn.Module:
    kwargs["left"] = kwargs["right"] = None
    return SelfAttentionEncoder(input_dim, **kwargs)


register_encoder("transformer")(_full_attention)
register_encoder("truncated_transformer")(SelfAttentionEncoder)


def build_encoder(cfg: Mapping[str, Any], input_dim: int) -> nn.Module:
    """Build the encoder named by ``cfg["name"]`` from a Hydra ``model`` config group entry.

    Built-in names are registered above; any other name ``x`` is looked up in ``speechattn.models.x``
    (one new file and one ``conf/model/x.yaml`` add an encoder).
    """
    kwargs = {k: v for k, v in dict(cfg).items() if k != "name"}
    name = str(cfg["name"])
    if name not in _ENCODERS:
        import_plugin("speechattn.models", name)
    if name not in _ENCODERS:
        raise ValueError(f"unknown model '{name}': expected one of {', '.join(registered_encoders())} "
                         f"or a module speechattn/models/{name}.py registering it")
    return _ENCODERS[name](input_dim, **kwargs)


def describe_context(encoder: nn.Module, frame_stack: int = 1) -> str:
    """What one output frame of ``encoder`` sees, for results tables: ``encoder.describe_context(k)`` when
    it defines one, else from its receptive field (``"whole utterance"`` when unbounded).

    Example:
        >>> describe_context(build_encoder({"name": "blstm", "hidden_dim": 8, "num_layers": 1}, 4))
        'whole utterance'
    """
    if hasattr(encoder, "describe_context"):
        return str(encoder.describe_context(frame_stack))
    rf = stacked_receptive_field(encoder.receptive_field(), frame_stack)
    return "whole utterance" if rf is None else f"[t-{rf[0]}, t+{rf[1]}]"


def attention_window(encoder: nn.Module) -> tuple[int, int] | None:
    """(L, R) of an attention encoder's banded weights, None when they are full (``T x T``) or absent."""
    window = getattr(encoder, "attention_window", None)
    return window() if callable(window) else None
