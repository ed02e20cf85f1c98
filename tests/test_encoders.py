"""Shapes and padding behaviour of every phone-recipe model."""
from __future__ import annotations

import pytest
import torch

from speechattn.models.encoders import build_encoder, padding_mask
from speechattn.data.dataset import IGNORE_INDEX
from speechattn.models.frame_classifier import FrameClassifier
from speechattn.tasks.phone import frame_correct, frame_loss

torch.set_num_threads(1)

CONFIGS = {
    "mlp_context": {"name": "mlp_context", "context": 3, "hidden_dim": 32, "num_layers": 2, "dropout": 0.0},
    "blstm": {"name": "blstm", "hidden_dim": 16, "num_layers": 2, "dropout": 0.0},
    "transformer": {"name": "transformer", "d_model": 32, "num_layers": 2, "num_heads": 4, "ffn_dim": 64,
                    "dropout": 0.0},
    "truncated_transformer": {"name": "truncated_transformer", "d_model": 32, "num_layers": 2, "num_heads": 4,
                              "ffn_dim": 64, "left": 5, "right": 3, "dropout": 0.0},
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_frame_classifier_shapes_and_padding_invariance(name: str) -> None:
    torch.manual_seed(0)
    model = FrameClassifier(build_encoder(CONFIGS[name], 20), num_classes=7).eval()
    x = torch.randn(3, 50, 20)
    lengths = torch.tensor([50, 31, 1])
    logits = model(x, lengths)
    assert logits.shape == (3, 50, 7)
    # An utterance scored alone equals the same utterance inside a padded batch.
    alone = model(x[1:2, :31], lengths[1:2])
    torch.testing.assert_close(logits[1:2, :31], alone, atol=1e-5, rtol=1e-5)
    # Padding content must not leak into real frames.
    x2 = x.clone()
    x2[1, 31:] = 100.0
    torch.testing.assert_close(model(x2, lengths)[1, :31], logits[1, :31], atol=1e-5, rtol=1e-5)


def test_receptive_fields() -> None:
    assert build_encoder(CONFIGS["mlp_context"], 20).receptive_field() == (3, 3)
    assert build_encoder(CONFIGS["blstm"], 20).receptive_field() is None
    left, right = build_encoder(CONFIGS["truncated_transformer"], 20).receptive_field()
    assert left >= 2 * 5 and right >= 2 * 3


def test_mlp_context_sees_exactly_its_window() -> None:
    torch.manual_seed(0)
    enc = build_encoder(CONFIGS["mlp_context"], 4).eval()
    x = torch.randn(1, 30, 4)
    lengths = torch.tensor([30])
    base = enc(x, lengths)
    x2 = x.clone()
    x2[0, 20] += 1.0
    changed = (enc(x2, lengths) - base).abs().sum(-1)[0] > 1e-6
    assert changed.nonzero().flatten().tolist() == list(range(17, 24))  # frames 20±3


def test_loss_and_accuracy_ignore_padding() -> None:
    logits = torch.zeros(1, 3, 2)
    logits[0, :, 1] = 5.0  # predicts class 1 everywhere: right on frame 0, wrong on frame 1
    targets = torch.tensor([[1, 0, IGNORE_INDEX]])
    assert frame_correct(logits, targets) == (1, 2)
    assert torch.isfinite(frame_loss(logits, targets))
    assert padding_mask(torch.tensor([3, 1]), 4).tolist() == [[False, False, False, True], [False, True, True, True]]


def test_frame_stacking_keeps_one_label_per_frame_and_a_bounded_receptive_field() -> None:
    from speechattn.models.frame_classifier import build_phone_model

    torch.manual_seed(0)
    cfg = {**CONFIGS["truncated_transformer"], "frame_stack": 3, "left": 7, "right": 4}
    model = build_phone_model(cfg, 20, num_classes=5).eval()
    assert (model.encoder.left, model.encoder.right) == (3, 2)  # frames -> positions, rounded up
    x = torch.randn(2, 29, 20)
    lengths = torch.tensor([29, 17])
    logits = model(x, lengths)
    assert logits.shape == (2, 29, 5)
    torch.testing.assert_close(model(x[1:2, :17], lengths[1:2]), logits[1:2, :17], atol=1e-5, rtol=1e-5)
    left, right = model.receptive_field()
    assert left % 3 == 0 and right % 3 == 0
    x = torch.randn(1, 150, 20)
    lengths = torch.tensor([150])
    base = model(x, lengths)
    x[0, 149] += 10.0  # last frame: output frames further left than the receptive field must not move
    changed = (model(x, lengths) - base).abs().sum(-1)[0] > 1e-6
    assert changed[149] and not changed[: 149 - right].any()


def test_stack_frames_zero_pads_the_last_position_and_ignores_padding() -> None:
    from speechattn.models.stacking import stack_frames

    x = torch.arange(1.0, 9.0).view(1, 8, 1).repeat(2, 1, 1)  # frames 1..8
    x[1, 5:] = 99.0  # padding of the second utterance (length 5) must not leak
    stacked, lengths = stack_frames(x, torch.tensor([8, 5]), 3)
    assert stacked.shape == (2, 3, 3) and lengths.tolist() == [3, 2]
    assert stacked[0].tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 0]]
    assert stacked[1, :2].tolist() == [[1, 2, 3], [4, 5, 0]]
    same, same_lengths = stack_frames(x, torch.tensor([8, 5]), 1)
    assert same_lengths.tolist() == [8, 5] and torch.all(same[1, 5:] == 0)
    with pytest.raises(ValueError, match="frame_stack"):
        stack_frames(x, torch.tensor([8, 5]), 0)
