#!/usr/bin/env python
"""Benchmark: batched inference (``speechattn-infer batch_frames=N``) vs one utterance at a time.

Not a test. Runs :func:`speechattn.inference.driver.infer_dir` (what ``speechattn-infer`` runs: audio
reading, features, CMVN, model, output files) over a data dir with the same model and the same number of
torch threads, once per configuration and round, in alternating order (A B C .. A B C ..) so machine
drift hits every configuration alike. ``batch_frames=0`` is the one-at-a-time baseline measured in the
same run. Reports utterances/s from wall time and from process CPU time (with one thread the CPU time
barely moves when other jobs share the machine), the best round of each, and the ratio to the baseline,
and checks the outputs against the baseline's: phone ``frames.txt`` / ``phones.ctm`` byte-identical; sid
the same speakers in the same order, embeddings' max abs difference.

    .venv/bin/python bench/batched_inference.py          # speechocean762 phone test set, ~5 min on 2 cores
    .venv/bin/python bench/batched_inference.py --batch-frames 2000,4000,8000 --rounds 3 --threads 1
    .venv/bin/python bench/batched_inference.py --exp-dir recipes/speechocean762/sid/exp/ident \\
        --data-dir recipes/speechocean762/sid/data/ident_test

Defaults: the phone recipe's ``exp/truncated_transformer`` (train it with ``recipes/speechocean762/phone/run.sh
--stage 0 --stop-stage 3 --model truncated_transformer``) and its ``data/test`` (1,240 utterances).
Results and conclusions: bench/README.md, "batched_inference".
"""
from __future__ import annotations

import argparse
import logging
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speechattn.data.kaldi_dir import KaldiDataDir, read_table  # noqa: E402
from speechattn.inference.driver import infer_dir, task_of  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "speechocean762" / "phone"


def run_once(exp_dir: Path, data_dir: Path, out_dir: Path, batch_frames: int) -> tuple[float, float]:
    """Wall and process CPU seconds of one ``infer_dir`` over the whole data dir (outputs redone)."""
    wall, cpu = time.perf_counter(), time.process_time()
    infer_dir(exp_dir, data_dir, out_dir, batch_frames=batch_frames, force=True)
    return time.perf_counter() - wall, time.process_time() - cpu


def compare(task: str, base: Path, other: Path) -> str:
    """How ``other``'s outputs compare with the one-at-a-time ``base`` outputs."""
    if task == "phone":
        same = all((base / f).read_bytes() == (other / f).read_bytes() for f in ("frames.txt", "phones.ctm"))
        return "identical" if same else "DIFFERENT"
    import kaldiio

    rows = [(base / "predictions.txt").read_text().split("\n"), (other / "predictions.txt").read_text().split("\n")]
    speakers = [[line.split()[:2] for line in r if line] for r in rows]
    a, b = kaldiio.load_scp(str(base / "embeddings.scp")), kaldiio.load_scp(str(other / "embeddings.scp"))
    diff = max((float(np.abs(a[u] - b[u]).max()) for u in a), default=0.0)
    verdict = "same speakers" if speakers[0] == speakers[1] else "DIFFERENT speakers"
    return f"{verdict}, embeddings max abs diff {diff:.1e}"


def forward_only(exp_dir: Path, data_dir: Path, batch_frames: list[int], rounds: int) -> dict[int, float]:
    """Process CPU seconds of the model's forward passes alone (best of ``rounds``) over the data dir's
    features computed beforehand: where batching can help (reading audio and features cost the same)."""
    from speechattn.inference.batching import plan_batches

    data = KaldiDataDir.load(data_dir, require=("wav.scp",))
    predictor = task_of(exp_dir).load_predictor(exp_dir, device="cpu", data_dir=data_dir)
    feats = []
    for i, utt in enumerate(data.utterances, start=1):
        f = predictor.file_features(data.wav_scp[utt], utt, where=f"wav.scp:{i}")
        if f is not None:
            feats.append(f)
    seconds: dict[int, float] = {}
    for _ in range(rounds):
        for b in batch_frames:
            cpu = time.process_time()
            for batch in plan_batches([f.shape[0] for f in feats], b):
                predictor.predict_batch([feats[i] for i in batch])
            seconds[b] = min(seconds.get(b, float("inf")), time.process_time() - cpu)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp-dir", type=Path, default=RECIPE / "exp" / "truncated_transformer")
    parser.add_argument("--data-dir", type=Path, default=RECIPE / "data" / "test")
    parser.add_argument("--batch-frames", default="2000,4000,8000", help="batched configurations to time")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-forward", action="store_true", help="skip the forward-only timing")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    task = task_of(args.exp_dir).name
    utts = len(KaldiDataDir.load(args.data_dir, require=("wav.scp",)).utterances)
    configs = [0] + [int(b) for b in args.batch_frames.split(",") if b]
    print(f"# {task}: {args.exp_dir} on {args.data_dir} ({utts} utterances); torch {torch.__version__}, "
          f"{args.threads} thread(s), {platform.processor() or platform.machine()}")
    times: dict[int, list[tuple[float, float]]] = {b: [] for b in configs}
    with tempfile.TemporaryDirectory(prefix="bench_batched_") as tmp:
        outs = {b: Path(tmp) / f"out_{b}" for b in configs}
        for r in range(args.rounds):
            for b in configs:
                times[b].append(run_once(args.exp_dir, args.data_dir, outs[b], b))
                print(f"round {r + 1} batch_frames={b}: {times[b][-1][0]:.1f} s wall, {times[b][-1][1]:.1f} s CPU",
                      flush=True)
        checks = {b: compare(task, outs[0], outs[b]) if b else "baseline" for b in configs}
        done = len(read_table(outs[0] / ("frames.txt" if task == "phone" else "predictions.txt"), check_sorted=False))
    print(f"\n{done} of {utts} utterances predicted; best of {args.rounds} rounds (median in brackets)\n")
    print("| batch_frames | utt/s wall | x one-at-a-time | utt/s CPU | x one-at-a-time | outputs vs one-at-a-time |")
    print("|---:|---:|---:|---:|---:|---|")
    best = {b: (min(w for w, _ in times[b]), min(c for _, c in times[b])) for b in configs}
    median = {b: (statistics.median(w for w, _ in times[b]), statistics.median(c for _, c in times[b]))
              for b in configs}
    for b in configs:
        (wall, cpu), (mwall, mcpu) = best[b], median[b]
        print(f"| {b or '0 (one at a time)'} | {utts / wall:.1f} ({utts / mwall:.1f}) | {best[0][0] / wall:.2f} "
              f"({median[0][0] / mwall:.2f}) | {utts / cpu:.1f} ({utts / mcpu:.1f}) | {best[0][1] / cpu:.2f} "
              f"({median[0][1] / mcpu:.2f}) | {checks[b]} |")
    if not args.no_forward:
        forward = forward_only(args.exp_dir, args.data_dir, configs, args.rounds)
        print("\nModel forward passes alone (features computed beforehand; whole-set batches, no window), CPU s:")
        print("  " + ", ".join(f"batch_frames={b}: {forward[b]:.1f} s ({forward[0] / forward[b]:.2f}x)" for b in configs))
        print(f"  the rest of one-at-a-time inference (audio, features, CMVN, outputs): {best[0][1] - forward[0]:.1f} s CPU")


if __name__ == "__main__":
    main()
