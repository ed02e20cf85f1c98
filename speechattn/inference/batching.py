"""Length-sorted batches for inference: which utterances share one padded forward pass.

Inference reads utterances in ``wav.scp`` order into a window of about ``WINDOW_BATCHES`` batches, sorts
the window by length and cuts it into batches whose padded size ``B * max(T)`` stays within
``batch_frames`` (ESPnet's ``batch_bins``, Lhotse's ``max_frames``): utterances of similar length share a
batch, so little of each batch is padding. Outputs are then written in the original order. An utterance
longer than ``batch_frames`` is a batch of its own (exactly today's one-at-a-time forward).

Example:
    >>> plan_batches([300, 120, 310, 90, 1000], batch_frames=700)
    [[4], [2, 0], [1, 3]]
    >>> plan_batches([5, 5, 5], batch_frames=0)      # 0: one utterance per batch
    [[0], [1], [2]]
"""
from __future__ import annotations

from typing import Sequence

WINDOW_BATCHES = 8  # batches' worth of frames read ahead and sorted together (bounds features held in memory)


def plan_batches(lengths: Sequence[int], batch_frames: int) -> list[list[int]]:
    """Indices into ``lengths`` grouped into batches, longest first, each with ``len(batch) * max length <=
    batch_frames`` (a longer utterance alone). Sorting is stable, so equal lengths keep their order.
    ``batch_frames <= 1`` gives one utterance per batch, in the original order."""
    if batch_frames <= 1:
        return [[i] for i in range(len(lengths))]
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        # Sorted longest first: the batch's padded length is its first utterance's.
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= batch_frames:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches

