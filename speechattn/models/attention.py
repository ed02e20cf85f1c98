"""Truncated (banded) self-attention: frame ``t`` attends only to frames ``[t - L, t + R]``.

Engines (``engine=`` of :class:`TruncatedSelfAttention`):

``"blockwise"`` -- :func:`banded_attention`. Queries are processed in blocks; each block multiplies only
    against the key slice it can see, so memory is O(T * (query_block + L + R)) and nothing T x T is ever
    allocated. Pure PyTorch, autograd friendly, works on every device and dtype. Default on CPU.
``"flex"`` -- :func:`flex_banded_attention`: ``torch.nn.attention.flex_attention`` with a BlockMask built
    analytically by :func:`sliding_window_block_mask`. Compiled (fused kernel) on CUDA.
``"varlen"`` -- :func:`varlen_banded_attention`: ``torch.nn.attention.varlen.varlen_attn`` (FlashAttention
    on packed sequences, no padding compute) with ``window_size=(L, R)``. CUDA, fp16/bf16 only, no
    attention dropout (torch hard-codes ``dropout_p=0`` there).
``"dense"`` -- :func:`dense_masked_attention`: the O(T^2) matmul + masked-softmax reference, for tests and
    benchmarks only.
``"auto"`` -- ``blockwise`` on CPU; on CUDA ``varlen`` when its constraints hold (fp16/bf16, no weights
    requested, no attention dropout while training, right-padded batch), else ``flex``, else ``blockwise``
    (the only engine that returns attention weights). See :func:`resolve_engine`. The encoders default to
    no attention dropout (``model.attention_dropout: 0``), so CUDA training gets a fused engine: varlen
    under bf16/fp16 autocast (``trainer.precision``), flex in fp32.

An explicit engine that cannot run in a call (flex backward on CPU, varlen off CUDA or in fp32, a fused
engine with attention dropout or asked for weights) raises ValueError saying why; it is never replaced.
The engine chosen is logged once per process for each (requested, chosen, device, dtype, training).

We never call SDPA with a boolean T x T mask: the mask alone is O(T^2) memory (and CPU time to build).
Full attention (``left = right = None``) uses ``F.scaled_dot_product_attention`` without a mask, or with a
``(B, 1, 1, T)`` key mask when the batch is padded.

What was exercised on this machine (torch 2.11, CPU only, no GPU):

* blockwise and dense: forward and backward, float32 (tests compare them to 1e-5) and bf16.
* flex: forward on CPU both eagerly (torch's unfused fallback, which materialises T x T scores, so only for
  small T) and with ``torch.compile`` (inductor C++ kernel; 15-40 s compile per shape). Backward is *not*
  available on CPU in torch 2.11 ("FlexAttention does not support backward on CPU"). The analytic
  BlockMask is tested block-for-block against ``create_block_mask``.
* varlen: NOT run (needs CUDA FlashAttention). Its packing/unpacking is tested on CPU with a reference
  kernel substituted for ``varlen_attn`` that implements the documented window semantics. torch 2.11's
  ``varlen_attn`` does accept ``window_size=(left, right)``.
* flex compiled with ``dynamic=True``, or with a dynamic batch axis (``maybe_mark_dynamic``): fails on CPU
  in torch 2.11 (C++ compile error in the CPU flex template), so compiled flex uses static shapes and
  training bounds them (:mod:`speechattn.training.shapes`: one shape per length bucket; a test checks
  with torch's compilation counter that a second epoch compiles nothing).
* CUDA flex compile and auto-selection on CUDA: NOT run; ``bench/gpu_check.sh`` checks them on a GPU
  (outputs and gradients against the dense reference, fp32 and bf16).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

__all__ = [
    "ENGINES",
    "planned_engines",
    "DEFAULT_QUERY_BLOCK",
    "banded_attention",
    "dense_masked_attention",
    "band_mask_mod",
    "sliding_window_block_mask",
    "flex_banded_attention",
    "varlen_banded_attention",
    "resolve_engine",
    "TruncatedSelfAttention",
]

ENGINES = ("auto", "blockwise", "flex", "varlen", "dense")

# Chosen by measurement (bench/README.md, "query_block"): 128 is within a few percent of the fastest
# block size for L = R = 32 on 2 CPU cores, and keeps the activations saved for backward at
# T * (128 + L + R) per head instead of T * (1024 + L + R).
DEFAULT_QUERY_BLOCK = 128


def _check_window(left: int, right: int) -> None:
    if left < 0 or right < 0:
        raise ValueError(f"left and right must be >= 0, got left={left}, right={right}")


def _check_qkv(q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None) -> None:
    if q.dim() != 4 or q.shape != k.shape or k.shape[:3] != v.shape[:3]:
        raise ValueError(
            f"q, k, v must be (B, H, T, Dh) with equal shapes, got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if key_padding_mask is not None:
        B, _, T, _ = q.shape
        if key_padding_mask.shape != (B, T) or key_padding_mask.dtype != torch.bool:
            raise ValueError(
                f"key_padding_mask must be a bool (B, T) = ({B}, {T}) tensor, True = padding; got "
                f"{key_padding_mask.dtype} {tuple(key_padding_mask.shape)}"
            )


def _softmax(scores: Tensor) -> Tensor:
    # Half-precision softmax loses too much; accumulate in float32 and cast back.
    if scores.dtype in (torch.float16, torch.bfloat16):
        return torch.softmax(scores, dim=-1, dtype=torch.float32).to(scores.dtype)
    return torch.softmax(scores, dim=-1)


@functools.lru_cache(maxsize=32)
def _outside_band(rows: int, left: int, right: int, device: torch.device) -> Tensor:
    """(rows, rows + L + R) bool, True where key column c is outside the band of query row i.

    In the edge-padded key coordinates used by :func:`banded_attention`, query i sees columns
    i .. i + L + R, so the band is a fixed diagonal strip whatever the block's position."""
    i = torch.arange(rows, device=device)[:, None]
    c = torch.arange(rows + left + right, device=device)[None, :]
    return (c < i) | (c > i + left + right)


def banded_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    left: int,
    right: int,
    key_padding_mask: Tensor | None = None,
    query_block: int = DEFAULT_QUERY_BLOCK,
    *,
    dropout_p: float = 0.0,
    need_weights: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Exact banded attention computed blockwise; memory O(T * (query_block + L + R)), never T x T.

    Query t attends to keys u with ``t - L <= u <= t + R`` (clipped to [0, T) and to non-padded keys).
    Example, L=2, R=1, T=6 (1 = query row t attends to key column u)::

              u: 0 1 2 3 4 5
        t = 0    1 1 0 0 0 0
        t = 1    1 1 1 0 0 0
        t = 2    1 1 1 1 0 0
        t = 3    0 1 1 1 1 0
        t = 4    0 0 1 1 1 1
        t = 5    0 0 0 1 1 1

    Keys/values are padded with L frames in front and R behind (masked), so in padded coordinates the
    query block [s, e) reads the key slice [s, e + L + R) and its band is always the same strip. With
    query_block=3, L=2, R=1 the first block is::

              padded key:  -2 -1  0  1  2  3      (-2, -1: edge padding, always masked)
        t = 0               1  1  1  1  .  .
        t = 1               .  1  1  1  1  .
        t = 2               .  .  1  1  1  1

    Scores per block are ``(B, H, blk, blk + L + R)``; out-of-band and padded keys get -inf before the
    softmax. Padded query rows are computed against their band only (so a row is never all -inf: its
    own key is in the band) and then zeroed, so neither the output nor the gradient contains NaN.

    Args:
        q, k, v: ``(B, H, T, Dh)``.
        left, right: L, R >= 0 frames of left / right context.
        key_padding_mask: ``(B, T)`` bool, True = padding, or None.
        query_block: queries per block (trade-off: larger = fewer, bigger matmuls, more wasted
            out-of-band scores and more activations saved for backward).
        dropout_p: dropout on the attention probabilities (pass 0 when not training).
        need_weights: also return the banded weights.

    Returns:
        ``out (B, H, T, Dh)`` and, if ``need_weights``, ``weights (B, H, T, L + R + 1)`` where
        ``weights[b, h, t, j]`` is the weight of key ``t + j - L`` (0 outside [0, T), for padded keys and
        for padded queries); otherwise None.
    """
    _check_window(left, right)
    _check_qkv(q, k, v, key_padding_mask)
    if query_block < 1:
        raise ValueError(f"query_block must be >= 1, got {query_block}")
    B, H, T, Dh = q.shape
    W = left + right + 1
    qb = min(query_block, T)
    num_blocks = -(-T // qb)
    tail = num_blocks * qb - T  # queries are padded to whole blocks
    m = qb + left + right  # keys per block
    # Blocks are taken with split / unfold+unbind (views) rather than per-block slicing: the backward
    # of each is then ONE op over the whole sequence. Slicing inside the loop would make autograd
    # allocate a zero gradient of the full (B, H, T, Dh) tensor per block, i.e. O(T^2 / block).
    q_blocks = F.pad(q * Dh**-0.5, (0, 0, 0, tail)).split(qb, dim=2)  # (B, H, qb, Dh) each
    k_blocks = F.pad(k, (0, 0, left, right + tail)).unfold(2, m, qb).unbind(2)  # (B, H, Dh, m) each
    v_blocks = F.pad(v, (0, 0, left, right + tail)).unfold(2, m, qb).unbind(2)  # (B, H, Dh, m) each

    # Keys that are edge padding or padded frames, and queries that are real, unpadded frames.
    # Only real queries mask padded keys; others keep their whole band (never an all -inf row).
    positions = torch.arange(num_blocks * qb + left + right, device=q.device) - left
    key_invalid = ((positions < 0) | (positions >= T))[None, :]  # (1 | B, T + tail + L + R)
    query_valid = (torch.arange(num_blocks * qb, device=q.device) < T)[None, :]  # (1 | B, T + tail)
    if key_padding_mask is not None:
        key_invalid = key_invalid | F.pad(key_padding_mask, (left, right + tail), value=False)
        query_valid = query_valid & ~F.pad(key_padding_mask, (0, tail), value=True)
    key_invalid_blocks = key_invalid.unfold(1, m, qb)  # (1 | B, num_blocks, m)
    outside = _outside_band(qb, left, right, q.device)  # (qb, m)

    outputs: list[Tensor] = []
    weights: list[Tensor] = []
    band_index = torch.arange(qb, device=q.device)[:, None] + torch.arange(W, device=q.device)
    for i in range(num_blocks):
        rows = query_valid[:, i * qb : (i + 1) * qb]
        mask = outside | (key_invalid_blocks[:, None, i, None, :] & rows[:, None, :, None])  # (1|B, 1, qb, m)
        scores = torch.matmul(q_blocks[i], k_blocks[i])  # (B, H, qb, m)
        # In place: the matmul output is not needed for backward, and an out-of-place fill would
        # allocate and copy every block once more.
        probs = _softmax(scores.masked_fill_(mask, float("-inf")))
        if need_weights:
            weights.append(probs.detach().gather(-1, band_index.expand(B, H, qb, W)))
        if dropout_p > 0.0:
            probs = F.dropout(probs, p=dropout_p, training=True)
        outputs.append(torch.matmul(probs, v_blocks[i].transpose(-1, -2)))

    out = torch.cat(outputs, dim=2)[:, :, :T]
    band_weights = torch.cat(weights, dim=2)[:, :, :T] if need_weights else None
    if key_padding_mask is not None:
        query_pad = key_padding_mask[:, None, :, None]
        out = out.masked_fill(query_pad, 0.0)
        if band_weights is not None:
            band_weights = band_weights.masked_fill(query_pad, 0.0)
    return out, band_weights


def dense_masked_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    left: int,
    right: int,
    key_padding_mask: Tensor | None = None,
    *,
    dropout_p: float = 0.0,
    need_weights: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Reference O(T^2) banded attention: full ``(B, H, T, T)`` scores, masked softmax.

    Same band as :func:`banded_attention` (L=2, R=1, T=5; 1 = attended)::

              u: 0 1 2 3 4
        t = 0    1 1 0 0 0
        t = 1    1 1 1 0 0
        t = 2    1 1 1 1 0
        t = 3    0 1 1 1 1
        t = 4    0 0 1 1 1

    Masked entries get the most negative finite value (not -inf) so a fully padded query row has a
    finite softmax; padded query rows are then zeroed. For tests and benchmark baselines only.

    Returns ``out (B, H, T, Dh)`` and, if ``need_weights``, banded ``weights (B, H, T, L + R + 1)``
    extracted from the dense matrix (same layout as :func:`banded_attention`).
    """
    _check_window(left, right)
    _check_qkv(q, k, v, key_padding_mask)
    B, H, T, Dh = q.shape
    t = torch.arange(T, device=q.device)
    offset = t[None, :] - t[:, None]  # key - query
    mask = (offset < -left) | (offset > right)  # (T, T)
    if key_padding_mask is not None:
        mask = mask | key_padding_mask[:, None, None, :]  # (B, 1, T, T)
    scores = torch.matmul(q * Dh**-0.5, k.transpose(-1, -2))
    probs = _softmax(scores.masked_fill_(mask, torch.finfo(scores.dtype).min))  # in place: 2, not 3, T x T
    if key_padding_mask is not None:
        probs = probs.masked_fill(key_padding_mask[:, None, :, None], 0.0)
    band_weights = None
    if need_weights:
        # Key t + j - L of query t, with out-of-range keys reading an appended zero column.
        W = left + right + 1
        cols = t[:, None] + torch.arange(W, device=q.device) - left
        cols = torch.where((cols >= 0) & (cols < T), cols, T)
        padded = F.pad(probs.detach(), (0, 1))
        band_weights = padded.gather(-1, cols.expand(B, H, T, W))
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p, training=True)
    return torch.matmul(probs, v), band_weights


# --------------------------------------------------------------------------------------------------
# FlexAttention
# --------------------------------------------------------------------------------------------------


def band_mask_mod(left: int, right: int) -> Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]:
    """FlexAttention ``mask_mod`` of the band: True where ``q - L <= kv <= q + R``."""

    def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        offset = kv_idx - q_idx
        return (offset >= -left) & (offset <= right)

    return mask_mod


def _band_blocks(
    seq_len: int, left: int, right: int, block_size: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per query block i: ascending indices of the partial and of the full key blocks of the band.

    Query block i holds queries [i bs, min((i+1) bs, T)); key block j is *non-empty* if some pair in
    it is in the band and *full* if every pair of the bs x bs tile (positions >= T count as masked,
    like ``create_block_mask``) is. Both sets are contiguous ranges of j, so everything is block
    arithmetic on ``(num_blocks, width)`` tensors, width ~ (bs + L + R) / bs + 1.

    Returns ``(num_partial (nb,), partial_idx (nb, nb), num_full (nb,), full_idx (nb, nb))``, int32;
    entries past the count are 0 (never read by FlexAttention). The index storage is nb^2 int32
    (0.9 MB at T = 60,000, bs = 128); all arithmetic is on (nb, width).
    """
    bs = block_size
    nb = -(-seq_len // bs)
    i = torch.arange(nb, device=device)
    q_first = i * bs
    q_last = torch.clamp((i + 1) * bs, max=seq_len) - 1
    lo = torch.clamp(torch.div(q_first - left, bs, rounding_mode="floor"), min=0)
    hi = torch.clamp(torch.div(q_last + right, bs, rounding_mode="floor"), max=nb - 1)
    # Full tile: the farthest pairs are in band and neither block is cut by the end of the sequence.
    complete = nb if seq_len % bs == 0 else nb - 1  # blocks 0 .. complete-1 are bs long
    full_lo = -torch.div(-((i + 1) * bs - 1 - left), bs, rounding_mode="floor")  # ceil
    full_hi = torch.div(i * bs + right + 1, bs, rounding_mode="floor") - 1
    full_hi = torch.clamp(full_hi, max=complete - 1)
    full_hi = torch.where(i < complete, full_hi, full_lo - 1)  # a cut query block is never full

    width = int((hi - lo).max().item()) + 1
    j = lo[:, None] + torch.arange(width, device=device)[None, :]
    nonempty = j <= hi[:, None]
    full = (j >= full_lo[:, None]) & (j <= full_hi[:, None]) & nonempty
    partial = nonempty & ~full

    def compact(selected: Tensor) -> tuple[Tensor, Tensor]:
        # Move selected j to the front, keeping ascending order (sort key: unselected -> +inf).
        key = torch.where(selected, j, j.new_full((), nb + width))
        ordered = torch.sort(key, dim=-1).values
        count = selected.sum(-1)
        ordered = torch.where(torch.arange(width, device=device) < count[:, None], ordered, 0)
        # Stored full width (nb columns, like create_block_mask): torch's CPU flex kernel asserts
        # kv_indices.shape[-1] * bs >= T. Only the first `count` entries of a row are ever read.
        indices = torch.zeros(nb, nb, dtype=torch.int32, device=device)
        indices[:, :width] = ordered
        return count.to(torch.int32), indices

    return (*compact(partial), *compact(full))


@functools.lru_cache(maxsize=64)
def _cached_band_block_tensors(
    seq_len: int, left: int, right: int, block_size: int, device: torch.device
) -> tuple[Tensor, ...]:
    kv = _band_blocks(seq_len, left, right, block_size, device)
    # Block (i, j) of band (L, R) is block (j, i) of band (R, L): the transpose (used by the
    # backward pass) is the same arithmetic with the sides swapped.
    q = _band_blocks(seq_len, right, left, block_size, device)
    return tuple(t[None, None] for t in (*kv, *q))  # broadcast over (B, H)


def sliding_window_block_mask(
    seq_len: int,
    left: int,
    right: int,
    block_size: int = 128,
    device: torch.device | str = "cpu",
    mask_mod: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor] | None = None,
):
    """FlexAttention ``BlockMask`` of the band ``[t - L, t + R]`` for a length-``seq_len`` sequence.

    Built from block arithmetic in O(T/bs * (bs + L + R)/bs), not with ``create_block_mask`` (which
    evaluates the mask on all T x T pairs in eager mode); only the zero-initialised index storage is
    (T/bs)^2 int32, the layout every torch flex kernel expects. Cached per (length, L, R, bs, device), so
    callers should bucket lengths (:func:`flex_banded_attention` pads T to a multiple of
    ``length_bucket``). Blocks of a T=8, bs=2, L=R=1 mask (F = full tile, P = partial, . = skipped)::

              kv block: 0 1 2 3
        q block 0       F P . .
        q block 1       P F P .
        q block 2       . P F P
        q block 3       . . P F

    Args:
        mask_mod: element mask applied inside partial blocks; defaults to :func:`band_mask_mod`.
            Pass a stricter one (band AND key padding) to reuse the cached block structure.

    Returns:
        ``torch.nn.attention.flex_attention.BlockMask`` of shape ``(1, 1, seq_len, seq_len)``.
    """
    from torch.nn.attention.flex_attention import BlockMask

    _check_window(left, right)
    if seq_len < 1 or block_size < 1:
        raise ValueError(f"seq_len and block_size must be >= 1, got {seq_len}, {block_size}")
    tensors = _cached_band_block_tensors(seq_len, left, right, block_size, torch.device(device))
    kv_num, kv_idx, full_kv_num, full_kv_idx, q_num, q_idx, full_q_num, full_q_idx = tensors
    return BlockMask(
        seq_lengths=(seq_len, seq_len),
        kv_num_blocks=kv_num,
        kv_indices=kv_idx,
        full_kv_num_blocks=full_kv_num,
        full_kv_indices=full_kv_idx,
        q_num_blocks=q_num,
        q_indices=q_idx,
        full_q_num_blocks=full_q_num,
        full_q_indices=full_q_idx,
        BLOCK_SIZE=(block_size, block_size),
        mask_mod=mask_mod if mask_mod is not None else band_mask_mod(left, right),
    )


@functools.cache
def _compiled_flex_attention() -> Callable[..., Tensor]:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex_banded_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    left: int,
    right: int,
    key_padding_mask: Tensor | None = None,
    *,
    block_size: int = 128,
    length_bucket: int | None = None,
    compile: bool | None = None,
) -> Tensor:
    """Banded attention with FlexAttention (same band and padding semantics as :func:`banded_attention`).

    The sequence is padded to a multiple of ``length_bucket`` (default ``block_size``) so the cached
    BlockMask and the compiled kernel are reused across nearby lengths. The element mask is
    ``band AND (key valid OR query padded)``, so every row keeps at least its own key (no NaN);
    padded query rows are zeroed afterwards. Attention dropout is not supported.

    Args:
        q, k, v: ``(B, H, T, Dh)``; key_padding_mask ``(B, T)`` bool, True = padding.
        compile: use ``torch.compile(flex_attention)`` (fused, block-sparse kernel). Default: True on
            CUDA; False elsewhere, where torch's eager fallback materialises T x T scores (tests only).

    Returns ``out (B, H, T, Dh)``.
    """
    from torch.nn.attention.flex_attention import flex_attention

    _check_window(left, right)
    _check_qkv(q, k, v, key_padding_mask)
    B, H, T, Dh = q.shape
    bucket = length_bucket or block_size
    padded_len = -(-T // bucket) * bucket
    extra = padded_len - T
    if extra:
        q, k, v = (F.pad(x, (0, 0, 0, extra)) for x in (q, k, v))
    if key_padding_mask is None and extra == 0:
        mask_mod = None
    else:
        pad = torch.zeros(B, T, dtype=torch.bool, device=q.device) if key_padding_mask is None else key_padding_mask
        pad = F.pad(pad, (0, extra), value=True)
        band = band_mask_mod(left, right)

        def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            return band(b, h, q_idx, kv_idx) & (~pad[b, kv_idx] | pad[b, q_idx])

    block_mask = sliding_window_block_mask(padded_len, left, right, block_size, q.device, mask_mod)
    if compile is None:
        compile = q.device.type == "cuda"
    attend = _compiled_flex_attention() if compile else flex_attention
    out = attend(q, k, v, block_mask=block_mask)[:, :, :T]
    if key_padding_mask is not None:
        out = out.masked_fill(key_padding_mask[:, None, :, None], 0.0)
    return out


# --------------------------------------------------------------------------------------------------
# varlen (FlashAttention with a window) -- CUDA only
# --------------------------------------------------------------------------------------------------


def _lengths_if_right_padded(key_padding_mask: Tensor | None, B: int, T: int, device) -> Tensor | None:
    """(B,) lengths when every row is ``[valid..., pad...]``; None when the padding has holes."""
    if key_padding_mask is None:
        return torch.full((B,), T, dtype=torch.long, device=device)
    lengths = (~key_padding_mask).sum(-1)
    expected = torch.arange(T, device=device)[None, :] >= lengths[:, None]
    return lengths if torch.equal(expected, key_padding_mask) else None


def varlen_banded_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    left: int,
    right: int,
    key_padding_mask: Tensor | None = None,
    *,
    kernel: Callable[..., Tensor] | None = None,
) -> Tensor:
    """Banded attention with ``torch.nn.attention.varlen.varlen_attn(..., window_size=(L, R))``.

    The batch is packed to ``(sum(lengths), H, Dh)`` (padding frames are not computed at all),
    attended per sequence with FlashAttention's sliding window, and unpacked; padded frames get 0.
    Requires CUDA, fp16/bf16, and right padding (``key_padding_mask[b] = [False]*len + [True]*pad``).

    Args:
        kernel: substitute for ``varlen_attn`` with the same signature (tests use a CPU reference).

    Returns ``out (B, H, T, Dh)``.
    """
    _check_window(left, right)
    _check_qkv(q, k, v, key_padding_mask)
    B, H, T, Dh = q.shape
    lengths = _lengths_if_right_padded(key_padding_mask, B, T, q.device)
    if lengths is None:
        raise ValueError("varlen engine needs right-padded sequences (padding only at the end)")
    if kernel is None:
        from torch.nn.attention.varlen import varlen_attn as kernel
    valid = torch.arange(T, device=q.device)[None, :] < lengths[:, None]  # (B, T)
    packed = [x.transpose(1, 2)[valid] for x in (q, k, v)]  # (N, H, Dh)
    cu_seq = F.pad(torch.cumsum(lengths, 0), (1, 0)).to(torch.int32)
    max_len = int(lengths.max().item())
    out_packed = kernel(*packed, cu_seq, cu_seq, max_len, max_len, window_size=(left, right))
    out = q.new_zeros(B, T, H, Dh)
    out[valid] = out_packed
    return out.transpose(1, 2)


def resolve_engine(
    engine: str,
    device: torch.device,
    dtype: torch.dtype,
    *,
    need_weights: bool = False,
    dropout_active: bool = False,
    right_padded: bool = True,
    needs_grad: bool = False,
) -> str:
    """Turn ``engine`` (one of :data:`ENGINES`) into the concrete engine for this call.

    ``auto``: CPU -> blockwise. CUDA -> varlen if fp16/bf16, no weights, no attention dropout and right
    padding; else flex if no weights and no dropout; else blockwise. An explicit engine is returned as is
    after checking it can run this call (``needs_grad``: a backward pass will follow); if it cannot, a
    ValueError says why and what to use instead (an explicit choice is never silently replaced)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine != "auto":
        problem = _cannot_run(engine, device, dtype, need_weights, dropout_active, right_padded, needs_grad)
        if problem:
            raise ValueError(f"model.engine={engine} cannot run here: {problem} (model.engine=auto chooses one "
                             f"that can)")
        return engine
    if device.type != "cuda" or need_weights or dropout_active:
        return "blockwise"
    if dtype in (torch.float16, torch.bfloat16) and right_padded:
        return "varlen"
    return "flex"


def _cannot_run(engine: str, device: torch.device, dtype: torch.dtype, need_weights: bool, dropout_active: bool,
                right_padded: bool, needs_grad: bool) -> str | None:
    """Why an explicit ``engine`` cannot run this call, or None."""
    if engine not in ("flex", "varlen"):
        return None  # blockwise and dense run everywhere, with weights and dropout
    if need_weights:
        return "it cannot return attention weights; use blockwise or dense"
    if dropout_active:
        return "fused kernels have no attention-probability dropout; set model.attention_dropout=0"
    if engine == "flex" and needs_grad and device.type != "cuda":
        return f"FlexAttention has no backward pass on {device.type} (torch {torch.__version__}); train on CUDA"
    if engine == "varlen":
        if device.type != "cuda":
            return f"varlen (FlashAttention) needs CUDA, not {device.type}"
        if dtype not in (torch.float16, torch.bfloat16):
            return (f"varlen needs fp16/bf16 inputs, got {str(dtype).replace('torch.', '')}; use "
                    f"trainer.precision=bf16 (training) or precision=bf16 (inference)")
        if not right_padded:
            return "varlen needs right-padded sequences (padding only at the end)"
    return None


_LOGGED_ENGINES: set[tuple] = set()


def _log_engine_once(requested: str, chosen: str, device: torch.device, dtype: torch.dtype, training: bool) -> None:
    key = (requested, chosen, device.type, dtype, training)
    if key not in _LOGGED_ENGINES:
        _LOGGED_ENGINES.add(key)
        log.info("attention engine: %s (model.engine=%s, %s, %s, %s)", chosen, requested, device.type,
                 str(dtype).replace("torch.", ""), "training" if training else "inference")


def planned_engines(model: nn.Module, device: torch.device, dtype: torch.dtype, *, training: bool,
                    mark_logged: bool = False) -> dict[str, int]:
    """``{engine: number of layers}`` that the banded attention layers of ``model`` will use on ``device``
    with inputs of ``dtype`` (the autocast dtype), in training (with backward) or inference. Raises the
    ValueError of :func:`resolve_engine` for an explicit engine that cannot run there. ``mark_logged``:
    the caller logs the choice, so the layers do not log it again."""
    out: dict[str, int] = {}
    for m in model.modules():
        if isinstance(m, TruncatedSelfAttention) and not m.is_full:
            engine = resolve_engine(m.engine, device, dtype, dropout_active=training and m.dropout > 0.0,
                                    needs_grad=training)
            out[engine] = out.get(engine, 0) + 1
            if mark_logged:
                _LOGGED_ENGINES.add((m.engine, engine, device.type, dtype, training))
    return out


class TruncatedSelfAttention(nn.Module):
    """Multi-head self-attention where frame t attends to frames [t - left, t + right].

    ``left = right = None`` gives full attention through ``F.scaled_dot_product_attention``.

    Args:
        d_model: model width D (divisible by ``num_heads``).
        num_heads: H.
        left, right: context frames L, R (both ints) or both None for full attention.
        dropout: dropout on the attention probabilities (training only).
        engine: one of :data:`ENGINES` (see the module docstring).
        query_block: queries per block of the blockwise engine (see :func:`banded_attention`).

    Example:
        >>> attn = TruncatedSelfAttention(d_model=64, num_heads=4, left=8, right=8)
        >>> x = torch.randn(2, 100, 64)                       # (B, T, D)
        >>> pad = torch.arange(100)[None, :] >= torch.tensor([[100], [60]])  # (B, T), True = padding
        >>> y, weights = attn(x, key_padding_mask=pad, need_weights=True)
        >>> y.shape, weights.shape                            # weights: (B, H, T, L + R + 1)
        (torch.Size([2, 100, 64]), torch.Size([2, 4, 100, 17]))
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        left: int | None,
        right: int | None,
        dropout: float = 0.0,
        engine: str = "auto",
        *,
        query_block: int = DEFAULT_QUERY_BLOCK,
    ) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        if (left is None) != (right is None):
            raise ValueError(
                f"left and right must both be ints (truncated) or both None (full), got {left}, {right}"
            )
        if left is not None:
            _check_window(left, right)  # type: ignore[arg-type]
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        self.d_model = d_model
        self.num_heads = num_heads
        self.left = left
        self.right = right
        self.dropout = dropout
        self.engine = engine
        self.query_block = query_block
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    @property
    def is_full(self) -> bool:
        return self.left is None

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, heads={self.num_heads}, left={self.left}, right={self.right}, engine={self.engine}"

    def forward(
        self, x: Tensor, key_padding_mask: Tensor | None = None, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """x ``(B, T, D)``, key_padding_mask ``(B, T)`` bool True = padding.

        Returns ``y (B, T, D)`` and, if ``need_weights``, ``(B, H, T, L + R + 1)`` band weights
        (``(B, H, T, T)`` for full attention), else None."""
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"expected x of shape (B, T, {self.d_model}), got {tuple(x.shape)}")
        B, T, _ = x.shape
        H = self.num_heads
        q, k, v = self.in_proj(x).view(B, T, 3, H, -1).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, T, Dh)
        dropout_p = self.dropout if self.training else 0.0
        if key_padding_mask is not None:
            _check_qkv(q, k, v, key_padding_mask)
            if not bool(key_padding_mask.any()):
                key_padding_mask = None  # nothing padded: skip all masking work
        if self.is_full:
            out, weights = self._full_attention(q, k, v, key_padding_mask, dropout_p, need_weights)
        else:
            out, weights = self._banded(q, k, v, key_padding_mask, dropout_p, need_weights)
        return self.out_proj(out.transpose(1, 2).reshape(B, T, self.d_model)), weights

    def _banded(
        self, q: Tensor, k: Tensor, v: Tensor, pad: Tensor | None, dropout_p: float, need_weights: bool
    ) -> tuple[Tensor, Tensor | None]:
        left, right = self.left, self.right
        assert left is not None and right is not None
        right_padded = (
            pad is None
            or self.engine != "auto"
            or q.device.type != "cuda"
            or _lengths_if_right_padded(pad, q.shape[0], q.shape[2], q.device) is not None
        )  # only "auto" on CUDA needs to know (varlen requires right padding)
        needs_grad = torch.is_grad_enabled() and q.requires_grad
        engine = resolve_engine(
            self.engine, q.device, q.dtype, need_weights=need_weights,
            dropout_active=dropout_p > 0.0, right_padded=right_padded, needs_grad=needs_grad,
        )  # fmt: skip
        if not torch.compiler.is_compiling():  # logging inside a compiled graph would break it
            _log_engine_once(self.engine, engine, q.device, q.dtype, needs_grad)
        if engine == "blockwise":
            return banded_attention(
                q, k, v, left, right, pad, self.query_block, dropout_p=dropout_p, need_weights=need_weights
            )
        if engine == "dense":
            return dense_masked_attention(q, k, v, left, right, pad, dropout_p=dropout_p, need_weights=need_weights)
        if engine == "flex":
            return flex_banded_attention(q, k, v, left, right, pad), None
        return varlen_banded_attention(q, k, v, left, right, pad), None

    @staticmethod
    def _full_attention(
        q: Tensor, k: Tensor, v: Tensor, pad: Tensor | None, dropout_p: float, need_weights: bool
    ) -> tuple[Tensor, Tensor | None]:
        # (B, 1, 1, T) key mask, True = attend: broadcast by SDPA, never a T x T tensor.
        keep = None if pad is None else ~pad[:, None, None, :]
        if not need_weights:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=dropout_p)
        else:
            # Explicit (B, H, T, T) weights: only for short utterances (attention-map pictures).
            scores = torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5
            if keep is not None:
                scores = scores.masked_fill(~keep, float("-inf"))
            weights = _softmax(scores)
            out = torch.matmul(F.dropout(weights, p=dropout_p, training=dropout_p > 0.0), v)
        if pad is not None:
            query_pad = pad[:, None, :, None]
            out = out.masked_fill(query_pad, 0.0)
            if need_weights:
                weights = weights.masked_fill(query_pad, 0.0)
        return out, (weights.detach() if need_weights else None)
