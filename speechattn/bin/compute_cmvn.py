"""speechattn-compute-cmvn: CMVN statistics of a data dir's ``feats.scp`` (stage 2), like ``compute-cmvn-stats``.

    speechattn-compute-cmvn data_dir=data/train                   # -> data/train/cmvn_global.ark (key "global")
    speechattn-compute-cmvn data_dir=data/test cmvn=speaker       # -> data/test/cmvn_spk.ark + cmvn_spk.scp

``utterance`` and ``none`` modes store nothing (utterance stats are computed when the features are read).
Idempotent: skipped when the stats file is newer than ``feats.scp`` (``force=true`` recomputes). Features
with NaN/inf are an error naming the utterance; ``feats.scp`` entries that are commands (``cmd |``) are
refused unless ``allow_pipes=true``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from speechattn.bin._hydra import CONF_DIR, input_errors_as_one_line, one_line_errors

log = logging.getLogger("speechattn.compute_cmvn")


def compute_cmvn_stats(data_dir: str | Path, mode: str, stats_path: str | Path | None = None,
                       force: bool = False, *, allow_pipes: bool = False) -> Path | None:
    """Write the stats of ``mode`` for ``data_dir``; returns the stats path (None for utterance / none).

    ``feats.scp`` entries that are commands (``cmd |``) are refused unless ``allow_pipes``."""
    import numpy as np

    from speechattn.data.kaldi_dir import KaldiDataError, read_table
    from speechattn.data.kaldi_io import iter_scp
    from speechattn.features.cmvn import (CMVN_MODES, GLOBAL_STATS_KEY, accumulate_stats, combine,
                                          default_stats_path, write_stats_ark)

    data_dir = Path(data_dir)
    if mode not in CMVN_MODES:
        raise ValueError(f"cmvn.mode must be one of {CMVN_MODES}, got {mode!r}")
    if mode in ("utterance", "none"):
        log.info("cmvn mode '%s': nothing to compute", mode)
        return None
    feats_scp = data_dir / "feats.scp"
    if not feats_scp.is_file():
        raise KaldiDataError(f"{feats_scp}:0: missing (run compute_features first)")
    target = Path(stats_path) if stats_path is not None else default_stats_path(mode, data_dir)
    if mode == "speaker" and target.suffix != ".scp":
        raise ValueError(f"speaker CMVN stats are an scp + ark pair; give a .scp path, got {target}")
    if not force and target.is_file() and target.stat().st_mtime_ns >= feats_scp.stat().st_mtime_ns:
        log.info("%s is newer than %s (force=true to recompute): skipping", target, feats_scp)
        return target

    utt2spk = read_table(data_dir / "utt2spk") if mode == "speaker" else {}
    stats_by_key: dict[str, np.ndarray] = {}  # running sums: memory O(speakers x D), not O(frames)
    num_utts = 0
    for utt, feats, lineno in iter_scp(feats_scp, allow_pipes=allow_pipes):
        if mode == "global":
            key = GLOBAL_STATS_KEY
        elif utt in utt2spk:
            key = utt2spk[utt]
        else:
            raise KaldiDataError(f"{feats_scp}:{lineno}: utterance '{utt}' has no speaker in "
                                 f"{data_dir / 'utt2spk'}")
        stats = accumulate_stats(feats, where=f"{feats_scp}:{lineno}: utterance '{utt}'")
        num_utts += 1
        stats_by_key[key] = combine([stats_by_key[key], stats]) if key in stats_by_key else stats
    if not stats_by_key:
        raise KaldiDataError(f"{feats_scp}:0: no features")
    if mode == "global":
        write_stats_ark(target, stats_by_key)
        frames = int(stats_by_key[GLOBAL_STATS_KEY][0, -1])
        log.info("wrote %s: global stats over %d utterances, %d frames", target, num_utts, frames)
    else:
        by_speaker = {spk: stats_by_key[spk] for spk in sorted(stats_by_key, key=lambda k: k.encode("utf-8"))}
        write_stats_ark(target.with_suffix(".ark"), by_speaker, scp_path=target)
        log.info("wrote %s: stats of %d speakers", target, len(stats_by_key))
    return target


def run(cfg: DictConfig) -> Path | None:
    return compute_cmvn_stats(cfg.data_dir, cfg.cmvn.mode, cfg.cmvn.get("stats"), bool(cfg.force),
                              allow_pipes=bool(cfg.get("allow_pipes", False)))


@one_line_errors
@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="compute_cmvn")
def main(cfg: DictConfig) -> None:
    with input_errors_as_one_line():
        run(cfg)


if __name__ == "__main__":
    main()
