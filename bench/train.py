"""Training throughput: length-bucketed batches vs plain padded batches, measured in the same run.

Model: ``SelfAttentionEncoder(input_dim=80, d_model=144, num_layers=4, num_heads=4, left=32, right=32)``
(other arguments at their defaults) + a linear 40-class head, cross-entropy on the real frames only.
One step = forward + backward + AdamW step on synthetic features (B, T_max, 80) whose lengths follow the
real distribution (``--data-dir`` with ``utt2num_frames``) or a log-normal with mean ~400 frames and a
long tail. Both samplers get the same frames budget: ``LengthBucketBatchSampler`` packs batches under
``max length × B <= budget``; ``PaddedBatchSampler`` uses a fixed ``B = budget // ceil(mean length)``
(the same *useful* frames per batch on average; padded to their longest utterance its batches exceed
the budget, see "max padded" in the table).

The samplers are timed in alternating rounds (AB BA AB ...) so that machine drift hits both alike; each round
runs a sampler's next batches (epoch order) for ``--seconds`` (the step that crosses the limit is
finished and counted). "useful frames/s" counts real (non-padding) frames per second of
forward+backward+step time (batch synthesis is not timed). Few steps fit in a CPU run and padded batches
vary a lot in size, so the table also gives "epoch-projected" useful frames/s: the measured padded-frame
rate times the whole epoch's useful fraction (step cost is close to linear in padded frames: attention is
banded, O(T·(L+R))). The ratio is length-bucket / padded for both. On a machine shared with other jobs
wall time is noisy; "useful fr/CPU-s" divides by the process CPU time of the steps instead (with
``--threads 1`` it is the most stable figure).

    python bench/train.py --quick                      # under a minute
    python bench/train.py --data-dir data/train        # lengths from utt2num_frames
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speechattn.data.sampler import LengthBucketBatchSampler, PaddedBatchSampler, padding_stats  # noqa: E402
from speechattn.models.transformer import SelfAttentionEncoder  # noqa: E402

NUM_CLASSES = 40
INPUT_DIM = 80


def read_utt2num_frames(data_dir: Path) -> np.ndarray:
    """Frame counts from ``data_dir/utt2num_frames`` (``UTT N`` per line)."""
    path = data_dir / "utt2num_frames"
    lengths = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or not fields[1].isdigit():
                raise ValueError(f"{path}:{line_no}: expected 'UTT NUM_FRAMES', got {line.rstrip()!r}")
            if int(fields[1]) > 0:
                lengths.append(int(fields[1]))
    if not lengths:
        raise ValueError(f"{path}: no utterances")
    return np.asarray(lengths)


def lognormal_lengths(num_utts: int, mean: float = 400.0, sigma: float = 0.6, seed: int = 0) -> np.ndarray:
    """Log-normal lengths with the given mean (frames) and a long right tail, clipped to [30, 3000]."""
    mu = math.log(mean) - sigma ** 2 / 2
    return np.clip(np.random.default_rng(seed).lognormal(mu, sigma, num_utts), 30, 3000).astype(np.int64)


class FrameClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = SelfAttentionEncoder(input_dim=INPUT_DIM, d_model=144, num_layers=4, num_heads=4,
                                            left=32, right=32)
        self.head = nn.Linear(self.encoder.output_dim, NUM_CLASSES)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x: (B, T, 80), lengths: (B,) -> logits (B, T, 40)."""
        return self.head(self.encoder(x, lengths))


@dataclass
class Tally:
    steps: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    useful: int = 0
    padded: int = 0
    batch_sizes: list[int] = field(default_factory=list)


def make_batch(lengths: np.ndarray, batch: list[int], generator: torch.Generator):
    """Synthetic features (B, T_max, 80), lengths (B,), targets (B, T_max) with -100 on padding."""
    batch_lengths = torch.as_tensor(lengths[batch])
    t_max = int(batch_lengths.max())
    x = torch.randn(len(batch), t_max, INPUT_DIM, generator=generator)
    pad = torch.arange(t_max)[None, :] >= batch_lengths[:, None]
    x.masked_fill_(pad[..., None], 0.0)
    targets = torch.randint(0, NUM_CLASSES, (len(batch), t_max), generator=generator).masked_fill(pad, -100)
    return x, batch_lengths, targets


def train_step(model: nn.Module, optimiser: torch.optim.Optimizer, x, lengths, targets) -> None:
    optimiser.zero_grad(set_to_none=True)
    logits = model(x, lengths)
    loss = nn.functional.cross_entropy(logits.reshape(-1, NUM_CLASSES), targets.reshape(-1), ignore_index=-100)
    loss.backward()
    optimiser.step()


def run_round(model, optimiser, lengths, batches, cursor: int, seconds: float, tally: Tally,
              generator: torch.Generator) -> int:
    """Train on ``batches[cursor:]`` (wrapping) for ``seconds``; returns the new cursor."""
    elapsed = 0.0
    while elapsed < seconds:
        batch = batches[cursor % len(batches)]
        cursor += 1
        x, batch_lengths, targets = make_batch(lengths, batch, generator)   # not timed
        start, cpu_start = time.perf_counter(), time.process_time()
        train_step(model, optimiser, x, batch_lengths, targets)
        step_time = time.perf_counter() - start
        tally.cpu_seconds += time.process_time() - cpu_start
        elapsed += step_time
        useful, padded = padding_stats(lengths, [batch])
        tally.steps += 1
        tally.seconds += step_time
        tally.useful += useful
        tally.padded += padded
        tally.batch_sizes.append(len(batch))
    return cursor


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, help="Kaldi data dir with utt2num_frames (else log-normal)")
    parser.add_argument("--num-utts", type=int, default=3000, help="synthetic utterances (no --data-dir)")
    parser.add_argument("--max-frames", type=int, default=4000, help="padded frames budget per batch")
    parser.add_argument("--seconds", type=float, default=60.0, help="timed seconds per sampler per round")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds per sampler")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="budget 1500 frames, 2 rounds x 5 s per sampler (under a minute on 2 cores)")
    args = parser.parse_args(argv)
    if args.quick:
        args.max_frames, args.seconds, args.rounds = 1500, 5.0, 2

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.data_dir is not None:
        lengths = read_utt2num_frames(args.data_dir)
        source = f"{args.data_dir}/utt2num_frames"
    else:
        lengths = lognormal_lengths(args.num_utts, seed=args.seed)
        source = f"log-normal (mean 400, sigma 0.6), {args.num_utts} utts"
    samplers = {
        "padded": PaddedBatchSampler(lengths, args.max_frames, seed=args.seed),
        "length-bucket": LengthBucketBatchSampler(lengths, args.max_frames, seed=args.seed),
    }
    batches = {name: list(s) for name, s in samplers.items()}

    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} threads; "
          f"lengths: {source}: n={len(lengths)}, mean {lengths.mean():.0f}, median {np.median(lengths):.0f}, "
          f"p99 {np.percentile(lengths, 99):.0f}, max {lengths.max()} frames")
    print(f"budget {args.max_frames} frames/batch; padded B = {samplers['padded'].batch_size}; "
          f"{args.rounds} round(s) x {args.seconds:.0f} s per sampler; load average before: "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")

    model = FrameClassifier()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(args.seed)
    model.train()
    # Warm-up (thread pool, allocator, autograd caches) on a small batch of its own, not a sampler's.
    train_step(model, optimiser, *make_batch(np.array([200, 150]), [0, 1], generator))
    cursors = dict.fromkeys(samplers, 0)
    tallies = {name: Tally() for name in samplers}
    order = list(samplers)
    for round_index in range(args.rounds):
        for name in order if round_index % 2 == 0 else order[::-1]:
            cursors[name] = run_round(model, optimiser, lengths, batches[name], cursors[name], args.seconds,
                                      tallies[name], generator)

    header = (f"{'sampler':<14} {'batches/ep':>10} {'mean B':>6} {'epoch pad%':>10} {'max padded':>10} "
              f"{'steps':>5} {'time s':>6} {'timed pad%':>10} {'padded fr/s':>11} {'useful fr/s':>11} "
              f"{'epoch-proj. useful fr/s':>23} {'useful fr/CPU-s':>15}")
    print(header)
    print("-" * len(header))
    measured, projected, cpu = {}, {}, {}
    for name, tally in tallies.items():
        epoch_useful, epoch_padded = padding_stats(lengths, batches[name])
        max_padded = max(int(lengths[b].max()) * len(b) for b in batches[name])
        padded_rate = tally.padded / tally.seconds
        measured[name] = tally.useful / tally.seconds
        projected[name] = padded_rate * epoch_useful / epoch_padded
        print(f"{name:<14} {len(batches[name]):>10} {np.mean([len(b) for b in batches[name]]):>6.1f} "
              f"{100 * (1 - epoch_useful / epoch_padded):>9.1f}% {max_padded:>10} {tally.steps:>5} "
              f"{tally.seconds:>6.1f} {100 * (1 - tally.useful / tally.padded):>9.1f}% {padded_rate:>11.0f} "
              f"{measured[name]:>11.0f} {projected[name]:>23.0f} {tally.useful / tally.cpu_seconds:>15.0f}")
        cpu[name] = tally.useful / tally.cpu_seconds
    print(f"ratio length-bucket / padded: useful frames/s {measured['length-bucket'] / measured['padded']:.2f}x "
          f"(measured steps), {projected['length-bucket'] / projected['padded']:.2f}x (epoch-projected), "
          f"{cpu['length-bucket'] / cpu['padded']:.2f}x (per CPU second); "
          f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
