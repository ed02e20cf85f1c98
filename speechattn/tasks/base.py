"""The task interface: what one kind of output (a label per frame, a label per utterance, ...) supplies.

The entry points know no task by name. ``speechattn-train`` asks the task (``cfg.task``) for its data, model
and training step and runs the one :class:`~speechattn.training.loop.Trainer`; ``speechattn-infer`` asks it
(the task stored in the checkpoint) for a :class:`Predictor` and an :class:`OutputWriter` and runs one loop
over ``wav.scp``; ``speechattn-score`` calls its :meth:`Task.score`. In the spirit of ESPnet's ``AbsTask``
(build_model, collate, required data) and SpeechBrain's ``Brain`` (a subclass supplies forward + objectives).

A task subclasses :class:`Task` in ``speechattn/tasks/<name>.py`` and registers itself with
:func:`speechattn.tasks.register_task`; :func:`speechattn.tasks.get_task` finds it by name.
"""
from __future__ import annotations

import contextlib
import json
import logging
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, ClassVar, Mapping, Sequence, TypeVar

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import Dataset, Sampler

from speechattn.data.audio import load_audio
from speechattn.data.dataset import Batch, Normaliser
from speechattn.data.kaldi_dir import KaldiDataError
from speechattn.features.cmvn import CmvnApplier
from speechattn.features.cmvn_setup import copy_cmvn_to_exp, make_normaliser
from speechattn.features.extract import FeatureConfig, compute_features
from speechattn.utils.atomic import atomic_open
from speechattn.utils.checkpoint import load_checkpoint
from speechattn.utils.precision import Precision, inference_precision

log = logging.getLogger(__name__)

# (model, batch) -> (loss, correct, counted): one training/validation step (speechattn.training.loop).
StepFn = Callable[[nn.Module, Batch], tuple[torch.Tensor, int, int]]
FAILED = "failed.txt"  # ``UTT REASON`` per utterance inference skipped (bad audio); empty when none
_P = TypeVar("_P", bound="Predictor")


@dataclass
class TrainingData:
    """What a task's data loading gives the generic training set-up."""

    train_set: Dataset
    valid_set: Dataset
    labels: list[str]       # class names (line index = class index), stored in the checkpoint
    input_dim: int          # feature dimension F
    selection: "DevSelection | None" = None  # select epochs by a task metric (None: validation accuracy)


@dataclass
class DevSelection:
    """Plain data from which the training set-up builds the task's dev metric for model selection
    (:mod:`speechattn.training.speaker_validation`; tasks do not import training).

    ``metric``: ``"dev_eer"`` (``trials`` ``(label, utt1, utt2)`` among ``feats``) or ``"dev_top1"``
    (``targets`` utt -> class, among the first ``num_speakers`` classes). ``feats``: whole dev utterances
    ``(T, F)``, normalised as in training (a dict, or with ``data.on_demand`` a mapping that reads each one
    from its ark when looked up: :mod:`speechattn.data.ondemand`).
    """

    metric: str
    feats: Mapping[str, np.ndarray]
    trials: list[tuple[int, str, str]] | None = None
    targets: Mapping[str, int] | None = None
    num_speakers: int | None = None


class Task(ABC):
    """One kind of supervised output. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]
    labels_file: ClassVar[str]          # class list copied into the experiment dir, e.g. "phones.txt"
    checkpoint_labels_key: ClassVar[str]  # key of that list in model.pt, e.g. "phones"

    # ------------------------------------------------------------------------------------------ training
    @abstractmethod
    def labels_path(self, cfg: DictConfig) -> Path:
        """The class list of this experiment (read with :meth:`read_labels`)."""

    @abstractmethod
    def read_labels(self, path: Path) -> list[str]:
        """Class names, line index = class index; errors name the file and line."""

    def write_experiment_files(self, cfg: DictConfig, exp_dir: Path) -> None:
        """Copy into ``exp_dir`` what inference needs to process new audio exactly as the training data
        was: the class list, the feature config (``feats.yaml``) and the CMVN statistics."""
        train_dir = Path(cfg.data.train_dir)
        exp_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.labels_path(cfg), exp_dir / self.labels_file)
        feats_yaml = train_dir / "feats.yaml"
        if not feats_yaml.exists():
            raise FileNotFoundError(f"{feats_yaml}: missing (written by speechattn-compute-features, stage 1)")
        shutil.copyfile(feats_yaml, exp_dir / "feats.yaml")
        copy_cmvn_to_exp(cfg.cmvn, train_dir, exp_dir)

    def normalisers(self, cfg: DictConfig) -> tuple[CmvnApplier, CmvnApplier]:
        """CMVN of the training and validation dirs, both with the training dir's global statistics."""
        train_dir, valid_dir = Path(cfg.data.train_dir), Path(cfg.data.valid_dir)
        pipes = bool(cfg.get("allow_pipes", False))
        return (make_normaliser(cfg.cmvn, train_dir, train_dir, allow_pipes=pipes),
                make_normaliser(cfg.cmvn, valid_dir, train_dir, allow_pipes=pipes))

    @abstractmethod
    def load_data(self, cfg: DictConfig, labels: list[str]) -> TrainingData:
        """Training and validation datasets (features in memory, normalised, with targets)."""

    @abstractmethod
    def batch_samplers(self, cfg: DictConfig, data: TrainingData, rank: int, world_size: int
                       ) -> tuple[Sampler, Sampler]:
        """Batch samplers of the training (shuffled, seeded) and validation sets."""

    @abstractmethod
    def build_model(self, config: Mapping[str, Any], input_dim: int, num_labels: int) -> nn.Module:
        """The model from a (resolved) experiment config: used by training and by :class:`Predictor`."""

    @abstractmethod
    def make_step(self, cfg: DictConfig) -> StepFn:
        """The training/validation step: loss, correct and counted predictions of a batch."""

    def describe_model(self, cfg: DictConfig, model: nn.Module) -> str:
        return f"model {cfg.model.name}"

    # ----------------------------------------------------------------------------------------- inference
    predictor_class: ClassVar[type["Predictor"]]

    def load_predictor(self, exp_dir: str | Path, checkpoint: str = "model.pt", device: torch.device | str = "cpu",
                       data_dir: str | Path | None = None, precision: str | None = None) -> "Predictor":
        return self.predictor_class.from_exp_dir(exp_dir, checkpoint, device, data_dir, precision=precision)

    @abstractmethod
    def output_writer(self, out_dir: Path, **options: Any) -> "OutputWriter":
        """The writer of this task's inference outputs in ``out_dir``; ``options`` are the task's output
        options (phone: ``textgrid``)."""

    # ------------------------------------------------------------------------------------------- scoring
    @abstractmethod
    def score(self, cfg: DictConfig) -> dict[str, Any]:
        """Score ``cfg.hyp_dir`` against ``cfg.ref_dir``; writes ``cfg.output_dir/scores.json`` (which the
        results table reads) and pictures; returns the scores."""


@dataclass
class Predictor:
    """A trained model with its feature pipeline and class list, rebuilt from an experiment directory.

    Subclasses name their task (``task_name``) and add the task's predictions (:meth:`predict_file`).
    """

    model: nn.Module
    labels: list[str]
    feature_cfg: FeatureConfig
    normalise: Normaliser     # (utt, feats (T, F)) -> (T, F): a CmvnApplier from the experiment's statistics
    config: dict[str, Any]
    device: torch.device
    precision: Precision | None = None  # autocast of the model's forward; None = fp32

    task_name: ClassVar[str]

    @classmethod
    def from_exp_dir(cls: type[_P], exp_dir: str | Path, checkpoint: str = "model.pt",
                     device: torch.device | str = "cpu", data_dir: str | Path | None = None,
                     precision: str | None = None) -> _P:
        """Load ``exp_dir/checkpoint``; ``data_dir`` is only needed for per-speaker CMVN. ``precision``
        overrides the checkpoint's (the ``trainer.precision`` it was trained with; fp32 for older ones)."""
        from speechattn.tasks import get_task

        exp_dir = Path(exp_dir)
        ckpt = load_checkpoint(exp_dir / checkpoint, map_location=device)
        config = ckpt["config"]
        if config.get("task", "phone") != cls.task_name:
            raise ValueError(f"{exp_dir / checkpoint}: not a {cls.task_name} model (task={config.get('task')!r})")
        task = get_task(cls.task_name)
        labels = list(ckpt[task.checkpoint_labels_key])
        model = task.build_model(config, int(ckpt["input_dim"]), len(labels))
        model.load_state_dict(ckpt["model"])
        model.to(device).eval()
        normalise = make_normaliser({**config["cmvn"], "stats": None}, data_dir, exp_dir)
        device = torch.device(device)
        prec = inference_precision(ckpt, precision, device)
        log.info("inference precision: %s (%s)", prec.name, "override" if precision is not None else "checkpoint")
        return cls(model, labels, read_feature_config(exp_dir), normalise, config, device, prec)

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """Context of every model forward: the predictor's autocast (nothing in fp32)."""
        return self.precision.autocast() if self.precision is not None else contextlib.nullcontext()

    @property
    def sample_rate(self) -> int:
        return self.feature_cfg.sample_rate

    def features(self, waveform: torch.Tensor, utt: str = "") -> torch.Tensor:
        """waveform (N,) at ``sample_rate`` -> normalised features (T, F)."""
        feats = compute_features(waveform, self.feature_cfg.sample_rate, self.feature_cfg).numpy()
        return torch.from_numpy(np.ascontiguousarray(self.normalise(utt, feats), dtype=np.float32))

    def predict_waveform(self, waveform: torch.Tensor, utt: str = "", **options: Any) -> Any:
        """The task's prediction for one utterance's audio ``(N,)`` at ``sample_rate``, given to its
        :class:`OutputWriter`."""
        return self.predict_batch([self.features(waveform, utt)])[0]

    def predict_batch(self, feats: Sequence[torch.Tensor]) -> list[Any]:
        """Predictions of several utterances from their normalised features ``[(T_i, F)]`` (each ``T_i >=
        1``), in one padded forward pass; each equals the utterance's prediction alone (the models ignore
        padding) up to floating-point summation order. A list of one is the one-at-a-time forward."""
        raise NotImplementedError

    def batchable(self, **options: Any) -> bool:
        """Whether :meth:`predict_batch` gives what :meth:`predict_waveform` gives with these options (the
        driver predicts one utterance at a time otherwise)."""
        return True

    def predict_file(self, spec: str, utt: str, *, where: str, allow_pipes: bool = False, **options: Any) -> Any:
        """:meth:`predict_waveform` of the audio ``spec`` (a ``wav.scp`` entry, ``where`` its ``file:line``).
        Raises :class:`~speechattn.data.audio.AudioError` for unusable audio."""
        waveform = load_audio(spec, self.sample_rate, allow_pipes=allow_pipes, where=where)
        return self.predict_waveform(waveform, utt, **options)

    def file_features(self, spec: str, utt: str, *, where: str, allow_pipes: bool = False,
                      **options: Any) -> torch.Tensor | None:
        """Features ``(T, F)`` of a ``wav.scp`` entry for :meth:`predict_batch`, or None when the entry must
        be predicted on its own with :meth:`predict_file` (e.g. a long recording labelled in chunks).
        Raises :class:`~speechattn.data.audio.AudioError` for unusable audio."""
        return self.features(load_audio(spec, self.sample_rate, allow_pipes=allow_pipes, where=where), utt)


def pad_features(feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Utterances' features ``[(T_i, F)]`` -> zero-padded ``(B, max T_i, F)`` and their lengths ``(B,)``.

    Example:
        >>> x, lengths = pad_features([torch.ones(3, 2), torch.ones(1, 2)])
        >>> x.shape, lengths.tolist(), x[1, 1:].abs().sum().item()
        (torch.Size([2, 3, 2]), [3, 1], 0.0)
    """
    lengths = torch.tensor([f.shape[0] for f in feats], dtype=torch.long)
    return torch.nn.utils.rnn.pad_sequence(list(feats), batch_first=True), lengths


def read_feature_config(exp_dir: Path) -> FeatureConfig:
    """The experiment's ``feats.yaml`` (copied from the training dir at training time)."""
    feats_yaml = exp_dir / "feats.yaml"
    if not feats_yaml.exists():
        raise FileNotFoundError(f"{feats_yaml}: missing (written by training from the train dir's feats.yaml)")
    return FeatureConfig.from_config(OmegaConf.load(feats_yaml))


class OutputWriter(ABC):
    """Writes a task's inference outputs, each under a temporary name renamed into place when the ``with``
    block ends without an error (discarded otherwise).

    ``files`` are the output names. The *first* (the primary output, one ``UTT ...`` line per utterance) is
    opened first and so renamed last: its presence marks a complete run
    (:func:`speechattn.inference.driver.outputs_complete`).
    """

    files: ClassVar[tuple[str, ...]]

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self._stack = contextlib.ExitStack()

    def _open(self, name: str, mode: str = "w") -> IO:
        return self._stack.enter_context(atomic_open(self.out_dir / name, mode))

    def __enter__(self) -> "OutputWriter":
        self._stack.__enter__()
        self.open()
        return self

    def __exit__(self, *exc: Any) -> bool | None:
        return self._stack.__exit__(*exc)

    @abstractmethod
    def open(self) -> None:
        """Open the temporary files (the primary output first, see :meth:`_open`)."""

    @abstractmethod
    def write(self, utt: str, prediction: Any) -> int:
        """Write one utterance's prediction; returns its number of feature frames (for the log)."""


# ------------------------------------------------------------------------------------------ scoring helpers

def check_no_failures(hyp_dir: Path, what: str) -> None:
    """Scores over fewer utterances than the reference would mislead: ``failed.txt`` must be empty."""
    failed = hyp_dir / FAILED
    if failed.exists() and failed.stat().st_size:
        count = sum(1 for line in failed.read_text().splitlines() if line.strip())
        raise KaldiDataError(f"{failed}:1: {count} test utterance(s) were not {what}; fix them before scoring")


def experiment_facts(exp_dir: Path) -> dict[str, Any]:
    """Training facts for the results table: epochs, best dev accuracy, training time, parameters."""
    facts: dict[str, Any] = {"exp_dir": str(exp_dir)}
    history_path = exp_dir / "history.json"
    if history_path.exists():
        history = json.loads(history_path.read_text())
        facts["epochs"] = len(history)
        facts["best_valid_accuracy"] = round(100 * max(r["valid_acc"] for r in history), 2)
        facts["train_seconds"] = round(sum(r["seconds"] for r in history), 1)
    facts["num_params"] = int(load_checkpoint(exp_dir / "model.pt").get("num_params", 0))
    return facts
