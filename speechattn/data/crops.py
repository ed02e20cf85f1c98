"""Random training crops of whole utterances, one speaker label each (the speaker task's training data).

:func:`crop_window` is the crop of utterance ``i`` in ``epoch``: a pure function of ``(seed, epoch, i)``,
never of a stateful generator, so a run resumed from a mid-epoch checkpoint draws exactly the crops the
uninterrupted run would have drawn. :class:`SpeakerCropDataset` serves the crops (or whole utterances, for
validation), :class:`SpeakerBatchSampler` keeps its epoch in step. :func:`random_crop` / :class:`RandomCrop`
crop one tensor with a torch generator (zero-padded when shorter), for ad-hoc use.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from speechattn.data.dataset import Example
from speechattn.data.kaldi_dir import KaldiDataError
from speechattn.data.ondemand import frame_counts
from speechattn.data.sampler import LengthBucketBatchSampler

logger = logging.getLogger(__name__)

__all__ = ["crop_window", "SpeakerCropDataset", "SpeakerBatchSampler", "random_crop", "RandomCrop"]


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
        feats: utt -> features ``(T, F)`` (normalised): a dict in memory, or
            :class:`~speechattn.data.ondemand.OnDemandFeatures` (``data.on_demand``: each item reads its
            utterance from the ark; the lengths come from ``utt2num_frames``). Same items either way.
        targets: utt -> speaker class index.
        crop: ``(min_frames, max_frames)`` for training crops (:func:`crop_window`); None = whole utterances.
        seed: crop seed.

    ``epoch`` (set by the batch sampler through :class:`SpeakerBatchSampler`) selects the crops.
    ``num_frames`` ``(N,)``: frames of each utterance. ``__getitem__(i) -> Example(utt, feats (T', F), speaker index)``.

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
        self.num_frames = frame_counts(feats)  # (N,): read nothing for on-demand features

    def __len__(self) -> int:
        return len(self.utts)

    def lengths(self) -> list[int]:
        """Frames each item can have at most (for batching): the crop's maximum or the utterance length."""
        cap = self.crop[1] if self.crop else math.inf
        return [int(min(n, cap)) for n in self.num_frames.tolist()]

    def num_shorter_than(self, frames: int) -> int:
        return int((self.num_frames < frames).sum())

    def __getitem__(self, i: int) -> Example:
        utt = self.utts[i]
        if self.crop is not None:
            start, length = crop_window(int(self.num_frames[i]), self.crop[0], self.crop[1], self.seed, self.epoch, i)
            if hasattr(self.feats, "read_crop"):  # on demand: only the crop's rows when possible
                feats = self.feats.read_crop(utt, start, length)
            else:
                feats = self.feats[utt][start:start + length]
        else:
            feats = self.feats[utt]
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


def random_crop(feats: Tensor, crop_frames: int, generator: torch.Generator | None = None) -> tuple[Tensor, int]:
    """A random ``crop_frames``-long window of ``feats`` (T, D), zero-padded at the end when T < crop_frames.

    Returns ``(crop (crop_frames, D), length)`` where ``length = min(T, crop_frames)`` is the number of real
    frames (give it to the model as the utterance length so the padding is masked).

    Example:
        >>> crop, length = random_crop(torch.randn(500, 80), 300, torch.Generator().manual_seed(0))
        >>> crop.shape, length
        (torch.Size([300, 80]), 300)
    """
    if feats.dim() != 2:
        raise ValueError(f"feats must be (T, D), got shape {tuple(feats.shape)}")
    if crop_frames < 1:
        raise ValueError(f"crop_frames must be >= 1, got {crop_frames}")
    num_frames = feats.size(0)
    if num_frames == 0:
        raise ValueError("cannot crop an utterance with 0 frames")
    if num_frames <= crop_frames:
        if num_frames < crop_frames:
            logger.debug("utterance of %d frames padded to the %d-frame crop", num_frames, crop_frames)
        return F.pad(feats, (0, 0, 0, crop_frames - num_frames)), num_frames
    start = int(torch.randint(0, num_frames - crop_frames + 1, (1,), generator=generator))
    return feats[start : start + crop_frames], crop_frames


class RandomCrop:
    """Seeded :func:`random_crop` that counts how many utterances were shorter than the crop.

    Example:
        >>> cropper = RandomCrop(crop_frames=200, seed=0)
        >>> crop, length = cropper(torch.randn(150, 80))
        >>> length, cropper.num_padded, cropper.num_crops
        (150, 1, 1)
    """

    def __init__(self, crop_frames: int, seed: int = 0) -> None:
        self.crop_frames = crop_frames
        self.generator = torch.Generator().manual_seed(seed)
        self.num_crops = 0
        self.num_padded = 0

    def __call__(self, feats: Tensor) -> tuple[Tensor, int]:
        crop, length = random_crop(feats, self.crop_frames, self.generator)
        self.num_crops += 1
        if length < self.crop_frames:
            if self.num_padded == 0:  # warn once; the count tells the rest
                logger.warning("utterance shorter than the %d-frame crop (%d frames): zero-padded; "
                               "see RandomCrop.num_padded for the total", self.crop_frames, length)
            self.num_padded += 1
        return crop, length
