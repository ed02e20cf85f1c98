"""An experiment directory belongs to one configuration: a run with other options never resumes or skips it.

``speechattn-train`` writes ``config.yaml`` (the resolved config) into ``exp_dir``. Re-running with the same
config resumes or skips a finished run; with another one the old checkpoints and ``model.pt`` would pass for
the new options, so the run stops with one line naming the first differing option (``force=true`` starts
over, after removing what the earlier run left). Thread and worker counts and ``data.on_demand`` do not
count; ``trainer.max_epochs`` may change to continue a run (logged).
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

log = logging.getLogger(__name__)

# Options that change how fast a run goes (or how much memory it takes), not what it computes. data.on_demand
# gives the in-memory run's batches and losses (tests/test_ondemand.py, tests/test_sid_ondemand.py).
SPEED_ONLY = {"trainer.threads", "trainer.num_workers", "trainer.progress", "exp_dir", "force", "data.on_demand"}
# Options a run may change to continue an earlier one (as ESPnet's --max_epoch): logged, not refused.
CONTINUABLE = {"trainer.max_epochs"}
# What an earlier training leaves in its experiment directory.
TRAINING_OUTPUTS = ("checkpoints", "model.pt", ".done", "history.json", "tensorboard", "training_curves.png")


class ExperimentConfigError(ValueError):
    """``exp_dir`` holds a training made with another configuration."""


def _flatten(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            yield from _flatten(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], tree


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: old -> new`` for every option that differs (speed-only options left out), sorted by key."""
    a, b = dict(_flatten(old)), dict(_flatten(new))
    keys = sorted(k for k in a.keys() | b.keys() if k not in SPEED_ONLY and a.get(k, "<unset>") != b.get(k, "<unset>"))
    return [f"{k}: {a.get(k, '<unset>')} -> {b.get(k, '<unset>')}" for k in keys]


def claim_experiment_dir(exp_dir: Path, config: Mapping[str, Any], force: bool = False) -> None:
    """Check ``exp_dir`` before ``config`` (resolved, plain containers) is written into it.

    Raises :class:`ExperimentConfigError` when an earlier training with another config left outputs there,
    unless ``force``: then those outputs are removed and the run starts over.
    """
    previous = exp_dir / "config.yaml"
    started = [name for name in TRAINING_OUTPUTS if (exp_dir / name).exists()]
    if not started or not previous.is_file():
        return
    old = yaml.safe_load(previous.read_text()) or {}
    changed = config_differences(old, config)
    continued = [d for d in changed if d.split(":")[0] in CONTINUABLE]
    diffs = [d for d in changed if d not in continued]
    if continued:
        log.warning("%s: continuing the earlier training with %s", exp_dir, "; ".join(continued))
    if not diffs:
        return
    if not force:
        # an option missing from the old config.yaml was added to the toolkit after that run: say so, since
        # the user changed nothing (whether the old run matches its default is not known, so it is not assumed)
        new_options = [d.split(":")[0] for d in diffs if ": <unset> -> " in d]
        newer = (f"; {', '.join(new_options[:3])} did not exist when that run was made (an older version of "
                 f"speechattn)" if new_options else "")
        raise ExperimentConfigError(
            f"{exp_dir}: holds a training made with other options ({'; '.join(diffs[:3])}"
            f"{f'; {len(diffs) - 3} more' if len(diffs) > 3 else ''}{newer}): choose another exp_dir, or force=true "
            f"to discard it and start over")
    log.warning("%s: force=true: discarding the training made with other options (%s)", exp_dir, "; ".join(diffs))
    for name in started:
        path = exp_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
