"""Length-bucketed and padded batch samplers: budget, coverage, DDP split, determinism, exact resume."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from speechattn.data.sampler import LengthBucketBatchSampler, PaddedBatchSampler, padding_stats

BUDGET = 4000


@pytest.fixture(scope="module")
def lengths() -> list[int]:
    """Log-normal lengths (mean ~400 frames) with a long tail, plus one utterance over the budget."""
    rng = np.random.default_rng(123)
    values = np.clip(rng.lognormal(mean=np.log(330), sigma=0.6, size=997), 30, 3000).astype(int).tolist()
    return values + [BUDGET + 1234, 1, 2]


def flat(batches: list[list[int]]) -> list[int]:
    return [i for b in batches for i in b]


def test_frames_budget_and_oversize_alone(lengths, caplog):
    with caplog.at_level(logging.WARNING, logger="speechattn.data.sampler"):
        sampler = LengthBucketBatchSampler(lengths, BUDGET, seed=3)
    assert "longer than max_frames_per_batch" in caplog.text
    oversize = lengths.index(BUDGET + 1234)
    batches = list(sampler)
    for batch in batches:
        padded = max(lengths[i] for i in batch) * len(batch)
        if oversize in batch:
            assert batch == [oversize]
        else:
            assert padded <= BUDGET, batch


def test_max_batch_size_cap(lengths):
    batches = list(LengthBucketBatchSampler(lengths, BUDGET, max_batch_size=3))
    assert max(len(b) for b in batches) <= 3
    assert sorted(flat(batches)) == list(range(len(lengths)))


@pytest.mark.parametrize("shuffle", [True, False])
def test_every_index_exactly_once_per_epoch(lengths, shuffle):
    sampler = LengthBucketBatchSampler(lengths, BUDGET, shuffle=shuffle)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert sorted(flat(batches)) == list(range(len(lengths)))


def test_grouping_reduces_padding(lengths):
    bucket = LengthBucketBatchSampler(lengths, BUDGET, seed=0)
    padded = PaddedBatchSampler(lengths, BUDGET, seed=0)
    useful_b, total_b = padding_stats(lengths, list(bucket))
    useful_p, total_p = padding_stats(lengths, list(padded))
    assert useful_b == useful_p == sum(lengths)
    assert 1 - useful_b / total_b < 0.5 * (1 - useful_p / total_p)


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("n_utts", [1000, 1001, 41])
def test_ddp_disjoint_equal_counts_exactly_once(lengths, world_size, n_utts):
    subset = (lengths * 2)[:n_utts]
    for epoch in range(2):
        per_rank = []
        for rank in range(world_size):
            sampler = LengthBucketBatchSampler(subset, BUDGET, seed=5, rank=rank, world_size=world_size)
            sampler.set_epoch(epoch)
            per_rank.append(list(sampler))
            assert len(per_rank[-1]) == len(sampler)
        assert len({len(b) for b in per_rank}) == 1, [len(b) for b in per_rank]
        sets = [set(flat(b)) for b in per_rank]
        assert all(not (sets[i] & sets[j]) for i in range(world_size) for j in range(i + 1, world_size))
        assert sorted(i for b in per_rank for i in flat(b)) == list(range(n_utts))


def test_ddp_drop_last_equal_counts_disjoint(lengths):
    per_rank = [list(LengthBucketBatchSampler(lengths, BUDGET, rank=r, world_size=3, drop_last=True))
                for r in range(3)]
    assert len({len(b) for b in per_rank}) == 1
    all_indices = [i for b in per_rank for i in flat(b)]
    assert len(all_indices) == len(set(all_indices))


def test_ddp_too_few_utterances_repeats(caplog):
    with caplog.at_level(logging.WARNING, logger="speechattn.data.sampler"):
        per_rank = [list(LengthBucketBatchSampler([50], 100, rank=r, world_size=2)) for r in range(2)]
    assert per_rank == [[[0]], [[0]]]
    assert "repeating" in caplog.text


def test_deterministic_and_epoch_dependent(lengths):
    a = LengthBucketBatchSampler(lengths, BUDGET, seed=7)
    b = LengthBucketBatchSampler(lengths, BUDGET, seed=7)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(LengthBucketBatchSampler(lengths, BUDGET, seed=8)) != list(b.__class__(lengths, BUDGET, seed=7))


@pytest.mark.parametrize("make", [
    lambda lengths, **kw: LengthBucketBatchSampler(lengths, BUDGET, **kw),
    lambda lengths, **kw: PaddedBatchSampler(lengths, BUDGET, **kw),
])
@pytest.mark.parametrize("world_size", [1, 2])
def test_resume_mid_epoch_continues_exactly(lengths, make, world_size):
    for rank in range(world_size):
        reference = make(lengths, seed=11, rank=rank, world_size=world_size)
        expected = []
        for epoch in range(3):
            reference.set_epoch(epoch)
            expected.append(list(reference))

        # Interrupted run: epoch 0 complete, epoch 1 stops after 5 batches, checkpoint via state_dict.
        first = make(lengths, seed=11, rank=rank, world_size=world_size)
        seen = [list(first)]
        first.set_epoch(1)
        iterator = iter(first)
        partial = [next(iterator) for _ in range(5)]
        state = first.state_dict()
        assert state["epoch"] == 1 and state["batches_done"] == 5 and state["seed"] == 11

        # Fresh process, different constructor seed: the state restores the saved one.
        resumed = make(lengths, seed=999, rank=rank, world_size=world_size)
        resumed.load_state_dict(state)
        assert resumed.state_dict()["batches_done"] == 5
        resumed.set_epoch(1)                     # the loop re-sets the current epoch: must not reset
        seen.append(partial + list(resumed))
        resumed.set_epoch(2)
        seen.append(list(resumed))
        assert seen == expected


def test_state_dict_with_explicit_count_for_prefetching_loaders(lengths):
    sampler = LengthBucketBatchSampler(lengths, BUDGET, seed=2)
    expected = list(sampler)
    iterator = iter(sampler)
    for _ in range(8):                           # a prefetching DataLoader pulled 8 batches...
        next(iterator)
    state = sampler.state_dict(batches_done=6)   # ...but the loop trained on 6
    resumed = LengthBucketBatchSampler(lengths, BUDGET, seed=2)
    resumed.load_state_dict(state)
    assert list(resumed) == expected[6:]
    assert list(resumed) == expected             # the next pass over the same epoch is complete again


def test_load_state_refuses_other_data_or_world_size(lengths):
    state = LengthBucketBatchSampler(lengths, BUDGET).state_dict()
    with pytest.raises(ValueError, match="lengths_sha1"):
        LengthBucketBatchSampler(lengths[:-1] + [lengths[-1] + 1], BUDGET).load_state_dict(state)
    with pytest.raises(ValueError, match="world_size"):
        LengthBucketBatchSampler(lengths, BUDGET, world_size=2).load_state_dict(state)
    with pytest.raises(ValueError, match="max_frames_per_batch"):
        LengthBucketBatchSampler(lengths, BUDGET * 2).load_state_dict(state)


def test_padded_sampler_fixed_size_random_order(lengths):
    sampler = PaddedBatchSampler(lengths, batch_size=16, seed=1)
    batches = list(sampler)
    assert all(len(b) == 16 for b in batches[:-1])
    assert sorted(flat(batches)) == list(range(len(lengths)))
    assert flat(batches) != sorted(flat(batches))
    per_rank = [list(PaddedBatchSampler(lengths, batch_size=16, rank=r, world_size=2, drop_last=True))
                for r in range(2)]
    assert len(per_rank[0]) == len(per_rank[1])
    assert not set(flat(per_rank[0])) & set(flat(per_rank[1]))
    assert all(len(b) == 16 for b in per_rank[0] + per_rank[1])


def test_bad_arguments():
    with pytest.raises(ValueError):
        LengthBucketBatchSampler([], 100)
    with pytest.raises(ValueError, match="lengths\\[1\\]"):
        LengthBucketBatchSampler([10, -1], 100)
    with pytest.raises(ValueError, match="rank"):
        LengthBucketBatchSampler([10], 100, rank=2, world_size=2)
    with pytest.raises(ValueError, match="exactly one"):
        PaddedBatchSampler([10], 100, batch_size=4)
