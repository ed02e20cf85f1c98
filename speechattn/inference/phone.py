"""Label new audio with a trained phone model: one phone per 10 ms frame, same convention as training.

``PhoneLabeler.from_exp_dir(exp)`` rebuilds the model from ``exp/model.pt`` and recomputes features
exactly as stage 1 did (``exp/feats.yaml``), normalised as in training (``exp`` CMVN statistics).

Example:
    >>> labeler = PhoneLabeler.from_exp_dir("recipes/speechocean762/phone/exp/truncated_transformer")
    >>> labels = labeler.label_waveform(waveform)        # list of phone symbols, one per frame
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from speechattn.features.cmvn_setup import make_normaliser
from speechattn.features.extract import FeatureConfig, compute_features, feature_context_frames
from speechattn.training.checkpoint import load_checkpoint
from speechattn.training.phone_setup import build_phone_model
from speechattn.training.precision import Precision, inference_precision

log = logging.getLogger(__name__)


@dataclass
class PhoneLabeler:
    """A trained frame classifier with its feature pipeline."""

    model: torch.nn.Module
    phones: list[str]
    feature_cfg: FeatureConfig
    normalise: Any            # (utt, feats ndarray (T, F)) -> (T, F)
    config: dict[str, Any]
    device: torch.device
    precision: Precision | None = None    # autocast of the model; None = fp32

    @classmethod
    def from_exp_dir(cls, exp_dir: str | Path, checkpoint: str = "model.pt", device: torch.device | str = "cpu",
                     data_dir: str | Path | None = None, precision: str | None = None) -> "PhoneLabeler":
        """Load ``exp_dir/checkpoint``; ``data_dir`` is only needed for per-speaker CMVN. ``precision``
        overrides the checkpoint's (``trainer.precision`` it was trained with; fp32 for older ones)."""
        exp_dir = Path(exp_dir)
        ckpt = load_checkpoint(exp_dir / checkpoint, map_location=device)
        config = ckpt["config"]
        model = build_phone_model(config["model"], int(ckpt["input_dim"]), len(ckpt["phones"]))
        model.load_state_dict(ckpt["model"])
        model.to(device).eval()
        feats_yaml = exp_dir / "feats.yaml"
        if feats_yaml.exists():
            from omegaconf import OmegaConf
            feature_cfg = FeatureConfig.from_config(OmegaConf.load(feats_yaml))
        else:
            raise FileNotFoundError(f"{feats_yaml}: missing (written by training from the train dir's feats.yaml)")
        normalise = make_normaliser({**config["cmvn"], "stats": None}, data_dir, exp_dir)
        device = torch.device(device)
        prec = inference_precision(ckpt, precision, device)
        log.info("inference precision: %s (%s)", prec.name, "override" if precision is not None else "checkpoint")
        return cls(model, list(ckpt["phones"]), feature_cfg, normalise, config, device, prec)

    @property
    def receptive_field(self) -> tuple[int, int] | None:
        return self.model.receptive_field()

    def features(self, waveform: torch.Tensor, utt: str = "") -> torch.Tensor:
        """waveform (N,) at 16 kHz -> normalised features (T, F)."""
        feats = compute_features(waveform, self.feature_cfg.sample_rate, self.feature_cfg).numpy()
        return torch.from_numpy(np.ascontiguousarray(self.normalise(utt, feats), dtype=np.float32))

    @torch.no_grad()
    def logits(self, feats: torch.Tensor) -> torch.Tensor:
        """feats (T, F) -> logits (T, C)."""
        x = feats[None].to(self.device)
        lengths = torch.tensor([feats.shape[0]], device=self.device)
        with self._autocast():
            return self.model(x, lengths)[0].float().cpu()

    def _autocast(self):
        import contextlib
        return self.precision.autocast() if self.precision is not None else contextlib.nullcontext()

    def label_waveform(self, waveform: torch.Tensor, utt: str = "") -> list[str]:
        """Whole-utterance labelling: one phone symbol per frame."""
        feats = self.features(waveform, utt)
        if feats.shape[0] == 0:
            return []
        return [self.phones[i] for i in self.logits(feats).argmax(-1).tolist()]

    def iter_label_file(self, path: str, chunk_frames: int) -> Iterator[tuple[int, list[str]]]:
        """Chunked labelling of a (long) audio file with bounded memory; identical to whole-utterance labels.

        Yields ``(first_frame, labels)`` in order. Needs a bounded receptive field (not BLSTM / full attention).
        """
        from speechattn.inference.longform import iter_chunked_predictions
        rf = self.receptive_field
        if rf is None:
            raise ValueError(f"model {self.config['model']['name']} has an unbounded receptive field: "
                             "chunked long-form inference would not be exact; use whole-utterance inference")

        def frame_fn(feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            with torch.no_grad(), self._autocast():
                return self.model(feats.to(self.device), lengths.to(self.device)).float().cpu()

        for first, ids in iter_chunked_predictions(
                path, feature_fn=lambda w: self.features(w), frame_fn=frame_fn, receptive_field=rf,
                chunk_frames=chunk_frames, sample_rate=self.feature_cfg.sample_rate,
                feature_context_frames=feature_context_frames(self.feature_cfg)):
            yield first, [self.phones[i] for i in np.asarray(ids).tolist()]

    @torch.no_grad()
    def attention(self, feats: torch.Tensor, layer: int = -1) -> torch.Tensor | None:
        """Attention weights ``(H, P, L+R+1)`` (banded) or ``(H, P, P)`` (full) of one layer for a short
        utterance, over encoder positions (P = T / frame_stack); None when the model has no attention."""
        enc = self.model.encoder
        if not hasattr(enc, "attention_weights"):
            return None
        x = feats[None].to(self.device)
        lengths = torch.tensor([feats.shape[0]], device=self.device)
        if self.model.frame_stack > 1:
            x, lengths = self.model.stack(x, lengths)
        layer = layer % enc.num_layers  # -1 = last layer
        return enc.attention_weights(x, lengths, layer)[0].float().cpu()
