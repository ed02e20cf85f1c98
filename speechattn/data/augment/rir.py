"""Room impulse responses: a synthetic RIR set made with pyroomacoustics, and RIRs loaded for convolution.

**Why pyroomacoustics.** Reverberation augmentation needs a few hundred RIRs over a range of room sizes and
reverberation times, made once per recipe on a CPU. pyroomacoustics (LCAV/EPFL, maintained since 2016,
MIT licence, wheels for every platform, already a dependency) implements the image source method of Allen
& Berkley for shoebox rooms in C++, turns a target RT60 into wall absorption and image order
(``inverse_sabine``, Sabine's formula) and measures the RT60 of what it produced. The alternatives are
worse fits here: gpuRIR needs CUDA; Habets' rir-generator has the same physics without the RT60 inversion
or measurement and is packaged less well; torchaudio's prototype ISM simulator was removed with the
prototype namespace. Kaldi's own RIRS_NOISES ``simulated_rirs`` were made the same way (image method,
random shoebox rooms in three size classes), so the set written here uses their layout and list format and
is read by the same code as RIRS_NOISES (:func:`speechattn.data.augment.corpora.read_rirs_noises`).

**The set** (:func:`generate_rir_set`)::

    out_dir/simulated_rirs/{smallroom,mediumroom,largeroom}/rir_list
    out_dir/simulated_rirs/<room class>/RoomNNN/RoomNNN-MMMMM.wav      16-bit PCM, peak 0.9
    out_dir/rir_set.json                                               parameters + every room's details

``rir_list`` lines: ``--rir-id smallroom-Room001-00001 --room-id smallroom-Room001 --rt60 0.312
simulated_rirs/smallroom/Room001/Room001-00001.wav`` (the measured RT60). Every room has random
dimensions and a target RT60 drawn from its class's ranges, one random talker position and
``rirs_per_room`` random microphone positions (>= 0.5 m from the walls, 1-2 m high, 0.5-4 m from the
talker), with air absorption; each RIR is cut where its
backward-integrated energy has fallen 60 dB. Generation is a pure function of the parameters (seeded per
room); ``rir_set.json`` is written last and a set whose manifest matches the parameters, with every file
present, is not regenerated (idempotent stage); otherwise it is written beside and swapped in whole.

**Loading** (:class:`RirBank`): every RIR is read once, checked (sample rate must equal the training
rate: an RIR at another rate is an error naming the file; resampling a filter silently would change
what was measured), reduced to its first channel when multi-channel (counted), normalised to unit
energy, and its direct-path index kept for delay compensation.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import soundfile as sf
import torch
from torch import Tensor

from speechattn.data.audio import AudioError
from speechattn.data.augment.corpora import RirEntry
from speechattn.data.augment.mixing import prepare_rir

log = logging.getLogger(__name__)

__all__ = ["RoomClass", "DEFAULT_ROOM_CLASSES", "RirSetParams", "generate_rir_set", "rir_set_is_complete",
           "RirBank", "truncate_rir"]

MANIFEST = "rir_set.json"


@dataclass(frozen=True)
class RoomClass:
    """A class of shoebox rooms: ``length``/``width`` and ``height`` ranges (m), target ``rt60`` range (s),
    ``num_rooms`` rooms with ``rirs_per_room`` source/microphone placements each."""

    name: str
    size: tuple[float, float]
    height: tuple[float, float]
    rt60: tuple[float, float]
    num_rooms: int
    rirs_per_room: int


DEFAULT_ROOM_CLASSES: tuple[RoomClass, ...] = (
    RoomClass("smallroom", (3.0, 6.0), (2.5, 3.0), (0.2, 0.5), 10, 5),
    RoomClass("mediumroom", (6.0, 12.0), (2.7, 3.5), (0.25, 0.6), 10, 5),
    RoomClass("largeroom", (12.0, 20.0), (3.0, 5.0), (0.3, 0.7), 10, 5),
)
"""150 RIRs in 30 rooms (Kaldi's simulated_rirs: 3 classes of 200 rooms, side lengths up to 50 m). The
``rt60`` ranges are Sabine targets; the measured RT60s run higher in the larger rooms (rir_list and
rir_set.json record the measured ones; docs/speaker_augment.md lists them)."""


@dataclass(frozen=True)
class RirSetParams:
    """Everything the set depends on (stored in ``rir_set.json`` to decide whether it is current)."""

    seed: int = 14
    sample_rate: int = 16000
    classes: tuple[RoomClass, ...] = DEFAULT_ROOM_CLASSES

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "sample_rate": self.sample_rate, "classes": [asdict(c) for c in self.classes]}


def truncate_rir(rir: np.ndarray, decay_db: float = 60.0) -> np.ndarray:
    """``rir`` cut where its energy decay curve (Schroeder backward integral) has fallen ``decay_db`` dB."""
    energy = np.cumsum((rir.astype(np.float64) ** 2)[::-1])[::-1]
    if energy[0] <= 0:
        return rir
    below = np.flatnonzero(energy < energy[0] * 10.0 ** (-decay_db / 10.0))
    return rir[: below[0]] if below.size else rir


def _position(rng: np.random.Generator, dims: np.ndarray, margin: float = 0.5) -> np.ndarray:
    return np.array([rng.uniform(margin, dims[0] - margin), rng.uniform(margin, dims[1] - margin),
                     rng.uniform(1.0, min(2.0, dims[2] - margin))])


def _simulate_room(room_class: RoomClass, class_index: int, room_index: int, params: RirSetParams
                   ) -> tuple[dict[str, Any], list[np.ndarray]]:
    import pyroomacoustics as pra

    rng = np.random.default_rng([params.seed, class_index, room_index])
    dims = np.array([rng.uniform(*room_class.size), rng.uniform(*room_class.size), rng.uniform(*room_class.height)])
    target = float(rng.uniform(*room_class.rt60))
    absorption, max_order = pra.inverse_sabine(target, dims)
    # Air absorption: high frequencies decay faster, as in real rooms (and the measured RT60 lands closer
    # to Sabine's target; plain image sources in an empty shoebox ring ~1.3x longer).
    room = pra.ShoeBox(dims, fs=params.sample_rate, materials=pra.Material(absorption), max_order=max_order,
                       air_absorption=True)
    source = _position(rng, dims)
    mics = []
    for _ in range(room_class.rirs_per_room):
        # one talker, several microphone positions: the image sources are computed once per room
        for _attempt in range(100):
            mic = _position(rng, dims)
            if 0.5 <= np.linalg.norm(source - mic) <= 4.0:
                break
        mics.append(mic)
    room.add_source(source)
    room.add_microphone_array(np.stack(mics, axis=1))
    room.compute_rir()
    rirs, measured = [], []
    for k in range(room_class.rirs_per_room):
        rir = truncate_rir(np.asarray(room.rir[k][0], dtype=np.float64))
        rirs.append(rir)
        measured.append(float(pra.experimental.measure_rt60(rir, fs=params.sample_rate, decay_db=30)))
    info = {"dims_m": [round(float(d), 3) for d in dims], "target_rt60": round(target, 3),
            "absorption": round(float(absorption), 4), "max_order": int(max_order),
            "source": [round(float(x), 3) for x in source],
            "placements": [{"mic": [round(float(x), 3) for x in m], "distance_m": round(float(np.linalg.norm(m - source)), 3),
                            "measured_rt60": round(r, 3), "samples": int(h.size)}
                           for m, r, h in zip(mics, measured, rirs)]}
    return info, rirs


def rir_set_is_complete(out_dir: str | os.PathLike, params: RirSetParams) -> bool:
    """True when ``out_dir/rir_set.json`` was written for ``params`` and every RIR it lists exists."""
    manifest = Path(out_dir) / MANIFEST
    if not manifest.is_file():
        return False
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    if data.get("params") != json.loads(json.dumps(params.to_json())):
        return False
    return all((Path(out_dir) / f).is_file() for f in data.get("files", [])) and bool(data.get("files"))


def generate_rir_set(out_dir: str | os.PathLike, params: RirSetParams = RirSetParams(), force: bool = False,
                     nj: int = 1) -> Path:
    """Write the synthetic RIR set (layout in the module docstring) unless it is complete; returns the path
    of its manifest. The set is built in ``<out_dir>.tmp`` and renamed into place when complete. ``nj``
    processes simulate rooms in parallel (the result does not depend on ``nj``)."""
    out_dir = Path(out_dir)
    if not force and rir_set_is_complete(out_dir, params):
        log.info("%s: RIR set complete for these parameters, nothing to do", out_dir)
        return out_dir / MANIFEST
    import pyroomacoustics as pra

    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.monotonic()
    jobs = [(room_class, c, r, params) for c, room_class in enumerate(params.classes)
            for r in range(room_class.num_rooms)]
    if nj > 1:
        with ProcessPoolExecutor(max_workers=nj) as pool:
            simulated = list(pool.map(_simulate_room, *zip(*jobs)))
    else:
        simulated = [_simulate_room(*job) for job in jobs]
    results = {(c, r): out for (_, c, r, _), out in zip(jobs, simulated)}
    files, rooms_info = [], {}
    for c, room_class in enumerate(params.classes):
        lines = []
        for r in range(room_class.num_rooms):
            room_id = f"Room{r + 1:03d}"
            info, rirs = results[(c, r)]
            rooms_info[f"{room_class.name}-{room_id}"] = info
            for k, rir in enumerate(rirs):
                rel = Path("simulated_rirs") / room_class.name / room_id / f"{room_id}-{k + 1:05d}.wav"
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                peak = float(np.abs(rir).max())
                sf.write(tmp / rel, (0.9 * rir / peak).astype(np.float32), params.sample_rate, subtype="PCM_16")
                rt60 = info["placements"][k]["measured_rt60"]
                lines.append(f"--rir-id {room_class.name}-{room_id}-{k + 1:05d} --room-id {room_class.name}-{room_id} "
                             f"--rt60 {rt60:.3f} {rel.as_posix()}\n")
                files.append(rel.as_posix())
        (tmp / "simulated_rirs" / room_class.name / "rir_list").write_text("".join(lines), encoding="utf-8")
        measured = [p["measured_rt60"] for k, v in rooms_info.items() if k.startswith(room_class.name + "-")
                    for p in v["placements"]]
        log.info("%s: %d RIRs, measured RT60 %.2f-%.2f s (median %.2f)", room_class.name, len(measured),
                 min(measured), max(measured), float(np.median(measured)))
    manifest = {"params": params.to_json(), "pyroomacoustics": pra.__version__, "files": files,
                "seconds": round(time.monotonic() - t0, 1), "rooms": rooms_info}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    old = out_dir.with_name(out_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
    log.info("%s: %d RIRs written in %.1f s", out_dir, len(files), time.monotonic() - t0)
    return out_dir / MANIFEST


class RirBank:
    """RIRs in memory, ready for :func:`~speechattn.data.augment.mixing.reverberate`.

    ``draw(rng) -> (rir (L,), direct_index)``: uniform over the RIRs, or by the lists' ``--probability``
    when every entry has one.
    """

    def __init__(self, rirs: Sequence[Tensor], entries: Sequence[RirEntry] | None = None) -> None:
        if not rirs:
            raise ValueError("no RIR")
        prepared = [prepare_rir(torch.as_tensor(r, dtype=torch.float32)) for r in rirs]
        self.rirs = [r for r, _ in prepared]
        self.direct = [d for _, d in prepared]
        self.entries = list(entries) if entries is not None else None
        probs = [e.probability for e in self.entries] if self.entries else []
        self.weights = None
        if probs and all(p is not None for p in probs) and sum(probs) > 0:
            self.weights = np.asarray(probs, dtype=np.float64) / sum(probs)

    @classmethod
    def from_entries(cls, entries: Sequence[RirEntry], sample_rate: int = 16000) -> "RirBank":
        """Read every entry's file; AudioError naming the list line and file for a wrong sample rate, an
        unreadable, empty, non-finite or silent file."""
        rirs, multichannel = [], 0
        for e in entries:
            prefix = f"{e.where}: {e.path}" if e.where else str(e.path)
            try:
                data, rate = sf.read(e.path, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as err:
                raise AudioError(f"{prefix}: cannot read RIR: {err}") from err
            if rate != sample_rate:
                raise AudioError(f"{prefix}: RIR sampled at {rate} Hz, training audio is {sample_rate} Hz "
                                 f"(resample the RIR set, or regenerate it with local/make_rir_set.py "
                                 f"--sample-rate {sample_rate})")
            if data.shape[0] == 0 or not np.isfinite(data).all() or not np.abs(data[:, 0]).max() > 0:
                raise AudioError(f"{prefix}: RIR is empty, silent or has non-finite samples")
            multichannel += data.shape[1] > 1
            rirs.append(torch.from_numpy(np.ascontiguousarray(data[:, 0])))
        if multichannel:
            log.info("%d multi-channel RIRs: their first channel is used", multichannel)
        lengths = [r.numel() / sample_rate for r in rirs]
        log.info("RIR bank: %d RIRs, %.2f-%.2f s long", len(rirs), min(lengths), max(lengths))
        return cls(rirs, entries)

    def __len__(self) -> int:
        return len(self.rirs)

    def draw(self, rng: np.random.Generator) -> tuple[Tensor, int]:
        k = int(rng.choice(len(self.rirs), p=self.weights)) if self.weights is not None else int(rng.integers(len(self.rirs)))
        return self.rirs[k], self.direct[k]
