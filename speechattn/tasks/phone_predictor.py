"""Label new audio with a trained phone model: one phone per 10 ms frame, same convention as training.

``PhoneLabeler.from_exp_dir(exp)`` rebuilds the model from ``exp/model.pt`` and recomputes features
exactly as stage 1 did (``exp/feats.yaml``), normalised as in training (``exp`` CMVN statistics).

Example:
    >>> labeler = PhoneLabeler.from_exp_dir("recipes/speechocean762/phone/exp/truncated_transformer")  # doctest: +SKIP
    >>> labels = labeler.label_waveform(waveform)        # list of phone symbols, one per frame  # doctest: +SKIP
"""
from __future__ import annotations

import logging
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from speechattn.data.audio import audio_info
from speechattn.data.framing import frame_shift_samples
from speechattn.features.extract import feature_context_frames
from speechattn.models.encoders import attention_window
from speechattn.tasks.base import Predictor, pad_features
from speechattn.tasks.longform import iter_chunked_predictions

log = logging.getLogger(__name__)


class PhoneLabeler(Predictor):
    """A trained frame classifier (:class:`~speechattn.models.frame_classifier.FrameClassifier`) with its
    feature pipeline; ``labels`` (also ``phones``) are the phone classes."""

    task_name = "phone"

    @property
    def phones(self) -> list[str]:
        return self.labels

    @property
    def receptive_field(self) -> tuple[int, int] | None:
        return self.model.receptive_field()

    @torch.no_grad()
    def logits(self, feats: torch.Tensor) -> torch.Tensor:
        """feats (T, F) -> logits (T, C)."""
        return self.batch_logits([feats])[0]

    @torch.no_grad()
    def batch_logits(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Several utterances' feats ``[(T_i, F)]`` -> logits ``(B, max T_i, C)`` of one padded forward pass
        (rows past ``T_i`` are padding)."""
        x, lengths = pad_features(feats)
        with self.autocast():
            return self.model(x.to(self.device), lengths.to(self.device)).float().cpu()

    def predict_batch(self, feats: Sequence[torch.Tensor]) -> list[list[str]]:
        """Frame labels of several utterances (one padded forward pass): each as :meth:`label_waveform`."""
        ids = self.batch_logits(feats).argmax(-1)
        return [[self.labels[i] for i in row[:f.shape[0]].tolist()] for row, f in zip(ids, feats)]

    def label_waveform(self, waveform: torch.Tensor, utt: str = "") -> list[str]:
        """Whole-utterance labelling: one phone symbol per frame."""
        feats = self.features(waveform, utt)
        if feats.shape[0] == 0:
            return []
        return self.predict_batch([feats])[0]

    def iter_label_file(self, path: str, chunk_frames: int) -> Iterator[tuple[int, list[str]]]:
        """Chunked labelling of a (long) audio file with bounded memory; identical to whole-utterance labels.

        Yields ``(first_frame, labels)`` in order. Needs a bounded receptive field (not BLSTM / full attention).
        ``chunk_frames`` is rounded up to a multiple of the frame stack: chunks must start on the stacking
        grid of the whole utterance, or their positions would stack other frames together.
        """
        rf = self.receptive_field
        if rf is None:
            raise ValueError(f"model {self.config['model']['name']} has an unbounded receptive field: "
                             "chunked long-form inference would not be exact; use whole-utterance inference")
        k = self.model.frame_stack
        chunk_frames = -(-chunk_frames // k) * k

        def frame_fn(feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            with torch.no_grad(), self.autocast():
                return self.model(feats.to(self.device), lengths.to(self.device)).float().cpu()

        for first, ids in iter_chunked_predictions(
                path, feature_fn=lambda w: self.features(w), frame_fn=frame_fn, receptive_field=rf,
                chunk_frames=chunk_frames, sample_rate=self.feature_cfg.sample_rate,
                feature_context_frames=feature_context_frames(self.feature_cfg)):
            yield first, [self.labels[i] for i in np.asarray(ids).tolist()]

    def predict_waveform(self, waveform: torch.Tensor, utt: str = "", **options: Any) -> list[str]:
        return self.label_waveform(waveform, utt)

    def predict_file(self, spec: str, utt: str, *, where: str, allow_pipes: bool = False,
                     chunk_frames: int = 6000, **options: Any) -> list[str]:
        """Phone labels of one ``wav.scp`` entry; a file longer than ``chunk_frames`` frames is labelled in
        chunks (bounded memory, identical labels) when the receptive field is bounded."""
        if self._is_long_file(spec, where, allow_pipes, chunk_frames):
            labels: list[str] = []
            for _, chunk in self.iter_label_file(spec, chunk_frames):
                labels.extend(chunk)
            return labels
        return super().predict_file(spec, utt, where=where, allow_pipes=allow_pipes, **options)

    def file_features(self, spec: str, utt: str, *, where: str, allow_pipes: bool = False,
                      chunk_frames: int = 6000, **options: Any) -> torch.Tensor | None:
        """Features for batched labelling, or None for a long file (labelled in chunks by :meth:`predict_file`;
        its audio is not read here)."""
        if self._is_long_file(spec, where, allow_pipes, chunk_frames):
            return None
        return super().file_features(spec, utt, where=where, allow_pipes=allow_pipes, **options)

    def _is_long_file(self, spec: str, where: str, allow_pipes: bool, chunk_frames: int) -> bool:
        """A file (not a pipe) longer than ``chunk_frames`` frames, with a bounded receptive field: chunked."""
        if spec.rstrip().endswith("|") or self.receptive_field is None:
            return False
        num_samples = audio_info(spec, self.sample_rate, allow_pipes=allow_pipes, where=where)[0]
        shift = frame_shift_samples(self.sample_rate, self.feature_cfg.frame_shift_ms)
        return num_samples > chunk_frames * shift

    @torch.no_grad()
    def attention(self, feats: torch.Tensor, layer: int = -1) -> torch.Tensor | None:
        """Attention weights ``(H, P, L+R+1)`` (banded, see :meth:`attention_window`) or ``(H, P, P)`` (full)
        of one layer for a short utterance, over encoder positions (P = T / frame_stack); None when the
        encoder has no attention (no ``attention_weights``)."""
        enc = self.model.encoder
        if not hasattr(enc, "attention_weights"):
            return None
        x = feats[None].to(self.device)
        lengths = torch.tensor([feats.shape[0]], device=self.device)
        if self.model.frame_stack > 1:
            x, lengths = self.model.stack(x, lengths)
        return enc.attention_weights(x, lengths, layer)[0].float().cpu()

    def attention_window(self) -> tuple[int, int] | None:
        """(L, R) encoder positions of banded attention weights; None when they are full (or absent)."""
        return attention_window(self.model.encoder)
