"""Speaker identification and verification: one speaker label per utterance (``--config-name train_sid``).

Data: features of ``data.train_dir`` / ``data.valid_dir`` (``feats.scp``, mean-only CMN by default), one
speaker label per utterance from ``utt2spk``, class indices from ``data.speakers`` (``speakers.txt``: the
closed training speaker set, line index = class index; default ``<train_dir>/speakers.txt``).

Training sees a random 2-3 s crop of every utterance per epoch (``trainer.crop_min_frames`` ..
``crop_max_frames``, :mod:`speechattn.data.crops`: a crop depends only on (seed, epoch, utterance), so a
resumed run draws the crops the uninterrupted run would have), with SpecAugment frequency and time masks.
Utterances shorter than the crop are used whole: the batch is padded and the model masks the padding.
Validation uses whole utterances. Features are held in memory, or with ``data.on_demand=true`` read from
their arks when an item is used (:class:`speechattn.data.ondemand.OnDemandFeatures`: only an index in
memory, for corpora larger than RAM such as VoxCeleb1): the same crops, batches and losses either way.

Model (:func:`speechattn.models.speaker.build_sid_model`): optional frame stacking -> the ``model`` group's
encoder -> pooling -> embedding -> AAM-softmax or softmax (the ``sid`` group). Inference writes
``predictions.txt`` (``UTT SPEAKER SCORE``) and ``embeddings.scp``/``.ark``; scoring
(:mod:`speechattn.tasks.sid_scoring`) gives identification top-1/top-5 and verification EER/minDCF.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import kaldiio
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from speechattn.data.crops import SpeakerBatchSampler, SpeakerCropDataset
from speechattn.data.dataset import Batch, Normaliser, load_features
from speechattn.data.kaldi_dir import read_table
from speechattn.data.ondemand import ArkIndex, OnDemandFeatures, feature_subset, feature_union, frame_counts
from speechattn.data.sampler import LengthBucketBatchSampler
from speechattn.data.speakers import read_speaker_targets, read_speakers
from speechattn.features.augment import spec_augment
from speechattn.models.speaker import SpeakerModel, build_sid_model
from speechattn.tasks import register_task
from speechattn.tasks.base import DevSelection, OutputWriter, StepFn, Task, TrainingData
from speechattn.tasks.sid_augment import AugmentedCropDataset, augment_config, build_augmenter, head_classes
from speechattn.tasks.sid_augment import log_crop_cost, prepare_rir_set
from speechattn.tasks.sid_predictor import SpeakerEmbedder, SpeakerPrediction

log = logging.getLogger(__name__)

__all__ = ["SidTask", "make_sid_step", "SidOutputWriter"]

PREDICTIONS = "predictions.txt"
EMBEDDINGS_ARK = "embeddings.ark"
EMBEDDINGS_SCP = "embeddings.scp"


def _unwrap(model: nn.Module) -> SpeakerModel:
    return model.module if isinstance(model, DistributedDataParallel) else model


def make_sid_step(trainer_cfg: Mapping[str, Any]) -> StepFn:
    """Step function ``(model, batch) -> (loss, correct, counted)`` for the training loop.

    Loss: cross entropy of the head's logits with the margin applied (AAM); accuracy: top-1 of the
    margin-free scores (what inference predicts). SpecAugment masks only in training mode.
    """
    augment = bool(trainer_cfg.get("spec_augment", True))
    masks = dict(freq_mask_param=int(trainer_cfg.get("freq_mask_param", 10)),
                 num_freq_masks=int(trainer_cfg.get("num_freq_masks", 2)),
                 time_mask_param=int(trainer_cfg.get("time_mask_param", 20)),
                 num_time_masks=int(trainer_cfg.get("num_time_masks", 2)))

    def step(model: nn.Module, batch: Batch) -> tuple[Tensor, int, int]:
        feats = batch.feats
        if augment and model.training:
            feats = spec_augment(feats, batch.lengths, **masks)
        embeddings = model(feats, batch.lengths)
        head = _unwrap(model)
        loss = F.cross_entropy(head.logits(embeddings, batch.targets), batch.targets)
        with torch.no_grad():
            scores = head.logits(embeddings.detach())
            if not model.training:  # validation audio is unperturbed: original-speed classes only
                scores = scores[:, : getattr(head, "num_original_speakers", scores.shape[1])]
            predicted = scores.argmax(dim=-1)
        correct = int((predicted == batch.targets).sum())
        return loss, correct, int(batch.targets.numel())

    return step


Features = Mapping[str, np.ndarray]  # utt -> normalised (T, F): a dict in memory or OnDemandFeatures


def _load_split(data_dir: Path, cfg: DictConfig, speakers: list[str], normalise: Normaliser
                ) -> tuple[Features, dict[str, int]]:
    """Features (normalised) and speaker class indices of one data dir (optionally its first ``data.max_utts``).

    ``data.on_demand``: the features stay in their arks (an :class:`OnDemandFeatures` over ``feats.scp`` +
    ``utt2num_frames``, same keys, order and values as the in-memory dict); each lookup reads one matrix.
    """
    if bool(cfg.data.get("on_demand", False)):
        index = ArkIndex.from_data_dir(data_dir)
        if cfg.data.get("max_utts"):
            index = index.select(range(min(int(cfg.data.max_utts), len(index))))
        targets = read_speaker_targets(data_dir, index.utts, speakers)
        return OnDemandFeatures(index, normalise), targets
    utts = list(read_table(data_dir / "feats.scp"))
    if cfg.data.get("max_utts"):
        utts = utts[: int(cfg.data.max_utts)]
    targets = read_speaker_targets(data_dir, utts, speakers)  # before reading features: fail fast
    feats = load_features(data_dir, normalise, utts=utts, allow_pipes=bool(cfg.get("allow_pipes", False)))
    return feats, targets


def _select_by(cfg: DictConfig) -> str:
    """``trainer.select_by``; ``auto``: dev EER for verification data (a test trial list), else dev top-1."""
    select_by = str(cfg.trainer.get("select_by", "valid_acc"))
    if select_by == "auto":
        return "dev_eer" if cfg.data.get("trials") else "dev_top1"
    if select_by not in ("dev_eer", "dev_top1", "valid_acc"):
        raise ValueError(f"trainer.select_by: auto | dev_eer | dev_top1 | valid_acc, got {select_by!r}")
    return select_by


def _dev_selection(cfg: DictConfig, labels: list[str], train_feats: Features, train_targets: dict[str, int],
                   valid_feats: Features, valid_targets: dict[str, int]) -> tuple[DevSelection | None, set[int]]:
    """The dev metric that chooses ``model.pt`` and the classes held back from training for it.

    ``dev_top1``: the validation utterances. ``dev_eer``: ``trainer.dev_speakers`` (a fraction, at least 2
    speakers) of the training speakers are held back (:func:`speechattn.data.dev_trials.hold_out_speakers`,
    seeded, order-independent); all pairs of their training and validation utterances (at most
    ``trainer.dev_utts_per_speaker`` of each, seeded) are the dev trials.
    On-demand features stay on disk: the dev metric reads them batch by batch each epoch.
    """
    metric = _select_by(cfg)
    if metric == "valid_acc":
        return None, set()
    if metric == "dev_top1":
        return DevSelection("dev_top1", valid_feats, targets=valid_targets, num_speakers=len(labels)), set()
    from speechattn.data.dev_trials import dev_trials, held_out_speaker_count, hold_out_speakers, limit_utterances

    spk2utt: dict[str, list[str]] = {}
    for feats, targets in ((train_feats, train_targets), (valid_feats, valid_targets)):
        for utt in feats:
            spk2utt.setdefault(labels[targets[utt]], []).append(utt)
    if len(spk2utt) < 4:  # 2 held back + 2 to train on at least
        log.warning("model selection by dev EER needs at least 4 training speakers, %d here: dev top-1 instead",
                    len(spk2utt))
        return DevSelection("dev_top1", valid_feats, targets=valid_targets, num_speakers=len(labels)), set()
    count = held_out_speaker_count(len(spk2utt), float(cfg.trainer.get("dev_speakers", 0.1)))
    _, held = hold_out_speakers(spk2utt, count)
    # Every held-back speaker stays out of training; only a bounded number of its utterances make trials.
    dev_utts = limit_utterances(held, int(cfg.trainer.get("dev_utts_per_speaker", 0)))
    trials = dev_trials(dev_utts)
    chosen = {u for utts in dev_utts.values() for u in utts}
    feats = feature_union([feature_subset(src, [u for u in src if u in chosen]) for src in (train_feats, valid_feats)])
    log.info("model selection by dev EER: %d training speakers held back (%d utterances, %d trials, %d target)",
             len(held), len(feats), len(trials), sum(t[0] for t in trials))
    return DevSelection("dev_eer", feats, trials=trials), {labels.index(s) for s in held}


def _augmented_train_set(cfg: DictConfig, labels: list[str], utts: list[str], targets: dict[str, int],
                         normalise: Normaliser, crop: tuple[int, int]) -> AugmentedCropDataset:
    """Waveform crops of ``utts`` augmented on the fly (``augment`` group; :mod:`speechattn.tasks.sid_augment`)."""
    from speechattn.tasks.base import read_feature_config

    train_dir = Path(cfg.data.train_dir)
    prepare_rir_set(cfg)
    augmenter, bank = build_augmenter(cfg, train_dir, utts, allow_pipes=bool(cfg.get("allow_pipes", False)))
    dataset = AugmentedCropDataset(bank, targets, read_feature_config(train_dir), normalise, augmenter,
                                   num_speakers=len(labels), crop=crop, seed=int(cfg.trainer.seed))
    log_crop_cost(dataset)
    return dataset


class SidOutputWriter(OutputWriter):
    """``predictions.txt`` (``UTT SPEAKER SCORE``; the primary output), ``embeddings.scp`` and
    ``embeddings.ark`` (one Kaldi float vector per utterance, kaldiio; the scp names the ark by its
    absolute path, so it works from any directory)."""

    files = (PREDICTIONS, EMBEDDINGS_SCP, EMBEDDINGS_ARK)

    def open(self) -> None:
        self._predictions = self._open(PREDICTIONS)
        self._scp = self._open(EMBEDDINGS_SCP)
        self._ark_path = (self.out_dir / EMBEDDINGS_ARK).resolve()
        self._ark = self._open(EMBEDDINGS_ARK, "wb")

    def write(self, utt: str, prediction: SpeakerPrediction) -> int:
        position = self._ark.tell() + len(utt.encode("utf-8")) + 1  # the vector starts after "UTT "
        kaldiio.save_ark(self._ark, {utt: prediction.embedding.numpy()})
        self._scp.write(f"{utt} {self._ark_path}:{position}\n")
        self._predictions.write(f"{utt} {prediction.speaker} {prediction.score:.4f}\n")
        return prediction.num_frames


@register_task("sid")
class SidTask(Task):
    labels_file = "speakers.txt"
    checkpoint_labels_key = "speakers"
    predictor_class = SpeakerEmbedder

    def labels_path(self, cfg: DictConfig) -> Path:
        return Path(cfg.data.get("speakers") or Path(cfg.data.train_dir) / "speakers.txt")

    def read_labels(self, path: Path) -> list[str]:
        return read_speakers(path)

    def load_data(self, cfg: DictConfig, labels: list[str]) -> TrainingData:
        t = cfg.trainer
        on_demand = bool(cfg.data.get("on_demand", False))
        aug_cfg = augment_config(cfg)
        if on_demand and aug_cfg.enabled:  # SpeechBank holds every training recording in memory
            raise ValueError("data.on_demand=true does not work with augment=speaker (waveform augmentation holds "
                             "the training recordings in memory): use augment=none or data.on_demand=false")
        train_norm, valid_norm = self.normalisers(cfg)
        train_feats, train_targets = _load_split(Path(cfg.data.train_dir), cfg, labels, train_norm)
        valid_feats, valid_targets = _load_split(Path(cfg.data.valid_dir), cfg, labels, valid_norm)
        crop = (int(t.crop_min_frames), int(t.crop_max_frames))
        selection, held = _dev_selection(cfg, labels, train_feats, train_targets, valid_feats, valid_targets)
        if held:  # held-back speakers: dev trials only, never trained on (nor used as babble)
            train_feats = feature_subset(train_feats, [u for u in train_feats if train_targets[u] not in held])
            valid_feats = feature_subset(valid_feats, [u for u in valid_feats if valid_targets[u] not in held])
        train_set: SpeakerCropDataset | AugmentedCropDataset
        if aug_cfg.enabled:
            train_set = _augmented_train_set(cfg, labels, list(train_feats), train_targets, train_norm, crop)
        else:
            train_set = SpeakerCropDataset(train_feats, train_targets, crop=crop, seed=int(t.seed))
        valid_set = SpeakerCropDataset(valid_feats, valid_targets, crop=None)
        input_dim = int(train_feats[next(iter(train_feats))].shape[1])  # one matrix read
        log.info("train: %d utterances of %d speakers (%d in the speaker list), %d frames; valid: %d utterances; "
                 "%d-dim features %s", len(train_set), len({train_targets[u] for u in train_feats}), len(labels),
                 int(frame_counts(train_feats).sum()), len(valid_set), input_dim,
                 "read on demand (data.on_demand=true)" if on_demand else "in memory")
        always, sometimes = train_set.num_shorter_than(crop[0]), train_set.num_shorter_than(crop[1])
        if sometimes:
            log.warning("%d of %d training utterances are shorter than the %d-frame minimum crop and %d shorter "
                        "than the %d-frame maximum: these are used whole when shorter than the drawn crop (padded "
                        "in the batch, padding masked)", always, len(train_set), crop[0], sometimes, crop[1])
        return TrainingData(train_set, valid_set, labels, input_dim, selection)

    def batch_samplers(self, cfg: DictConfig, data: TrainingData, rank: int, world_size: int
                       ) -> tuple[SpeakerBatchSampler, LengthBucketBatchSampler]:
        t = cfg.trainer
        train = SpeakerBatchSampler(data.train_set, int(t.max_frames_per_batch), max_batch_size=t.get("max_batch_size"),
                                    num_buckets=int(t.num_buckets), shuffle=True, seed=int(t.seed), rank=rank,
                                    world_size=world_size)
        valid = LengthBucketBatchSampler(data.valid_set.lengths(), int(t.valid_max_frames_per_batch),
                                         max_batch_size=t.get("max_batch_size"), shuffle=False, rank=rank,
                                         world_size=world_size)
        return train, valid

    def build_model(self, config: Mapping[str, Any], input_dim: int, num_labels: int) -> SpeakerModel:
        model_cfg, sid_cfg = config["model"], config["sid"]
        if isinstance(model_cfg, DictConfig):
            model_cfg = OmegaConf.to_container(model_cfg, resolve=True)
            sid_cfg = OmegaConf.to_container(sid_cfg, resolve=True)
        model = build_sid_model(model_cfg, sid_cfg, input_dim, head_classes(config, num_labels))
        model.num_original_speakers = num_labels  # the speaker list; more head classes with new-speaker speeds
        return model

    def make_step(self, cfg: DictConfig) -> StepFn:
        return make_sid_step(cfg.trainer)

    def describe_model(self, cfg: DictConfig, model: nn.Module) -> str:
        return (f"model {cfg.model.name} + {cfg.sid.pooling} pooling + {cfg.sid.head} head, frame stack "
                f"{int(cfg.model.get('frame_stack', 1) or 1)}")

    def output_writer(self, out_dir: Path) -> SidOutputWriter:
        return SidOutputWriter(out_dir)

    def score(self, cfg: DictConfig) -> dict[str, Any]:
        from speechattn.tasks.sid_scoring import score_sid
        return score_sid(cfg)
