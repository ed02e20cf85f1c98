"""Inference over a Kaldi data directory, for any task: one loop over ``wav.scp``.

``infer_dir(exp_dir, data_dir, out_dir)`` loads the experiment's predictor (the task stored in its
checkpoint, :func:`speechattn.tasks.get_task`) and writes the task's outputs (:class:`OutputWriter`), e.g.
``frames.txt`` + ``phones.ctm`` (phone) or ``predictions.txt`` + ``embeddings.scp``/``.ark`` (sid). Only
``data_dir/wav.scp`` is needed.

The same conventions for every task:

- **utterances**: those of ``segments`` when the data dir has one (each cut from its recording, as the
  feature stage cuts them), else the recordings of ``wav.scp``;
- **bad audio** (missing, unreadable, empty, shorter than one 25 ms window, a refused pipe, a segment
  outside its recording) is skipped, counted in the log and listed in ``out_dir/failed.txt`` as
  ``UTT REASON`` with the ``wav.scp``/``segments`` line (an empty file when none);
- **batches** (``batch_frames > 1``): utterances of similar length share one padded forward pass
  (:mod:`speechattn.inference.batching`); outputs are those of one at a time, in ``wav.scp`` order;
- **atomic outputs**: every file is written under a temporary name and renamed when complete, the primary
  output (the writer's first file) last, then ``inputs.json``; temporary files an interrupted run left
  behind are removed by the next run;
- **complete** (:func:`outputs_complete`): every output and ``failed.txt`` exist, ``inputs.json`` holds
  the fingerprint (:func:`input_fingerprint`) of the checkpoint, ``wav.scp`` and ``segments`` they were
  made from, and the primary output plus ``failed.txt`` cover exactly the utterances. Other inputs (another
  model, other utterances) are redone; a complete output directory is skipped unless ``force``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
from tqdm import tqdm

from speechattn.data.audio import AudioError
from speechattn.data.framing import num_frames
from speechattn.data.kaldi_dir import KaldiDataDir, read_table
from speechattn.data.segments import SegmentReader
from speechattn.inference.batching import WINDOW_BATCHES, plan_batches
from speechattn.tasks import get_task
from speechattn.tasks.base import FAILED, OutputWriter, Predictor, Task
from speechattn.utils.atomic import atomic_write_text
from speechattn.utils.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

INPUTS = "inputs.json"  # fingerprint of what the outputs were made from; written last


def task_of(exp_dir: Path, checkpoint: str = "model.pt") -> Task:
    """The task an experiment was trained for (stored in its checkpoint's config)."""
    config = load_checkpoint(Path(exp_dir) / checkpoint).get("config", {})
    return get_task(config.get("task", "phone"))


def input_fingerprint(exp_dir: Path, data_dir: Path, checkpoint: str = "model.pt",
                      settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """SHA-256 of the checkpoint, ``wav.scp`` and ``segments`` (None when absent) and the inference
    ``settings`` that change outputs (precision, the predictor's options): what outputs depend on."""
    def digest(path: Path) -> str | None:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None

    fingerprint: dict[str, Any] = {"checkpoint": digest(exp_dir / checkpoint), "wav.scp": digest(data_dir / "wav.scp"),
                                   "segments": digest(data_dir / "segments")}
    if settings:
        fingerprint["settings"] = {k: settings[k] for k in sorted(settings)}
    return fingerprint


def outputs_complete(task: Task, exp_dir: Path, data_dir: Path, out_dir: Path, checkpoint: str = "model.pt",
                     utterances: Iterable[str] | None = None, writer_options: Mapping[str, Any] | None = None,
                     settings: Mapping[str, Any] | None = None) -> bool:
    """True when ``out_dir`` holds the task's outputs for every utterance of ``data_dir`` (or a
    ``failed.txt`` line), made from the current checkpoint, ``wav.scp``, ``segments`` and ``settings``."""
    paths = [out_dir / name for name in (*_writer(task, out_dir, writer_options).files, FAILED, INPUTS)]
    if not all(p.is_file() for p in paths):
        return False
    try:
        if json.loads(paths[-1].read_text()) != input_fingerprint(exp_dir, data_dir, checkpoint, settings):
            return False
    except ValueError:  # unreadable stamp: redo
        return False
    primary, failed = paths[0], paths[-2]
    done = set(read_table(primary, check_sorted=False)) if primary.stat().st_size else set()
    skipped = set(read_table(failed, check_sorted=False, min_fields=1)) if failed.stat().st_size else set()
    if utterances is None:
        utterances = KaldiDataDir.load(data_dir, require=("wav.scp",)).utterances
    return done | skipped == set(utterances)


def _writer(task: Task, out_dir: Path, options: Mapping[str, Any] | None) -> OutputWriter:
    """The task's output writer with its output options (e.g. phone ``textgrid``); an option the task does
    not have is an error naming it."""
    try:
        return task.output_writer(out_dir, **(options or {}))
    except TypeError as e:
        raise ValueError(f"task {task.name}: unknown output option(s) {sorted(options or {})}: {e}") from None


def _remove_leftovers(out_dir: Path, names: Iterable[str]) -> None:
    """Temporary files of an interrupted run (``.NAME.*.tmp``, :func:`speechattn.utils.atomic.atomic_open`)."""
    for name in names:
        for leftover in out_dir.glob(f".{name}.*.tmp"):
            leftover.unlink(missing_ok=True)


def infer_dir(exp_dir: str | Path, data_dir: str | Path, out_dir: str | Path, *, checkpoint: str = "model.pt",
              allow_pipes: bool = False, device: torch.device | str = "cpu", force: bool = False,
              task: str | None = None, precision: str | None = None, batch_frames: int = 0,
              writer_options: Mapping[str, Any] | None = None, **options: Any) -> Path:
    """Predict every utterance of ``data_dir/wav.scp``; returns the primary output's path.

    ``task`` defaults to the checkpoint's, ``precision`` (fp32 | bf16 | fp16) to the checkpoint's
    ``trainer.precision``; ``options`` go to the predictor (e.g. ``chunk_frames`` for phone),
    ``writer_options`` to the task's output writer (e.g. ``textgrid`` for phone).
    ``batch_frames > 1`` predicts utterances of similar length together, at most that many padded feature
    frames per forward pass (:mod:`speechattn.inference.batching`); outputs are the same as one at a time
    (0) and in the same order.
    """
    exp_dir, data_dir, out_dir = Path(exp_dir), Path(data_dir), Path(out_dir)
    the_task = get_task(task) if task else task_of(exp_dir, checkpoint)
    data = KaldiDataDir.load(data_dir, require=("wav.scp",))
    writer = _writer(the_task, out_dir, writer_options)
    primary = out_dir / writer.files[0]
    utterances = data.utterances
    # Settings that change the outputs (batch_frames does not: same outputs) key them with the inputs.
    settings = {k: v for k, v in {"precision": precision, **options}.items() if v is not None}
    if not force and outputs_complete(the_task, exp_dir, data_dir, out_dir, checkpoint, utterances, writer_options,
                                      settings):
        log.info("%s is complete (%d utterances): skipping (force=true to redo)", primary, len(utterances))
        return primary
    predictor = the_task.load_predictor(exp_dir, checkpoint, device, data_dir, precision=precision)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in (out_dir / INPUTS, primary):  # outputs of an earlier run must not pass for this run's
        stale.unlink(missing_ok=True)
    _remove_leftovers(out_dir, (*writer.files, FAILED, INPUTS))
    fingerprint = input_fingerprint(exp_dir, data_dir, checkpoint, settings)
    failed: list[str] = []
    frames = 0
    t0 = time.monotonic()
    with writer:
        for utt, prediction in _predictions(data, predictor, allow_pipes, batch_frames, options):
            if isinstance(prediction, AudioError):
                log.warning("skipping %s: %s", utt, prediction)
                failed.append(f"{utt} {' '.join(str(prediction).split())}")
                continue
            frames += writer.write(utt, prediction)
        atomic_write_text(out_dir / FAILED, "".join(f + "\n" for f in failed))
    atomic_write_text(out_dir / INPUTS, json.dumps(fingerprint, indent=1) + "\n")  # last: marks completion
    seconds = time.monotonic() - t0
    log.info("%s: %d utterances (%d frames, %.0f frames/s) -> %s; %d skipped%s", the_task.name,
             len(utterances) - len(failed), frames, frames / max(seconds, 1e-9), primary, len(failed),
             f" (listed in {out_dir / FAILED})" if failed else "")
    return primary


def _predictions(data: KaldiDataDir, predictor: Predictor, allow_pipes: bool, batch_frames: int,
                 options: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """``(utt, prediction or the AudioError that made it fail)`` for every utterance, in data-dir order.

    ``batch_frames <= 1``: one at a time (read, predict, next). Else a window of about ``WINDOW_BATCHES``
    batches of utterances is read, predicted in length-sorted batches and yielded in order; utterances the
    predictor wants alone (``file_features`` is None: long recordings labelled in chunks) are predicted
    on their own when read."""
    features_of, predict_one = _readers(data, predictor, allow_pipes, options)
    progress = tqdm(data.utterances, desc="infer", mininterval=5.0)
    if batch_frames <= 1 or not predictor.batchable(**options):
        for utt in progress:
            try:
                yield utt, predict_one(utt)
            except AudioError as e:
                yield utt, e
        return
    window: list[tuple[str, Any]] = []  # (utt, prediction | AudioError | features still to predict)
    pending = 0                         # feature frames in the window still to predict
    for utt in progress:
        try:
            feats = features_of(utt)
            item = predict_one(utt) if feats is None else feats
        except AudioError as e:
            item = e
        window.append((utt, item))
        if isinstance(item, torch.Tensor):
            pending += item.shape[0]
        if pending >= WINDOW_BATCHES * batch_frames:
            yield from _predict_window(predictor, window, batch_frames)
            window, pending = [], 0
    yield from _predict_window(predictor, window, batch_frames)


def _predict_window(predictor: Predictor, window: list[tuple[str, Any]],
                    batch_frames: int) -> Iterator[tuple[str, Any]]:
    """Predict the window's features in length-sorted batches; yield the window in its order."""
    todo = [i for i, (_, item) in enumerate(window) if isinstance(item, torch.Tensor)]
    results = dict(enumerate(item for _, item in window))
    for batch in plan_batches([window[i][1].shape[0] for i in todo], batch_frames):
        indices = [todo[j] for j in batch]
        for i, prediction in zip(indices, predictor.predict_batch([window[i][1] for i in indices])):
            results[i] = prediction
    for i, (utt, _) in enumerate(window):
        yield utt, results[i]


def _readers(data: KaldiDataDir, predictor: Predictor, allow_pipes: bool, options: dict[str, Any]
             ) -> tuple[Callable[[str], torch.Tensor | None], Callable[[str], Any]]:
    """``utt -> features (T, F)`` (None: predict it alone) and ``utt -> prediction``: from the ``wav.scp``
    entry, or cut from its recording when there are segments. Both raise ``AudioError`` for bad audio."""
    if data.segments is None:
        lines = {utt: i for i, utt in enumerate(data.wav_scp, start=1)}
        scp = data.path / "wav.scp"

        def file_features(utt: str) -> torch.Tensor | None:
            return predictor.file_features(data.wav_scp[utt], utt, where=f"{scp}:{lines[utt]}",
                                           allow_pipes=allow_pipes, **options)

        def predict_file(utt: str) -> Any:
            return predictor.predict_file(data.wav_scp[utt], utt, where=f"{scp}:{lines[utt]}",
                                          allow_pipes=allow_pipes, **options)

        return file_features, predict_file
    segment_audio = SegmentReader(data, predictor.sample_rate, allow_pipes=allow_pipes)
    cfg = predictor.feature_cfg
    segment_lines = {utt: i for i, utt in enumerate(data.segments, start=1)}

    def segment(utt: str) -> torch.Tensor:
        waveform = segment_audio(utt)
        if num_frames(waveform.numel(), cfg.sample_rate, cfg.frame_length_ms, cfg.frame_shift_ms) == 0:
            raise AudioError(f"{data.path / 'segments'}:{segment_lines[utt]}: segment '{utt}' is shorter than one "
                             f"analysis window ({waveform.numel()} samples)")
        return waveform

    return (lambda utt: predictor.features(segment(utt), utt),
            lambda utt: predictor.predict_waveform(segment(utt), utt, **options))
