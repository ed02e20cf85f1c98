"""Per-crop waveform augmentation for speaker training: speed, reverberation, non-speech noise, babble,
MUSAN noise/music/speech, each with its probability and strength (Hydra group ``augment``,
``speechattn/conf/augment/*.yaml``; fields: :class:`AugmentConfig`).

Order for one crop: speed perturbation, then the environment: reverberation, then additive sources.
``combine: exclusive`` gives a crop at most one environment augmentation (kind k with probability
``prob_k``; the probabilities must sum to <= 1; WeSpeaker and the Kaldi x-vector recipe augment this way);
``combine: independent`` applies each kind with its own probability, in the order reverb, nonspeech,
babble, musan_noise, musan_music, musan_speech.

**Reproducible from (seed, epoch, index)**: every random choice for a crop comes from generators seeded
with ``(seed, epoch, index, stream)`` (the crop position of
:func:`speechattn.data.crops.crop_window` uses ``(seed, epoch, index)``), so a resumed run, a
DataLoader worker or another DDP rank draws exactly the same augmentation for the same crop.

**Speed perturbation** (``torchaudio.functional.speed``: tempo and pitch together, as ``sox speed``)
changes a crop's length by ``1/factor``; a dataset that wants crops of exactly ``n`` samples cuts
:meth:`WaveAugmenter.source_length` samples first. With ``as_new_speaker`` each speed of a speaker is a
new class, as in WeSpeaker: :meth:`WaveAugmenter.target` maps (speaker index, speed) to the class and
:meth:`WaveAugmenter.num_classes` gives the head's size; otherwise the speaker keeps its class.

Example:
    >>> cfg = AugmentConfig.from_dict({"speed": {"prob": 1.0, "factors": [0.9]}, "babble": {"prob": 1.0}})
    >>> bank = SpeechBank(["a", "b"], ["s1", "s2"], [torch.randn(20000) * 0.1, torch.randn(20000) * 0.1])
    >>> aug = WaveAugmenter(cfg, seed=1, bank=bank)
    >>> out = aug(torch.randn(16000) * 0.1, epoch=0, index=3, speaker="s1")
    >>> out.waveform.shape, out.speed_factor, out.applied
    (torch.Size([17778]), 0.9, ('speed', 'babble'))
    >>> aug.target(5, out.speed_index, num_speakers=2)  # speaker 5 at speed 0.9 is class 5 + 2
    7
"""
from __future__ import annotations

import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torchaudio
from torch import Tensor

from speechattn.data.alignments import read_ctm
from speechattn.data.augment.corpora import SIMULATED_ROOMS, read_musan, read_rirs_noises
from speechattn.data.augment.mixing import add_at_snr, reverberate, scale_to_snr
from speechattn.data.augment.nonspeech import nonspeech_from_alignments, nonspeech_from_energy
from speechattn.data.augment.rir import RirBank
from speechattn.data.augment.sources import FileNoisePool, SegmentPool, SpeechBank

log = logging.getLogger(__name__)

__all__ = [
    "SpeedConfig",
    "ReverbConfig",
    "NoiseConfig",
    "BabbleConfig",
    "AugmentConfig",
    "AugmentedCrop",
    "WaveAugmenter",
    "ENVIRONMENT_KINDS",
    "crop_rng",
]

ENVIRONMENT_KINDS = ("reverb", "nonspeech", "babble", "musan_noise", "musan_music", "musan_speech")
_STREAM_SPEED, _STREAM_ENVIRONMENT = 1, 2


def crop_rng(seed: int, epoch: int, index: int, stream: int) -> np.random.Generator:
    """The generator of one crop's draws: a pure function of its arguments."""
    return np.random.default_rng([seed & 0xFFFFFFFF, epoch, index, stream])


def _probability(value: Any, name: str) -> float:
    p = float(value)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"augment.{name}: probability must be in [0, 1], got {value}")
    return p


def _range(value: Any, name: str, low: float = -math.inf, integer: bool = False) -> tuple[float, float]:
    values = [value, value] if isinstance(value, (str, int, float)) else list(value)
    if len(values) != 2:
        raise ValueError(f"augment.{name}: expected [low, high], got {value}")
    lo, hi = (int(v) if integer else float(v) for v in values)
    if not low <= lo <= hi:
        raise ValueError(f"augment.{name}: need {low} <= low <= high, got {value}")
    return lo, hi


def _check_keys(section: Mapping[str, Any], allowed: Sequence[str], name: str) -> None:
    unknown = sorted(set(section) - set(allowed))
    if unknown:
        raise ValueError(f"augment.{name}: unknown option(s) {unknown}; known: {sorted(allowed)}")


@dataclass(frozen=True)
class SpeedConfig:
    """``prob``: probability that a crop is speed-perturbed; ``factors``: the speeds drawn uniformly
    when it is (1.0 excluded); ``as_new_speaker``: each speed of a speaker is its own class."""

    prob: float = 0.0
    factors: tuple[float, ...] = (0.9, 1.1)
    as_new_speaker: bool = True

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SpeedConfig":
        _check_keys(d, [f.name for f in fields(cls)], "speed")
        factors = tuple(float(f) for f in d.get("factors", cls.factors))
        if not factors or any(f <= 0 or f == 1.0 for f in factors) or len(set(factors)) != len(factors):
            raise ValueError(f"augment.speed.factors: distinct factors > 0 other than 1.0, got {list(factors)}")
        return cls(_probability(d.get("prob", cls.prob), "speed.prob"), factors,
                   bool(d.get("as_new_speaker", cls.as_new_speaker)))


@dataclass(frozen=True)
class ReverbConfig:
    """``prob``; ``rir_dir``: RIRS_NOISES or a set made by ``local/make_rir_set.py`` (same layout);
    ``rooms``: which ``simulated_rirs/<room>`` lists; ``real``: add ``real_rirs_isotropic_noises``."""

    prob: float = 0.0
    rir_dir: str | None = None
    rooms: tuple[str, ...] = SIMULATED_ROOMS
    real: bool = False

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ReverbConfig":
        _check_keys(d, [f.name for f in fields(cls)], "reverb")
        rooms = tuple(str(r) for r in d.get("rooms", cls.rooms))
        bad = [r for r in rooms if r not in SIMULATED_ROOMS]
        if bad or not rooms:
            raise ValueError(f"augment.reverb.rooms: choose from {list(SIMULATED_ROOMS)}, got {list(rooms)}")
        rir_dir = d.get("rir_dir")
        return cls(_probability(d.get("prob", cls.prob), "reverb.prob"), None if rir_dir is None else str(rir_dir),
                   rooms, bool(d.get("real", cls.real)))


@dataclass(frozen=True)
class NoiseConfig:
    """An additive noise: ``prob``, ``snr`` [low, high] dB (uniform). For ``nonspeech``: ``ctm`` (phone
    alignments; SIL regions are the noise) or null (energy detector), ``min_duration`` s of a region;
    for ``musan_music``: ``use_vocals``."""

    prob: float = 0.0
    snr: tuple[float, float] = (0.0, 15.0)
    ctm: str | None = None
    min_duration: float = 0.2
    use_vocals: bool = True

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], name: str, default_snr: tuple[float, float]) -> "NoiseConfig":
        allowed = ["prob", "snr"] + (["ctm", "min_duration"] if name == "nonspeech" else []) + \
            (["use_vocals"] if name == "musan_music" else [])
        _check_keys(d, allowed, name)
        ctm = d.get("ctm")
        min_duration = float(d.get("min_duration", cls.min_duration))
        if min_duration <= 0:
            raise ValueError(f"augment.{name}.min_duration must be > 0, got {min_duration}")
        return cls(_probability(d.get("prob", cls.prob), f"{name}.prob"), _range(d.get("snr", default_snr), f"{name}.snr"),
                   None if ctm is None else str(ctm), min_duration, bool(d.get("use_vocals", True)))


@dataclass(frozen=True)
class BabbleConfig:
    """``prob``; ``snr`` [low, high] dB for *each* talker (Kaldi: 13-20 dB); ``num_speakers`` [low, high]."""

    prob: float = 0.0
    snr: tuple[float, float] = (13.0, 20.0)
    num_speakers: tuple[int, int] = (3, 7)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], name: str = "babble") -> "BabbleConfig":
        _check_keys(d, [f.name for f in fields(cls)], name)
        return cls(_probability(d.get("prob", cls.prob), f"{name}.prob"), _range(d.get("snr", cls.snr), f"{name}.snr"),
                   _range(d.get("num_speakers", cls.num_speakers), f"{name}.num_speakers", low=1, integer=True))


@dataclass(frozen=True)
class AugmentConfig:
    """The ``augment`` Hydra group, validated (unknown keys, probabilities, ranges are errors)."""

    enabled: bool = True
    combine: str = "exclusive"
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    reverb: ReverbConfig = field(default_factory=ReverbConfig)
    nonspeech: NoiseConfig = field(default_factory=NoiseConfig)
    babble: BabbleConfig = field(default_factory=BabbleConfig)
    musan_dir: str | None = None
    musan_noise: NoiseConfig = field(default_factory=lambda: NoiseConfig(snr=(0.0, 15.0)))
    musan_music: NoiseConfig = field(default_factory=lambda: NoiseConfig(snr=(5.0, 15.0)))
    musan_speech: BabbleConfig = field(default_factory=BabbleConfig)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "AugmentConfig":
        d = dict(d or {})
        _check_keys(d, [f.name for f in fields(cls)], "(top level)")
        combine = str(d.get("combine", "exclusive"))
        if combine not in ("exclusive", "independent"):
            raise ValueError(f"augment.combine must be 'exclusive' or 'independent', got {combine!r}")
        musan_dir = d.get("musan_dir")
        cfg = cls(bool(d.get("enabled", True)), combine, SpeedConfig.from_dict(d.get("speed") or {}),
                  ReverbConfig.from_dict(d.get("reverb") or {}),
                  NoiseConfig.from_dict(d.get("nonspeech") or {}, "nonspeech", (0.0, 15.0)),
                  BabbleConfig.from_dict(d.get("babble") or {}),
                  None if musan_dir is None else str(musan_dir),
                  NoiseConfig.from_dict(d.get("musan_noise") or {}, "musan_noise", (0.0, 15.0)),
                  NoiseConfig.from_dict(d.get("musan_music") or {}, "musan_music", (5.0, 15.0)),
                  BabbleConfig.from_dict(d.get("musan_speech") or {}, "musan_speech"))
        total = sum(cfg.probability(k) for k in ENVIRONMENT_KINDS)
        if cfg.combine == "exclusive" and total > 1.0 + 1e-9:
            raise ValueError(f"augment.combine=exclusive: the environment probabilities sum to {total:.3f} > 1 "
                             f"(each crop gets at most one); lower them or use combine=independent")
        musan_kinds = [k for k in ("musan_noise", "musan_music", "musan_speech") if cfg.probability(k) > 0]
        if musan_kinds and cfg.musan_dir is None:
            raise ValueError(f"augment.{musan_kinds[0]}.prob > 0 needs augment.musan_dir (the recipe's --musan-dir)")
        return cfg

    def probability(self, kind: str) -> float:
        """Probability of environment augmentation ``kind`` (0 when augmentation is disabled)."""
        return float(getattr(self, kind).prob) if self.enabled else 0.0

    @property
    def active_kinds(self) -> tuple[str, ...]:
        return tuple(k for k in ENVIRONMENT_KINDS if self.probability(k) > 0)


@dataclass
class AugmentedCrop:
    """An augmented crop: ``waveform (N',)``, the speed (``speed_index`` 0 = unperturbed, k = the k-th
    factor), and the augmentations ``applied`` in order (``"speed"``, ``"reverb"``, ...)."""

    waveform: Tensor
    speed_index: int = 0
    speed_factor: float = 1.0
    applied: tuple[str, ...] = ()


class WaveAugmenter:
    """Applies an :class:`AugmentConfig` to training crops (see the module docstring).

    Args:
        cfg: the configuration.
        seed: the training seed (``trainer.seed``).
        bank: training recordings (babble; non-speech regions). Needed for ``babble`` and ``nonspeech``.
        nonspeech: a ready :class:`SegmentPool` (else built from ``bank`` and ``cfg.nonspeech.ctm`` / energy).
        rirs: a ready :class:`RirBank` (else loaded from ``cfg.reverb.rir_dir``).
        musan: ready pools by part (else read from ``cfg.musan_dir``).
        sample_rate: of crops and sources (the toolkit works at 16 kHz).

    Calling it: ``aug(crop (N,), epoch, index, speaker) -> AugmentedCrop``. ``counts`` tallies what was
    applied (and ``"<kind>_silent"`` when a silent crop or source made an SNR impossible: left clean).
    """

    def __init__(self, cfg: AugmentConfig, seed: int, *, bank: SpeechBank | None = None,
                 nonspeech: SegmentPool | None = None, rirs: RirBank | None = None,
                 musan: Mapping[str, FileNoisePool] | None = None, sample_rate: int = 16000) -> None:
        self.cfg, self.seed, self.sample_rate = cfg, int(seed), sample_rate
        self.bank = bank
        self.counts: Counter[str] = Counter()
        self._resamplers: dict[float, torchaudio.transforms.Resample] = {}
        kinds = cfg.active_kinds
        if ("babble" in kinds or "nonspeech" in kinds) and bank is None:
            raise ValueError("augment.babble / augment.nonspeech need the training recordings (bank=SpeechBank)")
        if "babble" in kinds and bank.num_speakers < 2:
            raise ValueError(f"augment.babble needs at least 2 training speakers, the bank has {bank.num_speakers}")
        self.nonspeech = nonspeech
        if "nonspeech" in kinds and nonspeech is None:
            self.nonspeech = build_nonspeech_pool(bank, cfg.nonspeech)
        self.rirs = rirs
        if "reverb" in kinds and rirs is None:
            if cfg.reverb.rir_dir is None:
                raise ValueError("augment.reverb.prob > 0 needs augment.reverb.rir_dir (RIRS_NOISES, --rir-dir, or "
                                 "the set made by local/make_rir_set.py)")
            self.rirs = RirBank.from_entries(read_rirs_noises(cfg.reverb.rir_dir, cfg.reverb.rooms, cfg.reverb.real),
                                             sample_rate)
        self.musan = dict(musan or {})
        wanted = [p for p, k in (("noise", "musan_noise"), ("music", "musan_music"), ("speech", "musan_speech"))
                  if k in kinds and p not in self.musan]
        if wanted:
            by_part = read_musan(cfg.musan_dir, wanted, use_vocals=cfg.musan_music.use_vocals)
            self.musan.update({p: FileNoisePool(files, sample_rate, name=f"MUSAN {p}") for p, files in by_part.items()})
        log.info("waveform augmentation: speed p=%.2f %s%s; %s (%s)", cfg.speed.prob if cfg.enabled else 0.0,
                 list(cfg.speed.factors), " as new speakers" if cfg.speed.as_new_speaker else "",
                 ", ".join(f"{k} p={cfg.probability(k):.2f}" for k in kinds) or "no environment augmentation",
                 cfg.combine)

    # ---- speed ---------------------------------------------------------------------------------------
    def speed(self, epoch: int, index: int) -> tuple[int, float]:
        """``(speed_index, factor)`` of a crop: ``(0, 1.0)`` when not perturbed."""
        if not self.cfg.enabled or self.cfg.speed.prob == 0.0:
            return 0, 1.0
        rng = crop_rng(self.seed, epoch, index, _STREAM_SPEED)
        if rng.random() >= self.cfg.speed.prob:
            return 0, 1.0
        k = int(rng.integers(len(self.cfg.speed.factors)))
        return k + 1, self.cfg.speed.factors[k]

    def _resampler(self, factor: float) -> torchaudio.transforms.Resample:
        """``torchaudio.functional.speed``'s resampling (``int(factor × rate)`` -> ``rate``, the same output as
        :func:`speechattn.data.speed_perturb.apply_speed`) with its sinc kernel built once per factor."""
        if factor not in self._resamplers:
            self._resamplers[factor] = torchaudio.transforms.Resample(int(factor * self.sample_rate), self.sample_rate)
        return self._resamplers[factor]

    def source_length(self, length: int, epoch: int, index: int) -> int:
        """Samples to cut so that the crop has ~``length`` samples after its speed perturbation."""
        return int(round(length * self.speed(epoch, index)[1]))

    def num_classes(self, num_speakers: int) -> int:
        """Classes of the speaker head: ``num_speakers × (1 + len(factors))`` with new-speaker speeds."""
        if self.cfg.enabled and self.cfg.speed.prob > 0 and self.cfg.speed.as_new_speaker:
            return num_speakers * (1 + len(self.cfg.speed.factors))
        return num_speakers

    def target(self, speaker_index: int, speed_index: int, num_speakers: int) -> int:
        """Class of a crop: ``speaker_index + speed_index × num_speakers`` with new-speaker speeds."""
        if speed_index and self.cfg.speed.as_new_speaker:
            return speaker_index + speed_index * num_speakers
        return speaker_index

    # ---- environment -------------------------------------------------------------------------------
    def _chosen_kinds(self, rng: np.random.Generator) -> list[str]:
        kinds = self.cfg.active_kinds
        if self.cfg.combine == "exclusive":
            u, cumulative = rng.random(), 0.0
            for kind in kinds:
                cumulative += self.cfg.probability(kind)
                if u < cumulative:
                    return [kind]
            return []
        draws = rng.random(len(kinds))  # one draw per kind whatever the outcome: stable streams
        return [k for k, u in zip(kinds, draws) if u < self.cfg.probability(k)]

    def _add(self, crop: Tensor, noise: Tensor | None, snr: float, kind: str) -> Tensor:
        if noise is None:
            return crop
        scaled = scale_to_snr(crop, noise, snr)
        if scaled is None:
            self.counts[f"{kind}_silent"] += 1
            return crop
        return crop + scaled

    def _talkers(self, crop: Tensor, rng: np.random.Generator, cfg: BabbleConfig, kind: str,
                 draw) -> Tensor:
        n = int(rng.integers(cfg.num_speakers[0], cfg.num_speakers[1] + 1))
        babble = torch.zeros_like(crop)
        for _ in range(n):  # each talker at its own SNR against the crop (Kaldi's babble)
            talker = draw(rng)
            scaled = scale_to_snr(crop, talker, float(rng.uniform(*cfg.snr)))
            if scaled is None:
                self.counts[f"{kind}_silent"] += 1
                return crop
            babble += scaled
        return crop + babble

    def _environment(self, crop: Tensor, kind: str, rng: np.random.Generator, speaker: str | None) -> Tensor:
        n = crop.numel()
        if kind == "reverb":
            rir, direct = self.rirs.draw(rng)
            return reverberate(crop, rir, direct)
        if kind == "nonspeech":
            return self._add(crop, self.nonspeech.draw(rng, n), float(rng.uniform(*self.cfg.nonspeech.snr)), kind)
        if kind == "babble":
            return self._talkers(crop, rng, self.cfg.babble, kind,
                                 lambda r: self.bank.draw_other_speaker(r, n, exclude_speaker=speaker))
        if kind == "musan_noise":
            return self._add(crop, self.musan["noise"].draw(rng, n), float(rng.uniform(*self.cfg.musan_noise.snr)), kind)
        if kind == "musan_music":
            return self._add(crop, self.musan["music"].draw(rng, n), float(rng.uniform(*self.cfg.musan_music.snr)), kind)
        if kind == "musan_speech":
            return self._talkers(crop, rng, self.cfg.musan_speech, kind, lambda r: self.musan["speech"].draw(r, n))
        raise ValueError(f"unknown augmentation {kind!r}")

    def __call__(self, crop: Tensor, epoch: int, index: int, speaker: str | None = None) -> AugmentedCrop:
        """Augment one crop ``(N,)`` of utterance ``index`` in ``epoch``; ``speaker`` (its id) keeps babble
        from using the same speaker. Returns the new waveform ``(N',)`` (N' = N unless speed-perturbed)."""
        if crop.dim() != 1:
            raise ValueError(f"crop must be a mono waveform (N,), got shape {tuple(crop.shape)}")
        if not self.cfg.enabled:
            return AugmentedCrop(crop)
        applied: list[str] = []
        speed_index, factor = self.speed(epoch, index)
        if speed_index:
            crop = self._resampler(factor)(crop)
            applied.append("speed")
        rng = crop_rng(self.seed, epoch, index, _STREAM_ENVIRONMENT)
        for kind in self._chosen_kinds(rng):
            crop = self._environment(crop, kind, rng, speaker)
            applied.append(kind)
        self.counts.update(applied)
        self.counts["crops"] += 1
        return AugmentedCrop(crop, speed_index, factor, tuple(applied))


def build_nonspeech_pool(bank: SpeechBank, cfg: NoiseConfig) -> SegmentPool:
    """Non-speech regions of ``bank``'s recordings: SIL segments of ``cfg.ctm`` when given (recordings
    without alignment fall back to the energy detector, counted), else the energy detector."""
    ranges: dict[str, list[tuple[int, int]]] = {}
    ctm = read_ctm(cfg.ctm) if cfg.ctm is not None else {}
    from_energy = 0
    for i, utt in enumerate(bank.utts):
        n = bank.audio[i].size
        if utt in ctm:
            ranges[utt] = nonspeech_from_alignments(ctm[utt], n, sample_rate=bank.sample_rate,
                                                    min_duration=cfg.min_duration)
        else:
            from_energy += 1
            ranges[utt] = nonspeech_from_energy(bank.waveform(i), sample_rate=bank.sample_rate,
                                                min_duration=cfg.min_duration)
    if cfg.ctm is not None and from_energy:
        log.warning("%d of %d recordings have no alignment in %s: their non-speech regions come from the energy "
                    "detector", from_energy, len(bank), cfg.ctm)
    pool = SegmentPool(bank, ranges, min_duration=cfg.min_duration)
    log.info("non-speech noise (%s): %d regions, %.1f s from %d recordings", "alignments" if cfg.ctm else "energy",
             len(pool), pool.total_samples / bank.sample_rate, sum(1 for r in ranges.values() if r))
    return pool
