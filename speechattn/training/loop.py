"""The training loop shared by every task: epochs, validation, checkpoints, resume, TensorBoard.

A task supplies ``step(model, batch) -> (loss, correct, counted)``; the loop does the rest:

- one atomic checkpoint per epoch (``checkpoints/epoch-N.pt`` and ``checkpoints/last.pt``), plus one every
  ``save_every_steps`` optimizer steps mid-epoch, each holding model, optimiser, scheduler, sampler and RNG
  state, so a killed run resumes exactly where the last checkpoint left it;
- ``model.pt``: the weights of the epoch with the best validation accuracy (what inference loads);
- ``history.json`` and TensorBoard scalars under ``tensorboard/`` (main rank only);
- numeric precision (``trainer.precision``: autocast, fp16 loss scaling; :mod:`speechattn.utils.precision`),
  stored in every checkpoint, and optionally ``torch.compile`` of the encoder over a bounded set of batch
  shapes (``trainer.compile``; :mod:`speechattn.training.shapes`).
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from speechattn.data.dataset import Batch
from speechattn.utils.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from speechattn.training.distributed import DistInfo, all_reduce_sum
from speechattn.utils.precision import Precision
from speechattn.training.shapes import ShapePolicy, compilation_count, compile_encoders
from speechattn.training.seed import rng_state, set_rng_state
from speechattn.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)

StepFn = Callable[[nn.Module, Batch], tuple[torch.Tensor, int, int]]


class EpochHook(Protocol):
    """Optional model selection by a task metric (:class:`speechattn.training.epoch_selection.EpochSelection`):
    ``on_epoch_end(epoch, raw_model, validation) -> (is the new best, {metric: value})`` after validation
    (``validation``: that pass's ``valid_loss`` and ``valid_acc``) decides ``model.pt``; its ``state_dict`` goes
    into every checkpoint; ``on_fit_end(exp_dir, extra_state)`` runs once after the last epoch (main rank)."""

    def on_epoch_end(self, epoch: int, raw_model: nn.Module,
                     validation: Mapping[str, float]) -> tuple[bool, dict[str, float]]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
    def on_fit_end(self, exp_dir: Path, extra_state: dict[str, Any]) -> None: ...

# What a checkpoint needs to resume training (model.pt, the best weights, is not one).
_RESUME_KEYS = ("model", "optimizer", "scheduler", "sampler", "rng", "epoch", "step", "best_valid_acc", "best_epoch",
                "history")


def _epoch_number(path: Path) -> int:
    """N of ``epoch-N.pt`` (-1 for a name that does not parse, so it is tried last)."""
    try:
        return int(path.stem.split("-", 1)[1])
    except (IndexError, ValueError):
        return -1


@dataclass
class TrainState:
    epoch: int = 0                 # epochs fully completed
    step: int = 0                  # optimizer steps done
    best_valid_acc: float = -1.0
    best_epoch: int = -1
    history: list[dict[str, float]] = field(default_factory=list)


def warmup_then_cosine(warmup_steps: int, total_steps: int, final_ratio: float = 0.05) -> Callable[[int], float]:
    """LR multiplier: linear warm-up to 1, then cosine decay to ``final_ratio``."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


class Trainer:
    """Runs epochs of ``step`` over ``train_loader`` and validates on ``valid_loader``.

    Args:
        model: the (possibly DDP-wrapped) model.
        raw_model: the unwrapped model (its state_dict is what is saved).
        step: task function ``(model, batch) -> (loss, correct, counted)``.
        train_loader: DataLoader whose ``batch_sampler`` has ``set_epoch``, ``state_dict``, ``load_state_dict``.
        exp_dir: experiment directory.
        max_epochs, grad_clip, save_every_steps, log_every_steps: loop settings.
        extra_state: plain data stored in every checkpoint (e.g. the resolved config).
        precision: autocast / loss scaling (default fp32); its name is stored in every checkpoint and
            in ``model.pt`` (``"precision"``), which inference follows.
        shapes: pads every batch (train and validation) to a bounded set of shapes before the step
            (for compiled code: ``trainer.compile``, FlexAttention); None leaves batches as collated.
    """

    def __init__(self, model: nn.Module, raw_model: nn.Module, step: StepFn, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, train_loader: DataLoader,
                 valid_loader: DataLoader, exp_dir: Path, device: torch.device, dist_info: DistInfo,
                 max_epochs: int, grad_clip: float = 5.0, save_every_steps: int = 0, keep_checkpoints: int = 3,
                 extra_state: dict[str, Any] | None = None, stop_after_steps: int = 0,
                 precision: Precision | None = None, shapes: ShapePolicy | None = None,
                 epoch_hook: EpochHook | None = None) -> None:
        self.model, self.raw_model, self.step_fn = model, raw_model, step
        self.optimizer, self.scheduler = optimizer, scheduler
        self.train_loader, self.valid_loader = train_loader, valid_loader
        self.exp_dir, self.device, self.dist = Path(exp_dir), device, dist_info
        self.max_epochs, self.grad_clip = max_epochs, grad_clip
        self.save_every_steps, self.keep_checkpoints = save_every_steps, keep_checkpoints
        self.extra_state = extra_state or {}
        self.stop_after_steps = stop_after_steps  # testing aid: simulate an interruption
        self.precision = precision or Precision.create("fp32", device)
        self.shapes = shapes
        self.skipped_steps = 0  # fp16 steps skipped by the GradScaler (inf/NaN gradients)
        self.epoch_hook = epoch_hook  # model selection by a task metric (see EpochHook)
        self.ckpt_dir = self.exp_dir / "checkpoints"
        self.state = TrainState()
        self.batches_done = 0  # batches trained on in the current epoch (the sampler may prefetch ahead)
        self.writer = None
        if self.dist.is_main:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(self.exp_dir / "tensorboard"))

    # ---- checkpoints -------------------------------------------------------------------------------
    def _checkpoint(self) -> dict[str, Any]:
        s = self.state
        return {"model": self.raw_model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "sampler": self.train_loader.batch_sampler.state_dict(batches_done=self.batches_done),
                "rng": rng_state(),
                "epoch": s.epoch, "step": s.step, "best_valid_acc": s.best_valid_acc, "best_epoch": s.best_epoch,
                "history": s.history, "precision": self.precision.name,
                "precision_state": self.precision.state_dict(), **self._hook_state(), **self.extra_state}

    def save(self, tag: str) -> None:
        if not self.dist.is_main:
            return
        state = self._checkpoint()
        save_checkpoint(self.ckpt_dir / "last.pt", state)
        if tag.startswith("epoch"):
            save_checkpoint(self.ckpt_dir / f"{tag}.pt", state)
            epochs = sorted(self.ckpt_dir.glob("epoch-*.pt"), key=_epoch_number)
            for old in epochs[: -self.keep_checkpoints]:
                old.unlink()

    def try_resume(self) -> bool:
        """Load the newest usable checkpoint (``checkpoints/last.pt``, else ``epoch-N.pt`` from the highest N);
        returns True when resumed.

        A checkpoint that cannot be loaded (truncated or corrupt file, e.g. a disk that filled up or a copy
        that was cut short) is skipped with a warning and the previous one is used; if none is usable the
        error names every file tried.
        """
        epochs = sorted(self.ckpt_dir.glob("epoch-*.pt"), key=_epoch_number, reverse=True)
        candidates = [p for p in [self.ckpt_dir / "last.pt", *epochs] if p.is_file()]
        if not candidates:
            return False
        problems: list[str] = []
        for path in candidates:
            try:
                ckpt = load_checkpoint(path, map_location=self.device)
                missing = [k for k in _RESUME_KEYS if k not in ckpt]
                if missing:
                    raise CheckpointError(f"{path}: not a training checkpoint (no {', '.join(missing)})")
            except CheckpointError as e:
                log.warning("%s; trying the previous checkpoint", e)
                problems.append(str(e))
                continue
            if problems:
                log.warning("resuming from %s instead (%d newer checkpoint(s) unusable)", path, len(problems))
            self._restore(ckpt)
            log.info("resumed from %s: %d epochs done, step %d, sampler %s", path, self.state.epoch,
                     self.state.step, ckpt["sampler"])
            return True
        raise CheckpointError(f"{self.ckpt_dir}: no usable checkpoint to resume from ({'; '.join(problems)}); "
                              f"remove {self.ckpt_dir} to train from scratch")

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.raw_model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.train_loader.batch_sampler.load_state_dict(ckpt["sampler"])
        set_rng_state(ckpt["rng"])
        if "precision_state" in ckpt:  # absent in checkpoints written before precisions existed (fp32)
            self.precision.load_state_dict(ckpt["precision_state"])
        self.state = TrainState(ckpt["epoch"], ckpt["step"], ckpt["best_valid_acc"], ckpt["best_epoch"],
                                list(ckpt["history"]))
        self._restore_hook(ckpt)

    # ---- epochs ------------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> tuple[float, float]:
        self.model.train()
        sampler = self.train_loader.batch_sampler
        sampler.set_epoch(epoch)  # keeps a resume point when it is the epoch being resumed
        self.batches_done = sampler.state_dict()["batches_done"]
        total_loss = correct = counted = 0.0
        bar = tqdm(self.train_loader, desc=f"epoch {epoch + 1}/{self.max_epochs}", disable=not self.dist.is_main,
                   leave=False, mininterval=5.0, initial=self.batches_done, total=len(sampler))
        t0 = time.monotonic()
        frames = 0
        for batch in bar:
            frames += int(batch.lengths.sum())
            batch = self._prepare(batch)
            with self.precision.autocast():
                loss, c, n = self.step_fn(self.model, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss.item()} at step {self.state.step} "
                                         f"(utterances {batch.utts[:3]}...; precision {self.precision.name})")
            self.optimizer.zero_grad(set_to_none=True)
            if not self.precision.backward_and_step(loss, self.optimizer, self.model.parameters(), self.grad_clip):
                self.skipped_steps += 1
            self.scheduler.step()
            self.state.step += 1
            self.batches_done += 1
            total_loss += loss.item() * n
            correct += c
            counted += n
            if self.writer is not None and self.state.step % 20 == 0:
                self.writer.add_scalar("train/loss", loss.item(), self.state.step)
                self.writer.add_scalar("train/lr", self.scheduler.get_last_lr()[0], self.state.step)
            bar.set_postfix(loss=f"{total_loss / max(counted, 1):.3f}", acc=f"{100 * correct / max(counted, 1):.1f}")
            if self.save_every_steps and self.state.step % self.save_every_steps == 0:
                self.save("step")
            if self.stop_after_steps and self.state.step >= self.stop_after_steps:
                raise KeyboardInterrupt(f"stop_after_steps={self.stop_after_steps} reached (simulated interruption)")
        total_loss, correct, counted = all_reduce_sum([total_loss, correct, counted], self.dist)
        log.info("epoch %d: %.0f frames/s on this rank (precision %s%s)", epoch + 1,
                 frames / max(time.monotonic() - t0, 1e-9), self.precision.name,
                 f", {self.skipped_steps} steps skipped by the fp16 loss scaler so far" if self.skipped_steps else "")
        return total_loss / max(counted, 1), correct / max(counted, 1)

    @torch.no_grad()
    def validate(self) -> tuple[float, float]:
        self.model.eval()
        total_loss = correct = counted = 0.0
        for batch in self.valid_loader:
            with self.precision.autocast():
                loss, c, n = self.step_fn(self.raw_model, self._prepare(batch))
            total_loss += loss.item() * n
            correct += c
            counted += n
        total_loss, correct, counted = all_reduce_sum([total_loss, correct, counted], self.dist)
        return total_loss / max(counted, 1), correct / max(counted, 1)

    def _prepare(self, batch: Batch) -> Batch:
        """Pad to the shape policy's bounded shapes (if any) and move to the device."""
        if self.shapes is not None:
            batch = self.shapes(batch)
        return batch.to(self.device)

    def fit(self) -> TrainState:
        """Train until ``max_epochs`` epochs are complete; returns the final state."""
        self.try_resume()
        log_training_engines(self.raw_model, self.device, self.precision)
        for epoch in range(self.state.epoch, self.max_epochs):
            compiled_before = compilation_count()
            t0 = time.monotonic()
            train_loss, train_acc = self.train_epoch(epoch)
            valid_loss, valid_acc = self.validate()
            self.state.epoch = epoch + 1
            row = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc, "valid_loss": valid_loss,
                   "valid_acc": valid_acc, "lr": self.scheduler.get_last_lr()[0], "seconds": time.monotonic() - t0}
            self.state.history.append(row)
            row["compilations"] = compilation_count() - compiled_before  # torch.compile graphs built this epoch
            log.info("epoch %d/%d: train loss %.3f acc %.2f%% | valid loss %.3f acc %.2f%% | %.0f s", epoch + 1,
                     self.max_epochs, train_loss, 100 * train_acc, valid_loss, 100 * valid_acc, row["seconds"])
            if row["compilations"]:
                log.info("epoch %d: %d graphs compiled by torch.compile", epoch + 1, row["compilations"])
            if self.writer is not None:
                for k in ("train_loss", "train_acc", "valid_loss", "valid_acc"):
                    self.writer.add_scalar(k.replace("_", "/", 1), row[k], epoch + 1)
                self.writer.flush()
            improved = valid_acc > self.state.best_valid_acc
            if self.epoch_hook is not None:
                improved = self._hook_epoch_end(epoch + 1, row)
            if improved:
                self.state.best_valid_acc, self.state.best_epoch = valid_acc, epoch + 1
                if self.dist.is_main:
                    save_checkpoint(self.exp_dir / "model.pt", {"model": self.raw_model.state_dict(),
                                                                "epoch": epoch + 1, "valid_acc": valid_acc,
                                                                "precision": self.precision.name,
                                                                **self.extra_state})
            self.save(f"epoch-{epoch + 1}")
            if self.dist.is_main:
                atomic_write_text(self.exp_dir / "history.json", json.dumps(self.state.history, indent=1))
        if self.epoch_hook is not None and self.dist.is_main:
            self.epoch_hook.on_fit_end(self.exp_dir, self.extra_state)
        if self.writer is not None:
            self.writer.close()
        return self.state

    # ---- model selection hook (EpochHook; None: select by validation accuracy) ------------------------
    def _hook_state(self) -> dict[str, Any]:
        return {"epoch_hook": self.epoch_hook.state_dict()} if self.epoch_hook is not None else {}

    def _restore_hook(self, ckpt: dict[str, Any]) -> None:
        if self.epoch_hook is not None and "epoch_hook" in ckpt:
            self.epoch_hook.load_state_dict(ckpt["epoch_hook"])

    def _hook_epoch_end(self, epoch: int, row: dict[str, Any]) -> bool:
        """The hook's verdict on ``epoch`` (every rank computes it: same weights, same dev data); its
        metrics join the history row."""
        validation = {"valid_loss": row["valid_loss"], "valid_acc": row["valid_acc"]}
        improved, values = self.epoch_hook.on_epoch_end(epoch, self.raw_model, validation)
        row.update(values)
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(f"dev/{name}", value, epoch)
        return improved


def log_training_engines(model: nn.Module, device: torch.device, precision: Precision) -> None:
    """Log once which attention engine training uses (resolved for the device, precision and dropout)."""
    from speechattn.models.attention import planned_engines

    engines = planned_engines(model, device, precision.dtype or torch.float32, training=True, mark_logged=True)
    if engines:
        log.info("attention engine for training on %s, precision %s: %s", device.type, precision.name,
                 ", ".join(f"{e} ({n} layers)" for e, n in engines.items()))


def build_trainer(cfg: Any, raw_model: nn.Module, step: StepFn, train_loader: DataLoader, valid_loader: DataLoader,
                  exp_dir: Path, device: torch.device, dist_info: DistInfo,
                  extra_state: dict[str, Any], epoch_hook: EpochHook | None = None) -> Trainer:
    """The part of every task's setup that is the same: DDP wrapping, AdamW with warm-up + cosine decay
    (the ``optim`` group), and the Trainer with the ``trainer`` group's loop settings."""
    from torch.nn.parallel import DistributedDataParallel

    o, t = cfg.optim, cfg.trainer
    precision = Precision.create(t.get("precision", "auto"), device)
    shapes = _shape_policy(t, raw_model, train_loader, device, precision)
    if bool(t.get("compile", False)):
        names = compile_encoders(raw_model, str(t.get("compile_backend", "inductor")))
        log.info("trainer.compile: torch.compile of %s (static shapes, one per length bucket)", ", ".join(names))
    model = DistributedDataParallel(raw_model) if dist_info.enabled else raw_model
    optimizer = torch.optim.AdamW(raw_model.parameters(), lr=float(o.lr), weight_decay=float(o.weight_decay),
                                  betas=tuple(o.betas))
    total_steps = len(train_loader.batch_sampler) * int(t.max_epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_then_cosine(int(o.warmup_steps), total_steps, float(o.final_lr_ratio)))
    return Trainer(model, raw_model, step, optimizer, scheduler, train_loader, valid_loader, exp_dir, device,
                   dist_info, max_epochs=int(t.max_epochs), grad_clip=float(t.grad_clip),
                   save_every_steps=int(t.save_every_steps), keep_checkpoints=int(t.keep_checkpoints),
                   extra_state=extra_state, stop_after_steps=int(t.stop_after_steps), precision=precision,
                   shapes=shapes, epoch_hook=epoch_hook)


def _shape_policy(t: Any, raw_model: nn.Module, train_loader: DataLoader, device: torch.device,
                  precision: Precision) -> ShapePolicy | None:
    """``trainer.static_shapes``: true | false | auto (= on when something compiled sees the shapes:
    ``trainer.compile`` or the FlexAttention engine)."""
    from speechattn.models.attention import planned_engines

    setting = str(t.get("static_shapes", "auto")).lower()
    if setting not in ("auto", "true", "false"):
        raise ValueError(f"trainer.static_shapes must be auto, true or false, got {setting!r}")
    if setting == "auto":
        uses_flex = "flex" in planned_engines(raw_model, device, precision.dtype or torch.float32, training=True)
        on = bool(t.get("compile", False)) or uses_flex
    else:
        on = setting == "true"
    if not on:
        return None
    policy = ShapePolicy.from_sampler(train_loader.batch_sampler)
    log.info("static shapes: batches padded to %d (length, batch size) shapes: %s", len(policy.edges),
             list(zip(policy.edges, policy.capacities or [])))
    return policy
