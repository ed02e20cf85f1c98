#!/usr/bin/env python
"""Benchmark: truncated (blockwise) self-attention encoder vs dense masked, full attention and Conformer.

Not a test. Every configuration runs in a fresh subprocess (batch 1, random input) so peak memory is
that process's own: the worker resets the kernel's resident-set high-water mark (``echo 5 >
/proc/self/clear_refs``) after building the model and input, runs the configuration once, and reports
``VmHWM - VmRSS(before)`` (falls back to ``ru_maxrss`` where clear_refs is unavailable). That is
resident memory (touched pages), i.e. what the OS had to provide, including allocator slack.

Models (6 layers, d_model 256, 4 heads, FFN 1024, L = R = 32, dropout 0):
  truncated   SelfAttentionEncoder, blockwise engine; without grad it runs in time chunks (its default
              inference_chunk, see the inference_chunk sweep for the unchunked numbers)
  dense       same encoder, O(T^2) matmul + masked softmax (engine="dense"), never chunked
  dense_sdpa  same, SDPA with a boolean T x T band mask (baseline only, never used by the package)
  full        same encoder, full attention (SDPA, no mask)
  conformer   torchaudio.models.Conformer(256, 4 heads, FFN 1024, 6 layers, conv kernel 31), full attention
The dense baseline of each (mode, T) is the faster of dense and dense_sdpa.

Configurations whose extrapolated peak memory (quadratic/linear from the smaller T of the same model, or
an analytic lower bound for the T^2 models) exceeds --max-memory-gb, or whose extrapolated run time
exceeds --max-seconds, are skipped and the table says why.

Time: with one torch thread (the default, --threads 1) the process CPU time (user + system) of the call,
which other jobs on a shared machine barely disturb; with more threads, wall time. Median of up to
--max-reps warm runs after the first; a first run slower than --single-run-above is the only one, except
for the truncated encoder at the --growth lengths, which always gets at least one warm run (the growth
check is about steady-state training steps, not the process's first touch of its memory).

Usage (results and conclusions: bench/README.md, "attention"):
  python bench/attention.py                      # default, ~10 min on 2 cores
  python bench/attention.py --quick              # < 1 min: T in {1000, 4000}; truncated and dense only
  python bench/attention.py --lengths 1000,16000 --models truncated,full --threads 2
  python bench/attention.py --only-sweep --query-blocks 32,64,128,256,512,1024 --sweep-length 16000 \
      --inference-chunks none,1024,2048,4096,8192 --chunk-lengths 16000,60000
  python bench/attention.py --models truncated --lengths 6000,60000 --thread-lengths ''   # growth only

Allocator: workers call ``speechattn.utils.malloc.keep_freed_memory()`` first, as ``speechattn-train``
does on CPU (``trainer.keep_freed_memory``); ``--allocator glibc`` measures glibc's defaults instead. The
growth check is also run with glibc's defaults (``--no-glibc-growth`` skips it) so the effect is shown.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

MODELS = ("truncated", "dense", "dense_sdpa", "full", "conformer")
QUADRATIC = {"dense", "dense_sdpa", "full", "conformer"}  # time grows as T^2
FEATURE_DIM = 80
D_MODEL, LAYERS, HEADS, FFN, CONTEXT = 256, 6, 4, 1024, 32


# --------------------------------------------------------------------------------------------------
# worker (runs one configuration in its own process)
# --------------------------------------------------------------------------------------------------


def _proc_status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _build(model_name: str, query_block: int | None, inference_chunk: int | None = 0):
    import torch
    import torch.nn.functional as F

    from speechattn.models.attention import TruncatedSelfAttention
    from speechattn.models.transformer import SelfAttentionEncoder

    if model_name == "conformer":
        from torchaudio.models import Conformer

        conformer = Conformer(
            input_dim=D_MODEL, num_heads=HEADS, ffn_dim=FFN, num_layers=LAYERS,
            depthwise_conv_kernel_size=31, dropout=0.0,
        )  # fmt: skip
        return (lambda x, lengths: conformer(x, lengths)[0]), conformer, D_MODEL

    class SdpaBoolMaskAttention(TruncatedSelfAttention):
        """Baseline only: SDPA with a (T, T) boolean band mask."""

        def _banded(self, q, k, v, pad, dropout_p, need_weights):
            t = torch.arange(q.shape[2])
            offset = t[None, :] - t[:, None]
            keep = (offset >= -self.left) & (offset <= self.right)
            if pad is not None:
                keep = keep & ~pad[:, None, None, :]
            return F.scaled_dot_product_attention(q, k, v, attn_mask=keep), None

    full = model_name == "full"
    encoder = SelfAttentionEncoder(
        FEATURE_DIM, d_model=D_MODEL, num_layers=LAYERS, num_heads=HEADS, ffn_dim=FFN,
        left=None if full else CONTEXT, right=None if full else CONTEXT, dropout=0.0,
        engine="dense" if model_name == "dense" else "auto",
    )  # fmt: skip
    for layer in encoder.layers:
        if model_name == "dense_sdpa":
            layer.attn.__class__ = SdpaBoolMaskAttention
        if query_block is not None:
            layer.attn.query_block = query_block
    if model_name in ("dense", "dense_sdpa"):
        encoder.inference_chunk = None  # the baselines attend over the whole T x T plane
    elif inference_chunk != 0:  # 0 = keep the encoder's default
        encoder.inference_chunk = inference_chunk
    return encoder, encoder, FEATURE_DIM


def run_worker(spec: dict) -> dict:
    import torch

    if spec.get("allocator", "speechattn") == "speechattn":
        from speechattn.utils.malloc import keep_freed_memory

        keep_freed_memory()
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    call, module, in_dim = _build(spec["model"], spec.get("query_block"), spec.get("inference_chunk", 0))
    T, backward = spec["T"], spec["mode"] == "fwdbwd"
    x = torch.randn(1, T, in_dim)
    lengths = torch.tensor([T])
    module.train(backward)

    def once() -> tuple[float, float, float]:
        """(wall, user CPU, system CPU) seconds of one call; system time is mostly page faults."""
        wall, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        if backward:
            module.zero_grad(set_to_none=True)
            call(x, lengths).square().mean().backward()
        else:
            with torch.inference_mode():
                call(x, lengths)
        after = resource.getrusage(resource.RUSAGE_SELF)
        return time.perf_counter() - wall, after.ru_utime - usage.ru_utime, after.ru_stime - usage.ru_stime

    gc.collect()
    base_kb = _proc_status_kb("VmRSS")
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if _reset_peak():
        first = once()
        peak_kb, method = _proc_status_kb("VmHWM") - base_kb, "VmHWM"
    else:  # ru_maxrss cannot be reset; only meaningful if the run exceeds the earlier high-water mark
        first = once()
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_kb
        method = "ru_maxrss" if resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > maxrss_before else "ru_maxrss<=before"
    # Warm runs after the first (which also pays one-off costs); slow configurations keep the first only.
    times = []
    if first[0] < spec["single_run_above"]:
        budget_end = time.perf_counter() + spec["min_time"]
        while not times or (len(times) < spec["max_reps"] and time.perf_counter() < budget_end):
            times.append(once())
    runs = times or [first]
    wall, user, system = (statistics.median(t[i] for t in runs) for i in range(3))
    return {"wall_seconds": wall, "cpu_seconds": user + system, "user_seconds": user, "sys_seconds": system,
            "first_wall_seconds": first[0], "warm_runs": len(times), "peak_mb": peak_kb / 1024,
            "peak_method": method, "load_average": os.getloadavg()[0]}  # fmt: skip


# --------------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------------


@dataclass
class Result:
    model: str
    mode: str
    T: int
    threads: int
    query_block: int | None = None
    inference_chunk: int | None = 0  # 0 = encoder default, None = off
    allocator: str = "speechattn"  # speechattn = keep_freed_memory() as in training; glibc = its defaults
    seconds: float | None = None
    peak_mb: float | None = None
    skipped: str | None = None
    extra: dict = field(default_factory=dict)


def _analytic_min_mb(model: str, mode: str, T: int) -> float:
    """Lower bound of peak memory for the T^2 baselines (MB)."""
    if model == "dense":  # scores (masked in place) + probs live at once; backward keeps probs of every layer
        tensors = 2 + (LAYERS if mode == "fwdbwd" else 0)
        return tensors * HEADS * T * T * 4 / 2**20
    if model == "dense_sdpa":  # the boolean T x T band mask (built per layer)
        return T * T / 2**20
    return 0.0


def _estimate(history: list[Result], model: str, mode: str, T: int) -> tuple[float | None, float | None]:
    """Extrapolated (seconds, peak MB) from this model/mode's measured smaller T."""
    by_length = {r.T: r for r in history if r.model == model and r.mode == mode and r.seconds is not None and r.T < T}
    done = [by_length[t] for t in sorted(by_length)]
    mem_floor = _analytic_min_mb(model, mode, T)
    if not done:
        return None, mem_floor or None
    last = done[-1]
    time_exp = 2.0 if model in QUADRATIC else 1.0
    if len(done) >= 2 and done[-2].peak_mb and done[-2].peak_mb > 1 and last.peak_mb > 1:
        prev = done[-2]
        mem_exp = math.log(last.peak_mb / prev.peak_mb) / math.log(last.T / prev.T)
        mem_exp = min(max(mem_exp, 1.0), 2.0)
    else:
        mem_exp = 2.0 if model in {"dense", "dense_sdpa", "conformer"} else 1.0
    scale = T / last.T
    return last.seconds * scale**time_exp, max(last.peak_mb * scale**mem_exp, mem_floor)


def run_config(args, model: str, mode: str, T: int, threads: int, history: list[Result], query_block=None,
               inference_chunk: int | None = 0, check_time: bool = True, allocator: str | None = None,
               warm: bool = False) -> Result:  # fmt: skip
    """Run one configuration in a fresh worker. ``warm``: time at least one run after the first,
    however slow (steady state, as in training where every step repeats: the growth check)."""
    allocator = allocator or args.allocator
    result = Result(model, mode, T, threads, query_block, inference_chunk, allocator)
    same_setup = [r for r in history if r.threads == threads and r.query_block == query_block
                  and r.inference_chunk == inference_chunk and r.allocator == allocator]  # fmt: skip
    est_s, est_mb = _estimate(same_setup, model, mode, T)
    if est_mb is not None and est_mb > args.max_memory_gb * 1024:
        result.skipped = f"est. {est_mb / 1024:.0f} GB > {args.max_memory_gb:.0f} GB"
    elif check_time and est_s is not None and est_s > args.max_seconds:
        result.skipped = f"est. {est_s:.0f} s > {args.max_seconds:.0f} s"
    if result.skipped:
        print(f"  skip {model:10s} {mode:6s} T={T:6d}: {result.skipped}", file=sys.stderr, flush=True)
        history.append(result)
        return result
    spec = {"model": model, "mode": mode, "T": T, "threads": threads, "query_block": query_block,
            "inference_chunk": inference_chunk, "single_run_above": math.inf if warm else args.single_run_above,
            "min_time": args.min_time, "max_reps": args.max_reps, "allocator": allocator}  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                          capture_output=True, text=True, env=env)  # fmt: skip
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        result.skipped = f"failed (exit {proc.returncode}): {tail[:60]}"
    else:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        # One thread: process CPU time (robust to other jobs on a shared machine). More: wall time.
        result.seconds = out["cpu_seconds"] if threads == 1 else out["wall_seconds"]
        result.peak_mb, result.extra = out["peak_mb"], out
    shown = result.skipped or (f"{result.seconds:.3f} s, {result.peak_mb:.0f} MB ({result.extra['peak_method']}, "
                               f"load {result.extra['load_average']:.1f})")  # fmt: skip
    print(f"  ran  {model:10s} {mode:6s} T={T:6d} threads={threads} qb={query_block} chunk={inference_chunk} "
          f"malloc={allocator}: {shown}",
          file=sys.stderr, flush=True)  # fmt: skip
    history.append(result)
    return result


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _baseline(results: list[Result], mode: str, T: int) -> Result | None:
    candidates = [r for r in results if r.mode == mode and r.T == T and r.model in ("dense", "dense_sdpa") and r.seconds]
    return min(candidates, key=lambda r: r.seconds) if candidates else None


def main_table(results: list[Result], mode: str, lengths: list[int], threads: int) -> str:
    title = "forward (inference_mode)" if mode == "fwd" else "forward + backward (training, dropout 0)"
    clock = "process CPU time" if threads == 1 else "wall time"
    lines = [f"### {title}, batch 1, {threads} thread{'s' if threads > 1 else ''}, time = {clock}",
             "",
             "| T | model | time (s) | peak (MB) | time vs dense | memory: dense / model | note |",
             "|---:|---|---:|---:|---:|---:|---|"]  # fmt: skip
    for T in lengths:
        base = _baseline(results, mode, T)
        for model in MODELS:
            r = next((r for r in results if r.model == model and r.mode == mode and r.T == T), None)
            if r is None:
                continue
            speed = mem = "-"
            note = r.skipped or ("first run only" if r.extra.get("warm_runs") == 0 else "")
            if r is base:
                speed = mem = "baseline"
            elif base is not None and r.seconds is not None:
                speed = f"{base.seconds / r.seconds:.1f}x faster" if r.seconds <= base.seconds else f"{r.seconds / base.seconds:.1f}x slower"
                mem = f"{base.peak_mb / max(r.peak_mb, 1.0):.1f}x"
            lines.append(f"| {T} | {model} | {_fmt(r.seconds, '.3f')} | {_fmt(r.peak_mb, '.0f')} | {speed} | {mem} | {note} |")
    return "\n".join(lines)


def growth_table(results: list[Result], t_small: int, t_large: int, allocators: list[str]) -> str:
    """Growth rows per (allocator, mode); the first allocator is the one the verdict is about."""
    lines = [f"### growth of the truncated encoder, T = {t_small} -> {t_large} (linear factor {t_large / t_small:.1f})",
             "",
             "| malloc | mode | CPU time ratio | x linear | user-time ratio | x linear | peak ratio | x linear | CPU time and peak <= 1.2x linear |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    linear = t_large / t_small
    for allocator in allocators:
        for mode in ("fwd", "fwdbwd"):
            def find(T: int) -> Result | None:
                return next((r for r in results if r.model == "truncated" and r.mode == mode and r.T == T
                             and r.allocator == allocator and r.seconds), None)  # fmt: skip

            small, large = find(t_small), find(t_large)
            if small is None or large is None:
                lines.append(f"| {allocator} | {mode} | - | - | - | - | - | - | not measured |")
                continue
            tr, mr = large.seconds / small.seconds, large.peak_mb / small.peak_mb
            ur = large.extra["user_seconds"] / small.extra["user_seconds"]
            verdict = "PASS" if tr / linear <= 1.2 and mr / linear <= 1.2 else "FAIL"
            lines.append(f"| {allocator} | {mode} | {tr:.2f} | {tr / linear:.2f} | {ur:.2f} | {ur / linear:.2f} | "
                         f"{mr:.2f} | {mr / linear:.2f} | {verdict} |")  # fmt: skip
    return "\n".join(lines)


def criteria(results: list[Result], T: int = 16000) -> str:
    trunc = next((r for r in results if r.model == "truncated" and r.mode == "fwd" and r.T == T and r.seconds), None)
    base = _baseline(results, "fwd", T)
    if trunc is None or base is None:
        return f"criteria at T={T}: n/a (truncated or dense forward not measured at T={T})"
    mem, speed = base.peak_mb / max(trunc.peak_mb, 1.0), base.seconds / trunc.seconds
    return (f"criteria at T={T}, forward, vs {base.model}: peak memory {mem:.1f}x less (target >= 20x: "
            f"{'PASS' if mem >= 20 else 'FAIL'}), {speed:.1f}x faster (target >= 10x: {'PASS' if speed >= 10 else 'FAIL'})")


def thread_table(results: list[Result], lengths: list[int]) -> str:
    lines = ["### torch threads, truncated encoder forward (wall time; load average = other jobs + this one)", "",
             "| T | 1 thread (s) | 2 threads (s) | speed-up | load average |", "|---:|---:|---:|---:|---|"]  # fmt: skip
    for T in lengths:
        one = next((r for r in results if r.model == "truncated" and r.mode == "fwd" and r.T == T and r.threads == 1), None)
        two = next((r for r in results if r.model == "truncated" and r.mode == "fwd" and r.T == T and r.threads == 2), None)
        if one and two and one.seconds and two.seconds:
            w1, w2 = one.extra["wall_seconds"], two.extra["wall_seconds"]
            load = f"{one.extra['load_average']:.1f} / {two.extra['load_average']:.1f}"
            lines.append(f"| {T} | {w1:.3f} | {w2:.3f} | {w1 / w2:.2f}x | {load} |")
    return "\n".join(lines)


def sweep_table(results: list[Result], T: int) -> str:
    lines = [f"### query_block sweep, truncated encoder, T = {T}", "",
             "| query_block | fwd time (s) | fwd peak (MB) | fwd+bwd time (s) | fwd+bwd peak (MB) |",
             "|---:|---:|---:|---:|---:|"]  # fmt: skip
    for qb in sorted({r.query_block for r in results if r.query_block}):
        if not any(r.query_block == qb and r.mode == "fwdbwd" for r in results):
            continue
        f = next(r for r in results if r.query_block == qb and r.mode == "fwd")
        b = next(r for r in results if r.query_block == qb and r.mode == "fwdbwd")
        lines.append(f"| {qb} | {_fmt(f.seconds, '.3f')} | {_fmt(f.peak_mb, '.0f')} | {_fmt(b.seconds, '.3f')} | {_fmt(b.peak_mb, '.0f')} |")
    return "\n".join(lines)


def chunk_table(results: list[Result], lengths: list[int]) -> str:
    lines = ["### inference_chunk sweep, truncated encoder forward (no grad)", "",
             "| inference_chunk | " + " | ".join(f"T={T} time (s) | T={T} peak (MB)" for T in lengths) + " |",
             "|---:|" + "---:|---:|" * len(lengths)]  # fmt: skip
    for chunk in dict.fromkeys(r.inference_chunk for r in results):
        cells = []
        for T in lengths:
            r = next((r for r in results if r.inference_chunk == chunk and r.T == T), None)
            cells += [_fmt(r and r.seconds, ".3f"), _fmt(r and r.peak_mb, ".0f")]
        lines.append(f"| {'off' if chunk is None else chunk} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    mem_available_gb = 16.0
    try:
        with open("/proc/meminfo") as f:
            mem_available_gb = next(int(l.split()[1]) for l in f if l.startswith("MemAvailable")) / 2**20
    except (OSError, StopIteration):
        pass
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", type=_ints, default=None, help="comma-separated T (default 1000,4000,16000,60000)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the main tables (default 1, see README)")
    p.add_argument("--thread-lengths", type=_ints, default=None,
                   help="T for the 1-vs-2 threads table (default 1000,16000; '' = skip)")  # fmt: skip
    p.add_argument("--growth", type=_ints, default=None, help="T_small,T_large for the growth check (default 6000,60000)")
    p.add_argument("--models", default=None, help=f"subset of {','.join(MODELS)} (default all; --quick: truncated,dense,full)")
    p.add_argument("--quick", action="store_true", help="T in {1000,4000}, truncated and dense only, single runs: < 1 min")
    p.add_argument("--query-blocks", type=_ints, default=[], help="also sweep the blockwise query_block")
    p.add_argument("--sweep-length", type=int, default=16000, help="T of the query_block sweep")
    p.add_argument("--inference-chunks", default="", help="also sweep the encoder's inference_chunk ('none' = off)")
    p.add_argument("--chunk-lengths", type=_ints, default=[16000, 60000], help="T of the inference_chunk sweep")
    p.add_argument("--only-sweep", action="store_true", help="run only the sweeps")
    p.add_argument("--max-memory-gb", type=float, default=round(0.8 * mem_available_gb, 1),
                   help="skip configurations estimated above this (default 80%% of MemAvailable)")  # fmt: skip
    p.add_argument("--max-seconds", type=float, default=60.0, help="skip configurations estimated slower than this per run")
    p.add_argument("--min-time", type=float, default=None, help="seconds of repeated warm timing per configuration (default 1)")
    p.add_argument("--max-reps", type=int, default=3, help="at most this many warm runs")
    p.add_argument("--single-run-above", type=float, default=20.0,
                   help="a first run slower than this is the only run (no warm repeat)")  # fmt: skip
    p.add_argument("--allocator", choices=("speechattn", "glibc"), default="speechattn",
                   help="speechattn: keep_freed_memory() as speechattn-train does (default); glibc: its defaults")  # fmt: skip
    p.add_argument("--no-glibc-growth", action="store_true",
                   help="skip the growth check with glibc's default allocator settings")  # fmt: skip
    p.add_argument("--json", type=Path, default=None, help="also write all results as JSON here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.lengths = args.lengths or [1000, 4000]
        args.thread_lengths = args.thread_lengths or [1000]
        args.growth = args.growth or [1000, 4000]
        args.models = args.models or "truncated,dense"
        args.min_time = 0.0 if args.min_time is None else args.min_time
        args.single_run_above = min(args.single_run_above, 2.0)
        args.max_seconds = min(args.max_seconds, 8.0)
    args.models = args.models or ",".join(MODELS)
    args.lengths = args.lengths or [1000, 4000, 16000, 60000]
    args.thread_lengths = [1000, 16000] if args.thread_lengths is None else args.thread_lengths  # "" = none
    args.growth = args.growth or [6000, 60000]
    args.min_time = 1.0 if args.min_time is None else args.min_time
    unknown = set(args.models.split(",")) - set(MODELS)
    if unknown:
        p.error(f"unknown models {sorted(unknown)}; choose from {MODELS}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker is not None:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return
    import torch

    started = time.perf_counter()
    models = [m for m in MODELS if m in args.models.split(",")]
    results: list[Result] = []
    load_start = os.getloadavg()[0]
    sections = [f"torch {torch.__version__}, {os.cpu_count()} CPUs, batch 1, d_model {D_MODEL}, {LAYERS} layers, "
                f"{HEADS} heads, FFN {FFN}, L = R = {CONTEXT}; peak = resident high-water mark of a fresh "
                f"process above its state before the call (VmHWM after clear_refs); time = median of up to "
                f"{args.max_reps} warm runs after the first (the first alone when it exceeds "
                f"{args.single_run_above:g} s); malloc: {'keep_freed_memory() as in speechattn-train' if args.allocator == 'speechattn' else 'glibc defaults'}."]  # fmt: skip
    if not args.only_sweep:
        for mode in ("fwd", "fwdbwd"):
            for model in models:
                for T in sorted(set(args.lengths) | (set(args.growth) if model == "truncated" else set())):
                    run_config(args, model, mode, T, args.threads, results,
                               warm=model == "truncated" and T in args.growth)  # fmt: skip
        for T in args.thread_lengths:
            for threads in (1, 2):
                have = any(r.model == "truncated" and r.mode == "fwd" and r.T == T and r.threads == threads for r in results)
                if not have:  # linear in T: always affordable, and the table needs both
                    run_config(args, "truncated", "fwd", T, threads, results, check_time=False)
        allocators = [args.allocator]
        if args.allocator != "glibc" and not args.no_glibc_growth and "truncated" in models:
            allocators.append("glibc")
            for mode in ("fwd", "fwdbwd"):
                for T in args.growth:
                    run_config(args, "truncated", mode, T, args.threads, results, check_time=False, allocator="glibc",
                               warm=True)  # fmt: skip
        growth_results = [r for r in results if r.threads == args.threads and r.query_block is None and r.inference_chunk == 0]
        main_results = [r for r in growth_results if r.allocator == args.allocator]
        for mode in ("fwd", "fwdbwd"):
            sections.append(main_table(main_results, mode, sorted(set(args.lengths) | set(args.growth)), args.threads))
        sections.append(growth_table(growth_results, *args.growth, allocators))
        sections.append(criteria(main_results))
        if args.thread_lengths:
            sections.append(thread_table([r for r in results if r.allocator == args.allocator], args.thread_lengths))
    if args.query_blocks:
        sweep: list[Result] = []
        for qb in args.query_blocks:
            for mode in ("fwd", "fwdbwd"):
                sweep.append(run_config(args, "truncated", mode, args.sweep_length, args.threads, [], query_block=qb))
        results += sweep
        sections.append(sweep_table(sweep, args.sweep_length))
    if args.inference_chunks:
        sweep = []
        for text in args.inference_chunks.split(","):
            chunk = None if text.strip().lower() in ("none", "off") else int(text)
            for T in args.chunk_lengths:
                sweep.append(run_config(args, "truncated", "fwd", T, args.threads, sweep, inference_chunk=chunk))
        results += sweep
        sections.append(chunk_table(sweep, args.chunk_lengths))
    sections.append(f"total bench time {time.perf_counter() - started:.0f} s; 1-min load average "
                    f"{load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end")
    print("\n\n".join(sections))
    if args.json:
        from speechattn.utils.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps([r.__dict__ for r in results], indent=1))


if __name__ == "__main__":
    main()
