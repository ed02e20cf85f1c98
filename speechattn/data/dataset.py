"""In-memory feature datasets and padding collation.

Features are read once from ``feats.scp`` (kaldiio, through :mod:`speechattn.data.kaldi_io`: no command in an
scp entry runs without ``allow_pipes``), normalised (CMVN) and kept in memory: the phone
recipe's training set is ~500k frames × 80 dims ≈ 160 MB, far cheaper than re-reading arks every epoch.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from speechattn.data.kaldi_dir import KaldiDataError, read_table_entries
from speechattn.data.kaldi_io import iter_scp

IGNORE_INDEX = -100  # target of padded frames: excluded from loss and accuracy (torch cross_entropy default)

log = logging.getLogger(__name__)

Normaliser = Callable[[str, np.ndarray], np.ndarray]


@dataclass
class Example:
    """One utterance: features ``(T, F)`` and an optional target (frame ids ``(T,)`` or a class id)."""

    utt: str
    feats: torch.Tensor
    target: torch.Tensor | int | None


def load_features(data_dir: str | Path, normalise: Normaliser | None = None,
                  utts: Sequence[str] | None = None, *, allow_pipes: bool = False) -> dict[str, np.ndarray]:
    """Read ``data_dir/feats.scp`` into memory, optionally normalised; keeps the scp order (or ``utts``').

    Entries that are commands (``cmd |``) are refused unless ``allow_pipes`` (nothing is run). Raises
    KaldiDataError naming the scp line for a missing utterance, an unreadable entry or NaN/inf features.
    """
    scp = Path(data_dir) / "feats.scp"
    table = read_table_entries(scp)
    missing = [utt for utt in (utts or ()) if utt not in table]
    if missing:
        raise KaldiDataError(f"{scp}:0: utterance '{missing[0]}' has no features ({len(missing)} in total; "
                             f"see feats_failed.txt beside it for audio that could not be read)")
    feats: dict[str, np.ndarray] = {}
    for utt, mat, lineno in iter_scp(scp, allow_pipes=allow_pipes, keys=list(utts) if utts is not None else None):
        mat = np.asarray(mat, dtype=np.float32)
        if not np.isfinite(mat).all():
            raise KaldiDataError(f"{scp}:{lineno}: features of '{utt}' contain NaN or inf")
        feats[utt] = normalise(utt, mat) if normalise is not None else mat
    return feats


class FrameLabelDataset(Dataset):
    """Utterances with one label per frame (or none, for inference).

    Args:
        feats: utt -> features ``(T, F)``.
        labels: utt -> label ids ``(T,)``; None for unlabelled data.
        where: name of the label file, for error messages.
    """

    def __init__(self, feats: Mapping[str, np.ndarray], labels: Mapping[str, Sequence[int]] | None = None,
                 where: str = "frame_labels") -> None:
        self.utts = list(feats)
        self.feats = feats
        self.labels = labels
        if labels is not None:
            for utt in self.utts:
                if utt not in labels:
                    raise KaldiDataError(f"{where}: no labels for utterance '{utt}'")
                if len(labels[utt]) != len(feats[utt]):
                    raise KaldiDataError(f"{where}: '{utt}' has {len(labels[utt])} labels but "
                                         f"{len(feats[utt])} feature frames")

    def __len__(self) -> int:
        return len(self.utts)

    def lengths(self) -> list[int]:
        return [len(self.feats[u]) for u in self.utts]

    def __getitem__(self, i: int) -> Example:
        utt = self.utts[i]
        target = None if self.labels is None else torch.as_tensor(self.labels[utt], dtype=torch.long)
        return Example(utt, torch.from_numpy(self.feats[utt]), target)


@dataclass
class Batch:
    """Padded batch: feats ``(B, T, F)``, lengths ``(B,)``, targets ``(B, T)`` / ``(B,)`` / None."""

    utts: list[str]
    feats: torch.Tensor
    lengths: torch.Tensor
    targets: torch.Tensor | None

    def to(self, device: torch.device) -> "Batch":
        return Batch(self.utts, self.feats.to(device), self.lengths.to(device),
                     None if self.targets is None else self.targets.to(device))


def collate(examples: Sequence[Example]) -> Batch:
    """Pad a list of examples; frame targets are padded with IGNORE_INDEX."""
    lengths = torch.tensor([len(e.feats) for e in examples], dtype=torch.long)
    feats = torch.nn.utils.rnn.pad_sequence([e.feats for e in examples], batch_first=True)
    targets: torch.Tensor | None = None
    if examples[0].target is not None:
        if isinstance(examples[0].target, torch.Tensor):
            targets = torch.nn.utils.rnn.pad_sequence([e.target for e in examples], batch_first=True,
                                                      padding_value=IGNORE_INDEX)
        else:
            targets = torch.tensor([e.target for e in examples], dtype=torch.long)
    return Batch([e.utt for e in examples], feats, lengths, targets)
