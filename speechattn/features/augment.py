"""SpecAugment (Park et al. 2019) for padded feature batches, shared by the phone and speaker tasks."""
from __future__ import annotations

import torch
import torchaudio.functional as AF
from torch import Tensor

from speechattn.models.masks import padding_mask

__all__ = ["spec_augment"]


def spec_augment(
    feats: Tensor,
    lengths: Tensor,
    freq_mask_param: int = 10,
    num_freq_masks: int = 2,
    time_mask_param: int = 20,
    num_time_masks: int = 2,
    max_time_mask_ratio: float = 0.2,
    mask_value: float = 0.0,
) -> Tensor:
    """SpecAugment masking (Park et al. 2019) of a padded batch; padding frames are returned untouched.

    Frequency masks: ``num_freq_masks`` bands of width U[0, freq_mask_param), drawn independently per
    utterance (torchaudio ``mask_along_axis_iid``). Time masks: ``num_time_masks`` spans of width
    U[0, min(time_mask_param, max_time_mask_ratio * length)), placed inside each utterance's valid frames
    (torchaudio ``mask_along_axis`` on the unpadded slice). Randomness comes from torch's global RNG (seed
    it with ``torch.manual_seed`` for reproducibility). Features are assumed mean-normalised, so the masked
    value is ``mask_value`` = 0 by default.

    Args:
        feats: ``(B, T, D)`` features; not modified in place.
        lengths: ``(B,)`` valid frames per utterance.

    Returns:
        ``(B, T, D)`` masked copy.

    Example:
        >>> out = spec_augment(torch.randn(2, 100, 80), torch.tensor([100, 60]))
        >>> out.shape
        torch.Size([2, 100, 80])
    """
    if feats.dim() != 3:
        raise ValueError(f"feats must be (B, T, D), got shape {tuple(feats.shape)}")
    pad = padding_mask(lengths, feats.size(1))
    out = feats
    for _ in range(num_freq_masks):
        out = AF.mask_along_axis_iid(out, freq_mask_param, mask_value, axis=2)
    if num_time_masks > 0 and time_mask_param > 0:
        rows = []
        for b, length in enumerate(lengths.tolist()):
            valid = out[b, :length]
            for _ in range(num_time_masks):
                valid = AF.mask_along_axis(valid, time_mask_param, mask_value, axis=0, p=max_time_mask_ratio)
            rows.append(torch.cat([valid, out[b, length:]], dim=0))
        out = torch.stack(rows)
    # Frequency masks also hit padding frames; restore them so padding stays exactly as given.
    return torch.where(pad.unsqueeze(-1), feats, out)
