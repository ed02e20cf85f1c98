"""Checkpoints: written atomically, loaded with ``weights_only=True`` (no pickled code is ever run).

A checkpoint holds only tensors and plain Python containers (dicts, lists, numbers, strings), so that
``torch.load(..., weights_only=True)`` accepts it. An interrupted save leaves the previous checkpoint intact.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from speechattn.utils.atomic import atomic_open


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Save ``state`` to ``path`` atomically (temporary file in the same directory + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        torch.save(state, f)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt or foreign file: say which
        raise RuntimeError(f"{path}: cannot load checkpoint ({e})") from e
