"""Which CMVN statistics an experiment uses, and where: training reads them from the training data dir,
inference from the experiment directory (a copy made at training time, so an experiment is self-contained).

- global:    ``<train_dir>/cmvn_global.ark`` for every set; copied to ``<exp_dir>/cmvn_global.ark``.
- speaker:   each data dir's own ``cmvn_spk.scp`` (stage 2 computes it for every set; inference needs it
             in the data dir being labelled: ``speechattn-compute-cmvn data_dir=DATA cmvn=speaker``).
- utterance / none: nothing stored.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Mapping

from speechattn.features.cmvn import CmvnApplier, default_stats_path


def make_normaliser(cmvn_cfg: Mapping[str, Any], data_dir: str | Path | None,
                    global_stats_dir: str | Path, *, allow_pipes: bool = False) -> CmvnApplier:
    """CMVN for the utterances of ``data_dir``; global statistics come from ``global_stats_dir``.
    ``allow_pipes`` accepts commands in a stats scp (refused by default)."""
    mode = cmvn_cfg.get("mode", "none")
    stats = cmvn_cfg.get("stats", None)
    if mode == "global" and stats is None:
        stats = default_stats_path("global", global_stats_dir)
    if mode == "speaker" and data_dir is None:
        raise ValueError("cmvn mode 'speaker' needs the data dir being processed (its utt2spk and cmvn_spk.scp)")
    return CmvnApplier(mode, data_dir=data_dir, stats_path=stats if mode == "global" else None,
                       norm_means=cmvn_cfg.get("norm_means", True), norm_vars=cmvn_cfg.get("norm_vars", True),
                       var_floor=cmvn_cfg.get("var_floor", 1e-10), allow_pipes=allow_pipes)


def copy_cmvn_to_exp(cmvn_cfg: Mapping[str, Any], train_dir: str | Path, exp_dir: str | Path) -> None:
    """Copy the global statistics into the experiment directory (inference reads them there)."""
    if cmvn_cfg.get("mode") == "global":
        src = Path(cmvn_cfg.get("stats") or default_stats_path("global", train_dir))
        shutil.copyfile(src, default_stats_path("global", exp_dir))
