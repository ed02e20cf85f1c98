"""Waveform-augmented training crops for the speaker task (Hydra group ``augment``, issue #14).

With ``augment.enabled`` the sid task trains on crops cut from the *waveforms* of the training set (held in
memory as 16-bit PCM by a :class:`~speechattn.data.augment.sources.SpeechBank`), augmented by a
:class:`~speechattn.data.augment.pipeline.WaveAugmenter` and turned into features on the fly with the
training dir's own ``feats.yaml`` and CMVN, i.e. exactly the features stage 1 wrote for unaugmented audio.

Per item ``i`` in ``epoch`` (all draws pure functions of ``(seed, epoch, i)``, so a resumed run, a
DataLoader worker or another rank produce the same crop):

1. crop length and position in frames: :func:`speechattn.data.crops.crop_window` on the utterance's frame
   count (the same draw as the feature-crop dataset);
2. the samples covering those frames, ``source_length`` times the speed factor (a 0.9-speed crop cuts
   10 % fewer source samples so that the perturbed crop has the drawn length; a 1.1 crop cuts more, shifted
   left when it would run past the end, or the whole recording when it is shorter);
3. augmentation (speed, then one environment kind), fbank, CMVN;
4. target: the speaker's class, or with ``speed.as_new_speaker`` its class at that speed
   (``spk + speed_index × S``: :meth:`WaveAugmenter.target`).

Example:
    >>> from speechattn.data.augment.pipeline import AugmentConfig, WaveAugmenter
    >>> from speechattn.data.augment.sources import SpeechBank
    >>> from speechattn.features.extract import FeatureConfig
    >>> bank = SpeechBank(["a", "b"], ["s1", "s2"], [0.1 * torch.randn(32000), 0.1 * torch.randn(24000)])
    >>> aug = WaveAugmenter(AugmentConfig.from_dict({"speed": {"prob": 1.0, "factors": [0.9]}}), seed=1)
    >>> ds = AugmentedCropDataset(bank, {"a": 0, "b": 1}, FeatureConfig(num_mel_bins=40), lambda u, f: f,
    ...                           aug, num_speakers=2, crop=(100, 150), seed=1)
    >>> ex = ds[0]
    >>> 100 <= ex.feats.shape[0] <= 150, ex.feats.shape[1], ex.target    # speaker 0 at speed 0.9: class 2
    (True, 40, 2)
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset

from speechattn.data.augment.pipeline import AugmentConfig, WaveAugmenter
from speechattn.data.augment.sources import SpeechBank
from speechattn.data.crops import crop_window
from speechattn.data.dataset import Example, Normaliser
from speechattn.data.framing import num_frames
from speechattn.features.extract import FeatureConfig, compute_features

log = logging.getLogger(__name__)

__all__ = ["augment_config", "head_classes", "AugmentedCropDataset", "build_augmenter"]


def augment_config(config: Mapping[str, Any] | DictConfig | None) -> AugmentConfig:
    """The :class:`AugmentConfig` of an experiment config's ``augment`` entry (absent: disabled)."""
    section = None if config is None else config.get("augment")
    if section is None:
        return AugmentConfig.from_dict({"enabled": False})
    if isinstance(section, DictConfig):
        section = OmegaConf.to_container(section, resolve=True)
    return AugmentConfig.from_dict(section)


def head_classes(config: Mapping[str, Any] | DictConfig, num_speakers: int) -> int:
    """Classes of the speaker head: ``num_speakers``, times ``1 + len(speed.factors)`` when each speed is
    trained as a new speaker (training and inference build the model the same way from the stored config)."""
    cfg = augment_config(config)
    if cfg.enabled and cfg.speed.prob > 0 and cfg.speed.as_new_speaker:
        return num_speakers * (1 + len(cfg.speed.factors))
    return num_speakers


class AugmentedCropDataset(Dataset):
    """Training crops cut from waveforms, augmented, featurised (see the module docstring).

    Args:
        bank: the training recordings with their speakers (item ``i`` = recording ``i``).
        targets: utt -> speaker class index (among the ``num_speakers`` training speakers).
        feature_cfg: the training dir's feature settings (``feats.yaml``).
        normalise: ``(utt, feats (T, F)) -> (T, F)``: the training CMVN.
        augmenter: the waveform augmentation.
        num_speakers: size of the speaker list (for new-speaker speeds).
        crop: ``(min_frames, max_frames)``.
        seed: crop seed (``trainer.seed``; the augmenter has its own, normally the same).

    ``__getitem__(i) -> Example(utt, feats (T', F) float32, class index)``.
    """

    def __init__(self, bank: SpeechBank, targets: Mapping[str, int], feature_cfg: FeatureConfig,
                 normalise: Normaliser, augmenter: WaveAugmenter, num_speakers: int,
                 crop: tuple[int, int], seed: int = 0) -> None:
        missing = [u for u in bank.utts if u not in targets]
        if missing:
            raise KeyError(f"no speaker label for utterance '{missing[0]}' ({len(missing)} in total)")
        self.bank, self.targets, self.feature_cfg, self.normalise = bank, targets, feature_cfg, normalise
        self.augmenter, self.num_speakers, self.crop, self.seed = augmenter, num_speakers, crop, seed
        self.utts = list(bank.utts)
        self.epoch = 0
        f = feature_cfg
        self._shift = int(round(f.sample_rate * f.frame_shift_ms / 1000))
        self._window = int(round(f.sample_rate * f.frame_length_ms / 1000))
        self._frames = [num_frames(a.size, f.sample_rate, f.frame_length_ms, f.frame_shift_ms) for a in bank.audio]

    def __len__(self) -> int:
        return len(self.utts)

    def lengths(self) -> list[int]:
        """Frames each item has at most (for batching): the crop's maximum or the utterance length."""
        return [min(n, self.crop[1]) for n in self._frames]

    def num_shorter_than(self, frames: int) -> int:
        return sum(n < frames for n in self._frames)

    def _samples(self, frames: int) -> int:
        return (frames - 1) * self._shift + self._window

    def __getitem__(self, i: int) -> Example:
        utt = self.utts[i]
        total = self.bank.audio[i].size
        start, length = crop_window(self._frames[i], self.crop[0], self.crop[1], self.seed, self.epoch, i)
        want = self.augmenter.source_length(self._samples(length), self.epoch, i)
        begin = start * self._shift
        if want >= total:
            begin, want = 0, total
        elif begin + want > total:
            begin = total - want
        out = self.augmenter(self.bank.waveform(i, begin, begin + want), self.epoch, i, self.bank.speakers[i])
        feats = compute_features(out.waveform, self.feature_cfg.sample_rate, self.feature_cfg).numpy()
        feats = np.ascontiguousarray(self.normalise(utt, feats), dtype=np.float32)[:length]
        target = self.augmenter.target(int(self.targets[utt]), out.speed_index, self.num_speakers)
        return Example(utt, torch.from_numpy(feats), target)


def build_augmenter(cfg: DictConfig, train_dir: Path, utts: list[str], allow_pipes: bool = False
                    ) -> tuple[WaveAugmenter, SpeechBank]:
    """The training recordings of ``utts`` and the augmenter of ``cfg.augment`` (seeded by ``trainer.seed``).

    Relative ``reverb.rir_dir`` / ``musan_dir`` / ``nonspeech.ctm`` are taken as given (relative to the
    recipe's work dir, where training runs). Layout and sample-rate problems are errors naming the file
    (:mod:`speechattn.data.augment.corpora`, :mod:`speechattn.data.augment.rir`).
    """
    aug_cfg = augment_config(cfg)
    bank = SpeechBank.from_data_dir(train_dir, utts, allow_pipes=allow_pipes)
    augmenter = WaveAugmenter(aug_cfg, seed=int(cfg.trainer.seed), bank=bank)
    return augmenter, bank


def prepare_rir_set(cfg: DictConfig) -> None:
    """With ``make_rir_set`` and reverberation on, generate the synthetic RIR set
    (:func:`speechattn.data.augment.rir.generate_rir_set`, default parameters, ~1 min) at
    ``augment.reverb.rir_dir`` when that directory does not exist yet; an existing directory is read as it
    is (a bad layout or sample rate stays an error naming the file). A file lock keeps two trainings
    started side by side (ident and verif) from building it twice."""
    aug = augment_config(cfg)
    rir_dir = aug.reverb.rir_dir
    if not (aug.enabled and aug.reverb.prob > 0 and rir_dir and bool(cfg.get("make_rir_set", False))):
        return
    import fcntl

    from speechattn.data.augment.rir import generate_rir_set

    target = Path(rir_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            log.info("%s: no RIR set yet; generating the synthetic one (make_rir_set=true)", target)
            generate_rir_set(target)


def log_crop_cost(dataset: AugmentedCropDataset, count: int = 50) -> float:
    """Seconds per crop of ``count`` crops (augmentation + features), logged: the cost per epoch."""
    import time

    count = min(count, len(dataset))
    t0 = time.process_time()
    for i in range(count):
        dataset[i]
    per_crop = (time.process_time() - t0) / max(count, 1)
    log.info("augmented crops: %.1f ms CPU per crop (augmentation + features) -> ~%.1f s per epoch of %d crops",
             1000 * per_crop, per_crop * len(dataset), len(dataset))
    return per_crop if math.isfinite(per_crop) else 0.0
