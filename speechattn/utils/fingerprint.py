"""Fingerprints of model weights: tie derived artefacts (score-normalisation cohorts, averaged models) to
the exact weights they were made from.

Example:
    >>> import torch
    >>> a = {"w": torch.ones(2, 3), "b": torch.zeros(3)}
    >>> state_dict_fingerprint(a) == state_dict_fingerprint({"b": torch.zeros(3), "w": torch.ones(2, 3)})
    True
    >>> state_dict_fingerprint(a) == state_dict_fingerprint({"w": torch.ones(2, 3), "b": torch.full((3,), 1e-9)})
    False
"""
from __future__ import annotations

import hashlib
from typing import Mapping

import torch

__all__ = ["state_dict_fingerprint"]


def state_dict_fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of a state dict: every tensor's name, dtype, shape and bytes, in sorted name order
    (independent of dict order and device; any change of a single value changes it)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name]
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"state['{name}'] is a {type(tensor).__name__}, not a tensor")
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()
