"""Bounded batch shapes for compiled code: ``torch.compile`` (and compiled FlexAttention) specialise on
tensor shapes, so every new ``(B, T)`` would compile again (seconds to a minute each).

:class:`ShapePolicy` pads every batch to one fixed shape per length bucket of the training sampler
(:class:`~speechattn.data.sampler.LengthBucketBatchSampler`): the time axis to the bucket's *edge* (its
longest utterance) and, for frame-level targets, the batch axis to the most utterances a batch of that
bucket can hold (``max_frames_per_batch // shortest utterance of the bucket``) with dummy one-frame
utterances whose targets are ``IGNORE_INDEX``. A run then sees at most ``num_buckets`` training shapes
and every one of them in its first epoch (every bucket yields batches every epoch), so later epochs
compile nothing; validation batches (same order every epoch) are padded to the same edges. Padding is
masked like any other padding, so losses and accuracies are unchanged; the cost is compute on padded
frames (README, "Devices and precision").

Why not ``dynamic=True``: torch 2.11's CPU FlexAttention kernel fails to build with a symbolic batch or
sequence length (C++ compile error), and a dynamic time axis breaks the blockwise engine under AOT
autograd ("view size is not compatible"); both measured here. Static shapes work everywhere.

Example:
    >>> policy = ShapePolicy([100, 250, 400], [8, 4, 2])
    >>> [policy.padded_length(t) for t in (1, 100, 101, 400, 401, 900)]
    [100, 100, 250, 400, 800, 1200]
"""
from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from speechattn.data.dataset import Batch
from speechattn.tasks.phone import IGNORE_INDEX

__all__ = ["ShapePolicy", "sampler_buckets", "compile_encoders", "compilation_count"]


def sampler_buckets(sampler) -> list[tuple[int, int]]:
    """``(edge, capacity)`` per length bucket of a :class:`LengthBucketBatchSampler`, by edge: the longest
    utterance of the bucket and the most utterances one of its batches can hold."""
    lengths = np.asarray(sampler.lengths)
    budget = int(getattr(sampler, "max_frames_per_batch", lengths.max()))
    cap = getattr(sampler, "max_batch_size", None) or lengths.size
    buckets = getattr(sampler, "_buckets", None) or [np.arange(lengths.size)]  # the sampler's own bucketing
    out = {}
    for b in buckets:
        if len(b):
            edge, shortest = int(lengths[b].max()), max(1, int(lengths[b].min()))
            out[edge] = max(out.get(edge, 1), min(max(1, budget // shortest), cap, len(b)))
    return sorted(out.items())


class ShapePolicy:
    """Pads batches to one shape per bucket edge.

    Args:
        edges: allowed lengths (frames); a batch is padded to the smallest edge >= its longest utterance;
            beyond the last edge (validation only), to the next multiple of the last edge.
        capacities: utterances per batch at each edge (frame-level targets only); a larger batch keeps
            its size. None: the batch axis is not padded.
    """

    def __init__(self, edges: Sequence[int], capacities: Sequence[int] | None = None) -> None:
        self.edges = [int(e) for e in edges]
        if not self.edges or self.edges[0] < 1 or self.edges != sorted(set(self.edges)):
            raise ValueError(f"edges must be increasing positive lengths, got {list(edges)}")
        if capacities is not None and len(capacities) != len(self.edges):
            raise ValueError(f"{len(capacities)} capacities for {len(self.edges)} edges")
        self.capacities = None if capacities is None else [int(c) for c in capacities]

    @classmethod
    def from_sampler(cls, sampler) -> "ShapePolicy":
        edges, caps = zip(*sampler_buckets(sampler))
        return cls(edges, caps)

    def padded_length(self, length: int) -> int:
        i = bisect.bisect_left(self.edges, length)
        if i < len(self.edges):
            return self.edges[i]
        last = self.edges[-1]
        return -(-length // last) * last

    def padded_batch_size(self, batch_size: int, length: int) -> int:
        if self.capacities is None:
            return batch_size
        i = bisect.bisect_left(self.edges, length)
        return max(batch_size, self.capacities[i]) if i < len(self.edges) else batch_size

    def __call__(self, batch: Batch) -> Batch:
        """``feats (B', T', F)``, ``lengths (B',)``, frame ``targets (B', T')`` padded; dummy utterances
        (``"<pad>"``, one zero frame, targets ignored) fill the batch axis."""
        B, T = batch.feats.shape[:2]
        frame_targets = batch.targets is not None and batch.targets.dim() == 2
        T2 = self.padded_length(T)
        B2 = self.padded_batch_size(B, T) if frame_targets else B
        feats = F.pad(batch.feats, (0, 0, 0, T2 - T, 0, B2 - B))
        lengths = F.pad(batch.lengths, (0, B2 - B), value=1)
        targets = batch.targets
        if frame_targets:
            targets = F.pad(targets, (0, T2 - T, 0, B2 - B), value=IGNORE_INDEX)
        return Batch(list(batch.utts) + ["<pad>"] * (B2 - B), feats, lengths, targets)


def compilation_count() -> int:
    """Graphs compiled by ``torch.compile`` in this process so far (torch's own dynamo counter)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def compile_encoders(model: torch.nn.Module, backend: str = "inductor") -> list[str]:
    """``torch.compile`` the forward of every self-attention encoder in ``model`` in place (the whole
    model when it has none); returns the compiled modules' names.

    Shapes are static (``dynamic=False``): pair it with a :class:`ShapePolicy`. The parameters and ``state_dict`` keys are unchanged: checkpoints
    of compiled and eager runs are interchangeable."""
    from speechattn.models.transformer import SelfAttentionEncoder

    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, SelfAttentionEncoder)]
    if not targets:
        targets = [("", model)]
    for _, module in targets:
        # An instance attribute: nn.Module.__call__ runs it, and state_dict keys keep no "_orig_mod." prefix.
        module.forward = torch.compile(module.forward, backend=backend, dynamic=False)
    return [name or type(model).__name__ for name, _ in targets]
