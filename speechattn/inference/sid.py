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
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speechattn.features.cmvn_setup import make_normaliser
from speechattn.features.extract import FeatureConfig, compute_features
from speechattn.tasks.sid import AAMSoftmax, SpeakerModel
from speechattn.utils.checkpoint import load_checkpoint
from speechattn.training.sid_setup import build_sid_model

log = logging.getLogger(__name__)


@dataclass
class SpeakerEmbedder:
    """A trained speaker model with its feature pipeline and closed speaker set.

    Normally built by :meth:`from_exp_dir`; here with an untrained tiny model:

    Example:
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

    model: SpeakerModel
    speakers: list[str]
    feature_cfg: FeatureConfig
    normalise: Any            # (utt, feats ndarray (T, F)) -> (T, F)
    config: dict[str, Any]
    device: torch.device

    @classmethod
    def from_exp_dir(cls, exp_dir: str | Path, checkpoint: str = "model.pt", device: torch.device | str = "cpu",
                     data_dir: str | Path | None = None) -> "SpeakerEmbedder":
        """Load ``exp_dir/checkpoint``; ``data_dir`` is only needed for per-speaker CMVN."""
        exp_dir = Path(exp_dir)
        ckpt = load_checkpoint(exp_dir / checkpoint, map_location=device)
        config = ckpt["config"]
        if config.get("task") != "sid":
            raise ValueError(f"{exp_dir / checkpoint}: not a speaker model (task={config.get('task')!r})")
        speakers = list(ckpt["speakers"])
        model = build_sid_model(config["model"], config["sid"], int(ckpt["input_dim"]), len(speakers))
        model.load_state_dict(ckpt["model"])
        model.to(device).eval()
        feats_yaml = exp_dir / "feats.yaml"
        if not feats_yaml.exists():
            raise FileNotFoundError(f"{feats_yaml}: missing (written by training from the train dir's feats.yaml)")
        from omegaconf import OmegaConf
        feature_cfg = FeatureConfig.from_config(OmegaConf.load(feats_yaml))
        normalise = make_normaliser({**config["cmvn"], "stats": None}, data_dir, exp_dir)
        return cls(model, speakers, feature_cfg, normalise, config, torch.device(device))

    @property
    def sample_rate(self) -> int:
        return self.feature_cfg.sample_rate

    @property
    def score_kind(self) -> str:
        """``"cosine"`` (AAM-softmax head) or ``"posterior"`` (plain softmax head)."""
        return "cosine" if isinstance(self.model.head, AAMSoftmax) else "posterior"

    def features(self, waveform: torch.Tensor, utt: str = "") -> torch.Tensor:
        """waveform (N,) at ``sample_rate`` -> normalised features (T, F)."""
        feats = compute_features(waveform, self.sample_rate, self.feature_cfg).numpy()
        return torch.from_numpy(np.ascontiguousarray(self.normalise(utt, feats), dtype=np.float32))

    @torch.no_grad()
    def embed(self, feats: torch.Tensor) -> torch.Tensor:
        """Whole-utterance embedding: feats (T, F) -> (E,) float32 on CPU."""
        if feats.shape[0] == 0:
            raise ValueError("no feature frames: the audio is shorter than one analysis window")
        lengths = torch.tensor([feats.shape[0]], device=self.device)
        return self.model(feats[None].to(self.device), lengths)[0].float().cpu()

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
        out = head.cosine(emb) if isinstance(head, AAMSoftmax) else torch.softmax(head(emb), dim=-1)
        out = out.float().cpu()
        return out[0] if single else out

    def predict(self, embedding: torch.Tensor) -> tuple[str, float]:
        """Top-1 training speaker of one embedding (E,) and its score (see :meth:`scores`)."""
        scores = self.scores(embedding)
        best = int(scores.argmax())
        return self.speakers[best], float(scores[best])
