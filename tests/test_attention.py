"""Truncated self-attention: blockwise engine vs the dense reference, FlexAttention, varlen packing."""

from __future__ import annotations

import itertools
import os
import warnings

import pytest
import torch

from speechattn.models.attention import (
    TruncatedSelfAttention,
    band_mask_mod,
    banded_attention,
    dense_masked_attention,
    flex_banded_attention,
    resolve_engine,
    sliding_window_block_mask,
    varlen_banded_attention,
)

ATOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_qkv(B, H, T, Dh, lengths=None, dtype=torch.float32, seed=0, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, Dh, generator=gen, dtype=dtype).requires_grad_(requires_grad) for _ in range(3))
    pad = None
    if lengths is not None:
        pad = torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None]
    return q, k, v, pad


# (B, T, left, right, query_block, lengths)
CASES = {
    "padding_in_batch": (3, 50, 4, 4, 16, [50, 31, 7]),
    "left_ne_right": (2, 40, 7, 2, 16, None),
    "left_zero": (2, 40, 0, 5, 16, [40, 22]),
    "right_zero": (2, 40, 6, 0, 16, [40, 22]),
    "T_shorter_than_window": (2, 6, 10, 12, 4, [6, 3]),
    "T_not_multiple_of_block": (2, 37, 3, 5, 8, None),
    "block_smaller_than_L_plus_R": (2, 45, 9, 7, 4, [45, 40]),
    "batch_of_one": (1, 33, 5, 5, 128, None),
    "window_zero": (2, 20, 0, 0, 8, [20, 9]),
}


@pytest.mark.parametrize("name", CASES)
def test_banded_matches_dense_reference(name):
    B, T, left, right, qb, lengths = CASES[name]
    q, k, v, pad = make_qkv(B, 3, T, 8, lengths)
    out, weights = banded_attention(q, k, v, left, right, pad, qb, need_weights=True)
    ref, ref_weights = dense_masked_attention(q, k, v, left, right, pad, need_weights=True)
    assert out.shape == (B, 3, T, 8) and weights.shape == (B, 3, T, left + right + 1)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(weights, ref_weights, atol=ATOL, rtol=0)
    if pad is not None:  # padded query rows are exactly zero, real rows sum to one
        assert torch.all(out[pad.nonzero(as_tuple=True)[0], :, pad.nonzero(as_tuple=True)[1]] == 0)
        sums = weights.sum(-1).permute(0, 2, 1)[~pad]
        torch.testing.assert_close(sums, torch.ones_like(sums))


@pytest.mark.parametrize("name", ["padding_in_batch", "left_zero", "T_shorter_than_window", "block_smaller_than_L_plus_R"])
def test_banded_gradients_match_dense_reference(name):
    B, T, left, right, qb, lengths = CASES[name]
    q, k, v, pad = make_qkv(B, 2, T, 8, lengths, requires_grad=True)
    probe = torch.randn(B, 2, T, 8, generator=torch.Generator().manual_seed(1))
    grads = []
    for fn in (lambda: banded_attention(q, k, v, left, right, pad, qb)[0],
               lambda: dense_masked_attention(q, k, v, left, right, pad)[0]):  # fmt: skip
        (fn() * probe).sum().backward()
        grads.append([t.grad.clone() for t in (q, k, v)])
        for t in (q, k, v):
            t.grad = None
    for got, want in zip(*grads):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_weights_layout_is_key_t_plus_j_minus_left():
    T, left, right = 9, 2, 3
    q, k, v, _ = make_qkv(1, 1, T, 4)
    _, weights = banded_attention(q, k, v, left, right, None, 4, need_weights=True)
    scores = (q[0, 0] @ k[0, 0].T) / 2.0  # Dh = 4
    for t in range(T):
        lo, hi = max(0, t - left), min(T - 1, t + right)
        expected = torch.softmax(scores[t, lo : hi + 1], -1)
        torch.testing.assert_close(weights[0, 0, t, lo - t + left : hi - t + left + 1], expected)
        assert weights[0, 0, t].sum().item() == pytest.approx(1.0, abs=1e-6)


def test_blockwise_never_allocates_T_by_T():
    T = 4096
    q, k, v, pad = make_qkv(1, 1, T, 8, [T])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the profiler's "clears events" notice
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
            banded_attention(q, k, v, 4, 4, pad, 128)
    largest = max(e.cpu_memory_usage for e in prof.events())
    assert 0 < largest < T * T * 4 / 64, f"largest allocation {largest} B looks O(T^2)"


def test_fully_padded_rows_and_bf16_have_no_nan():
    q, k, v, pad = make_qkv(2, 2, 30, 8, [30, 1], dtype=torch.bfloat16, requires_grad=True)
    out, _ = banded_attention(q, k, v, 3, 3, pad, 8)
    out.float().sum().backward()
    assert torch.isfinite(out).all() and all(torch.isfinite(t.grad).all() for t in (q, k, v))
    assert torch.all(out[1, :, 1:] == 0)
    ref, _ = dense_masked_attention(q.float(), k.float(), v.float(), 3, 3, pad)
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0.05)


def test_bad_arguments_raise():
    q, k, v, _ = make_qkv(1, 1, 10, 4)
    with pytest.raises(ValueError, match="left and right"):
        banded_attention(q, k, v, -1, 2)
    with pytest.raises(ValueError, match="key_padding_mask"):
        banded_attention(q, k, v, 1, 1, torch.zeros(1, 9, dtype=torch.bool))
    with pytest.raises(ValueError, match="both"):
        TruncatedSelfAttention(16, 2, left=None, right=3)
    with pytest.raises(ValueError, match="engine"):
        TruncatedSelfAttention(16, 2, 3, 3, engine="sdpa")


# ---------------------------------------------------------------- FlexAttention


def _block_rows(num, idx):
    return [idx[0, 0, i, : num[0, 0, i]].tolist() for i in range(num.shape[-1])]


def test_block_mask_matches_create_block_mask():
    from torch.nn.attention.flex_attention import create_block_mask

    for T, left, right, bs in itertools.product([1, 7, 16, 29, 64], [0, 1, 5, 17], [0, 3, 8], [4, 8]):
        ours = sliding_window_block_mask(T, left, right, bs)
        theirs = create_block_mask(band_mask_mod(left, right), None, None, T, T, device="cpu", BLOCK_SIZE=bs)
        assert ours.seq_lengths == theirs.seq_lengths == (T, T)
        for part in ("kv", "full_kv", "q", "full_q"):
            got = _block_rows(getattr(ours, f"{part}_num_blocks"), getattr(ours, f"{part}_indices"))
            want = _block_rows(getattr(theirs, f"{part}_num_blocks"), getattr(theirs, f"{part}_indices"))
            assert got == want, (T, left, right, bs, part)


def test_block_mask_is_cached_per_length():
    a = sliding_window_block_mask(256, 8, 8, 32)
    b = sliding_window_block_mask(256, 8, 8, 32)
    assert a.kv_indices is b.kv_indices
    assert sliding_window_block_mask(288, 8, 8, 32).kv_indices is not a.kv_indices


@pytest.mark.parametrize("lengths", [None, [70, 41]])
def test_flex_eager_cpu_matches_reference(lengths):
    q, k, v, pad = make_qkv(2, 2, 70, 16, lengths)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that eager flex is unfused
        out = flex_banded_attention(q, k, v, 6, 3, pad, block_size=16, compile=False)
    ref, _ = dense_masked_attention(q, k, v, 6, 3, pad)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)


@pytest.mark.skipif(not os.environ.get("SPEECHATTN_SLOW_TESTS"), reason="set SPEECHATTN_SLOW_TESTS=1 (~20 s compile)")
def test_flex_compiled_cpu_uses_block_mask_and_matches_reference():
    # The compiled kernel (unlike eager) iterates only the BlockMask's blocks, so this checks the
    # analytic block structure end to end.
    q, k, v, pad = make_qkv(2, 2, 300, 64, [300, 123])
    out = flex_banded_attention(q, k, v, 40, 9, pad, block_size=128, compile=True)
    ref, _ = dense_masked_attention(q, k, v, 40, 9, pad)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- varlen (packing tested with a CPU kernel)


def reference_varlen_kernel(q, k, v, cu_q, cu_k, max_q, max_k, *, window_size):
    """Documented ``varlen_attn`` semantics on packed (N, H, Dh) input, one sequence at a time."""
    left, right = window_size
    out = torch.empty_like(q)
    for start, end in zip(cu_q[:-1].tolist(), cu_q[1:].tolist()):
        seq = [x[start:end].transpose(0, 1)[None] for x in (q, k, v)]  # (1, H, T, Dh)
        out[start:end] = dense_masked_attention(*seq, left, right)[0][0].transpose(0, 1)
    return out


def test_varlen_packing_matches_reference():
    q, k, v, pad = make_qkv(3, 2, 25, 8, [25, 11, 2])
    out = varlen_banded_attention(q, k, v, 4, 2, pad, kernel=reference_varlen_kernel)
    ref, _ = dense_masked_attention(q, k, v, 4, 2, pad)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)
    holes = pad.clone()
    holes[0, 3] = True
    with pytest.raises(ValueError, match="right-padded"):
        varlen_banded_attention(q, k, v, 4, 2, holes, kernel=reference_varlen_kernel)


def test_varlen_attn_accepts_window_size():
    import inspect

    from torch.nn.attention.varlen import varlen_attn

    assert "window_size" in inspect.signature(varlen_attn).parameters


def test_engine_resolution():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_engine("auto", cpu, torch.float32) == "blockwise"
    assert resolve_engine("auto", cuda, torch.bfloat16) == "varlen"
    assert resolve_engine("auto", cuda, torch.bfloat16, right_padded=False) == "flex"
    assert resolve_engine("auto", cuda, torch.float32) == "flex"
    assert resolve_engine("auto", cuda, torch.bfloat16, dropout_active=True) == "blockwise"
    assert resolve_engine("auto", cuda, torch.bfloat16, need_weights=True) == "blockwise"
    assert resolve_engine("dense", cuda, torch.float32) == "dense"
    with pytest.raises(ValueError, match="weights"):
        resolve_engine("flex", cpu, torch.float32, need_weights=True)


# ---------------------------------------------------------------- module


def test_module_blockwise_equals_dense_engine():
    torch.manual_seed(0)
    blockwise = TruncatedSelfAttention(32, 4, 5, 3, engine="blockwise").eval()
    dense = TruncatedSelfAttention(32, 4, 5, 3, engine="dense").eval()
    dense.load_state_dict(blockwise.state_dict())
    x = torch.randn(2, 40, 32)
    pad = torch.arange(40)[None, :] >= torch.tensor([[40], [17]])
    y, w = blockwise(x, pad, need_weights=True)
    y_ref, w_ref = dense(x, pad, need_weights=True)
    assert y.shape == (2, 40, 32) and w.shape == (2, 4, 40, 9)
    torch.testing.assert_close(y, y_ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(w, w_ref, atol=ATOL, rtol=0)
    assert blockwise(x, pad)[1] is None


def test_module_full_attention_padding_and_weights():
    torch.manual_seed(0)
    attn = TruncatedSelfAttention(32, 4, None, None).eval()
    x = torch.randn(2, 30, 32)
    pad = torch.arange(30)[None, :] >= torch.tensor([[30], [12]])
    y, w = attn(x, pad, need_weights=True)
    y_sdpa, none = attn(x, pad)
    assert none is None and w.shape == (2, 4, 30, 30)
    torch.testing.assert_close(y, y_sdpa, atol=ATOL, rtol=0)
    torch.testing.assert_close(w[1, :, :12].sum(-1), torch.ones(4, 12))
    assert torch.all(w[1, :, :, 12:] == 0)
    alone, _ = attn(x[1:, :12])
    torch.testing.assert_close(y[1, :12], alone[0], atol=ATOL, rtol=0)


def test_module_dropout_trains_and_is_off_in_eval():
    torch.manual_seed(0)
    attn = TruncatedSelfAttention(16, 2, 2, 2, dropout=0.5)
    x = torch.randn(1, 20, 16, requires_grad=True)
    a, _ = attn(x)
    a.sum().backward()
    assert torch.isfinite(x.grad).all()
    attn.eval()
    torch.testing.assert_close(attn(x)[0], attn(x)[0])
