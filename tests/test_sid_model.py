"""Speaker-ID building blocks: pooling, AAM-softmax, SpeakerModel, random crops."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from speechattn.data.crops import RandomCrop, random_crop
from speechattn.models.masks import padding_mask
from speechattn.models.speaker import (
    AAMSoftmax,
    AttentiveStatsPooling,
    MeanPooling,
    SelfAttentionPooling,
    SoftmaxHead,
    SpeakerModel,
)

torch.set_num_threads(1)

D = 6
LENGTHS = torch.tensor([7, 4, 1])


def make_poolings() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "mean": MeanPooling(D),
        "attentive": AttentiveStatsPooling(D, hidden_dim=8),
        "attentive_channel_wise_context": AttentiveStatsPooling(D, hidden_dim=8, channel_wise=True, global_context=True),
        "self_attention": SelfAttentionPooling(D),
        "self_attention_2heads_hidden": SelfAttentionPooling(D, num_heads=2, hidden_dim=5),
    }


@pytest.mark.parametrize("name", list(make_poolings()))
def test_pooling_weights_sum_to_one_over_valid_frames(name: str) -> None:
    pool = make_poolings()[name]
    h = torch.randn(3, 7, D)
    pooled, w = pool(h, LENGTHS, return_weights=True)
    assert pooled.shape == (3, pool.out_dim)
    # Put time last whatever the layout ((B,T), (B,H,T) or (B,T,D)) and check each weight profile.
    w_time_last = w.transpose(1, 2) if w.dim() == 3 and w.shape[1] == 7 else w
    pad = padding_mask(LENGTHS, 7)
    pad = pad.view(3, *([1] * (w_time_last.dim() - 2)), 7).expand_as(w_time_last)
    assert torch.all(w_time_last[pad] == 0)
    torch.testing.assert_close(w_time_last.sum(-1), torch.ones(w_time_last.shape[:-1]))
    assert torch.all(w_time_last[~pad] > 0)


@pytest.mark.parametrize("name", list(make_poolings()))
def test_pooling_ignores_padding_content(name: str) -> None:
    pool = make_poolings()[name]
    h = torch.randn(3, 7, D)
    pad = padding_mask(LENGTHS, 7)
    other = h.clone()
    other[pad] = torch.randn(int(pad.sum()), D) * 1e3
    nan_padded = h.clone()
    nan_padded[pad] = float("nan")
    expected = pool(h, LENGTHS)
    torch.testing.assert_close(pool(other, LENGTHS), expected)
    torch.testing.assert_close(pool(nan_padded, LENGTHS), expected)
    # ... and equals pooling each utterance alone, without any padding.
    for b, length in enumerate(LENGTHS.tolist()):
        alone = pool(h[b : b + 1, :length], torch.tensor([length]))
        torch.testing.assert_close(alone[0], expected[b])


def test_mean_pooling_is_mean_of_valid_frames() -> None:
    h = torch.randn(3, 7, D)
    pooled = MeanPooling(D)(h, LENGTHS)
    for b, length in enumerate(LENGTHS.tolist()):
        torch.testing.assert_close(pooled[b], h[b, :length].mean(dim=0))


def test_attentive_stats_with_uniform_weights_is_plain_mean_and_std() -> None:
    pool = AttentiveStatsPooling(D, hidden_dim=8)
    with torch.no_grad():  # constant scores -> uniform attention
        pool.attention[-1].weight.zero_()
        pool.attention[-1].bias.zero_()
    h = torch.randn(3, 7, D)
    pooled = pool(h, LENGTHS)
    for b, length in enumerate(LENGTHS.tolist()):
        frames = h[b, :length]
        torch.testing.assert_close(pooled[b, :D], frames.mean(dim=0))
        expected_std = frames.std(dim=0, correction=0).clamp(min=math.sqrt(pool.eps))
        torch.testing.assert_close(pooled[b, D:], expected_std, atol=1e-5, rtol=1e-4)


def test_attentive_stats_hand_example() -> None:
    # One channel, frames 1 and 3 (third frame is padding): mean 2, std 1.
    pool = AttentiveStatsPooling(1, hidden_dim=2)
    with torch.no_grad():
        pool.attention[-1].weight.zero_()
        pool.attention[-1].bias.zero_()
    pooled = pool(torch.tensor([[[1.0], [3.0], [100.0]]]), torch.tensor([2]))
    torch.testing.assert_close(pooled, torch.tensor([[2.0, 1.0]]))


def test_attentive_weights_follow_scores() -> None:
    # MLP Linear(1,1) -> tanh -> Linear(1,1) with unit/5 weights and zero bias scores frame x as 5 tanh(x).
    pool = AttentiveStatsPooling(1, hidden_dim=1)
    with torch.no_grad():
        pool.attention[0].weight.fill_(1.0)
        pool.attention[0].bias.zero_()
        pool.attention[2].weight.fill_(5.0)
        pool.attention[2].bias.zero_()
    h = torch.tensor([[[0.0], [1.0], [-1.0]]])
    _, w = pool(h, torch.tensor([3]), return_weights=True)
    scores = 5.0 * torch.tanh(h[0, :, 0])
    torch.testing.assert_close(w[0], torch.softmax(scores, dim=0))


def test_padding_mask_rejects_bad_lengths() -> None:
    with pytest.raises(ValueError, match="lengths"):
        padding_mask(torch.tensor([0, 3]), 5)
    with pytest.raises(ValueError, match="lengths"):
        padding_mask(torch.tensor([6]), 5)


def test_self_attention_pooling_rejects_indivisible_heads() -> None:
    with pytest.raises(ValueError, match="divisible"):
        SelfAttentionPooling(10, num_heads=3)


def unit(angle_degrees: float) -> list[float]:
    return [math.cos(math.radians(angle_degrees)), math.sin(math.radians(angle_degrees))]


def aam_with_axes(margin: float, scale: float, easy_margin: bool = False) -> AAMSoftmax:
    """Two classes whose weight vectors are the x and y axes (weight norms 2 and 3: must not matter)."""
    head = AAMSoftmax(2, 2, margin=margin, scale=scale, easy_margin=easy_margin)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 3.0]]))
    return head


def test_aam_margin_only_on_target_column() -> None:
    m, s = 0.2, 30.0
    head = aam_with_axes(m, s)
    emb = torch.tensor([unit(30.0)]) * 7.0  # 30 deg from class 0, 60 deg from class 1
    theta0, theta1 = math.radians(30.0), math.radians(60.0)
    torch.testing.assert_close(head(emb), torch.tensor([[s * math.cos(theta0), s * math.cos(theta1)]]))
    torch.testing.assert_close(head(emb, torch.tensor([0])),
                               torch.tensor([[s * math.cos(theta0 + m), s * math.cos(theta1)]]))
    torch.testing.assert_close(head(emb, torch.tensor([1])),
                               torch.tensor([[s * math.cos(theta0), s * math.cos(theta1 + m)]]))


def test_aam_fallback_when_theta_plus_margin_exceeds_pi() -> None:
    m, s = 0.2, 10.0
    head = aam_with_axes(m, s)
    theta0 = math.radians(170.0)  # theta0 + m > pi: cos(theta + m) would *increase* the logit
    emb = torch.tensor([unit(170.0)])
    logits = head(emb, torch.tensor([0]))
    expected0 = s * (math.cos(theta0) - math.sin(math.pi - m) * m)
    assert expected0 < s * math.cos(theta0)  # the fallback still penalises the target
    torch.testing.assert_close(logits, torch.tensor([[expected0, s * math.cos(math.radians(80.0))]]))


def test_aam_easy_margin() -> None:
    m, s = 0.3, 5.0
    head = aam_with_axes(m, s, easy_margin=True)
    emb = torch.tensor([unit(100.0), unit(40.0)])  # 100 deg: no margin (cos < 0); 40 deg: margin
    logits = head(emb, torch.tensor([0, 0]))
    torch.testing.assert_close(logits[:, 0], torch.tensor([s * math.cos(math.radians(100.0)),
                                                           s * math.cos(math.radians(40.0) + m)]))


def test_aam_gradient_is_finite_at_zero_angle() -> None:
    head = aam_with_axes(0.2, 30.0)
    emb = torch.tensor([[1.0, 0.0]], requires_grad=True)  # exactly on class 0: sin(theta) = 0
    nn.functional.cross_entropy(head(emb, torch.tensor([0])), torch.tensor([0])).backward()
    assert torch.isfinite(emb.grad).all() and torch.isfinite(head.weight.grad).all()


def test_softmax_head_ignores_targets() -> None:
    head = SoftmaxHead(4, 3)
    emb = torch.randn(5, 4)
    torch.testing.assert_close(head(emb, torch.tensor([0, 1, 2, 0, 1])), head(emb))
    torch.testing.assert_close(head(emb), head.linear(emb))


class TinyEncoder(nn.Module):
    """Stand-in for the attention encoder: a per-frame Linear, (B, T, F) -> (B, T, H)."""

    def __init__(self, input_dim: int = 10, output_dim: int = 12) -> None:
        super().__init__()
        self.output_dim = output_dim
        self.proj = nn.Linear(input_dim, output_dim)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.proj(x))


@pytest.mark.parametrize("pooling", ["attentive_stats", "self_attention", "mean"])
@pytest.mark.parametrize("head", ["aam", "softmax"])
def test_speaker_model_shapes_and_backward(pooling: str, head: str) -> None:
    torch.manual_seed(0)
    model = SpeakerModel(TinyEncoder(), num_speakers=4, pooling=pooling, embed_dim=8, head=head)
    x, lengths = torch.randn(3, 20, 10), torch.tensor([20, 15, 9])
    targets = torch.tensor([0, 3, 1])
    emb = model(x, lengths)
    assert emb.shape == (3, 8)
    assert model.logits(emb).shape == (3, 4)
    loss = model.loss(x, lengths, targets)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    assert model.encoder.proj.weight.grad.abs().sum() > 0


def test_speaker_model_embedding_does_not_depend_on_batch_padding() -> None:
    torch.manual_seed(0)
    model = SpeakerModel(TinyEncoder(), num_speakers=4, embed_dim=8).eval()
    x, lengths = torch.randn(2, 20, 10), torch.tensor([20, 11])
    batched = model(x, lengths)
    alone = model(x[1:, :11], torch.tensor([11]))
    torch.testing.assert_close(batched[1], alone[0])


def test_speaker_model_learns_toy_speakers() -> None:
    # Three "speakers" = three feature means; a few AAM steps must reduce the loss a lot.
    torch.manual_seed(0)
    model = SpeakerModel(TinyEncoder(), num_speakers=3, embed_dim=8, margin=0.2, scale=10.0)
    centres = torch.randn(3, 10) * 2
    targets = torch.arange(3).repeat(4)
    x = centres[targets].unsqueeze(1) + 0.3 * torch.randn(12, 15, 10)
    lengths = torch.full((12,), 15)
    first = model.loss(x, lengths, targets).item()
    for _ in range(60):  # plain gradient descent: torch.optim's first use imports torch._dynamo (seconds)
        model.zero_grad()
        loss = model.loss(x, lengths, targets)
        loss.backward()
        with torch.no_grad():
            for parameter in model.parameters():
                parameter -= 0.1 * parameter.grad
    assert loss.item() < 0.5 * first
    model.eval()
    assert (model.logits(model(x, lengths)).argmax(-1) == targets).all()


def test_speaker_model_rejects_unknown_options() -> None:
    with pytest.raises(ValueError, match="pooling"):
        SpeakerModel(TinyEncoder(), num_speakers=2, pooling="max")
    with pytest.raises(ValueError, match="head"):
        SpeakerModel(TinyEncoder(), num_speakers=2, head="cosface")


def test_random_crop_long_utterance_is_a_contiguous_window() -> None:
    feats = torch.arange(50 * 3, dtype=torch.float32).view(50, 3)
    crop, length = random_crop(feats, 20, torch.Generator().manual_seed(1))
    assert crop.shape == (20, 3) and length == 20
    start = int(crop[0, 0]) // 3
    torch.testing.assert_close(crop, feats[start : start + 20])
    again, _ = random_crop(feats, 20, torch.Generator().manual_seed(1))
    torch.testing.assert_close(again, crop)
    starts = {int(random_crop(feats, 20, g)[0][0, 0]) // 3 for g in [torch.Generator().manual_seed(i) for i in range(30)]}
    assert len(starts) > 5 and min(starts) >= 0 and max(starts) <= 30


def test_random_crop_short_utterance_is_padded_with_true_length() -> None:
    feats = torch.randn(7, 3)
    crop, length = random_crop(feats, 10)
    assert crop.shape == (10, 3) and length == 7
    torch.testing.assert_close(crop[:7], feats)
    assert torch.all(crop[7:] == 0)
    cropper = RandomCrop(10, seed=0)
    cropper(feats)
    cropper(torch.randn(30, 3))
    assert (cropper.num_crops, cropper.num_padded) == (2, 1)
