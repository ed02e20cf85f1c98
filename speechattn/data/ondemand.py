"""Datasets that read each utterance's features (and frame labels) from Kaldi ark files when it is used.

The in-memory datasets of :mod:`speechattn.data.dataset` hold every feature matrix of a set, which is fine
for speechocean762 (~160 MB) but not for VoxCeleb1 (~40 GB of 80-dim fbank). Here only an index stays in
memory, a few numbers per utterance (:class:`ArkIndex`: ark file, byte offset, frame count, scp line), and
``__getitem__`` seeks into the ark and reads one matrix with kaldiio. Peak memory is then the index plus
the batches in flight, whatever the corpus size (``bench/data_scale.py`` measures it).

:class:`OnDemandFeatures` is the same reading behind a read-only ``utt -> (T, F)`` mapping, in place of the
dict :func:`speechattn.data.dataset.load_features` returns (the speaker task's crops and dev metrics):
iterating its keys and :func:`frame_counts` read nothing, only a lookup reads one matrix.

Frame labels get the same treatment: :func:`write_label_ark` converts a ``frame_labels`` table (phone
symbols) once into a Kaldi integer-vector ark + scp (what Kaldi's ``copy-int-vector`` writes), read like the
features. Utterance-level targets (speaker classes) are one integer per utterance and stay in memory.

DataLoader workers: each process opens its own file handles on first use (handles inherited through
``fork`` share their file offset with the parent, so they are never reused across processes). The item
of an index is a pure function of the files, so the samplers' mid-epoch resume
(:mod:`speechattn.data.sampler`) is exact with any number of workers.

Example:
    >>> import tempfile, pathlib, numpy as np, kaldiio
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with kaldiio.WriteHelper(f"ark,scp:{d}/feats.ark,{d}/feats.scp") as w:
    ...     w("u1", np.ones((3, 2), dtype=np.float32)); w("u2", np.zeros((5, 2), dtype=np.float32))
    >>> _ = (d / "utt2num_frames").write_text("u1 3\\nu2 5\\n")
    >>> dataset = OnDemandFeatureDataset(ArkIndex.from_data_dir(d))
    >>> len(dataset), dataset.lengths().tolist(), dataset[1].feats.shape
    (2, [3, 5], torch.Size([5, 2]))
"""
from __future__ import annotations

import bisect
import json
import struct
from array import array
import logging
import os
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator, Mapping, Sequence

import kaldiio
import numpy as np
import torch
from torch.utils.data import Dataset

from speechattn.data.dataset import Example
from speechattn.data.kaldi_dir import KaldiDataError
from speechattn.utils.atomic import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["ArkIndex", "OnDemandFeatures", "FeatureUnion", "OnDemandFeatureDataset", "frame_counts", "feature_subset",
           "feature_union", "write_label_ark", "LABEL_ARK_NAME"]

Normaliser = Callable[[str, np.ndarray], np.ndarray]
LABEL_ARK_NAME = "frame_label_ids"  # <data_dir>/frame_label_ids.{ark,scp,json}


def _table_lines(path: Path) -> Iterator[tuple[int, str, str]]:
    """``(lineno, key, value)`` of a Kaldi table, streamed; checks C-locale order and duplicates as it goes."""
    previous: bytes | None = None
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split(maxsplit=1)
            if len(fields) != 2:
                raise KaldiDataError(f"{path}:{lineno}: expected 'KEY VALUE', got {line.strip()!r}")
            key = fields[0].encode("utf-8")
            if previous is not None and key <= previous:
                what = "duplicated" if key == previous else "not sorted (C-locale order)"
                raise KaldiDataError(f"{path}:{lineno}: key '{fields[0]}' is {what}")
            previous = key
            yield lineno, fields[0], fields[1].strip()


class ArkIndex:
    """Where each utterance's matrix is: compact arrays (about 20 bytes per utterance besides its ID).

    Attributes:
        utts: utterance IDs, in scp order.
        files: the distinct ark paths; ``file_ids[i]`` indexes it.
        offsets: byte offset of utterance i's matrix in its ark ``(N,)`` int64.
        lengths: frames of utterance i ``(N,)`` int32 (from ``utt2num_frames``; checked on every read).
        lines: line of utterance i in the scp ``(N,)`` int32, for error messages.
        scp: the scp path.
    """

    def __init__(self, scp: Path, utts: list[str], files: list[str], file_ids: np.ndarray, offsets: np.ndarray,
                 lengths: np.ndarray, lines: np.ndarray) -> None:
        self.scp, self.utts, self.files = scp, utts, files
        self.file_ids, self.offsets, self.lengths, self.lines = file_ids, offsets, lengths, lines

    def __len__(self) -> int:
        return len(self.utts)

    @classmethod
    def from_scp(cls, scp: str | os.PathLike, lengths_table: str | os.PathLike | None = None,
                 utts: Sequence[str] | None = None) -> "ArkIndex":
        """Index ``scp`` (``UTT ARK:OFFSET`` lines), streaming it once.

        ``lengths_table`` (``utt2num_frames``) gives the frame counts without reading the arks; it may list
        more utterances than the scp (those whose features failed), but not fewer. Without it the lengths
        are 0 and :meth:`OnDemandFeatureDataset.lengths` is not usable for batching. ``utts`` keeps only those
        utterances (each must be in the scp).
        """
        scp = Path(scp)
        if not scp.is_file():
            raise KaldiDataError(f"{scp}:0: scp file not found")
        wanted = None if utts is None else set(utts)
        length_stream = _table_lines(Path(lengths_table)) if lengths_table is not None else None
        pending_length: tuple[int, str, str] | None = None
        names: list[str] = []
        file_of: dict[str, int] = {}
        files: list[str] = []
        # array.array, not lists: 4-8 bytes per number while the index is built, not ~36.
        ids, offsets, lengths, lines = array("i"), array("q"), array("i"), array("i")
        for lineno, utt, value in _table_lines(scp):
            if wanted is not None and utt not in wanted:
                continue
            path, sep, offset_text = value.rpartition(":")
            if not sep or not offset_text.isdigit() or value.endswith("|"):
                raise KaldiDataError(f"{scp}:{lineno}: on-demand reading needs 'ARK:OFFSET' entries, got '{value}'")
            frames = 0
            if length_stream is not None:
                # Both tables are sorted: advance utt2num_frames to this utterance.
                while pending_length is None or pending_length[1].encode() < utt.encode():
                    pending_length = next(length_stream, None)
                    if pending_length is None:
                        break
                if pending_length is None or pending_length[1] != utt:
                    raise KaldiDataError(f"{scp}:{lineno}: utterance '{utt}' is not in {lengths_table}")
                if not pending_length[2].isdigit():
                    raise KaldiDataError(f"{lengths_table}:{pending_length[0]}: expected a frame count, got "
                                         f"'{pending_length[2]}'")
                frames = int(pending_length[2])
            names.append(utt)
            ids.append(file_of.setdefault(path, len(file_of)))
            if len(file_of) > len(files):
                files.append(path)
            offsets.append(int(offset_text))
            lengths.append(frames)
            lines.append(lineno)
        if wanted is not None and len(names) != len(wanted):
            missing = sorted(wanted - set(names))
            raise KaldiDataError(f"{scp}:0: {len(missing)} utterance(s) have no entry, e.g. '{missing[0]}'")
        return cls(scp, names, files, np.frombuffer(ids, dtype=np.int32).copy(),
                   np.frombuffer(offsets, dtype=np.int64).copy(), np.frombuffer(lengths, dtype=np.int32).copy(),
                   np.frombuffer(lines, dtype=np.int32).copy())

    def select(self, rows: Iterable[int]) -> "ArkIndex":
        """The index of utterances ``rows`` (positions, kept in scp order), without reading the scp again."""
        keep = np.unique(np.fromiter(rows, dtype=np.int64))
        if keep.size and (keep[0] < 0 or keep[-1] >= len(self)):
            raise IndexError(f"rows out of range 0..{len(self) - 1}")
        return ArkIndex(self.scp, [self.utts[i] for i in keep], self.files, self.file_ids[keep], self.offsets[keep],
                        self.lengths[keep], self.lines[keep])

    def position(self, utt: str) -> int | None:
        """Row of ``utt`` (None when absent): a binary search, as the scp is in C-locale order (which is
        Python's code-point order of ``str``)."""
        i = bisect.bisect_left(self.utts, utt)
        return i if i < len(self.utts) and self.utts[i] == utt else None

    @classmethod
    def from_data_dir(cls, data_dir: str | os.PathLike, utts: Sequence[str] | None = None) -> "ArkIndex":
        """``data_dir/feats.scp`` with lengths from ``data_dir/utt2num_frames`` (required)."""
        data_dir = Path(data_dir)
        if not (data_dir / "utt2num_frames").is_file():
            raise KaldiDataError(f"{data_dir / 'utt2num_frames'}:0: needed to batch by length without reading "
                                 f"every matrix (data preparation writes it)")
        return cls.from_scp(data_dir / "feats.scp", data_dir / "utt2num_frames", utts)


class _ArkReader:
    """Reads matrices by index; file handles opened per process (never shared across a fork)."""

    def __init__(self, index: ArkIndex) -> None:
        self.index = index
        self._pid = -1
        self._handles: dict[int, IO[bytes]] = {}

    def __getstate__(self) -> dict:
        return {"index": self.index, "_pid": -1, "_handles": {}}

    def _handle(self, i: int) -> IO[bytes]:
        if self._pid != os.getpid():
            self._pid, self._handles = os.getpid(), {}  # a forked worker: the parent's handles share offsets
        file_id = int(self.index.file_ids[i])
        handle = self._handles.get(file_id)
        if handle is None:
            path = self.index.files[file_id]
            try:
                handle = self._handles[file_id] = open(path, "rb")
            except OSError as e:
                raise KaldiDataError(f"{self.index.scp}:{self.index.lines[i]}: cannot open ark '{path}': {e}") from e
        return handle

    def read_rows(self, i: int, start: int, length: int) -> tuple[np.ndarray, int] | None:
        """Rows ``start .. start+length`` of matrix ``i`` ``(length, F)`` and its total row count, read
        without the other rows; None when the matrix is not a plain binary float/double matrix (e.g.
        compressed: read it whole)."""
        handle = self._handle(i)
        utt = self.index.utts[i]
        key = utt.encode("utf-8") + b" "
        where = f"{self.index.scp}:{self.index.lines[i]}"
        try:
            handle.seek(int(self.index.offsets[i]) - len(key))
            head = handle.read(len(key) + 15)  # "UTT " + "\0B" + "FM " + (4, rows int32) + (4, cols int32)
        except OSError as e:
            raise KaldiDataError(f"{where}: cannot read '{utt}': {e}") from e
        if head[:len(key)] != key:
            return None  # the full read names what the ark holds there
        header = head[len(key):]
        if len(header) < 15 or header[:2] != b"\0B" or header[2:5] not in (b"FM ", b"DM ") \
                or header[5] != 4 or header[10] != 4:
            return None
        rows, cols = struct.unpack("<i", header[6:10])[0], struct.unpack("<i", header[11:15])[0]
        width = 4 if header[2:5] == b"FM " else 8
        if not 0 <= start <= start + length <= rows:
            return np.zeros((0, cols), np.float32), rows  # the caller reports the length mismatch
        handle.seek(int(self.index.offsets[i]) + 15 + start * cols * width)
        data = handle.read(length * cols * width)
        if len(data) != length * cols * width:
            raise KaldiDataError(f"{where}: cannot read '{utt}' from {self.index.files[self.index.file_ids[i]]}: "
                                 f"the ark ends inside its matrix")
        return np.frombuffer(data, dtype="<f4" if width == 4 else "<f8").reshape(length, cols), rows

    def read(self, i: int) -> np.ndarray:
        handle = self._handle(i)
        file_id = int(self.index.file_ids[i])
        utt = self.index.utts[i]
        where = f"{self.index.scp}:{self.index.lines[i]}"
        # Kaldi scp offsets point just past "UTT ": start at the key so that kaldiio reads and we check it.
        start = int(self.index.offsets[i]) - len(utt.encode("utf-8")) - 1
        try:
            handle.seek(max(0, start))
            key, mat = next(kaldiio.load_ark(handle))
        except Exception as e:  # kaldiio raises ValueError/struct.error/... on a corrupt or truncated ark
            raise KaldiDataError(f"{where}: cannot read '{utt}' from {self.index.files[file_id]}: "
                                 f"{type(e).__name__}: {e}") from e
        if key != utt:
            raise KaldiDataError(f"{where}: the ark holds '{key}' at this offset, not '{utt}' (stale scp?)")
        return mat

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles = {}


class OnDemandFeatures(Mapping[str, np.ndarray]):
    """``utt -> features (T, F)``, read from the ark when looked up (checked, then normalised): the same
    values as the dict of :func:`speechattn.data.dataset.load_features`, with only ``index`` in memory.

    Keys come in scp order; ``in``, ``len``, iteration, :meth:`num_frames` and :meth:`subset` read nothing
    (``values()``/``items()`` read every matrix: use them only on small sets). Picklable for DataLoader
    workers (each process opens its own ark handles).

    Example:
        >>> import tempfile, pathlib, kaldiio
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> with kaldiio.WriteHelper(f"ark,scp:{d}/feats.ark,{d}/feats.scp") as w:
        ...     w("a", np.ones((3, 2), dtype=np.float32)); w("b", np.zeros((5, 2), dtype=np.float32))
        >>> _ = (d / "utt2num_frames").write_text("a 3\\nb 5\\n")
        >>> feats = OnDemandFeatures(ArkIndex.from_data_dir(d), normalise=lambda utt, m: m + 1)
        >>> list(feats), feats.num_frames("b"), feats["a"].tolist(), "c" in feats
        (['a', 'b'], 5, [[2.0, 2.0], [2.0, 2.0], [2.0, 2.0]], False)
    """

    def __init__(self, index: ArkIndex, normalise: Normaliser | None = None) -> None:
        self.index, self.normalise = index, normalise
        self._reader = _ArkReader(index)

    def __len__(self) -> int:
        return len(self.index)

    def __iter__(self) -> Iterator[str]:
        return iter(self.index.utts)

    def __contains__(self, utt: object) -> bool:  # Mapping's default would read the matrix
        return isinstance(utt, str) and self.index.position(utt) is not None

    def __getitem__(self, utt: str) -> np.ndarray:
        i = self.index.position(utt)
        if i is None:
            raise KeyError(utt)
        return self.read(i)

    def read(self, i: int) -> np.ndarray:
        """Matrix of row ``i`` ``(T, F)``: float32 as stored, checked against ``utt2num_frames`` and for NaN/inf,
        then normalised (errors name the scp line)."""
        index = self.index
        utt = index.utts[i]
        mat = np.array(self._reader.read(i), dtype=np.float32)  # kaldiio's arrays are read-only views
        where = f"{index.scp}:{index.lines[i]}"
        if mat.ndim != 2 or mat.shape[0] != index.lengths[i]:
            raise KaldiDataError(f"{where}: '{utt}' has features of shape {mat.shape} but utt2num_frames says "
                                 f"{index.lengths[i]} frames")
        if not np.isfinite(mat).all():
            raise KaldiDataError(f"{where}: features of '{utt}' contain NaN or inf")
        return self.normalise(utt, mat) if self.normalise is not None else mat

    def read_crop(self, utt: str, start: int, length: int) -> np.ndarray:
        """``self[utt][start:start + length]`` ``(length', F)``, reading only those rows from the ark when the
        normaliser is row-wise (``normalise.rowwise``, e.g. global or speaker CMVN: bitwise the same values)
        and the matrix is stored uncompressed; otherwise the whole matrix is read and sliced."""
        i = self.index.position(utt)
        if i is None:
            raise KeyError(utt)
        if self.normalise is not None and not getattr(self.normalise, "rowwise", False):
            return self.read(i)[start:start + length]
        index = self.index
        start, stop = max(0, start), min(start + length, int(index.lengths[i]))
        got = self._reader.read_rows(i, start, max(0, stop - start))
        if got is None:
            return self.read(i)[start:stop]
        rows_mat, rows = got
        where = f"{index.scp}:{index.lines[i]}"
        if rows != index.lengths[i]:
            raise KaldiDataError(f"{where}: '{utt}' has features of shape ({rows}, {rows_mat.shape[1]}) but "
                                 f"utt2num_frames says {index.lengths[i]} frames")
        mat = np.array(rows_mat, dtype=np.float32)
        if not np.isfinite(mat).all():
            raise KaldiDataError(f"{where}: features of '{utt}' contain NaN or inf")
        return self.normalise(utt, mat) if self.normalise is not None else mat

    def num_frames(self, utt: str) -> int:
        i = self.index.position(utt)
        if i is None:
            raise KeyError(utt)
        return int(self.index.lengths[i])

    def frame_counts(self) -> np.ndarray:
        """Frames per utterance ``(N,)``, in key order (from ``utt2num_frames``)."""
        return self.index.lengths

    def subset(self, utts: Iterable[str]) -> "OnDemandFeatures":
        """The features of ``utts`` (each must be a key; kept in scp order), same normaliser, nothing read."""
        rows = []
        for utt in utts:
            i = self.index.position(utt)
            if i is None:
                raise KeyError(utt)
            rows.append(i)
        return OnDemandFeatures(self.index.select(rows), self.normalise)


class FeatureUnion(Mapping[str, np.ndarray]):
    """Several disjoint feature mappings seen as one (e.g. a dev set drawn from the training and validation
    dirs, each with its own normaliser); lookups go to the part that has the key, nothing is read ahead."""

    def __init__(self, parts: Sequence[Mapping[str, np.ndarray]]) -> None:
        self.parts = list(parts)

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __iter__(self) -> Iterator[str]:
        for part in self.parts:
            yield from part

    def __contains__(self, utt: object) -> bool:
        return any(utt in p for p in self.parts)

    def _part(self, utt: str) -> Mapping[str, np.ndarray]:
        for part in self.parts:
            if utt in part:
                return part
        raise KeyError(utt)

    def __getitem__(self, utt: str) -> np.ndarray:
        return self._part(utt)[utt]

    def num_frames(self, utt: str) -> int:
        part = self._part(utt)
        return part.num_frames(utt) if hasattr(part, "num_frames") else len(part[utt])

    def frame_counts(self) -> np.ndarray:
        return np.concatenate([frame_counts(p) for p in self.parts]) if self.parts else np.zeros(0, np.int64)

    def subset(self, utts: Iterable[str]) -> "FeatureUnion":
        wanted = list(utts)
        missing = [u for u in wanted if u not in self]
        if missing:
            raise KeyError(missing[0])
        return FeatureUnion([feature_subset(p, [u for u in wanted if u in p]) for p in self.parts])


def frame_counts(feats: Mapping[str, np.ndarray]) -> np.ndarray:
    """Frames of each utterance of ``feats`` ``(N,)`` in key order, without reading on-demand features."""
    if hasattr(feats, "frame_counts"):
        return np.asarray(feats.frame_counts())
    return np.array([len(f) for f in feats.values()], dtype=np.int64)


def feature_subset(feats: Mapping[str, np.ndarray], utts: Sequence[str]) -> Mapping[str, np.ndarray]:
    """The features of ``utts``: a dict (in ``utts`` order) of an in-memory dict; an on-demand mapping's
    :meth:`~OnDemandFeatures.subset` (scp order) otherwise, which reads nothing."""
    if hasattr(feats, "subset"):
        return feats.subset(utts)
    return {u: feats[u] for u in utts}


def feature_union(parts: Sequence[Mapping[str, np.ndarray]]) -> Mapping[str, np.ndarray]:
    """One mapping of disjoint ``parts``: a merged dict when all are dicts, else a :class:`FeatureUnion`."""
    if all(isinstance(p, dict) for p in parts):
        return {u: f for p in parts for u, f in p.items()}
    return FeatureUnion(parts)


class OnDemandFeatureDataset(Dataset):
    """Features read from their ark when an item is requested; same items as the in-memory datasets.

    Args:
        features: index of the feature matrices (``ArkIndex.from_data_dir``).
        frame_labels: index of per-frame label ids (``ArkIndex.from_scp(write_label_ark(...))``), aligned
            with ``features`` by utterance ID; its lengths are checked against the features when read.
        targets: one class id per utterance ``(N,)`` (speaker tasks), in ``features.utts`` order.
        normalise: ``(utt, feats (T, F)) -> feats`` applied after reading (CMVN).

    Items are :class:`speechattn.data.dataset.Example`: ``feats (T, F)`` float32, ``target`` ``(T,)`` long
    (frame labels), an int (targets) or None. Use with ``speechattn.data.dataset.collate``.
    """

    def __init__(self, features: ArkIndex, frame_labels: ArkIndex | None = None,
                 targets: Sequence[int] | np.ndarray | None = None, normalise: Normaliser | None = None) -> None:
        if frame_labels is not None and targets is not None:
            raise ValueError("give frame_labels or targets, not both")
        self.features = features
        self.normalise = normalise
        self._feats = OnDemandFeatures(features, normalise)
        self._labels: _ArkReader | None = None
        self._label_rows: np.ndarray | None = None
        if frame_labels is not None:
            self._labels = _ArkReader(frame_labels)
            self._label_rows = _align(features, frame_labels)
        self.targets = None if targets is None else np.asarray(targets, dtype=np.int64)
        if self.targets is not None and len(self.targets) != len(features):
            raise ValueError(f"{len(self.targets)} targets for {len(features)} utterances")

    def __len__(self) -> int:
        return len(self.features)

    @property
    def utts(self) -> list[str]:
        return self.features.utts

    def lengths(self) -> np.ndarray:
        """Frames per utterance ``(N,)`` (for the batch samplers), from ``utt2num_frames``."""
        return self.features.lengths

    def __getitem__(self, i: int) -> Example:
        utt = self.features.utts[i]
        mat = self._feats.read(i)
        target: torch.Tensor | int | None = None
        if self._labels is not None:
            row = int(self._label_rows[i])
            labels = np.asarray(self._labels.read(row))
            if labels.ndim != 1 or len(labels) != len(mat):
                raise KaldiDataError(f"{self._labels.index.scp}:{self._labels.index.lines[row]}: '{utt}' has "
                                     f"{labels.size} frame labels but {len(mat)} feature frames")
            target = torch.from_numpy(labels.astype(np.int64))
        elif self.targets is not None:
            target = int(self.targets[i])
        return Example(utt, torch.from_numpy(np.ascontiguousarray(mat, dtype=np.float32)), target)


def _align(features: ArkIndex, labels: ArkIndex) -> np.ndarray:
    """Row of each feature utterance in ``labels`` (both sorted: one merge pass, no dictionary)."""
    rows = np.empty(len(features), dtype=np.int64)
    j = 0
    for i, utt in enumerate(features.utts):
        key = utt.encode()
        while j < len(labels.utts) and labels.utts[j].encode() < key:
            j += 1
        if j == len(labels.utts) or labels.utts[j] != utt:
            raise KaldiDataError(f"{labels.scp}:0: no frame labels for utterance '{utt}' "
                                 f"({features.scp}:{features.lines[i]})")
        rows[i] = j
    return rows


def write_label_ark(data_dir: str | os.PathLike, phones: Sequence[str], label_file: str = "frame_labels",
                    out_dir: str | os.PathLike | None = None) -> Path:
    """Convert ``data_dir/label_file`` (``UTT PH PH ...``) into label ids in a Kaldi int-vector ark.

    Writes ``out_dir/frame_label_ids.{ark,scp,json}`` (``out_dir`` defaults to ``data_dir``) and returns
    the scp path. Streams line by line (constant memory). Skipped when the outputs exist and were made from
    the same label file (size and modification time) with the same ``phones``; otherwise rewritten (the
    ark under a temporary name, renamed when complete). A phone not in ``phones`` is an error naming the
    line.
    """
    source = Path(data_dir) / label_file
    out = Path(out_dir) if out_dir is not None else Path(data_dir)
    ark, scp, stamp_path = (out / f"{LABEL_ARK_NAME}.{ext}" for ext in ("ark", "scp", "json"))
    if not source.is_file():
        raise KaldiDataError(f"{source}:0: label file not found")
    stat = source.stat()
    stamp = {"source": str(source.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
             "phones": list(phones)}
    if ark.is_file() and scp.is_file() and stamp_path.is_file():
        try:
            if json.loads(stamp_path.read_text()) == stamp:
                return scp
        except json.JSONDecodeError:
            pass
    stamp_path.unlink(missing_ok=True)  # from here on, a half-written conversion never looks complete
    out.mkdir(parents=True, exist_ok=True)
    ids = {phone: k for k, phone in enumerate(phones)}
    tmp_ark = ark.with_name(f".{ark.name}.{os.getpid()}.tmp")
    tmp_scp = scp.with_name(f".{scp.name}.{os.getpid()}.tmp")
    count = 0
    try:
        with open(tmp_ark, "wb") as f, open(tmp_scp, "w", encoding="utf-8") as scp_f:
            for lineno, utt, value in _table_lines(source):
                try:
                    vector = np.fromiter((ids[p] for p in value.split()), dtype=np.int32)
                except KeyError as e:
                    raise KaldiDataError(f"{source}:{lineno}: phone {e.args[0]!r} of '{utt}' is not in the "
                                         f"phone table") from None
                position = f.tell() + len(utt.encode("utf-8")) + 1  # the vector starts after "UTT "
                kaldiio.save_ark(f, {utt: vector})
                scp_f.write(f"{utt} {ark.resolve()}:{position}\n")
                count += 1
        os.replace(tmp_ark, ark)
        os.replace(tmp_scp, scp)
    finally:
        tmp_ark.unlink(missing_ok=True)
        tmp_scp.unlink(missing_ok=True)
    atomic_write_text(stamp_path, json.dumps(stamp, indent=1) + "\n")
    logger.info("%s -> %s (%d utterances)", source, ark, count)
    return scp
