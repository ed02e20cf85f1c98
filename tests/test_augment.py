"""SpecAugment of padded batches (speechattn/features/augment.py), used by the phone and speaker tasks."""
from __future__ import annotations

import torch

from speechattn.features.augment import spec_augment
from speechattn.models.masks import padding_mask

torch.set_num_threads(1)


def test_spec_augment_keeps_padding_and_masks_inside_valid_frames() -> None:
    torch.manual_seed(0)
    feats = torch.rand(4, 60, 20) + 1.0  # strictly positive: a 0 means "masked"
    lengths = torch.tensor([60, 45, 30, 12])
    pad = padding_mask(lengths, 60)
    feats[pad] = -5.0
    original = feats.clone()
    out = spec_augment(feats, lengths, freq_mask_param=8, num_freq_masks=2, time_mask_param=15,
                       num_time_masks=2, max_time_mask_ratio=0.3)
    torch.testing.assert_close(feats, original)  # input untouched
    assert out.shape == feats.shape
    torch.testing.assert_close(out[pad], original[pad])  # padding untouched
    assert (out[~pad] == 0).any()  # something was masked
    changed = out != original
    assert torch.all(out[changed] == 0)  # masks set the mask value, nothing else changes
    for b, length in enumerate(lengths.tolist()):
        fully_masked_frames = (out[b] == 0).all(dim=-1).nonzero().flatten()
        assert torch.all(fully_masked_frames < length)
        # Time masks are at most max_time_mask_ratio * length frames each.
        assert len(fully_masked_frames) <= 2 * int(0.3 * length)


def test_spec_augment_without_masks_is_identity_and_seeded() -> None:
    feats, lengths = torch.randn(2, 30, 10), torch.tensor([30, 20])
    torch.testing.assert_close(spec_augment(feats, lengths, num_freq_masks=0, num_time_masks=0), feats)
    torch.manual_seed(3)
    first = spec_augment(feats, lengths)
    torch.manual_seed(3)
    torch.testing.assert_close(spec_augment(feats, lengths), first)
