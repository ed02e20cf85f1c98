"""Numeric precision of training and inference: ``fp32``, ``bf16`` or ``fp16`` mixed precision.

``trainer.precision`` (training) and ``precision`` (inference) take one of :data:`PRECISIONS`:

``auto``  bf16 on CUDA, fp32 elsewhere (CPU bf16 autocast works but is slower than fp32 on most CPUs).
``fp32``  no autocast.
``bf16``  ``torch.autocast(dtype=torch.bfloat16)``: matmuls and attention run in bf16, weights, optimiser
          state and gradients stay float32 (the "master weights"); bf16 has float32's exponent range, so no
          loss scaling is needed.
``fp16``  autocast to float16 plus a ``GradScaler`` (float16's range is small: small gradients underflow to
          0 without loss scaling); a step whose gradients overflow is skipped and the scale lowered.

The resolved precision (never ``auto``) is stored in every checkpoint and in ``model.pt`` under
``"precision"``; inference follows it unless overridden (:func:`inference_precision`).

Example:
    >>> p = Precision.create("auto", torch.device("cpu"))
    >>> p.name, p.dtype
    ('fp32', None)
    >>> with p.autocast():
    ...     y = torch.nn.Linear(4, 2)(torch.randn(3, 4))
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

__all__ = ["PRECISIONS", "resolve_precision", "Precision", "inference_precision"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(name: str | None, device: torch.device) -> str:
    """``auto``/None -> ``bf16`` on CUDA, ``fp32`` elsewhere; anything else is checked and returned.

    Raises ValueError for an unknown name, or ``bf16`` on a GPU without bf16 support (pre-Ampere), naming
    the alternative: an explicit precision is never silently replaced."""
    name = "auto" if name is None else str(name)
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {name!r}")
    if name == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("precision=bf16 needs a GPU with bf16 support (compute capability >= 8.0); "
                         "use precision=fp16 (with loss scaling) or fp32")
    return name


@dataclass
class Precision:
    """A resolved precision on one device: its autocast context and (fp16 only) its GradScaler."""

    name: str                        # fp32 | bf16 | fp16
    device: torch.device
    scaler: torch.amp.GradScaler | None = None

    def __post_init__(self) -> None:
        if self.name == "fp32" and self.device.type == "cuda":
            # fp32 means fp32: no TF32 matmuls / convolutions (cuDNN enables TF32 convolutions by default),
            # so CUDA fp32 results match CPU fp32 ones to float rounding.
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False

    @classmethod
    def create(cls, name: str | None, device: torch.device) -> "Precision":
        resolved = resolve_precision(name, device)
        scaler = torch.amp.GradScaler(device.type) if resolved == "fp16" else None
        return cls(resolved, device, scaler)

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, None for fp32."""
        return _DTYPES[self.name]

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Autocast to :attr:`dtype` for the forward pass and loss (a no-op for fp32)."""
        if self.dtype is None:
            yield
            return
        with torch.autocast(self.device.type, dtype=self.dtype):
            yield

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                          params: Any, grad_clip: float) -> bool:
        """``loss.backward()``, optional gradient clipping, ``optimizer.step()``; with fp16 through the
        scaler (gradients are unscaled before clipping). Returns False when fp16 skipped the step
        (inf/NaN gradients)."""
        if self.scaler is None:
            loss.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
            return True
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(optimizer)
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        scale = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        return self.scaler.get_scale() >= scale  # the scale drops exactly when the step was skipped

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "scaler": self.scaler.state_dict() if self.scaler is not None else {}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the scaler; a checkpoint from another precision only logs (the weights are float32
        in every precision, so training can continue in this one)."""
        if state.get("name") != self.name:
            log.warning("checkpoint was trained with precision=%s, continuing with %s", state.get("name"), self.name)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(dict(state["scaler"]))


def inference_precision(checkpoint: Mapping[str, Any], override: str | None, device: torch.device) -> Precision:
    """The precision to run a trained model in: ``override`` when given (not None), else the checkpoint's
    ``"precision"`` (fp32 for checkpoints written before it was stored), resolved for ``device``.

    fp16 at inference needs no scaler (no gradients)."""
    name = override if override is not None else checkpoint.get("precision", "fp32")
    return Precision(resolve_precision(name, device), device)
