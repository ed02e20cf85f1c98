"""Assemble speaker-identification training from a Hydra config (``--config-name train_sid``).

Data: features of ``data.train_dir`` / ``data.valid_dir`` (``feats.scp``, mean-only CMN by default), one
speaker label per utterance from ``utt2spk``, class indices from ``data.speakers`` (``speakers.txt``: the
closed training speaker set, line index = class index).

Training sees a random 2-3 s crop of every utterance per epoch (``trainer.crop_min_frames`` ..
``crop_max_frames``), with SpecAugment frequency and time masks. A crop depends only on
``(trainer.seed, epoch, utterance index)`` (:func:`crop_window`), never on a stateful generator, so a run
resumed from a mid-epoch checkpoint draws exactly the crops the uninterrupted run would have drawn.
Utterances shorter than the crop are used whole: the batch is padded to its longest crop and the model
masks the padding (their number is logged). Validation uses whole utterances.

Model (:func:`build_sid_model`): optional frame stacking (``model.frame_stack`` consecutive 10 ms frames
concatenated: a lower frame rate for the encoder, as in the phone models) -> the ``model`` group's encoder (``build_encoder``,
``truncated_transformer`` by default) -> pooling -> embedding -> AAM-softmax or softmax
(:class:`speechattn.tasks.sid.SpeakerModel`).

The experiment directory receives what inference needs: ``speakers.txt``, ``feats.yaml`` and the CMVN
statistics (``model.pt`` holds the config, so :class:`speechattn.inference.sid.SpeakerEmbedder` can
rebuild the model).
"""
from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from speechattn.data.dataset import Batch, Example, collate, load_features
from speechattn.data.kaldi_dir import KaldiDataError, read_table, read_text_lines
from speechattn.data.sampler import LengthBucketBatchSampler
from speechattn.features.cmvn_setup import copy_cmvn_to_exp, make_normaliser
from speechattn.models.encoders import build_encoder
from speechattn.models.stacking import split_frame_stack, stack_frames, stacked_lengths
from speechattn.features.augment import spec_augment
from speechattn.tasks.sid import SpeakerModel
from speechattn.training.distributed import DistInfo
from speechattn.training.loop import Trainer, build_trainer

log = logging.getLogger(__name__)

__all__ = [
    "FrameStackEncoder",
    "build_sid_model",
    "read_speakers",
    "read_speaker_targets",
    "crop_window",
    "SpeakerCropDataset",
    "SpeakerBatchSampler",
    "make_sid_step",
    "build_sid_training",
]


# ---------------------------------------------------------------------------------------------- model

class FrameStackEncoder(nn.Module):
    """Frame-rate reduction before an encoder: every ``factor`` consecutive frames are concatenated.

    ``(B, T, F)`` -> ``(B, ceil(T / factor), factor * F)`` -> ``encoder`` -> ``(B, ceil(T / factor), H)``.
    The last stacked frame of an utterance whose length is not a multiple of ``factor`` is completed with
    zeros (the mean after mean normalisation); padding is zeroed first, so a padded batch gives the same
    output as each utterance alone. ``factor=1`` is the identity front end.

    Example:
        >>> inner = build_encoder({"name": "mlp_context", "context": 1, "hidden_dim": 16, "num_layers": 1}, 2 * 80)
        >>> enc = FrameStackEncoder(inner, 2)
        >>> enc(torch.randn(2, 5, 80), torch.tensor([5, 3])).shape
        torch.Size([2, 3, 16])
        >>> enc.output_lengths(torch.tensor([5, 3])).tolist()
        [3, 2]
    """

    def __init__(self, encoder: nn.Module, factor: int) -> None:
        super().__init__()
        if factor < 1:
            raise ValueError(f"model.frame_stack must be >= 1, got {factor}")
        self.encoder = encoder
        self.factor = factor
        self.output_dim = getattr(encoder, "output_dim", None)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Frames after stacking: ``ceil(lengths / factor)``, ``(B,)``."""
        return stacked_lengths(lengths, self.factor)

    def stack(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``x (B, T, F)`` -> ``(B, ceil(T / k), k * F)`` and the stacked lengths ``(B,)`` (:func:`stack_frames`)."""
        return stack_frames(x, lengths, self.factor)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """x ``(B, T, F)``, lengths ``(B,)`` -> ``(B, ceil(T / factor), H)``."""
        stacked, stacked_lengths = self.stack(x, lengths)
        return self.encoder(stacked, stacked_lengths)

    def receptive_field(self) -> tuple[int, int] | None:
        """Input (10 ms) frames an output frame depends on, on each side; None when unbounded."""
        try:
            left, right = self.encoder.receptive_field()
        except (AttributeError, TypeError, ValueError):
            return None
        return left * self.factor + self.factor - 1, right * self.factor + self.factor - 1


def build_sid_model(model_cfg: Mapping[str, Any], sid_cfg: Mapping[str, Any], input_dim: int,
                    num_speakers: int) -> SpeakerModel:
    """Speaker model from the ``model`` group (encoder) and the ``sid`` group (pooling, embedding, head).

    As for the phone models, ``model.frame_stack`` (default 1) stacks that many 10 ms frames per encoder
    position, and ``model.left``/``model.right`` are in 10 ms frames, rounded up to whole positions.

    Example:
        >>> model = build_sid_model({"name": "truncated_transformer", "frame_stack": 2, "d_model": 32,
        ...                          "num_layers": 1, "num_heads": 2, "ffn_dim": 64, "left": 8, "right": 8},
        ...                         {"pooling": "attentive_stats", "embed_dim": 16}, 80, 5)
        >>> model(torch.randn(3, 50, 80), torch.tensor([50, 31, 7])).shape
        torch.Size([3, 16])
        >>> model.encoder.encoder.left                       # 8 frames = 4 positions of 20 ms
        4
    """
    sid_cfg = dict(sid_cfg)
    factor, model_cfg = split_frame_stack(model_cfg)
    encoder = FrameStackEncoder(build_encoder(model_cfg, input_dim * factor), factor)
    return SpeakerModel(encoder, num_speakers, pooling=sid_cfg.get("pooling", "attentive_stats"),
                        embed_dim=int(sid_cfg.get("embed_dim", 192)), head=sid_cfg.get("head", "aam"),
                        margin=float(sid_cfg.get("margin", 0.2)), scale=float(sid_cfg.get("scale", 30.0)),
                        easy_margin=bool(sid_cfg.get("easy_margin", False)),
                        pooling_kwargs=dict(sid_cfg.get("pooling_kwargs") or {}))


# ----------------------------------------------------------------------------------------------- data

def read_speakers(path: str | Path) -> list[str]:
    """The closed speaker set: one ID per line (line index = class index); duplicates are errors."""
    path = Path(path)
    if not path.is_file():
        raise KaldiDataError(f"{path}:0: speaker list not found (written by the data preparation stage)")
    speakers: list[str] = []
    seen: dict[str, int] = {}
    for lineno, line in read_text_lines(path, what="speaker list"):
        fields = line.split()
        if len(fields) != 1:
            raise KaldiDataError(f"{path}:{lineno}: expected one speaker ID per line, got {line!r}")
        if fields[0] in seen:
            raise KaldiDataError(f"{path}:{lineno}: speaker '{fields[0]}' repeated (first on line {seen[fields[0]]})")
        seen[fields[0]] = lineno
        speakers.append(fields[0])
    if not speakers:
        raise KaldiDataError(f"{path}:0: empty speaker list")
    return speakers


def read_speaker_targets(data_dir: str | Path, utts: list[str], speakers: list[str]) -> dict[str, int]:
    """Class index of each utterance's speaker (``data_dir/utt2spk``, ``speakers`` order).

    Raises KaldiDataError naming ``feats.scp``'s line for an utterance without a speaker in ``utt2spk``,
    and ``utt2spk``'s line for a speaker outside the closed training set.
    """
    data_dir = Path(data_dir)
    utt2spk_path = data_dir / "utt2spk"
    utt2spk = read_table(utt2spk_path)
    utt2spk_lines = {utt: lineno for lineno, utt in enumerate(utt2spk, start=1)}
    feats_lines = {utt: lineno for lineno, utt in enumerate(read_table(data_dir / "feats.scp"), start=1)}
    index = {spk: i for i, spk in enumerate(speakers)}
    targets: dict[str, int] = {}
    for utt in utts:
        if utt not in utt2spk:
            raise KaldiDataError(f"{data_dir / 'feats.scp'}:{feats_lines.get(utt, 0)}: utterance '{utt}' has no "
                                 f"speaker in {utt2spk_path}")
        speaker = utt2spk[utt]
        if speaker not in index:
            raise KaldiDataError(f"{utt2spk_path}:{utt2spk_lines[utt]}: speaker '{speaker}' of '{utt}' is not in "
                                 f"the training speaker list ({len(speakers)} speakers)")
        targets[utt] = index[speaker]
    return targets


def crop_window(num_frames: int, min_frames: int, max_frames: int, seed: int, epoch: int,
                index: int) -> tuple[int, int]:
    """``(start, length)`` of utterance ``index``'s training crop in ``epoch``: a pure function.

    The crop length is drawn uniformly from ``[min_frames, max_frames]`` and the start uniformly among the
    positions where it fits; an utterance shorter than the drawn length is used whole (``start = 0``,
    ``length = num_frames``). The generator is seeded with ``(seed, epoch, index)``, so the same crop comes
    back whatever happened before (resume, DataLoader workers, DDP rank).

    Example:
        >>> crop_window(1000, 200, 300, seed=1, epoch=0, index=7) == crop_window(1000, 200, 300, 1, 0, 7)
        True
        >>> crop_window(150, 200, 300, seed=1, epoch=0, index=7)
        (0, 150)
    """
    if not 1 <= min_frames <= max_frames:
        raise ValueError(f"need 1 <= crop_min_frames <= crop_max_frames, got {min_frames}, {max_frames}")
    rng = np.random.default_rng([seed & 0xFFFFFFFF, epoch, index])
    length = int(rng.integers(min_frames, max_frames + 1))
    if num_frames <= length:
        return 0, num_frames
    return int(rng.integers(0, num_frames - length + 1)), length


class SpeakerCropDataset(Dataset):
    """Utterances with one speaker label each, as random training crops or whole (validation).

    Args:
        feats: utt -> features ``(T, F)`` (normalised).
        targets: utt -> speaker class index.
        crop: ``(min_frames, max_frames)`` for training crops (:func:`crop_window`); None = whole utterances.
        seed: crop seed.

    ``epoch`` (set by the batch sampler through :class:`SpeakerBatchSampler`) selects the crops.
    ``__getitem__(i) -> Example(utt, feats (T', F), speaker index)``.

    Example:
        >>> ds = SpeakerCropDataset({"u1": np.zeros((500, 4), np.float32)}, {"u1": 3}, crop=(200, 300))
        >>> ex = ds[0]
        >>> 200 <= ex.feats.shape[0] <= 300, ex.target
        (True, 3)
    """

    def __init__(self, feats: Mapping[str, np.ndarray], targets: Mapping[str, int],
                 crop: tuple[int, int] | None = None, seed: int = 0) -> None:
        self.utts = list(feats)
        self.feats = feats
        self.targets = targets
        self.crop = crop
        self.seed = seed
        self.epoch = 0
        missing = [u for u in self.utts if u not in targets]
        if missing:
            raise KaldiDataError(f"no speaker label for utterance '{missing[0]}' ({len(missing)} in total)")

    def __len__(self) -> int:
        return len(self.utts)

    def lengths(self) -> list[int]:
        """Frames each item can have at most (for batching): the crop's maximum or the utterance length."""
        cap = self.crop[1] if self.crop else math.inf
        return [int(min(len(self.feats[u]), cap)) for u in self.utts]

    def num_shorter_than(self, frames: int) -> int:
        return sum(len(self.feats[u]) < frames for u in self.utts)

    def __getitem__(self, i: int) -> Example:
        utt = self.utts[i]
        feats = self.feats[utt]
        if self.crop is not None:
            start, length = crop_window(len(feats), self.crop[0], self.crop[1], self.seed, self.epoch, i)
            feats = feats[start:start + length]
        return Example(utt, torch.from_numpy(np.ascontiguousarray(feats)), int(self.targets[utt]))


class SpeakerBatchSampler(LengthBucketBatchSampler):
    """:class:`LengthBucketBatchSampler` that keeps its dataset's ``epoch`` in step (for the crops) and
    never yields a training batch of one utterance (the embedding's BatchNorm needs two): a single left
    over by packing joins the previous batch of the epoch's order (slightly over the frame budget).
    """

    def __init__(self, dataset: SpeakerCropDataset, max_frames_per_batch: int, **kwargs: Any) -> None:
        super().__init__(dataset.lengths(), max_frames_per_batch, **kwargs)
        self.dataset = dataset
        if len(dataset) < 2 and self.shuffle:
            raise ValueError(f"need at least 2 training utterances, got {len(dataset)}")

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.dataset.epoch = self.epoch

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.dataset.epoch = self.epoch

    def global_batches(self, epoch: int) -> list[list[int]]:
        batches = super().global_batches(epoch)
        if not self.shuffle:
            return batches
        merged: list[list[int]] = []
        for batch in batches:
            if len(batch) == 1 and merged:
                merged[-1] = merged[-1] + batch
            elif merged and len(merged[-1]) == 1:
                merged[-1] = merged[-1] + batch
            else:
                merged.append(batch)
        return self._make_divisible(merged)

    def __iter__(self):
        self.dataset.epoch = self.epoch  # e.g. a DataLoader worker copy made after set_epoch
        return super().__iter__()


# ----------------------------------------------------------------------------------------------- step

def _unwrap(model: nn.Module) -> SpeakerModel:
    return model.module if isinstance(model, DistributedDataParallel) else model


def make_sid_step(trainer_cfg: Mapping[str, Any]):
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
            predicted = head.logits(embeddings.detach()).argmax(dim=-1)
        correct = int((predicted == batch.targets).sum())
        return loss, correct, int(batch.targets.numel())

    return step


# ---------------------------------------------------------------------------------------------- setup

def _load_split(data_dir: Path, cfg: DictConfig, speakers: list[str], normalise) -> tuple[dict, dict]:
    utts = list(read_table(data_dir / "feats.scp"))
    if cfg.data.get("max_utts"):
        utts = utts[: int(cfg.data.max_utts)]
    targets = read_speaker_targets(data_dir, utts, speakers)  # before reading features: fail fast
    feats = load_features(data_dir, normalise, utts=utts, allow_pipes=bool(cfg.get("allow_pipes", False)))
    return feats, targets


def build_sid_training(cfg: DictConfig, exp_dir: Path, device: torch.device, dist_info: DistInfo) -> Trainer:
    """The :class:`Trainer` of a ``task=sid`` experiment (see the module docstring)."""
    train_dir, valid_dir = Path(cfg.data.train_dir), Path(cfg.data.valid_dir)
    speakers_path = Path(cfg.data.get("speakers") or train_dir / "speakers.txt")
    speakers = read_speakers(speakers_path)
    if dist_info.is_main:
        exp_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(speakers_path, exp_dir / "speakers.txt")
        feats_yaml = train_dir / "feats.yaml"
        if not feats_yaml.exists():
            raise FileNotFoundError(f"{feats_yaml}: missing (written by speechattn-compute-features, stage 1)")
        shutil.copyfile(feats_yaml, exp_dir / "feats.yaml")
        copy_cmvn_to_exp(cfg.cmvn, train_dir, exp_dir)
    t = cfg.trainer
    allow_pipes = bool(cfg.get("allow_pipes", False))
    train_feats, train_targets = _load_split(train_dir, cfg, speakers,
                                             make_normaliser(cfg.cmvn, train_dir, train_dir, allow_pipes=allow_pipes))
    valid_feats, valid_targets = _load_split(valid_dir, cfg, speakers,
                                             make_normaliser(cfg.cmvn, valid_dir, train_dir, allow_pipes=allow_pipes))
    crop = (int(t.crop_min_frames), int(t.crop_max_frames))
    train_set = SpeakerCropDataset(train_feats, train_targets, crop=crop, seed=int(t.seed))
    valid_set = SpeakerCropDataset(valid_feats, valid_targets, crop=None)
    input_dim = next(iter(train_feats.values())).shape[1]
    log.info("train: %d utterances of %d speakers (%d in the speaker list), %d frames; valid: %d utterances; "
             "%d-dim features", len(train_set), len(set(train_targets.values())), len(speakers),
             sum(len(f) for f in train_feats.values()), len(valid_set), input_dim)
    always, sometimes = train_set.num_shorter_than(crop[0]), train_set.num_shorter_than(crop[1])
    if sometimes:
        log.warning("%d of %d training utterances are shorter than the %d-frame minimum crop and %d shorter than "
                    "the %d-frame maximum: these are used whole when shorter than the drawn crop (padded in the "
                    "batch, padding masked)", always, len(train_set), crop[0], sometimes, crop[1])

    sampler = SpeakerBatchSampler(train_set, int(t.max_frames_per_batch), max_batch_size=t.get("max_batch_size"),
                                  num_buckets=int(t.num_buckets), shuffle=True, seed=int(t.seed),
                                  rank=dist_info.rank, world_size=dist_info.world_size)
    valid_sampler = LengthBucketBatchSampler(valid_set.lengths(), int(t.valid_max_frames_per_batch),
                                             max_batch_size=t.get("max_batch_size"), shuffle=False,
                                             rank=dist_info.rank, world_size=dist_info.world_size)
    # Own generators: creating a DataLoader iterator draws a worker base seed, which would otherwise come
    # from the global RNG (SpecAugment's and dropout's), shifting it by one draw on resume.
    train_loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=collate, num_workers=int(t.num_workers),
                              generator=torch.Generator().manual_seed(int(t.seed)))
    valid_loader = DataLoader(valid_set, batch_sampler=valid_sampler, collate_fn=collate,
                              generator=torch.Generator().manual_seed(int(t.seed)))

    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    sid_cfg = OmegaConf.to_container(cfg.sid, resolve=True)
    raw_model = build_sid_model(model_cfg, sid_cfg, input_dim, len(speakers)).to(device)
    n_params = sum(p.numel() for p in raw_model.parameters())
    log.info("model %s + %s pooling + %s head: %.2f M parameters, %d speakers, frame stack %d", cfg.model.name,
             cfg.sid.pooling, cfg.sid.head, n_params / 1e6, len(speakers), int(cfg.model.get("frame_stack", 1) or 1))
    extra = {"config": OmegaConf.to_container(cfg, resolve=True), "speakers": speakers, "input_dim": input_dim,
             "num_params": n_params}
    return build_trainer(cfg, raw_model, make_sid_step(t), train_loader, valid_loader, exp_dir, device, dist_info,
                         extra)
