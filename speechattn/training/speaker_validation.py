"""Speaker dev metrics for model selection (:class:`~speechattn.training.selection.ValidationMetric`):
verification EER on dev trials, identification top-1, both on whole dev utterances.

The model is any speaker model with ``forward(feats (B, T, F), lengths (B,)) -> embeddings (B, E)`` and,
for identification, ``logits(embeddings) -> (B, C)`` (:class:`speechattn.models.speaker.SpeakerModel`).
Utterances are embedded whole (what inference does), in batches of similar length up to
``max_frames_per_batch`` padded frames, in eval mode and without gradients; the model's mode is
restored afterwards. ``feats`` may be on-demand (:class:`speechattn.data.ondemand.OnDemandFeatures`): the
batching uses ``utt2num_frames`` and each batch reads only its own utterances, so a dev set larger than
RAM works.

Example:
    >>> class Toy(torch.nn.Module):
    ...     def forward(self, x, lengths):
    ...         return torch.stack([x[b, :n].mean(0) for b, n in enumerate(lengths.tolist())])
    ...     def logits(self, e):                 # class 0 for positive features, 1 for negative
    ...         return torch.stack([e[:, 0], -e[:, 0]], dim=1)
    >>> feats = {"a1": torch.ones(5, 2), "a2": torch.ones(7, 2), "b1": -torch.ones(4, 2)}
    >>> VerificationEER(feats, [(1, "a1", "a2"), (0, "a1", "b1")])(Toy())["dev_eer"]
    0.0
    >>> IdentificationTop1(feats, {"a1": 0, "a2": 0, "b1": 1})(Toy())["dev_top1"]
    100.0
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from speechattn.data.ondemand import feature_subset
from speechattn.metrics.verification import compute_eer, compute_min_dcf, score_trials

__all__ = ["embed_utterances", "VerificationEER", "IdentificationTop1", "ValidationTop1"]


def _batches(lengths: Mapping[str, int], max_frames: int) -> list[list[str]]:
    order = sorted(lengths, key=lambda u: (lengths[u], u))
    batches, current, longest = [], [], 0
    for utt in order:
        longest_if_added = max(longest, lengths[utt])
        if current and longest_if_added * (len(current) + 1) > max_frames:
            batches.append(current)
            current, longest_if_added = [], lengths[utt]
        current.append(utt)
        longest = longest_if_added
    if current:
        batches.append(current)
    return batches


def _as_tensor(x: np.ndarray | Tensor) -> Tensor:
    return x if isinstance(x, Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def _num_frames(feats: Mapping[str, np.ndarray | Tensor], utt: str) -> int:
    return feats.num_frames(utt) if hasattr(feats, "num_frames") else len(feats[utt])


@torch.no_grad()
def embed_utterances(model: nn.Module, feats: Mapping[str, np.ndarray | Tensor], max_frames_per_batch: int = 24000,
                     device: torch.device | str = "cpu", with_logits: bool = False
                     ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Embeddings (and head logits when ``with_logits``) of whole utterances ``feats[utt] (T, F)``."""
    was_training = model.training
    model.eval()
    embeddings: dict[str, np.ndarray] = {}
    logits: dict[str, np.ndarray] = {}
    try:
        for batch in _batches({u: _num_frames(feats, u) for u in feats}, max_frames_per_batch):
            mats = [_as_tensor(feats[u]).float() for u in batch]  # one read per utterance (on-demand: from disk)
            x = pad_sequence(mats, batch_first=True).to(device)
            lengths = torch.tensor([len(m) for m in mats], device=device)
            emb = model(x, lengths)
            embeddings.update(zip(batch, emb.double().cpu().numpy()))
            if with_logits:
                logits.update(zip(batch, model.logits(emb).double().cpu().numpy()))
    finally:
        model.train(was_training)
    return embeddings, logits


class VerificationEER:
    """Dev EER (%) and minDCF of cosine-scored ``trials`` ``(label, utt1, utt2)``; selects by ``dev_eer``
    (lower is better). ``p_target`` for the minDCF (0.01, as the recipes report)."""

    name = "dev_eer"
    mode = "min"

    def __init__(self, feats: Mapping[str, np.ndarray | Tensor], trials: Sequence[tuple[int, str, str]],
                 max_frames_per_batch: int = 24000, device: torch.device | str = "cpu", p_target: float = 0.01) -> None:
        labels = np.array([t[0] for t in trials], dtype=bool)
        if not labels.any() or labels.all():
            raise ValueError(f"dev trials need target and non-target trials ({int(labels.sum())} target of {labels.size})")
        missing = sorted({u for _, a, b in trials for u in (a, b)} - set(feats))
        if missing:
            raise KeyError(f"dev trials name {len(missing)} utterances without features, e.g. '{missing[0]}'")
        used = {u for _, a, b in trials for u in (a, b)}
        self.feats = feature_subset(feats, [u for u in feats if u in used])  # on-demand: nothing read
        self.trials, self.labels = list(trials), labels
        self.max_frames, self.device, self.p_target = max_frames_per_batch, device, p_target

    def __call__(self, model: nn.Module, validation: Mapping[str, float] | None = None) -> dict[str, float]:
        embeddings, _ = embed_utterances(model, self.feats, self.max_frames, self.device)
        scores = score_trials(self.trials, embeddings)
        eer, _ = compute_eer(scores[self.labels], scores[~self.labels])
        min_dcf, _ = compute_min_dcf(scores[self.labels], scores[~self.labels], p_target=self.p_target)
        return {"dev_eer": 100.0 * eer, "dev_min_dcf": min_dcf}


class IdentificationTop1:
    """Dev top-1 accuracy (%) of the head's prediction among the first ``num_speakers`` classes (all by
    default; with speed-perturbed copies trained as new speakers, the original-speed classes are the first
    ``num_speakers``, and dev audio is unperturbed). Selects by ``dev_top1`` (higher is better)."""

    name = "dev_top1"
    mode = "max"

    def __init__(self, feats: Mapping[str, np.ndarray | Tensor], targets: Mapping[str, int],
                 num_speakers: int | None = None, max_frames_per_batch: int = 24000,
                 device: torch.device | str = "cpu") -> None:
        missing = sorted(set(targets) - set(feats))
        if missing:
            raise KeyError(f"{len(missing)} dev utterances without features, e.g. '{missing[0]}'")
        if not targets:
            raise ValueError("no dev utterances")
        self.feats = feature_subset(feats, list(targets))
        self.targets, self.num_speakers = dict(targets), num_speakers
        self.max_frames, self.device = max_frames_per_batch, device

    def __call__(self, model: nn.Module, validation: Mapping[str, float] | None = None) -> dict[str, float]:
        _, logits = embed_utterances(model, self.feats, self.max_frames, self.device, with_logits=True)
        correct = 0
        for utt, target in self.targets.items():
            scores = logits[utt] if self.num_speakers is None else logits[utt][: self.num_speakers]
            correct += int(np.argmax(scores)) == target
        return {"dev_top1": 100.0 * correct / len(self.targets)}


class ValidationTop1:
    """Dev top-1 (%) as the training loop's validation pass measured it (``100 * valid_acc``).

    For identification the validation set is the dev set, and the speaker task's validation step predicts
    each whole utterance with the head among the original-speed classes, which is what
    :class:`IdentificationTop1` computes again (the same values in every epoch of the speechocean762
    runs); reading it from the pass saves a second pass over dev each epoch (~1.5 s of ~35 s there).
    """

    name = "dev_top1"
    mode = "max"

    def __call__(self, model: nn.Module, validation: Mapping[str, float] | None = None) -> dict[str, float]:
        if validation is None or "valid_acc" not in validation:
            raise ValueError("ValidationTop1 reads the training loop's validation accuracy: call it with "
                             "the epoch's validation values")
        # rounded so that 100 * (242 / 250) reads 96.8, as IdentificationTop1's 100 * 242 / 250 does
        return {"dev_top1": round(100.0 * float(validation["valid_acc"]), 9)}
