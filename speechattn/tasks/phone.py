"""Phone classification: one phone label per 10 ms frame (sequence labelling).

Data: features of ``data.train_dir`` / ``data.valid_dir`` (``feats.scp``) with frame labels
(``data.labels``, ``UTT PH PH ...``), classes from ``data.lang_dir/phones.txt``; held in memory, or with
``data.on_demand=true`` read from the arks when used (only an index in memory: corpora larger than RAM).
Model: an encoder from the ``model`` group + a per-frame classifier
(:func:`speechattn.models.frame_classifier.build_phone_model`).
Loss: frame-level cross entropy over real (non-padded) frames, optionally label-smoothed, with SpecAugment
masks in training. Inference writes ``frames.txt`` (``UTT PH PH ...``) and ``phones.ctm``. A
``data.lang_dir/score_map`` (training phone -> scoring class) is copied into the experiment and applied
by the scorer (:mod:`speechattn.tasks.phone_scoring`).
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from speechattn.data.alignments import read_phone_table
from speechattn.data.dataset import IGNORE_INDEX, Batch, FrameLabelDataset, Normaliser, load_features
from speechattn.data.frame_labels import labelled_utterances, read_frame_labels
from speechattn.data.ondemand import ArkIndex, OnDemandFeatureDataset, write_label_ark
from speechattn.data.phone_data_dir import SCORE_MAP
from speechattn.data.sampler import LengthBucketBatchSampler
from speechattn.data.textgrid import write_frame_labels_textgrid
from speechattn.features.augment import spec_augment
from speechattn.models.frame_classifier import FrameClassifier, build_phone_model
from speechattn.tasks import register_task
from speechattn.tasks.base import OutputWriter, StepFn, Task, TrainingData
from speechattn.tasks.longform import runs_to_ctm
from speechattn.tasks.phone_predictor import PhoneLabeler

log = logging.getLogger(__name__)

TEXTGRID_DIR, TEXTGRID_SCP = "textgrids", "textgrids.scp"
FRAME_SHIFT_S, FRAME_LENGTH_S = 0.010, 0.025  # the toolkit's frames (docs/architecture.md)

__all__ = ["PhoneTask", "frame_loss", "frame_correct", "make_phone_step", "PhoneOutputWriter"]


def frame_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over real frames. logits: (B, T, C); targets: (B, T) with IGNORE_INDEX on padding."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX,
                           label_smoothing=label_smoothing)


@torch.no_grad()
def frame_correct(logits: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
    """(correct, counted) frames of a batch, padding excluded."""
    valid = targets != IGNORE_INDEX
    return int(((logits.argmax(-1) == targets) & valid).sum()), int(valid.sum())


def make_phone_step(trainer_cfg: Mapping[str, Any]) -> StepFn:
    """``(model, batch) -> (loss, correct frames, counted frames)``; SpecAugment masks only in training.

    Time masks hide input frames whose labels are still scored: the model must infer them from context.
    """
    smoothing = float(trainer_cfg["label_smoothing"])
    augment = bool(trainer_cfg["spec_augment"])
    masks = dict(freq_mask_param=int(trainer_cfg["freq_mask_param"]),
                 num_freq_masks=int(trainer_cfg["num_freq_masks"]),
                 time_mask_param=int(trainer_cfg.get("time_mask_param", 0)),
                 num_time_masks=int(trainer_cfg.get("num_time_masks", 0)))

    def step(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, int, int]:
        feats = batch.feats
        if augment and model.training:
            feats = spec_augment(feats, batch.lengths, **masks)
        logits = model(feats, batch.lengths)
        loss = frame_loss(logits, batch.targets, smoothing if model.training else 0.0)
        correct, counted = frame_correct(logits, batch.targets)
        return loss, correct, counted

    return step


def load_split(data_dir: Path, cfg: DictConfig, phones: list[str], normalise: Normaliser) -> FrameLabelDataset:
    """Features + frame labels of one data directory (optionally only its first ``data.max_utts``)."""
    labels = read_frame_labels(data_dir, cfg.data.labels, phones)
    utts = labelled_utterances(data_dir, cfg.data.labels, labels, bool(cfg.data.get("drop_unlabelled", False)))
    if cfg.data.max_utts:
        utts = utts[: int(cfg.data.max_utts)]
    feats = load_features(data_dir, normalise, utts=utts, allow_pipes=bool(cfg.get("allow_pipes", False)))
    return FrameLabelDataset(feats, {u: labels[u] for u in utts}, where=str(data_dir / cfg.data.labels))


def load_split_on_demand(data_dir: Path, cfg: DictConfig, phones: list[str], normalise: Normaliser
                         ) -> OnDemandFeatureDataset:
    """The same utterances and items as :func:`load_split` with only an index in memory
    (``data.on_demand=true``): features and frame labels are read from their arks when an item is used.

    The frame labels are converted once into ``data_dir/frame_label_ids.{ark,scp}`` (ids of ``phones``;
    redone when the label file or the phone table changes: :func:`write_label_ark`).
    """
    label_index = ArkIndex.from_scp(write_label_ark(data_dir, phones, cfg.data.labels))
    features = ArkIndex.from_data_dir(data_dir)
    utts = features.utts
    if bool(cfg.data.get("drop_unlabelled", False)):
        labelled = set(label_index.utts)
        kept = [u for u in utts if u in labelled]
        if len(kept) < len(utts):
            log.warning("%s: %d of %d utterances have no labels and are left out (data.drop_unlabelled=true)",
                        data_dir, len(utts) - len(kept), len(utts))
        utts = kept
    if cfg.data.max_utts:
        utts = utts[: int(cfg.data.max_utts)]
    if len(utts) < len(features):
        features = ArkIndex.from_data_dir(data_dir, utts=utts)
    # Unless dropped above, an utterance without labels is an error naming the label scp (_align).
    return OnDemandFeatureDataset(features, frame_labels=label_index, normalise=normalise)


class PhoneOutputWriter(OutputWriter):
    """``frames.txt`` (``UTT PH PH ...``, one phone per 10 ms frame; the primary output) and ``phones.ctm``
    (``UTT 1 START DUR PHONE``, runs of equal frame labels merged).

    With ``textgrid=True`` also one Praat TextGrid per utterance, ``textgrids/<UTT>.TextGrid`` (tier
    ``phones``, SIL as empty intervals as MFA writes them;
    :func:`speechattn.data.textgrid.write_frame_labels_textgrid`), listed in ``textgrids.scp`` (``UTT PATH``).
    A TextGrid spans the frames' windows, ``(T - 1) · 10 + 25`` ms: the recording as the features saw it (up
    to one frame shift shorter than the audio).
    """

    files = ("frames.txt", "phones.ctm")

    def __init__(self, out_dir: Path, textgrid: bool = False) -> None:
        super().__init__(out_dir)
        self.textgrid = textgrid
        if textgrid:
            self.files = (*self.files, TEXTGRID_SCP)

    def open(self) -> None:
        self._frames = self._open("frames.txt")
        self._ctm = self._open("phones.ctm")
        if self.textgrid:
            self._textgrids = self._open(TEXTGRID_SCP)
            (self.out_dir / TEXTGRID_DIR).mkdir(parents=True, exist_ok=True)

    def write(self, utt: str, prediction: list[str]) -> int:
        self._frames.write(utt + " " + " ".join(prediction) + "\n")
        self._ctm.writelines(line + "\n" for line in runs_to_ctm(utt, prediction))
        if self.textgrid and prediction:
            path = self.out_dir / TEXTGRID_DIR / f"{utt}.TextGrid"
            duration = round((len(prediction) - 1) * FRAME_SHIFT_S + FRAME_LENGTH_S, 6)
            write_frame_labels_textgrid(path, prediction, duration)
            self._textgrids.write(f"{utt} {path}\n")
        return len(prediction)


@register_task("phone")
class PhoneTask(Task):
    labels_file = "phones.txt"
    checkpoint_labels_key = "phones"
    predictor_class = PhoneLabeler

    def labels_path(self, cfg: DictConfig) -> Path:
        return Path(cfg.data.lang_dir) / "phones.txt"

    def write_experiment_files(self, cfg: DictConfig, exp_dir: Path) -> None:
        """The base files, plus the lang dir's ``score_map`` when it has one (a stale copy is removed)."""
        super().write_experiment_files(cfg, exp_dir)
        score_map = Path(cfg.data.lang_dir) / SCORE_MAP
        if score_map.is_file():
            shutil.copyfile(score_map, exp_dir / SCORE_MAP)
        else:
            (exp_dir / SCORE_MAP).unlink(missing_ok=True)

    def read_labels(self, path: Path) -> list[str]:
        return read_phone_table(path)

    def load_data(self, cfg: DictConfig, labels: list[str]) -> TrainingData:
        train_norm, valid_norm = self.normalisers(cfg)
        on_demand = bool(cfg.data.get("on_demand", False))
        load = load_split_on_demand if on_demand else load_split
        train_set = load(Path(cfg.data.train_dir), cfg, labels, train_norm)
        valid_set = load(Path(cfg.data.valid_dir), cfg, labels, valid_norm)
        input_dim = int(train_set[0].feats.shape[1])
        log.info("train: %d utterances, %d frames; valid: %d utterances, %d frames; %d-dim features, %d classes; "
                 "features %s", len(train_set), int(sum(train_set.lengths())), len(valid_set),
                 int(sum(valid_set.lengths())), input_dim, len(labels),
                 "read on demand (data.on_demand=true)" if on_demand else "in memory")
        return TrainingData(train_set, valid_set, labels, input_dim)

    def batch_samplers(self, cfg: DictConfig, data: TrainingData, rank: int, world_size: int
                       ) -> tuple[LengthBucketBatchSampler, LengthBucketBatchSampler]:
        t = cfg.trainer
        train = LengthBucketBatchSampler(data.train_set.lengths(), int(t.max_frames_per_batch),
                                         num_buckets=int(t.num_buckets), shuffle=True, seed=int(t.seed),
                                         rank=rank, world_size=world_size)
        valid = LengthBucketBatchSampler(data.valid_set.lengths(), int(t.max_frames_per_batch), shuffle=False,
                                         rank=rank, world_size=world_size)
        return train, valid

    def build_model(self, config: Mapping[str, Any], input_dim: int, num_labels: int) -> FrameClassifier:
        return build_phone_model(config["model"], input_dim, num_labels)

    def make_step(self, cfg: DictConfig) -> StepFn:
        return make_phone_step(cfg.trainer)

    def output_writer(self, out_dir: Path, textgrid: bool = False) -> PhoneOutputWriter:
        return PhoneOutputWriter(out_dir, textgrid=textgrid)

    def score(self, cfg: DictConfig) -> dict[str, Any]:
        from speechattn.tasks.phone_scoring import score_phone
        return score_phone(cfg)
