"""Batch samplers for variable-length utterances: length-bucketed (the default) and plain padded (baseline).

Both yield lists of dataset indices (use them as ``DataLoader(dataset, batch_sampler=...)``), split the
batches between DDP ranks so that every rank runs the same number of steps, and can be checkpointed
mid-epoch: the batch order of an epoch is a pure function of ``(lengths, seed, epoch)``, so
``load_state_dict(state_dict())`` continues with exactly the next batch.

Resuming, in a training loop::

    sampler = LengthBucketBatchSampler(dataset.lengths(), max_frames_per_batch=20000, seed=cfg.seed,
                                       rank=rank, world_size=world_size)
    if ckpt is not None:
        sampler.load_state_dict(ckpt["sampler"])        # same epoch, skips the batches already trained on
    for epoch in range(sampler.epoch, num_epochs):
        sampler.set_epoch(epoch)                        # keeps the resume point when epoch is unchanged
        for step, batch in enumerate(DataLoader(dataset, batch_sampler=sampler, ...)):
            ...
            save({"sampler": sampler.state_dict()})

A ``DataLoader`` with ``num_workers > 0`` pulls batches ahead of the loop (prefetching), so the sampler's
own count runs ahead of the batches actually trained on; pass the loop's count explicitly then:
``sampler.state_dict(batches_done=number_of_batches_consumed_this_epoch)``. Every rank has the same batch
count, so one state dict (e.g. rank 0's) resumes all ranks.
"""
from __future__ import annotations

import hashlib
import logging
import math
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from torch.utils.data import Sampler

logger = logging.getLogger(__name__)


class _ResumableBatchSampler(Sampler[list[int]]):
    """Epoch handling, rank split bookkeeping and mid-epoch resume shared by both samplers.

    Subclasses implement ``_rank_batches(epoch)``: this rank's batches for ``epoch``, a pure function of
    ``(lengths, seed, epoch, rank, world_size)`` with the same count on every rank.
    """

    def __init__(self, lengths: Sequence[int], *, shuffle: bool, seed: int, drop_last: bool, rank: int,
                 world_size: int) -> None:
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        if self.lengths.size == 0:
            raise ValueError("lengths is empty: nothing to sample")
        if (self.lengths < 0).any():
            bad = int(np.flatnonzero(self.lengths < 0)[0])
            raise ValueError(f"lengths[{bad}] = {self.lengths[bad]} is negative")
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._batches_done = 0          # batches handed out in the current epoch
        self._resume_pending = False    # True after load_state_dict: the next __iter__ skips _batches_done
        self._cache: tuple[int, list[list[int]]] | None = None

    # --- subclass hook -----------------------------------------------------------------------------
    def _rank_batches(self, epoch: int) -> list[list[int]]:
        raise NotImplementedError

    def _config(self) -> dict[str, Any]:
        """Settings that must match for a saved state to be resumable (besides lengths)."""
        return {}

    # --- public interface --------------------------------------------------------------------------
    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """This rank's batches for ``epoch`` (default: the current one), in iteration order."""
        epoch = self.epoch if epoch is None else epoch
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, self._rank_batches(epoch))
        return self._cache[1]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.batches()
        start = self._batches_done if self._resume_pending else 0
        self._resume_pending = False
        self._batches_done = start
        for batch in batches[start:]:
            # Count before yielding: once the consumer holds the batch it is "done" for a checkpoint.
            self._batches_done += 1
            yield list(batch)

    def __len__(self) -> int:
        """Number of batches this rank yields in the current epoch (a full epoch, not the resumed rest)."""
        return len(self.batches())

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's batch order (``seed + epoch``). Re-setting the current epoch keeps a resume point."""
        if epoch != self.epoch:
            self.epoch = int(epoch)
            self._batches_done = 0
            self._resume_pending = False

    def state_dict(self, batches_done: int | None = None) -> dict[str, Any]:
        """Resumable position: ``{"epoch", "batches_done", "seed", "world_size", "num_utterances",
        "lengths_sha1", ...}``. ``batches_done`` overrides the sampler's own count (see module docstring)."""
        done = self._batches_done if batches_done is None else int(batches_done)
        if not 0 <= done <= len(self):
            raise ValueError(f"batches_done={done} outside [0, {len(self)}] for epoch {self.epoch}")
        return {
            "epoch": self.epoch,
            "batches_done": done,
            "seed": self.seed,
            "world_size": self.world_size,
            "num_utterances": int(self.lengths.size),
            "lengths_sha1": _lengths_digest(self.lengths),
            **self._config(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``epoch``, ``seed`` and the position; the next ``__iter__`` starts at the next batch.

        Raises ``ValueError`` when the state was saved for other lengths, another world size or other
        batching settings: the batch order would differ, so the resume could not be exact.
        """
        expected = {"world_size": self.world_size, "num_utterances": int(self.lengths.size),
                    "lengths_sha1": _lengths_digest(self.lengths), **self._config()}
        for key, value in expected.items():
            if key in state and state[key] != value:
                raise ValueError(f"sampler state has {key}={state[key]!r} but this sampler has {value!r}: "
                                 f"cannot resume the same batch order")
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self._cache = None
        done = int(state["batches_done"])
        if not 0 <= done <= len(self):
            raise ValueError(f"sampler state batches_done={done} outside [0, {len(self)}]")
        self._batches_done = done
        self._resume_pending = True


class LengthBucketBatchSampler(_ResumableBatchSampler):
    """Batches of similar-length utterances under a padded-frames budget.

    Every batch satisfies ``max(length in batch) × batch size <= max_frames_per_batch`` (the padded
    tensor's frame count, i.e. its memory), except an utterance longer than the budget, which becomes a
    batch of one (logged once at construction).

    Batch formation for an epoch (a pure function of ``lengths``, ``seed + epoch``):
      1. utterances are sorted by length and cut into ``num_buckets`` buckets holding equal *total frames*
         (not equal counts: long utterances, which carry most of the frames and of the padding cost, are
         spread over more buckets; on a log-normal length distribution this pads 13% instead of 17.5% of
         the frames at a 20,000-frame budget, see bench/README.md "train");
      2. within a bucket the order is shuffled (``shuffle=True``) or sorted by length (``shuffle=False``,
         least padding, for validation), and batches are packed greedily in that order;
      3. the batches of all buckets are shuffled together (``shuffle=True``).
    More buckets means less padding but less variety in batch composition across epochs. Because step 2
    is random, the number of batches may differ slightly between epochs; ``len()`` is the current epoch's.

    DDP: the global batch list is dealt round-robin, so ranks get disjoint batches. When the batch count is
    not a multiple of ``world_size``: with ``drop_last=False`` (default) the batches holding the most
    utterances are split in two until it is, so every utterance is used exactly once per epoch and every
    rank gets the same count (a split batch stays under the budget); only if there are too few
    multi-utterance batches to split are batches from the start of the order repeated (logged). With
    ``drop_last=True`` the surplus batches at the end of the (shuffled) order are dropped instead. With
    ``world_size=1`` ``drop_last`` has no effect (like ``torch.utils.data.DistributedSampler``).

    Args:
        lengths: frames per utterance, indexed like the dataset.
        max_frames_per_batch: padded-frames budget per batch (``max length × batch size``).
        max_batch_size: optional cap on utterances per batch.
        num_buckets: number of length buckets (>= 1).
        shuffle: shuffle within buckets and the batch order (training); False for a fixed sorted order.
        seed: base seed; epoch ``e`` uses ``seed + e``.
        drop_last: see DDP above.
        rank, world_size: this process's DDP rank and the number of ranks.

    Example:
        >>> sampler = LengthBucketBatchSampler([120, 80, 400, 95, 390, 100], max_frames_per_batch=800,
        ...                                    num_buckets=2, seed=1)
        >>> batches = list(sampler)
        >>> sorted(i for b in batches for i in b)
        [0, 1, 2, 3, 4, 5]
        >>> all(max(sampler.lengths[b]) * len(b) <= 800 for b in batches)
        True
    """

    def __init__(self, lengths: Sequence[int], max_frames_per_batch: int, *, max_batch_size: int | None = None,
                 num_buckets: int = 10, shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                 rank: int = 0, world_size: int = 1) -> None:
        super().__init__(lengths, shuffle=shuffle, seed=seed, drop_last=drop_last, rank=rank,
                         world_size=world_size)
        if max_frames_per_batch < 1:
            raise ValueError(f"max_frames_per_batch must be >= 1, got {max_frames_per_batch}")
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1 or None, got {max_batch_size}")
        if num_buckets < 1:
            raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
        self.max_frames_per_batch = int(max_frames_per_batch)
        self.max_batch_size = max_batch_size
        self.num_buckets = num_buckets
        self._buckets = _equal_frames_buckets(self.lengths, num_buckets)
        oversize = np.flatnonzero(self.lengths > self.max_frames_per_batch)
        if oversize.size:
            worst = int(oversize[np.argmax(self.lengths[oversize])])
            logger.warning("%d utterance(s) longer than max_frames_per_batch=%d; each becomes a batch of one "
                           "(longest: index %d, %d frames)", oversize.size, self.max_frames_per_batch, worst,
                           int(self.lengths[worst]))

    def _config(self) -> dict[str, Any]:
        return {"max_frames_per_batch": self.max_frames_per_batch, "max_batch_size": self.max_batch_size,
                "num_buckets": self.num_buckets, "shuffle": self.shuffle, "drop_last": self.drop_last}

    def global_batches(self, epoch: int) -> list[list[int]]:
        """All ranks' batches for ``epoch`` in order, after the DDP split/drop adjustment (see class doc)."""
        rng = np.random.default_rng(self.seed + epoch)
        batches: list[list[int]] = []
        for bucket in self._buckets:
            order = rng.permutation(bucket) if self.shuffle else bucket  # bucket is sorted by length
            batches.extend(self._pack(order))
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return self._make_divisible(batches)

    def _rank_batches(self, epoch: int) -> list[list[int]]:
        return self.global_batches(epoch)[self.rank::self.world_size]

    def _pack(self, order: np.ndarray) -> list[list[int]]:
        """Greedy packing in ``order``: add while the padded size stays within the budget."""
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0
        cap = self.max_batch_size or math.inf
        for index in order.tolist():
            length = int(self.lengths[index])
            new_longest = max(longest, length)
            if current and (new_longest * (len(current) + 1) > self.max_frames_per_batch or len(current) >= cap):
                batches.append(current)
                current, new_longest = [], length
            current.append(index)
            longest = new_longest
        if current:
            batches.append(current)
        return batches

    def _make_divisible(self, batches: list[list[int]]) -> list[list[int]]:
        surplus = len(batches) % self.world_size
        if surplus == 0:
            return batches
        if self.drop_last:
            return batches[: len(batches) - surplus]
        missing = self.world_size - surplus
        # Split the fullest batches (ties: earliest); halves keep their order and stay within the budget.
        splittable = sorted((i for i, b in enumerate(batches) if len(b) > 1), key=lambda i: (-len(batches[i]), i))
        to_split = set(splittable[:missing])
        result: list[list[int]] = []
        for i, batch in enumerate(batches):
            if i in to_split:
                half = len(batch) // 2
                result.extend([batch[:half], batch[half:]])
            else:
                result.append(batch)
        missing -= len(to_split)
        if missing:
            logger.warning("only %d utterances for %d ranks: repeating %d batch(es) so every rank gets the "
                           "same number", self.lengths.size, self.world_size, missing)
            result.extend(result[i % len(result)] for i in range(missing))
        return result


class PaddedBatchSampler(_ResumableBatchSampler):
    """Plain batching baseline: random order, fixed batch size, no length grouping.

    Same interface as :class:`LengthBucketBatchSampler` (``set_epoch``, ``state_dict``, DDP split), so
    either can be plugged into the training loop. The batch size is ``batch_size`` when given, else
    ``max_frames_per_batch // ceil(mean length)``: on average a batch holds about the budget in *useful*
    frames, but padded to its longest utterance it is usually larger (that cost is what the bucketed
    sampler removes).

    DDP: batches are dealt round-robin; a count not divisible by ``world_size`` is padded by repeating
    batches from the start of the order (``drop_last=False``) or truncated (``drop_last=True``, which also
    drops a last batch smaller than ``batch_size``), like ``DistributedSampler``.

    Example:
        >>> sampler = PaddedBatchSampler([100] * 10, batch_size=4, seed=0)
        >>> [len(b) for b in sampler]
        [4, 4, 2]
    """

    def __init__(self, lengths: Sequence[int], max_frames_per_batch: int | None = None, *,
                 batch_size: int | None = None, shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                 rank: int = 0, world_size: int = 1) -> None:
        super().__init__(lengths, shuffle=shuffle, seed=seed, drop_last=drop_last, rank=rank,
                         world_size=world_size)
        if (batch_size is None) == (max_frames_per_batch is None):
            raise ValueError("give exactly one of max_frames_per_batch and batch_size")
        if batch_size is None:
            mean_length = max(1, math.ceil(float(self.lengths.mean())))
            batch_size = max(1, int(max_frames_per_batch) // mean_length)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)

    def _config(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "shuffle": self.shuffle, "drop_last": self.drop_last}

    def global_batches(self, epoch: int) -> list[list[int]]:
        """All ranks' batches for ``epoch`` in order, after dropping or repeating for DDP."""
        n = self.lengths.size
        order = np.random.default_rng(self.seed + epoch).permutation(n) if self.shuffle else np.arange(n)
        batches = [order[i:i + self.batch_size].tolist() for i in range(0, n, self.batch_size)]
        if self.drop_last and len(batches[-1]) < self.batch_size and len(batches) > 1:
            batches.pop()
        surplus = len(batches) % self.world_size
        if surplus:
            if self.drop_last:
                batches = batches[: len(batches) - surplus]
            else:
                batches += [batches[i % len(batches)] for i in range(self.world_size - surplus)]
        return batches

    def _rank_batches(self, epoch: int) -> list[list[int]]:
        return self.global_batches(epoch)[self.rank::self.world_size]


def padding_stats(lengths: Sequence[int] | np.ndarray, batches: Sequence[Sequence[int]]) -> tuple[int, int]:
    """``(useful frames, padded frames)`` of ``batches``: padded = Σ max(length in batch) × batch size."""
    lengths = np.asarray(lengths)
    useful = padded = 0
    for batch in batches:
        batch_lengths = lengths[list(batch)]
        useful += int(batch_lengths.sum())
        padded += int(batch_lengths.max()) * len(batch)
    return useful, padded


def _equal_frames_buckets(lengths: np.ndarray, num_buckets: int) -> list[np.ndarray]:
    """Indices sorted by length (ties by index), cut where cumulative frames cross k/num_buckets of the total."""
    order = np.argsort(lengths, kind="stable")
    cumulative = np.cumsum(lengths[order], dtype=np.float64)
    total = cumulative[-1] if cumulative[-1] > 0 else 1.0
    targets = total * np.arange(1, num_buckets) / num_buckets
    cuts = np.unique(np.searchsorted(cumulative, targets, side="right"))
    return [bucket for bucket in np.split(order, cuts) if bucket.size]


def _lengths_digest(lengths: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(lengths, dtype=np.int64).tobytes()).hexdigest()
