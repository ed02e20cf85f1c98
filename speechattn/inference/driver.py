"""Inference over a Kaldi data directory, for any task: one loop over ``wav.scp``.

``infer_dir(exp_dir, data_dir, out_dir)`` loads the experiment's predictor (the task stored in its
checkpoint, :func:`speechattn.tasks.get_task`) and writes the task's outputs (:class:`OutputWriter`), e.g.
``frames.txt`` + ``phones.ctm`` (phone) or ``predictions.txt`` + ``embeddings.scp``/``.ark`` (sid). Only
``data_dir/wav.scp`` is needed.

The same conventions for every task:

- **bad audio** (missing, unreadable, empty, shorter than one 25 ms window, a refused pipe) is skipped,
  counted in the log and listed in ``out_dir/failed.txt`` as ``UTT REASON`` with the ``wav.scp`` line
  (an empty file when none);
- **atomic outputs**: every file is written under a temporary name and renamed when complete, the primary
  output (the writer's first file) last, so an interrupted run never leaves outputs that look complete;
- **complete** (:func:`outputs_complete`): every output and ``failed.txt`` exist, are newer than the
  checkpoint and ``wav.scp``, and the primary output plus ``failed.txt`` cover exactly the utterances of
  ``wav.scp``. A complete output directory is skipped unless ``force``.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from speechattn.data.audio import AudioError
from speechattn.data.kaldi_dir import KaldiDataDir, read_table
from speechattn.tasks import get_task
from speechattn.tasks.base import FAILED, Task
from speechattn.utils.atomic import atomic_write_text
from speechattn.utils.checkpoint import load_checkpoint

log = logging.getLogger(__name__)


def task_of(exp_dir: Path, checkpoint: str = "model.pt") -> Task:
    """The task an experiment was trained for (stored in its checkpoint's config)."""
    config = load_checkpoint(Path(exp_dir) / checkpoint).get("config", {})
    return get_task(config.get("task", "phone"))


def outputs_complete(task: Task, exp_dir: Path, data_dir: Path, out_dir: Path, checkpoint: str = "model.pt") -> bool:
    """True when ``out_dir`` holds the task's outputs for every utterance of ``data_dir/wav.scp`` (or a
    ``failed.txt`` line), newer than the checkpoint and the ``wav.scp``."""
    files = task.output_writer(out_dir).files
    paths = [out_dir / name for name in (*files, FAILED)]
    if not all(p.is_file() for p in paths):
        return False
    oldest_output = min(p.stat().st_mtime_ns for p in paths)
    if any(p.is_file() and p.stat().st_mtime_ns > oldest_output for p in (exp_dir / checkpoint, data_dir / "wav.scp")):
        return False
    primary, failed = paths[0], paths[-1]
    done = set(read_table(primary, check_sorted=False)) if primary.stat().st_size else set()
    skipped = set(read_table(failed, check_sorted=False, min_fields=1)) if failed.stat().st_size else set()
    return done | skipped == set(read_table(data_dir / "wav.scp"))


def infer_dir(exp_dir: str | Path, data_dir: str | Path, out_dir: str | Path, *, checkpoint: str = "model.pt",
              allow_pipes: bool = False, device: torch.device | str = "cpu", force: bool = False,
              task: str | None = None, **options: Any) -> Path:
    """Predict every utterance of ``data_dir/wav.scp``; returns the primary output's path.

    ``task`` defaults to the checkpoint's; ``options`` go to the predictor (e.g. ``chunk_frames`` for phone).
    """
    exp_dir, data_dir, out_dir = Path(exp_dir), Path(data_dir), Path(out_dir)
    the_task = get_task(task) if task else task_of(exp_dir, checkpoint)
    data = KaldiDataDir.load(data_dir, require=("wav.scp",))
    if data.segments is not None:
        log.warning("%s has a segments file: it is ignored, each wav.scp recording is one utterance", data_dir)
    writer = the_task.output_writer(out_dir)
    primary = out_dir / writer.files[0]
    if not force and outputs_complete(the_task, exp_dir, data_dir, out_dir, checkpoint):
        log.info("%s is complete (%d utterances): skipping (force=true to redo)", primary, len(data.wav_scp))
        return primary
    predictor = the_task.load_predictor(exp_dir, checkpoint, device, data_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    primary.unlink(missing_ok=True)  # outputs of an earlier run must not pass for this run's
    scp = data_dir / "wav.scp"
    failed: list[str] = []
    frames = 0
    t0 = time.monotonic()
    with writer:
        for lineno, (utt, spec) in enumerate(tqdm(data.wav_scp.items(), desc="infer", mininterval=5.0), start=1):
            try:
                prediction = predictor.predict_file(spec, utt, where=f"{scp}:{lineno}", allow_pipes=allow_pipes,
                                                    **options)
            except AudioError as e:
                log.warning("skipping %s: %s", utt, e)
                failed.append(f"{utt} {' '.join(str(e).split())}")
                continue
            frames += writer.write(utt, prediction)
        atomic_write_text(out_dir / FAILED, "".join(f + "\n" for f in failed))
    seconds = time.monotonic() - t0
    log.info("%s: %d utterances (%d frames, %.0f frames/s) -> %s; %d skipped%s", the_task.name,
             len(data.wav_scp) - len(failed), frames, frames / max(seconds, 1e-9), primary, len(failed),
             f" (listed in {out_dir / FAILED})" if failed else "")
    return primary
