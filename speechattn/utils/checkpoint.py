"""Checkpoints: written atomically, loaded with ``weights_only=True`` (no pickled code is ever run).

A checkpoint holds only tensors and plain Python containers (dicts, lists, numbers, strings), so that
``torch.load(..., weights_only=True)`` accepts it. An interrupted save leaves the previous checkpoint intact;
a save that fails for lack of space or permission raises :class:`speechattn.utils.atomic.OutputError`
naming the checkpoint; a file that cannot be loaded raises :class:`CheckpointError` naming it.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from speechattn.utils.atomic import atomic_open


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupt or not a weights-only checkpoint; names the file."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Save ``state`` to ``path`` atomically (temporary file in the same directory + ``os.replace``)."""
    path = Path(path)
    # Serialise in memory first: torch's zip writer turns a failed write (disk full) into an opaque
    # "[enforce fail at inline_container.cc]" RuntimeError, while a plain write raises OSError(ENOSPC),
    # which atomic_open reports with the checkpoint's path.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_open(path, "wb") as f:
        f.write(buffer.getbuffer())
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises :class:`CheckpointError` (``"{path}: ..."``) for a missing, truncated or corrupt file, or one
    holding objects other than tensors and plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt or foreign file: say which
        reason = " ".join(str(e).split())[:300]
        raise CheckpointError(f"{path}: cannot load checkpoint ({reason})") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a speechattn checkpoint (holds a {type(state).__name__}, not a dict)")
    return state
