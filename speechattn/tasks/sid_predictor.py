"""Speaker embeddings and closed-set speaker predictions with a trained speaker model.

``SpeakerEmbedder.from_exp_dir(exp)`` rebuilds the model from ``exp/model.pt`` and recomputes features
exactly as stage 1 did (``exp/feats.yaml``), normalised as in training (``exp`` CMVN statistics). One
embedding per utterance, computed on the whole utterance whatever its length (training used 2-3 s crops;
the pooling averages over any number of frames).

Predictions are always among the training speakers (``exp/speakers.txt``): an unknown speaker gets the
closest training speaker, and only the score tells how confident that is. With the AAM-softmax head the
score is the cosine between the embedding and that speaker's class vector (in [-1, 1]; the head was
trained so that a correct speaker scores above cos(margin) of the others); with the plain softmax head it
is the softmax posterior. To decide *whether* two recordings share a speaker (open set), compare their
embeddings (cosine scoring, as ``speechattn-score`` does for verification trials).

Usage with a trained experiment::

    embedder = SpeakerEmbedder.from_exp_dir("recipes/speechocean762/sid/exp/ident")
    emb = embedder.embed_waveform(load_audio("utt.flac"))    # (E,) float32
    speaker, score = embedder.predict(emb)                   # top-1 training speaker, cosine score
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from speechattn.models.speaker import AAMSoftmax
from speechattn.tasks.base import Predictor, pad_features

log = logging.getLogger(__name__)


@dataclass
class SpeakerPrediction:
    """One utterance's embedding ``(E,)``, its top-1 training speaker and score, and its feature frames."""

    embedding: torch.Tensor
    speaker: str
    score: float
    num_frames: int


class SpeakerEmbedder(Predictor):
    """A trained speaker model (:class:`~speechattn.models.speaker.SpeakerModel`) with its feature pipeline
    and closed speaker set (``labels``, also ``speakers``).

    Normally built by :meth:`from_exp_dir`; here with an untrained tiny model:

    Example:
        >>> from speechattn.features.extract import FeatureConfig
        >>> from speechattn.models.speaker import build_sid_model
        >>> model = build_sid_model({"name": "truncated_transformer", "frame_stack": 4, "d_model": 32,
        ...                          "num_layers": 1, "num_heads": 2, "ffn_dim": 64, "left": 16, "right": 16},
        ...                         {"embed_dim": 8}, input_dim=80, num_speakers=3).eval()
        >>> embedder = SpeakerEmbedder(model, ["ann", "bob", "cy"], FeatureConfig(), lambda utt, f: f, {},
        ...                            torch.device("cpu"))
        >>> emb = embedder.embed_waveform(0.1 * torch.randn(12345))   # any length: one vector
        >>> emb.shape, embedder.scores(emb).shape
        (torch.Size([8]), torch.Size([3]))
        >>> speaker, score = embedder.predict(emb)
        >>> speaker in embedder.speakers and -1.0 <= score <= 1.0
        True
    """

    task_name = "sid"

    @property
    def speakers(self) -> list[str]:
        return self.labels

    @property
    def score_kind(self) -> str:
        """``"cosine"`` (AAM-softmax head) or ``"posterior"`` (plain softmax head)."""
        return "cosine" if isinstance(self.model.head, AAMSoftmax) else "posterior"

    @torch.no_grad()
    def embed(self, feats: torch.Tensor) -> torch.Tensor:
        """Whole-utterance embedding: feats (T, F) -> (E,) float32 on CPU."""
        return self.embed_batch([feats])[0]

    @torch.no_grad()
    def embed_batch(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Several utterances' feats ``[(T_i, F)]`` -> embeddings ``(B, E)`` of one padded forward pass (the
        pooling ignores padding: each row is the utterance's :meth:`embed`)."""
        if any(f.shape[0] == 0 for f in feats):
            raise ValueError("no feature frames: the audio is shorter than one analysis window")
        x, lengths = pad_features(feats)
        with self.autocast():
            return self.model(x.to(self.device), lengths.to(self.device)).float().cpu()

    @torch.no_grad()
    def embed_crops(self, feats: torch.Tensor, crop_frames: int = 300) -> torch.Tensor:
        """Mean of the L2-normalised embeddings of ``crop_frames``-frame crops with half-crop hop (the last
        one ending at the last frame): feats (T, F) -> (E,). An utterance of at most ``crop_frames`` frames
        is embedded whole (:meth:`embed`)."""
        total = feats.shape[0]
        if crop_frames < 1:
            raise ValueError(f"crop_frames must be >= 1, got {crop_frames}")
        if total <= crop_frames:
            return self.embed(feats)
        hop = max(1, crop_frames // 2)
        starts = list(range(0, total - crop_frames + 1, hop))
        if starts[-1] != total - crop_frames:
            starts.append(total - crop_frames)
        crops = torch.stack([feats[s:s + crop_frames] for s in starts]).to(self.device)
        lengths = torch.full((len(starts),), crop_frames, device=self.device)
        emb = torch.nn.functional.normalize(self.model(crops, lengths).float(), dim=-1)
        return emb.mean(0).cpu()

    def embed_waveform(self, waveform: torch.Tensor, utt: str = "") -> torch.Tensor:
        """waveform (N,) at ``sample_rate`` -> embedding (E,)."""
        return self.embed(self.features(waveform, utt))

    @torch.no_grad()
    def scores(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Scores of every training speaker: embeddings (B, E) or (E,) -> (B, C) or (C,).

        Cosine similarities with the AAM-softmax class vectors (no margin, no scale), or softmax
        posteriors for a plain softmax head.
        """
        single = embeddings.dim() == 1
        emb = (embeddings[None] if single else embeddings).to(self.device)
        head = self.model.head
        logits = head.cosine(emb) if isinstance(head, AAMSoftmax) else head(emb)
        logits = logits[:, : len(self.speakers)]  # speed-perturbed copies trained as new speakers: not speakers
        out = logits if isinstance(head, AAMSoftmax) else torch.softmax(logits, dim=-1)
        out = out.float().cpu()
        return out[0] if single else out

    def predict(self, embedding: torch.Tensor) -> tuple[str, float]:
        """Top-1 training speaker of one embedding (E,) and its score (see :meth:`scores`)."""
        scores = self.scores(embedding)
        best = int(scores.argmax())
        return self.speakers[best], float(scores[best])

    def predict_waveform(self, waveform: torch.Tensor, utt: str = "", embedding: str = "full",
                         crop_frames: int = 300, **options: Any) -> SpeakerPrediction:
        """Embedding and top-1 training speaker of one utterance: ``embedding="full"`` embeds the whole
        recording (the default: better on dev, docs/sid.md), ``"crops"`` averages ``crop_frames`` crops
        (:meth:`embed_crops`)."""
        feats = self.features(waveform, utt)
        if embedding == "full":
            emb = self.embed(feats)
        elif embedding == "crops":
            emb = self.embed_crops(feats, crop_frames)
        else:
            raise ValueError(f"embedding must be 'full' or 'crops', got {embedding!r}")
        speaker, score = self.predict(emb)
        return SpeakerPrediction(emb, speaker, score, int(feats.shape[0]))

    def batchable(self, embedding: str = "full", **options: Any) -> bool:
        """Crop-averaged embeddings are computed per utterance (:meth:`predict_waveform`)."""
        return embedding == "full"

    def predict_batch(self, feats: Sequence[torch.Tensor]) -> list[SpeakerPrediction]:
        """Embeddings and top-1 training speakers of several utterances (one padded forward pass)."""
        embeddings = self.embed_batch(feats)
        scores = self.scores(embeddings)
        best = scores.argmax(-1).tolist()
        return [SpeakerPrediction(emb, self.speakers[b], float(row[b]), int(f.shape[0]))
                for emb, row, b, f in zip(embeddings, scores, best, feats)]
