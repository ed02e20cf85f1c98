"""Cepstral mean and variance normalisation with Kaldi-format statistics.

A stats matrix is ``(2, D + 1)`` float64, as written by Kaldi's ``compute-cmvn-stats``:
row 0 = ``[sum x_1 ... sum x_D, count]``, row 1 = ``[sum x_1^2 ... sum x_D^2, 0]``.
Normalisation is ``(x - mean) / sqrt(var)`` per dimension (``apply-cmvn``), or ``x - mean`` with
``norm_vars=False`` (mean-only, the usual choice for speaker recognition).

Modes (the Hydra ``cmvn`` group):
    ``global``     one matrix over the training set, ``cmvn_global.ark`` with key ``global``;
    ``speaker``    one matrix per speaker of a data dir, ``cmvn_spk.ark`` / ``cmvn_spk.scp``;
    ``utterance``  computed on the fly from the utterance itself, nothing stored;
    ``none``       features unchanged.

Example:
    >>> import numpy as np
    >>> feats = np.array([[1.0, 10.0], [3.0, 30.0]], dtype=np.float32)
    >>> stats = accumulate_stats(feats)
    >>> stats
    array([[   4.,   40.,    2.],
           [  10., 1000.,    0.]])
    >>> apply_cmvn(feats, stats)
    array([[-1., -1.],
           [ 1.,  1.]], dtype=float32)
    >>> apply_cmvn(feats, stats, norm_vars=False)
    array([[ -1., -10.],
           [  1.,  10.]], dtype=float32)
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import kaldiio
import numpy as np
import torch

# features may import data, never the other way (docs/architecture.md, Layers)
from speechattn.data.kaldi_dir import read_table
from speechattn.data.kaldi_io import read_ark, read_scp
from speechattn.utils.atomic import atomic_open

logger = logging.getLogger(__name__)

CMVN_MODES = ("global", "speaker", "utterance", "none")
GLOBAL_STATS_NAME = "cmvn_global.ark"
GLOBAL_STATS_KEY = "global"
SPEAKER_STATS_NAME = "cmvn_spk"  # .ark / .scp
DEFAULT_VAR_FLOOR = 1e-10

Features = TypeVar("Features", np.ndarray, torch.Tensor)


class CmvnError(ValueError):
    """Bad features or statistics; the message names the utterance, speaker or file."""


def check_finite(feats: np.ndarray | torch.Tensor, where: str) -> None:
    """Raise :class:`CmvnError` naming ``where`` (e.g. the utterance) if ``feats`` has NaN or inf."""
    finite = torch.isfinite(feats).all().item() if isinstance(feats, torch.Tensor) else np.isfinite(feats).all()
    if not finite:
        raise CmvnError(f"{where}: features contain NaN or inf")


def accumulate_stats(feats: np.ndarray | torch.Tensor, where: str = "features") -> np.ndarray:
    """Kaldi CMVN stats ``(2, D + 1)`` float64 of one feature matrix ``(T, D)``."""
    array = feats.detach().cpu().numpy() if isinstance(feats, torch.Tensor) else np.asarray(feats)
    if array.ndim != 2:
        raise CmvnError(f"{where}: expected features (T, D), got shape {array.shape}")
    check_finite(array, where)
    array = array.astype(np.float64, copy=False)
    stats = np.zeros((2, array.shape[1] + 1), dtype=np.float64)
    stats[0, :-1] = array.sum(axis=0)
    stats[1, :-1] = np.square(array).sum(axis=0)
    stats[0, -1] = array.shape[0]
    return stats


def combine(stats: Iterable[np.ndarray]) -> np.ndarray:
    """Sum of stats matrices of the same dimension (stats of the union of their frames)."""
    total: np.ndarray | None = None
    for matrix in stats:
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[0] != 2:
            raise CmvnError(f"CMVN stats must be (2, D+1), got shape {matrix.shape}")
        if total is None:
            total = matrix.copy()
        elif total.shape != matrix.shape:
            raise CmvnError(f"cannot combine CMVN stats of shapes {total.shape} and {matrix.shape}")
        else:
            total += matrix
    if total is None:
        raise CmvnError("no CMVN stats to combine")
    return total


def stats_to_transform(stats: np.ndarray, norm_means: bool = True, norm_vars: bool = True,
                       var_floor: float = DEFAULT_VAR_FLOOR, where: str = "stats") -> tuple[np.ndarray, np.ndarray]:
    """``(scale (D,), offset (D,))`` float32 such that normalised = ``feats * scale + offset``.

    As Kaldi's ``ApplyCmvn``: at least one frame of stats is required, the variance is floored at
    ``var_floor`` (dimensions that are constant would otherwise divide by zero).
    """
    if norm_vars and not norm_means:
        raise CmvnError(f"{where}: cannot normalise the variance but not the mean (as Kaldi's apply-cmvn)")
    stats = np.asarray(stats, dtype=np.float64)
    if stats.ndim != 2 or stats.shape[0] != 2 or stats.shape[1] < 2:
        raise CmvnError(f"{where}: CMVN stats must be (2, D+1), got shape {stats.shape}")
    count = stats[0, -1]
    if not np.isfinite(stats).all():
        raise CmvnError(f"{where}: CMVN stats contain NaN or inf")
    if count < 1.0:
        raise CmvnError(f"{where}: insufficient CMVN stats (frame count {count})")
    dim = stats.shape[1] - 1
    mean = stats[0, :-1] / count
    scale = np.ones(dim, dtype=np.float64)
    if norm_vars:
        var = stats[1, :-1] / count - mean * mean
        floored = int((var < var_floor).sum())
        if floored:
            logger.debug("%s: %d dimension(s) with variance below %g floored", where, floored, var_floor)
        scale = 1.0 / np.sqrt(np.maximum(var, var_floor))
    offset = -mean * scale if norm_means else np.zeros(dim, dtype=np.float64)
    return scale.astype(np.float32), offset.astype(np.float32)


def apply_cmvn(feats: Features, stats: np.ndarray, norm_means: bool = True, norm_vars: bool = True,
               var_floor: float = DEFAULT_VAR_FLOOR, where: str = "features") -> Features:
    """Normalise ``feats (T, D)`` with ``stats (2, D + 1)``; returns ``(T, D)`` of the input's type.

    ``norm_vars=False`` only removes the mean; ``norm_means=False, norm_vars=False`` is the identity.
    """
    check_finite(feats, where)
    scale, offset = stats_to_transform(stats, norm_means, norm_vars, var_floor, where)
    return _affine(feats, scale, offset, where)


def _affine(feats: Features, scale: np.ndarray, offset: np.ndarray, where: str) -> Features:
    if feats.ndim != 2 or feats.shape[1] != scale.shape[0]:
        raise CmvnError(f"{where}: features of shape {tuple(feats.shape)} do not match CMVN stats of "
                        f"dimension {scale.shape[0]}")
    if isinstance(feats, torch.Tensor):
        return feats * torch.from_numpy(scale).to(feats) + torch.from_numpy(offset).to(feats)
    dtype = feats.dtype if np.issubdtype(feats.dtype, np.floating) else np.float32
    return (feats * scale + offset).astype(dtype, copy=False)


# ---------------------------------------------------------------------------------------------- storage

def write_stats_ark(ark_path: str | os.PathLike, stats: Mapping[str, np.ndarray],
                    scp_path: str | os.PathLike | None = None) -> None:
    """Write stats matrices (Kaldi binary double matrices) to ``ark_path`` (and an scp) atomically.

    The ark is written under a temporary name and renamed, then the scp (which points at the final ark
    name) is written atomically: a complete scp always refers to a complete ark.
    """
    ark_path = Path(ark_path).resolve()
    positions: dict[str, int] = {}
    with atomic_open(ark_path, "wb") as f:  # disk-full / permission errors name ark_path
        for key, matrix in stats.items():
            positions[key] = f.tell() + len(key.encode("utf-8")) + 1  # after "KEY "
            kaldiio.save_ark(f, {key: np.asarray(matrix, dtype=np.float64)})
    if scp_path is not None:
        with atomic_open(scp_path, "w") as f:
            for key, position in positions.items():
                f.write(f"{key} {ark_path}:{position}\n")


def read_stats(path: str | os.PathLike, *, allow_pipes: bool = False) -> dict[str, np.ndarray]:
    """Read stats from a ``.scp`` or ``.ark`` file: ``{key: (2, D + 1) float64}``.

    Commands (an scp entry or a path ``cmd |``) are refused unless ``allow_pipes``
    (:mod:`speechattn.data.kaldi_io`).
    """
    path = Path(path)
    if not path.is_file():
        raise CmvnError(f"{path}:0: CMVN stats file not found (run the compute_cmvn stage first)")
    loaded = (read_scp(path, allow_pipes=allow_pipes, check_sorted=False) if path.suffix == ".scp"
              else read_ark(path, allow_pipes=allow_pipes))
    stats: dict[str, np.ndarray] = {}
    for key, matrix in loaded.items():
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[0] != 2:
            raise CmvnError(f"{path}: stats of '{key}' must be (2, D+1), got shape {matrix.shape}")
        stats[key] = matrix
    return stats


def default_stats_path(mode: str, data_dir: str | os.PathLike) -> Path | None:
    """Where ``compute_cmvn`` stores the stats of ``mode`` for ``data_dir`` (None: nothing stored)."""
    if mode == "global":
        return Path(data_dir) / GLOBAL_STATS_NAME
    if mode == "speaker":
        return Path(data_dir) / f"{SPEAKER_STATS_NAME}.scp"
    return None


# ---------------------------------------------------------------------------------------------- applier

class CmvnApplier:
    """Normalise an utterance's features by the configured CMVN mode: ``applier(utt_id, feats)``.

    Args:
        mode: ``global`` | ``speaker`` | ``utterance`` | ``none``.
        data_dir: the data dir of the utterances (speaker mode reads its ``utt2spk`` and, by default,
            its ``cmvn_spk.scp``; global mode reads ``cmvn_global.ark`` there unless ``stats_path``).
        stats_path: stats file overriding the default location. For test/dev sets in global mode point
            it at the *training* set's ``cmvn_global.ark``.
        norm_means: subtract the mean.
        norm_vars: divide by the standard deviation (``False`` = mean-only, for speaker recognition).
        var_floor: variance floor.
        allow_pipes: accept commands (``cmd |``) in a stats scp (refused by default: nothing is run).

    ``__call__(utt_id, feats (T, D))`` returns ``(T, D)`` of the same type (numpy or torch); features with
    NaN/inf, or an utterance without a speaker/stats, raise :class:`CmvnError` naming the utterance.

    Example:
        >>> import numpy as np
        >>> applier = CmvnApplier("utterance", norm_vars=False)
        >>> applier("utt1", np.array([[1.0], [3.0]], dtype=np.float32)).ravel().tolist()
        [-1.0, 1.0]
    """

    def __init__(self, mode: str, data_dir: str | os.PathLike | None = None,
                 stats_path: str | os.PathLike | None = None, norm_means: bool = True, norm_vars: bool = True,
                 var_floor: float = DEFAULT_VAR_FLOOR, *, allow_pipes: bool = False) -> None:
        if mode not in CMVN_MODES:
            raise ValueError(f"cmvn.mode must be one of {CMVN_MODES}, got {mode!r}")
        self.mode, self.norm_means, self.norm_vars, self.var_floor = mode, norm_means, norm_vars, var_floor
        self.stats_path: Path | None = None
        self._transforms: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._utt2spk: dict[str, str] = {}
        if mode in ("global", "speaker"):
            if stats_path is None and data_dir is None:
                raise ValueError(f"cmvn mode '{mode}' needs data_dir or stats_path")
            self.stats_path = Path(stats_path) if stats_path is not None else default_stats_path(mode, data_dir)
            for key, stats in read_stats(self.stats_path, allow_pipes=allow_pipes).items():
                self._transforms[key] = stats_to_transform(stats, norm_means, norm_vars, var_floor,
                                                           where=f"{self.stats_path}: {key}")
            if mode == "global" and GLOBAL_STATS_KEY not in self._transforms:
                raise CmvnError(f"{self.stats_path}: no stats with key '{GLOBAL_STATS_KEY}'")
        if mode == "speaker":
            if data_dir is None:
                raise ValueError("cmvn mode 'speaker' needs data_dir (for utt2spk)")
            self._utt2spk = read_table(Path(data_dir) / "utt2spk")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | Any, data_dir: str | os.PathLike | None = None, *,
                    allow_pipes: bool = False) -> "CmvnApplier":
        """Build from the Hydra ``cmvn`` group (keys ``mode``, ``norm_means``, ``norm_vars``, ``stats``,
        ``var_floor``)."""
        get = cfg.get
        return cls(get("mode", "none"), data_dir=data_dir, stats_path=get("stats", None),
                   norm_means=get("norm_means", True), norm_vars=get("norm_vars", True),
                   var_floor=get("var_floor", DEFAULT_VAR_FLOOR), allow_pipes=allow_pipes)

    def __call__(self, utt_id: str, feats: Features) -> Features:
        where = f"utterance '{utt_id}'"
        check_finite(feats, where)
        if self.mode == "none":
            return feats
        if self.mode == "utterance":
            stats = accumulate_stats(feats, where)
            return _affine(feats, *stats_to_transform(stats, self.norm_means, self.norm_vars, self.var_floor, where),
                           where)
        if self.mode == "global":
            key = GLOBAL_STATS_KEY
        else:
            key = self._utt2spk.get(utt_id)
            if key is None:
                raise CmvnError(f"{where}: no speaker in utt2spk of the CMVN data dir")
        if key not in self._transforms:
            raise CmvnError(f"{where}: no CMVN stats for '{key}' in {self.stats_path}")
        return _affine(feats, *self._transforms[key], where)

    @property
    def rowwise(self) -> bool:
        """Every frame is normalised on its own (global, speaker, none; not utterance): normalising a crop then
        equals cropping the normalised utterance, so on-demand readers may read only the crop's rows."""
        return self.mode != "utterance"

    def __repr__(self) -> str:
        return (f"CmvnApplier(mode={self.mode!r}, stats_path={self.stats_path}, norm_means={self.norm_means}, "
                f"norm_vars={self.norm_vars})")
