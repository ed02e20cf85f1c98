"""Memory and speed of one training epoch's data pass when features are read on demand, at two corpus sizes.

For each size (default 10,000 and 100,000 utterances) the script writes a feature set to disk as the feature
stage does (``raw_fbank.<job>.ark/.scp`` in ``--jobs`` arks, merged ``feats.scp``, ``utt2num_frames``, a
``frame_labels`` table over a 48-symbol phone set converted once to a label ark by
``speechattn.data.ondemand.write_label_ark``), then runs the data side of one training epoch in a fresh
process: ``OnDemandFeatureDataset`` + ``LengthBucketBatchSampler`` + ``DataLoader`` with ``--num-workers``
workers and padding collation, every batch of the epoch, no model. It prints, per size, the peak resident
memory (``ru_maxrss``) of the main process and of the largest worker, the time to build the index, and
useful frames per second of the pass; then the 100k / 10k ratios (target: peak RSS <= 1.3x).

Features are random (utterance lengths log-normal, mean ``--mean-frames``), 80-dim float32 by default:
100,000 x 100 frames x 80 x 4 bytes = 3.2 GB on disk; lower ``--dim`` or ``--mean-frames`` on a small
disk. The page cache usually still holds the freshly written arks, so frames/s is that of warm reads.
``--in-memory`` also measures the in-memory dataset (``speechattn.data.dataset.load_features``) at the
smallest size, for comparison.

``--task sid`` measures the speaker task's training pass instead: ``SpeakerCropDataset`` over
``OnDemandFeatures`` + ``SpeakerBatchSampler``, one random crop of ``--crop`` frames per utterance (only the
crop's rows are read from the ark); ``--whole-reads`` makes it read each whole matrix and slice it (what a
per-utterance CMVN needs), to see what the row reads save. VoxCeleb1's utterances are ~800 frames long.

    python bench/data_scale.py                                     # 10k and 100k, ~3.5 GB in a temp dir
    python bench/data_scale.py --work-dir /data/bench --keep       # keep (and reuse) the generated sets
    python bench/data_scale.py --sizes 2000 20000 --mean-frames 50 # quick check
    python bench/data_scale.py --task sid --sizes 1000 10000 --mean-frames 800 --max-frames-per-batch 4800
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PHONES = [f"P{k:02d}" for k in range(48)]


def lognormal_lengths(num_utts: int, mean: float, sigma: float = 0.5, seed: int = 0) -> np.ndarray:
    mu = math.log(mean) - sigma ** 2 / 2
    return np.clip(np.random.default_rng(seed).lognormal(mu, sigma, num_utts), 10, 20 * mean).astype(np.int64)


def generate(data_dir: Path, num_utts: int, dim: int, mean_frames: float, jobs: int) -> dict:
    """Write a feature set like the feature stage's output; returns its description (also saved)."""
    import kaldiio

    from speechattn.data.ondemand import write_label_ark

    stamp_path = data_dir / "bench_stamp.json"
    wanted = {"num_utts": num_utts, "dim": dim, "mean_frames": mean_frames, "jobs": jobs, "version": 1}
    if stamp_path.is_file() and json.loads(stamp_path.read_text()).get("params") == wanted:
        return json.loads(stamp_path.read_text())
    if data_dir.exists():
        shutil.rmtree(data_dir)
    (data_dir / "feats").mkdir(parents=True)
    lengths = lognormal_lengths(num_utts, mean_frames)
    utts = [f"spk{k // 20:05d}-utt{k:07d}" for k in range(num_utts)]  # sorted by construction
    rng = np.random.default_rng(1)
    started = time.time()
    per_job = math.ceil(num_utts / jobs)
    scp_parts = []
    for job in range(jobs):
        ark_path = data_dir / "feats" / f"raw_fbank.{job + 1}.ark"
        lines = []
        with open(ark_path, "wb") as ark:
            for k in range(job * per_job, min(num_utts, (job + 1) * per_job)):
                mat = rng.standard_normal((int(lengths[k]), dim), dtype=np.float32)
                position = ark.tell() + len(utts[k]) + 1
                kaldiio.save_ark(ark, {utts[k]: mat})
                lines.append(f"{utts[k]} {ark_path.resolve()}:{position}\n")
        scp_parts.append("".join(lines))
    (data_dir / "feats.scp").write_text("".join(scp_parts))
    (data_dir / "utt2num_frames").write_text("".join(f"{u} {n}\n" for u, n in zip(utts, lengths)))
    with open(data_dir / "frame_labels", "w") as f:
        for utt, n in zip(utts, lengths):
            ids = rng.integers(0, len(PHONES), int(n))
            f.write(utt + " " + " ".join(PHONES[i] for i in ids) + "\n")
    write_label_ark(data_dir, PHONES)
    size = sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file())
    info = {"params": wanted, "frames": int(lengths.sum()), "bytes_on_disk": size,
            "generate_seconds": round(time.time() - started, 1)}
    stamp_path.write_text(json.dumps(info, indent=1))
    return info


class _WholeMatrixNormaliser:
    """An identity normaliser that is not row-wise: on-demand crops then read whole matrices (--whole-reads)."""
    rowwise = False

    def __call__(self, utt: str, feats: np.ndarray) -> np.ndarray:
        return feats


def _sid_dataset(data_dir: Path, in_memory: bool, crop: tuple[int, int], whole_reads: bool):
    from speechattn.data.crops import SpeakerCropDataset
    from speechattn.data.dataset import load_features
    from speechattn.data.ondemand import ArkIndex, OnDemandFeatures

    if in_memory:
        feats = load_features(data_dir)
    else:
        feats = OnDemandFeatures(ArkIndex.from_data_dir(data_dir), _WholeMatrixNormaliser() if whole_reads else None)
    targets = {u: int(u[3:8]) for u in feats}  # spkNNNNN-uttNNNNNNN
    return SpeakerCropDataset(feats, targets, crop=crop, seed=0)


def measure(data_dir: Path, num_workers: int, max_frames: int, in_memory: bool, task: str = "phone",
            crop: tuple[int, int] = (200, 300), whole_reads: bool = False) -> dict:
    """One epoch's data pass (runs in its own process, so ru_maxrss is this pass's alone)."""
    import torch
    from torch.utils.data import DataLoader

    from speechattn.data.crops import SpeakerBatchSampler
    from speechattn.data.dataset import FrameLabelDataset, collate, load_features
    from speechattn.data.kaldi_dir import read_table_lists
    from speechattn.data.ondemand import LABEL_ARK_NAME, ArkIndex, OnDemandFeatureDataset
    from speechattn.data.sampler import LengthBucketBatchSampler

    torch.set_num_threads(1)
    started = time.time()
    if task == "sid":
        dataset = _sid_dataset(data_dir, in_memory, crop, whole_reads)
    elif in_memory:
        index = {p: i for i, p in enumerate(PHONES)}
        labels = {u: [index[p] for p in ps] for u, ps in read_table_lists(data_dir / "frame_labels").items()}
        dataset = FrameLabelDataset(load_features(data_dir), labels)
    else:
        dataset = OnDemandFeatureDataset(ArkIndex.from_data_dir(data_dir),
                                         frame_labels=ArkIndex.from_scp(data_dir / f"{LABEL_ARK_NAME}.scp"))
    build_seconds = time.time() - started
    if task == "sid":
        sampler = SpeakerBatchSampler(dataset, max_frames, seed=0)
        sampler.set_epoch(0)
    else:
        sampler = LengthBucketBatchSampler(dataset.lengths(), max_frames, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
                        generator=torch.Generator().manual_seed(0))
    frames = batches = 0
    started = time.time()
    for batch in loader:
        frames += int(batch.lengths.sum())
        batches += 1
    seconds = time.time() - started
    del loader  # workers exit and are reaped: RUSAGE_CHILDREN then holds the largest worker's peak
    return {"frames": frames, "batches": batches, "build_seconds": round(build_seconds, 2),
            "pass_seconds": round(seconds, 2), "frames_per_second": round(frames / seconds),
            "peak_rss_main_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_rss_worker_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
            if num_workers else 0.0}


def run_measure(data_dir: Path, args: argparse.Namespace, in_memory: bool = False) -> dict:
    command = [sys.executable, __file__, "--measure", str(data_dir), "--num-workers", str(args.num_workers),
               "--max-frames-per-batch", str(args.max_frames_per_batch), "--task", args.task,
               "--crop", *map(str, args.crop)] + (["--in-memory"] if in_memory else []) + (
                   ["--whole-reads"] if args.whole_reads else [])
    output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="utterances per set")
    parser.add_argument("--dim", type=int, default=80, help="feature dimension")
    parser.add_argument("--mean-frames", type=float, default=100.0, help="mean utterance length (frames)")
    parser.add_argument("--jobs", type=int, default=8, help="ark files per set (the feature stage's --nj)")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--max-frames-per-batch", type=int, default=20_000, help="padded frames per batch")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the sets go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the generated sets (reused by the next run)")
    parser.add_argument("--in-memory", action="store_true", help="also measure the in-memory dataset at the smallest size")
    parser.add_argument("--task", choices=("phone", "sid"), default="phone",
                        help="phone: whole utterances with frame labels; sid: one random crop per utterance")
    parser.add_argument("--crop", type=int, nargs=2, default=[200, 300], metavar=("MIN", "MAX"),
                        help="sid crop length range (frames)")
    parser.add_argument("--whole-reads", action="store_true", help="sid: read whole matrices, not the crop rows")
    parser.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)  # internal: one pass
    args = parser.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.num_workers, args.max_frames_per_batch, args.in_memory,
                                 args.task, tuple(args.crop), args.whole_reads)))
        return 0

    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="speechattn_data_scale_"))
    needed = sum(args.sizes) * args.mean_frames * args.dim * 4 * 1.05
    free = shutil.disk_usage(work_dir if work_dir.exists() else work_dir.parent).free
    print(f"work dir {work_dir}: ~{needed / 1e9:.1f} GB needed, {free / 1e9:.1f} GB free")
    if needed > 0.8 * free:
        print("not enough disk space: lower --sizes, --dim or --mean-frames", file=sys.stderr)
        return 1
    results = []
    try:
        for size in args.sizes:
            data_dir = work_dir / f"set_{size}"
            info = generate(data_dir, size, args.dim, args.mean_frames, args.jobs)
            print(f"{size} utterances: {info['frames']} frames, {info['bytes_on_disk'] / 1e9:.2f} GB on disk "
                  f"(generated in {info['generate_seconds']} s)", flush=True)
            results.append((size, "on demand", run_measure(data_dir, args)))
            if args.in_memory and size == min(args.sizes):
                results.append((size, "in memory", run_measure(data_dir, args, in_memory=True)))
    finally:
        if not args.keep and args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)

    what = (f"sid crops of {args.crop[0]}-{args.crop[1]} frames ({'whole-matrix' if args.whole_reads else 'row'} "
            f"reads)" if args.task == "sid" else "phone utterances with frame labels")
    print(f"\nOne epoch's data pass ({what}), {args.num_workers} DataLoader workers, {args.dim}-dim features, "
          f"mean {args.mean_frames:.0f} frames, batches of <= {args.max_frames_per_batch} padded frames:\n")
    print("| utterances | dataset | frames | index build (s) | pass (s) | frames/s | peak RSS main (MB) | "
          "peak RSS largest worker (MB) |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for size, kind, r in results:
        print(f"| {size:,} | {kind} | {r['frames']:,} | {r['build_seconds']} | {r['pass_seconds']} | "
              f"{r['frames_per_second']:,} | {r['peak_rss_main_mb']} | {r['peak_rss_worker_mb']} |")
    on_demand = [(size, r) for size, kind, r in results if kind == "on demand"]
    if len(on_demand) >= 2:
        (small, a), (large, b) = on_demand[0], on_demand[-1]
        main_ratio = b["peak_rss_main_mb"] / a["peak_rss_main_mb"]
        worker_ratio = (b["peak_rss_worker_mb"] / a["peak_rss_worker_mb"]) if a["peak_rss_worker_mb"] else float("nan")
        speed_ratio = b["frames_per_second"] / a["frames_per_second"]
        verdict = "PASS" if max(main_ratio, worker_ratio if worker_ratio == worker_ratio else 0) <= 1.3 else "FAIL"
        print(f"\n{large:,} / {small:,} utterances: peak RSS main x{main_ratio:.2f}, largest worker "
              f"x{worker_ratio:.2f}; frames/s x{speed_ratio:.2f}. Target peak RSS <= 1.3x: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
