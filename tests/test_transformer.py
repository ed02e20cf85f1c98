"""Self-attention encoder: shapes, padding invariance, receptive field, chunked inference."""

from __future__ import annotations

import pytest
import torch

from speechattn.models.transformer import SelfAttentionEncoder, map_time_chunks

ATOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def small_encoder(left=3, right=2, **overrides):
    torch.manual_seed(0)
    kwargs = dict(input_dim=12, d_model=32, num_layers=2, num_heads=4, ffn_dim=64, left=left, right=right,
                  dropout=0.1, pos_conv_kernel=5)  # fmt: skip
    kwargs.update(overrides)
    return SelfAttentionEncoder(**kwargs).eval()


def test_shapes_and_padded_frames_are_zero():
    encoder = small_encoder()
    x = torch.randn(3, 40, 12)
    lengths = torch.tensor([40, 25, 1])
    y = encoder(x, lengths)
    assert y.shape == (3, 40, 32) and encoder.output_dim == 32
    assert torch.all(y[1, 25:] == 0) and torch.all(y[2, 1:] == 0)
    assert torch.all(y[0].abs().sum(-1) > 0)


@pytest.mark.parametrize("context,conv_kernel", [((3, 2), 0), ((None, None), 0), ((3, 2), 5), ((None, None), 3)],
                         ids=["truncated", "full", "truncated-conv", "full-conv"])  # fmt: skip
def test_padding_invariance(context, conv_kernel):
    encoder = small_encoder(*context, conv_kernel=conv_kernel)
    x = torch.randn(3, 50, 12)
    lengths = torch.tensor([50, 33, 8])
    batch = encoder(x, lengths)
    for b, n in enumerate(lengths.tolist()):
        alone = encoder(x[b : b + 1, :n], torch.tensor([n]))
        torch.testing.assert_close(batch[b, :n], alone[0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("conv_kernel,expected", [(0, (8, 6)), (5, (12, 10))])
def test_receptive_field_is_exact(conv_kernel, expected):
    # 2 layers, positional kernel 5: (2*3 + 2, 2*2 + 2); a conv module of kernel 5 adds 2 per layer and side
    encoder = small_encoder(left=3, right=2, conv_kernel=conv_kernel)
    assert encoder.receptive_field() == expected
    left, right = expected
    x = torch.randn(1, 60, 12)
    lengths = torch.tensor([60])
    t = 30
    base = encoder(x, lengths)[0, t]

    def output_after_perturbing(frame):
        x2 = x.clone()
        x2[0, frame] += 10.0
        return encoder(x2, lengths)[0, t]

    for outside in (t - left - 1, t + right + 1, 0, 59):  # bit-identical: no path from these frames
        assert torch.equal(output_after_perturbing(outside), base)
    for edge in (t - left, t + right):  # the receptive field is tight: its edge frames do matter
        assert (output_after_perturbing(edge) - base).abs().max() > 1e-6


def test_chunked_inference_with_receptive_field_context_is_identical():
    encoder = small_encoder(left=4, right=3)
    T = 120
    x = torch.randn(1, T, 12)
    full = encoder(x, torch.tensor([T]))[0]
    left_ctx, right_ctx = encoder.receptive_field()
    for start, end in ((0, 40), (40, 80), (80, 120)):
        lo, hi = max(0, start - left_ctx), min(T, end + right_ctx)
        chunk = encoder(x[:, lo:hi], torch.tensor([hi - lo]))[0]
        torch.testing.assert_close(chunk[start - lo : end - lo], full[start:end], atol=ATOL, rtol=0)


@pytest.mark.parametrize("chunk,conv_kernel", [(7, 0), (16, 0), (50, 0), (7, 5), (16, 3)])
def test_no_grad_time_chunked_forward_equals_whole_forward(chunk, conv_kernel):
    encoder = small_encoder(left=4, right=3, inference_chunk=chunk, conv_kernel=conv_kernel)
    x = torch.randn(3, 90, 12)
    lengths = torch.tensor([90, 61, 5])
    whole = encoder(x, lengths)  # grad enabled: the whole-sequence path
    with torch.no_grad():
        chunked = encoder(x, lengths)
    with torch.inference_mode():
        chunked_inference = encoder(x, lengths)
    torch.testing.assert_close(chunked, whole, atol=ATOL, rtol=0)
    torch.testing.assert_close(chunked_inference, whole, atol=ATOL, rtol=0)
    assert torch.all(chunked[1, 61:] == 0)


def test_map_time_chunks_gives_each_chunk_its_halo():
    x = torch.arange(20.0).view(1, 20, 1)
    seen = []

    def fn(xc, pc):
        seen.append((int(xc[0, 0, 0]), int(xc[0, -1, 0])))
        return xc * 2

    out = map_time_chunks(fn, x, None, 2, 1, 8)
    torch.testing.assert_close(out, x * 2)
    assert seen == [(0, 8), (6, 16), (14, 19)]


def test_attention_weights_for_pictures():
    encoder = small_encoder(left=3, right=2)
    x = torch.randn(2, 20, 12)
    lengths = torch.tensor([20, 11])
    y, weights = encoder(x, lengths, return_attention=1)
    assert weights.shape == (2, 4, 20, 6)
    torch.testing.assert_close(y, encoder(x, lengths))
    torch.testing.assert_close(encoder.attention_weights(x, lengths, layer=1), weights)
    sums = weights[1, :, :11].sum(-1)
    torch.testing.assert_close(sums, torch.ones_like(sums))
    full = small_encoder(None, None)
    assert full.attention_weights(x, lengths, layer=0).shape == (2, 4, 20, 20)


def test_training_step_backward():
    encoder = small_encoder().train()
    x = torch.randn(2, 30, 12)
    y = encoder(x, torch.tensor([30, 17]))
    y.square().mean().backward()
    grads = [p.grad for p in encoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_bad_configuration_and_input():
    with pytest.raises(ValueError, match="odd"):
        small_encoder(pos_conv_kernel=4)
    with pytest.raises(ValueError, match="odd"):
        small_encoder(conv_kernel=4)
    assert small_encoder(None, None).receptive_field() is None  # unbounded, as for every encoder (#10)
    assert small_encoder(pos_conv_kernel=0).receptive_field() == (6, 4)
    encoder = small_encoder()
    with pytest.raises(ValueError, match="lengths"):
        encoder(torch.randn(1, 10, 12), torch.tensor([11]))
    with pytest.raises(ValueError, match=r"\(B, T, 12\)"):
        encoder(torch.randn(1, 10, 13), torch.tensor([10]))
    with pytest.raises(ValueError, match="return_attention"):
        encoder(torch.randn(1, 10, 12), torch.tensor([10]), return_attention=2)
