"""torchaudio's Conformer as a phone encoder: built by name from its own file, exact against torchaudio's
own forward, padding-invariant in eval mode, attention maps for pictures."""
from __future__ import annotations

import pytest
import torch

from speechattn.models.encoders import build_encoder, registered_encoders
from speechattn.models.stacking import stack_frames
from speechattn.models.frame_classifier import build_phone_model

CFG = {"name": "torchaudio_conformer", "frame_stack": 3, "d_model": 32, "num_layers": 2, "num_heads": 2,
       "ffn_dim": 64, "conv_kernel": 7, "dropout": 0.1}


def test_found_by_name_without_being_listed() -> None:
    enc = build_encoder({k: v for k, v in CFG.items() if k != "frame_stack"}, 80)
    assert "torchaudio_conformer" in registered_encoders()
    assert enc.receptive_field() is None and enc.output_dim == 32


def test_unknown_encoder_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown model 'no_such_encoder'.*torchaudio_conformer|unknown model"):
        build_encoder({"name": "no_such_encoder"}, 80)


def test_equals_torchaudio_forward_and_ignores_padding() -> None:
    torch.manual_seed(0)
    model = build_phone_model(CFG, 80, 40).eval()
    x, lengths = torch.randn(2, 100, 80), torch.tensor([100, 61])
    with torch.no_grad():
        batched = model(x, lengths)
        alone = model(x[1:, :61], lengths[1:])
        torch.testing.assert_close(batched[1, :61], alone[0], atol=1e-5, rtol=1e-5)
        enc = model.encoder
        xs, positions = stack_frames(x[1:, :61], lengths[1:], 3)
        reference, _ = enc.conformer(enc.input_proj(xs), positions)  # torchaudio's own layer loop
        torch.testing.assert_close(enc(xs, positions), reference)


def test_attention_weights_are_distributions_over_real_positions() -> None:
    torch.manual_seed(0)
    enc = build_encoder({k: v for k, v in CFG.items() if k != "frame_stack"}, 80)
    w = enc.attention_weights(torch.randn(2, 30, 80), torch.tensor([30, 20]), layer=-1)
    assert w.shape == (2, 2, 30, 30)
    torch.testing.assert_close(w.sum(-1)[1, :, :20], torch.ones(2, 20))
    assert float(w[1, :, :20, 20:].abs().max()) == 0.0  # padding never attended
    assert enc.training  # mode restored


def test_trains_a_few_steps() -> None:
    torch.manual_seed(0)
    model = build_phone_model(CFG, 80, 5)
    x, y = torch.randn(2, 60, 80), torch.randint(0, 5, (2, 60))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(model(x, torch.tensor([60, 60])).flatten(0, 1), y.flatten())
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0]
