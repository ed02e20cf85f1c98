"""Assemble phone-classification training from a Hydra config: data, model, optimiser, Trainer.

Also copies into the experiment directory what inference needs to label new audio exactly as the
training data was labelled: ``phones.txt``, the feature config (``feats.yaml``) and the CMVN statistics.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from speechattn.data.alignments import read_phone_table
from speechattn.data.dataset import Batch, FrameLabelDataset, collate, load_features
from speechattn.data.kaldi_dir import KaldiDataError, read_table, read_table_entries, read_table_lists
from speechattn.data.sampler import LengthBucketBatchSampler
from speechattn.features.augment import spec_augment
from speechattn.features.cmvn_setup import copy_cmvn_to_exp, make_normaliser
from speechattn.models.encoders import build_encoder
from speechattn.models.stacking import split_frame_stack
from speechattn.tasks.phone import FrameClassifier, frame_correct, frame_loss
from speechattn.training.distributed import DistInfo
from speechattn.training.loop import Trainer, build_trainer

log = logging.getLogger(__name__)


def read_frame_labels(data_dir: Path, label_file: str, phones: list[str],
                      utts: list[str] | None = None) -> dict[str, list[int]]:
    """``data_dir/label_file`` (``UTT PH PH ...``) as label ids; unknown phones are errors naming the line."""
    path = data_dir / label_file
    table = read_table_lists(path)
    index = {p: i for i, p in enumerate(phones)}
    out: dict[str, list[int]] = {}
    for lineno, (utt, labels) in enumerate(table.items(), start=1):
        if utts is not None and utt not in utts:
            continue
        try:
            out[utt] = [index[p] for p in labels]
        except KeyError as e:
            raise KaldiDataError(f"{path}:{lineno}: phone {e.args[0]!r} of '{utt}' is not in phones.txt") from None
    return out


def labelled_utterances(data_dir: Path, label_file: str, labels: dict[str, list[int]],
                        drop_unlabelled: bool = False) -> list[str]:
    """The utterances of ``data_dir`` to train on: those with features (``feats.scp``) and labels.

    An utterance with features but no labels is an error naming its ``feats.scp`` line, unless
    ``drop_unlabelled`` (``data.drop_unlabelled=true``): then the ones left out are counted in the log.
    Labelled utterances without features are those stage 1 could not read (``feats_failed.txt``): left
    out and counted; any other is an error (``feats.scp`` is out of date).
    """
    feats_scp, label_path = data_dir / "feats.scp", data_dir / label_file
    with_feats = read_table_entries(feats_scp)
    unlabelled = [utt for utt in with_feats if utt not in labels]
    if unlabelled and not drop_unlabelled:
        first = unlabelled[0]
        raise KaldiDataError(f"{feats_scp}:{with_feats[first][1]}: utterance '{first}' has no labels in {label_path} "
                             f"({len(unlabelled)} of {len(with_feats)} utterances have none); "
                             f"data.drop_unlabelled=true trains without them")
    if unlabelled:
        log.warning("%s: %d of %d utterances have no labels in %s and are left out (data.drop_unlabelled=true), "
                    "e.g. '%s'", data_dir, len(unlabelled), len(with_feats), label_path, unlabelled[0])
    without_feats = [utt for utt in labels if utt not in with_feats]
    if without_feats:
        failed_path = data_dir / "feats_failed.txt"
        failed = set(read_table(failed_path, check_sorted=False, min_fields=1)) if failed_path.is_file() else set()
        stale = [utt for utt in without_feats if utt not in failed]
        if stale:
            label_lines = {utt: lineno for lineno, utt in enumerate(labels, start=1)}
            raise KaldiDataError(f"{label_path}:{label_lines[stale[0]]}: utterance '{stale[0]}' has labels but no "
                                 f"features in {feats_scp} and is not in {failed_path} ({len(stale)} such "
                                 f"utterances): re-run the feature stage")
        log.warning("%s: %d labelled utterance(s) left out: their audio could not be read in the feature stage "
                    "(listed in %s)", data_dir, len(without_feats), failed_path)
    return sorted(utt for utt in labels if utt in with_feats)


def load_split(data_dir: Path, cfg: DictConfig, phones: list[str], normalise) -> FrameLabelDataset:
    """Features + frame labels of one data directory (optionally only its first ``data.max_utts``)."""
    labels = read_frame_labels(data_dir, cfg.data.labels, phones)
    utts = labelled_utterances(data_dir, cfg.data.labels, labels, bool(cfg.data.get("drop_unlabelled", False)))
    if cfg.data.max_utts:
        utts = utts[: int(cfg.data.max_utts)]
    feats = load_features(data_dir, normalise, utts=utts, allow_pipes=bool(cfg.get("allow_pipes", False)))
    return FrameLabelDataset(feats, {u: labels[u] for u in utts}, where=str(data_dir / cfg.data.labels))


def make_step(cfg: DictConfig):
    smoothing = float(cfg.trainer.label_smoothing)
    t = cfg.trainer
    augment = bool(t.spec_augment)
    # Time masks hide input frames whose labels are still scored: the model must infer them from context.
    masks = dict(freq_mask_param=int(t.freq_mask_param), num_freq_masks=int(t.num_freq_masks),
                 time_mask_param=int(t.get("time_mask_param", 0)), num_time_masks=int(t.get("num_time_masks", 0)))

    def step(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, int, int]:
        feats = batch.feats
        if augment and model.training:
            feats = spec_augment(feats, batch.lengths, **masks)
        logits = model(feats, batch.lengths)
        loss = frame_loss(logits, batch.targets, smoothing if model.training else 0.0)
        correct, counted = frame_correct(logits, batch.targets)
        return loss, correct, counted

    return step


def build_phone_model(model_cfg: Any, input_dim: int, num_classes: int) -> FrameClassifier:
    """Encoder + classifier from the ``model`` config group. ``frame_stack`` (default 1) stacks that many
    frames per encoder position; ``left``/``right`` stay in 10 ms frames and are converted to positions."""
    k, cfg = split_frame_stack(model_cfg)
    return FrameClassifier(build_encoder(cfg, input_dim * k), num_classes, frame_stack=k)


def build_phone_training(cfg: DictConfig, exp_dir: Path, device: torch.device, dist_info: DistInfo) -> Trainer:
    train_dir, valid_dir = Path(cfg.data.train_dir), Path(cfg.data.valid_dir)
    phones = read_phone_table(Path(cfg.data.lang_dir) / "phones.txt")
    if dist_info.is_main:
        exp_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(cfg.data.lang_dir) / "phones.txt", exp_dir / "phones.txt")
        feats_yaml = train_dir / "feats.yaml"
        if feats_yaml.exists():
            shutil.copyfile(feats_yaml, exp_dir / "feats.yaml")
        copy_cmvn_to_exp(cfg.cmvn, train_dir, exp_dir)
    pipes = bool(cfg.get("allow_pipes", False))
    train_set = load_split(train_dir, cfg, phones, make_normaliser(cfg.cmvn, train_dir, train_dir, allow_pipes=pipes))
    valid_set = load_split(valid_dir, cfg, phones, make_normaliser(cfg.cmvn, valid_dir, train_dir, allow_pipes=pipes))
    input_dim = next(iter(train_set.feats.values())).shape[1]
    log.info("train: %d utterances, %d frames; valid: %d utterances, %d frames; %d-dim features, %d classes",
             len(train_set), sum(train_set.lengths()), len(valid_set), sum(valid_set.lengths()), input_dim,
             len(phones))

    t = cfg.trainer
    sampler = LengthBucketBatchSampler(train_set.lengths(), int(t.max_frames_per_batch), num_buckets=int(t.num_buckets),
                                       shuffle=True, seed=int(t.seed), rank=dist_info.rank,
                                       world_size=dist_info.world_size)
    valid_sampler = LengthBucketBatchSampler(valid_set.lengths(), int(t.max_frames_per_batch), shuffle=False,
                                             rank=dist_info.rank, world_size=dist_info.world_size)
    # Own generators: creating a DataLoader iterator draws a seed from its generator, and drawing from the
    # global RNG would shift dropout/augmentation after a mid-epoch resume.
    train_loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=collate, num_workers=int(t.num_workers),
                              generator=torch.Generator().manual_seed(int(t.seed)))
    valid_loader = DataLoader(valid_set, batch_sampler=valid_sampler, collate_fn=collate,
                              generator=torch.Generator().manual_seed(int(t.seed)))

    raw_model = build_phone_model(cfg.model, input_dim, len(phones)).to(device)
    n_params = sum(p.numel() for p in raw_model.parameters())
    log.info("model %s: %.2f M parameters", cfg.model.name, n_params / 1e6)
    extra = {"config": OmegaConf.to_container(cfg, resolve=True), "phones": phones, "input_dim": input_dim,
             "num_params": n_params}
    return build_trainer(cfg, raw_model, make_step(cfg), train_loader, valid_loader, exp_dir, device, dist_info,
                         extra)
