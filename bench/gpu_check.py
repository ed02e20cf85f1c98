"""The device check behind ``bench/gpu_check.sh`` (issue #12): five steps, one table, exit status 1 on any
failure. Run it through the shell script; ``--cpu`` is the dry run (same steps, tiny sizes, on CPU).

  a  attention engines flex / varlen / blockwise against the dense masked reference on the same inputs,
     fp32 and bf16, forward output and gradients (dq, dk, dv): max abs error, relative to the reference's
     largest value.
  b  encoder forward + backward time and peak GPU memory at T = 4k, 16k, 60k, 360k frames: truncated
     attention (each engine) vs dense masked and full SDPA attention; runs that would not fit (or take too
     long) are skipped with the reason; ratios against dense masked at the same T.
  c  one epoch of the speechocean762 phone recipe (truncated_transformer, default settings) on the device
     (bf16, fused engine): frames/s and dev accuracy against the same epoch on CPU measured beforehand
     (bench/gpu_check_reference.json).
  d  torchrun --nproc_per_node=2 DDP (NCCL) for one epoch when two GPUs exist, else skipped (dry run: gloo).
  e  speechattn-infer on a generated 1-hour recording on the device in fp32: labels identical to CPU
     inference of the same model in fp32 (and, for information, agreement of the checkpoint's bf16).

Nothing is installed; it needs the repository's .venv (tools/setup_venv.sh) and ../shared.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
REFERENCE = ROOT / "bench" / "gpu_check_reference.json"
sys.path.insert(0, str(ROOT / "bench"))


@dataclass
class Row:
    step: str
    check: str
    result: str
    status: str  # PASS | FAIL | SKIP | INFO


ROWS: list[Row] = []


def row(step: str, check: str, result: str, status: str) -> None:
    ROWS.append(Row(step, check, result, status))
    print(f"  [{status}] {step} {check}: {result}", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(cmd: list[str], log: Path, env: dict | None = None, timeout: float = 1800) -> None:
    """Run a command, its output to ``log``; raise with the log's tail when it fails."""
    with log.open("w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, timeout=timeout,
                              env={**os.environ, **(env or {})})
    if proc.returncode:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed (exit {proc.returncode}, log {log}):\n{tail}")


# ----------------------------------------------------------------------------------------------- a


def step_a(device: torch.device, tiny: bool) -> None:
    from speechattn.models.attention import (banded_attention, dense_masked_attention, flex_banded_attention,
                                             varlen_banded_attention)

    B, H, T, Dh, L, R = (2, 2, 300, 16, 8, 5) if tiny else (2, 4, 2000, 64, 32, 32)
    lengths = torch.tensor([T, T * 2 // 3], device=device)
    pad = torch.arange(T, device=device)[None, :] >= lengths[:, None]
    g = torch.Generator(device=device).manual_seed(0)
    base = [torch.randn(B, H, T, Dh, device=device, generator=g) for _ in range(3)]
    grad_out = torch.randn(B, H, T, Dh, device=device, generator=g).masked_fill(pad[:, None, :, None], 0.0)
    ref_in = [x.clone().requires_grad_() for x in base]
    ref_out, _ = dense_masked_attention(*ref_in, L, R, pad)
    (ref_out * grad_out).sum().backward()
    ref_grads = [x.grad for x in ref_in]
    scale_out = ref_out.abs().max().item()
    scale_grad = max(gr.abs().max().item() for gr in ref_grads)
    engines = {
        "blockwise": lambda q, k, v: banded_attention(q, k, v, L, R, pad)[0],
        "flex": lambda q, k, v: flex_banded_attention(q, k, v, L, R, pad, compile=device.type == "cuda"),
        "varlen": lambda q, k, v: varlen_banded_attention(q, k, v, L, R, pad),
        "dense": lambda q, k, v: dense_masked_attention(q, k, v, L, R, pad)[0],
    }
    tolerance = {torch.float32: 1e-4, torch.bfloat16: 3e-2}  # of the reference's largest value
    for dtype in (torch.float32, torch.bfloat16):
        name = "fp32" if dtype == torch.float32 else "bf16"
        for engine, fn in engines.items():
            what = f"{engine} {name} vs dense fp32 (B={B}, H={H}, T={T}, L={L}, R={R})"
            if engine == "varlen" and device.type != "cuda":
                row("a", what, "needs CUDA", "SKIP")
                continue
            if engine == "varlen" and dtype == torch.float32:
                row("a", what, "varlen needs fp16/bf16 (by design)", "SKIP")
                continue
            no_backward = engine == "flex" and device.type != "cuda"  # torch has no flex backward on CPU
            inputs = [x.detach().to(dtype).requires_grad_(not no_backward) for x in base]
            try:
                out = fn(*inputs)
                fwd = (out.float() - ref_out).abs().max().item() / scale_out
                if no_backward:
                    bwd_text, bwd = "backward n/a (no FlexAttention backward on CPU)", 0.0
                else:
                    (out.float() * grad_out).sum().backward()
                    bwd = max((x.grad.float() - r).abs().max().item() for x, r in zip(inputs, ref_grads)) / scale_grad
                    bwd_text = f"grad {bwd:.1e}"
            except Exception as e:  # noqa: BLE001 - a failing engine is a row, not a crash
                row("a", what, f"error: {type(e).__name__}: {str(e).splitlines()[0][:150]}", "FAIL")
                continue
            ok = fwd <= tolerance[dtype] and bwd <= tolerance[dtype]
            row("a", what, f"rel. max abs err: out {fwd:.1e}, {bwd_text} (tol {tolerance[dtype]:.0e})",
                "PASS" if ok else "FAIL")


# ----------------------------------------------------------------------------------------------- b


def _encoder_step(enc, x, lengths, device: torch.device, dtype) -> tuple[float, float]:
    """Seconds and peak memory (GB; NaN on CPU) of one forward + backward, after one warm-up."""
    def once() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            y = enc(x, lengths)
        y.float().square().mean().backward()
        enc.zero_grad(set_to_none=True)

    once()  # warm-up: compilation (flex), allocator, kernels
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    t0 = time.perf_counter()
    once()
    sync(device)
    seconds = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**30 if device.type == "cuda" else math.nan
    return seconds, peak


def step_b(device: torch.device, tiny: bool) -> None:
    from speechattn.models.transformer import SelfAttentionEncoder

    sizes = [256, 1024] if tiny else [4000, 16000, 60000, 360000]
    d, layers, heads, ffn = (32, 2, 4, 64) if tiny else (256, 6, 4, 1024)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    free = torch.cuda.mem_get_info(device)[0] / 2**30 if device.type == "cuda" else math.inf
    variants = {"truncated blockwise": ("blockwise", 32), "truncated flex": ("flex", 32),
                "truncated varlen": ("varlen", 32), "dense masked": ("dense", 32), "full SDPA": ("auto", None)}
    time_cap = 120.0  # seconds one measurement may take (extrapolated from the previous T)
    last: dict[str, tuple[int, float]] = {}
    results: dict[tuple[str, int], tuple[float, float]] = {}
    for T in sizes:
        for name, (engine, window) in variants.items():
            what = f"{name}, T={T}"
            if engine == "varlen" and device.type != "cuda":
                row("b", what, "needs CUDA", "SKIP")
                continue
            if engine == "flex" and device.type != "cuda":
                row("b", what, "no FlexAttention backward on CPU", "SKIP")
                continue
            if engine == "dense":  # (T, T) scores + probabilities per layer kept for backward, bf16/fp32
                need = layers * heads * T * T * (2 * (2 if dtype == torch.bfloat16 else 4) + 1) / 2**30
                if need > 0.9 * free:
                    row("b", what, f"skipped: needs ~{need:.0f} GB, {free:.0f} GB free", "SKIP")
                    results[(name, T)] = (math.nan, need)
                    continue
            if name in last:
                prev_T, prev_s = last[name]
                growth = (T / prev_T) ** (2 if window is None or engine == "dense" else 1)
                if prev_s * growth > time_cap:
                    row("b", what, f"skipped: would take ~{prev_s * growth:.0f} s (> {time_cap:.0f} s)", "SKIP")
                    continue
            torch.manual_seed(0)
            enc = SelfAttentionEncoder(80, d_model=d, num_layers=layers, num_heads=heads, ffn_dim=ffn,
                                       left=window, right=window, dropout=0.0, engine=engine).to(device)
            x = torch.randn(1, T, 80, device=device)
            lengths = torch.tensor([T], device=device)
            try:
                seconds, peak = _encoder_step(enc, x, lengths, device, dtype)
            except torch.cuda.OutOfMemoryError:
                row("b", what, "out of memory", "SKIP")
                continue
            except Exception as e:  # noqa: BLE001
                row("b", what, f"error: {type(e).__name__}: {str(e).splitlines()[0][:150]}", "FAIL")
                continue
            finally:
                del enc
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            last[name] = (T, seconds)
            results[(name, T)] = (seconds, peak)
            mem = "" if math.isnan(peak) else f", peak {peak:.2f} GB"
            row("b", what, f"fwd+bwd {seconds:.3f} s{mem}", "INFO")
    for T in sizes:  # ratios against dense masked attention at the same length
        dense = results.get(("dense masked", T))
        for name in ("truncated blockwise", "truncated flex", "truncated varlen", "full SDPA"):
            own = results.get((name, T))
            if own is None or dense is None:
                continue
            t_ratio = dense[0] / own[0] if not math.isnan(dense[0]) else math.nan
            m_ratio = dense[1] / own[1] if own[1] and not math.isnan(own[1]) else math.nan
            mem = "n/a on CPU" if device.type != "cuda" else f"{m_ratio:.1f}x"
            text = f"dense/{name}: time {t_ratio:.1f}x, memory {mem}"
            if math.isnan(dense[0]):
                text = f"dense masked did not fit (~{dense[1]:.0f} GB): memory >= {m_ratio:.0f}x"
            status = "INFO"
            if T == 60000 and name.startswith("truncated"):  # the target
                mem_ok = not math.isnan(m_ratio) and m_ratio >= 20
                time_ok = math.isnan(t_ratio) or t_ratio >= 10  # unmeasurable when dense cannot run
                status = "PASS" if mem_ok and time_ok else "FAIL"
                text += " (target >= 10x time, >= 20x memory)"
            row("b", f"ratio at T={T}", text, status)
    longest = sizes[-1]
    done = [n for n in variants if n.startswith("truncated") and (n, longest) in results]
    row("b", f"T={longest} frames ({longest / 100 / 60:.1f} min) through the encoder in one piece",
        ", ".join(done) or "no truncated engine ran", "PASS" if done else "FAIL")


# ----------------------------------------------------------------------------------------------- c


def _prepare_data(work: Path, corpus: Path, tiny: bool, nj: int) -> Path:
    """Stages 0-2 of the phone recipe into ``work/data`` (reused from the recipe dir when complete)."""
    recipe = ROOT / "recipes" / "speechocean762" / "phone" / "data"
    if not tiny and all((recipe / p).exists() for p in ("train/feats.scp", "dev/feats.scp", "train/cmvn_global.ark",
                                                          "lang/phones.txt")):
        print(f"  (c) reusing the recipe's data: {recipe}", flush=True)
        return recipe
    data = work / "data"
    if (data / "train" / "cmvn_global.ark").exists() and (data / "dev" / "feats.scp").exists():
        return data
    cmd = [sys.executable, str(ROOT / "local" / "prepare_speechocean762_phone.py"), "--corpus-dir", str(corpus),
           "--out-dir", str(data), "--nj", str(nj)] + (["--max-utts-per-set", "40"] if tiny else [])
    run(cmd, work / "stage0.log")
    for s in ("train", "dev"):
        run([str(BIN / "speechattn-compute-features"), f"data_dir={data / s}", f"feats_dir={work / 'fbank' / s}",
             f"nj={nj}"], work / f"stage1_{s}.log")
    run([str(BIN / "speechattn-compute-cmvn"), f"data_dir={data / 'train'}"], work / "stage2.log")
    return data


def _train_cmd(data: Path, exp: Path, device: torch.device, tiny: bool) -> list[str]:
    small = ["model.d_model=32", "model.num_layers=2", "model.ffn_dim=64"] if tiny else []
    return ["model=truncated_transformer", f"exp_dir={exp}", f"data.train_dir={data / 'train'}",
            f"data.valid_dir={data / 'dev'}", f"data.lang_dir={data / 'lang'}", f"device={device.type}",
            "trainer.max_epochs=1", "trainer.precision=auto", *small]


def step_c(device: torch.device, tiny: bool, work: Path, corpus: Path, nj: int) -> Path | None:
    data = _prepare_data(work, corpus, tiny, nj)
    exp = work / "exp_c"
    if exp.exists():  # a finished experiment would be skipped: always train this epoch afresh
        import shutil
        shutil.rmtree(exp)
    run([str(BIN / "speechattn-train"), *_train_cmd(data, exp, device, tiny)], work / "train_c.log")
    log = (exp / "train.log").read_text()
    fps = float(re.findall(r"epoch 1: (\d+) frames/s", log)[-1])
    engine = re.findall(r"attention engine for training on \w+, precision (\w+): (.*)", log)
    dev_acc = 100 * json.loads((exp / "history.json").read_text())[-1]["valid_acc"]
    precision, engines = engine[-1] if engine else ("?", "?")
    fused = device.type != "cuda" or ("varlen" in engines or "flex" in engines)
    row("c", f"engine, precision ({device.type})", f"{engines}, {precision}", "PASS" if fused else "FAIL")
    ref = json.loads(REFERENCE.read_text()) if REFERENCE.exists() else {}
    cpu = ref.get("cpu_one_epoch")
    if tiny or not cpu:
        row("c", "one epoch", f"{fps:.0f} frames/s, dev acc {dev_acc:.2f}%", "INFO" if math.isfinite(dev_acc) else "FAIL")
        return exp
    row("c", "one epoch vs CPU (reference measured " + cpu["date"] + ")",
        f"{fps:.0f} vs {cpu['frames_per_s']:.0f} frames/s ({fps / cpu['frames_per_s']:.1f}x); dev acc {dev_acc:.2f}% "
        f"vs {cpu['dev_acc']:.2f}%", "PASS" if dev_acc >= cpu["dev_acc"] - 2.0 else "FAIL")
    return exp


# ----------------------------------------------------------------------------------------------- d


def step_d(device: torch.device, tiny: bool, work: Path, corpus: Path, nj: int) -> None:
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.type == "cuda" and gpus < 2:
        row("d", "torchrun DDP, NCCL", f"skipped: {gpus} GPU (needs 2)", "SKIP")
        return
    data = _prepare_data(work, corpus, tiny, nj)
    exp = work / "exp_d"
    if exp.exists():
        import shutil
        shutil.rmtree(exp)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "speechattn.bin.train", *_train_cmd(data, exp, device, tiny), "data.max_utts=300"]
    t0 = time.perf_counter()
    run(cmd, work / "train_d.log", env={"OMP_NUM_THREADS": "1"})
    hist = json.loads((exp / "history.json").read_text())
    backend = "NCCL (gloo for the CPU loss sums)" if device.type == "cuda" else "gloo (dry run)"
    row("d", f"torchrun --nproc_per_node=2, {backend}", f"1 epoch in {time.perf_counter() - t0:.0f} s, dev acc "
        f"{100 * hist[-1]['valid_acc']:.2f}%", "PASS")


# ----------------------------------------------------------------------------------------------- e


def _infer(exp: Path, wav: Path, out: Path, device: str, precision: str) -> tuple[list[str], float]:
    data = out.parent / f"data_{wav.stem}"
    data.mkdir(parents=True, exist_ok=True)
    (data / "wav.scp").write_text(f"long {wav}\n")
    t0 = time.perf_counter()
    run([str(BIN / "speechattn-infer"), "task=phone", f"exp_dir={exp}", f"data_dir={data}", f"output_dir={out}",
         f"device={device}", f"precision={precision}", "force=true"], out.parent / f"{out.name}.log")
    return (out / "frames.txt").read_text().split()[1:], time.perf_counter() - t0


def step_e(device: torch.device, tiny: bool, work: Path, exp: Path | None) -> None:
    if exp is None:
        row("e", "1-hour inference", "skipped: no model (step c failed or not run)", "FAIL")
        return
    from longform import make_recording

    minutes = 0.5 if tiny else 60.0
    wav = work / f"long_{minutes:g}min.flac"
    if not wav.exists():
        make_recording(wav, minutes)
    on_device, t_dev = _infer(exp, wav, work / "infer_device_fp32", device.type, "fp32")
    on_cpu, t_cpu = _infer(exp, wav, work / "infer_cpu_fp32", "cpu", "fp32")
    differ = sum(a != b for a, b in zip(on_device, on_cpu)) + abs(len(on_device) - len(on_cpu))
    row("e", f"speechattn-infer {minutes:g} min on {device.type} fp32 vs cpu fp32",
        f"{len(on_device)} frames, {differ} labels differ; {t_dev:.0f} s vs {t_cpu:.0f} s",
        "PASS" if differ == 0 and on_device else "FAIL")
    half, t_half = _infer(exp, wav, work / "infer_device_ckpt", device.type, "bf16")
    agree = sum(a == b for a, b in zip(half, on_cpu)) / max(1, len(on_cpu))
    row("e", f"same on {device.type} in bf16 (information)", f"{100 * agree:.2f}% labels equal to fp32; {t_half:.0f} s",
        "INFO")


# ----------------------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="dry run: the same steps at tiny sizes on CPU")
    parser.add_argument("--steps", default="abcde", help="subset of the steps to run, e.g. 'ab'")
    parser.add_argument("--work-dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "speechattn_gpu_check")
    parser.add_argument("--corpus-dir", type=Path, default=ROOT.parent / "shared" / "corpora" / "speechocean762")
    parser.add_argument("--nj", type=int, default=min(8, os.cpu_count() or 1), help="jobs for data preparation")
    args = parser.parse_args()
    if args.cpu:
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible (torch.cuda.is_available() is False); use --cpu for the dry run",
              file=sys.stderr)
        return 1
    else:
        device = torch.device("cuda", 0)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run, tiny sizes)"
    print(f"gpu_check on {name}; torch {torch.__version__}; work dir {args.work_dir}", flush=True)
    exp = None
    steps = {
        "a": lambda: step_a(device, args.cpu),
        "b": lambda: step_b(device, args.cpu),
        "c": lambda: step_c(device, args.cpu, args.work_dir, args.corpus_dir, args.nj),
        "d": lambda: step_d(device, args.cpu, args.work_dir, args.corpus_dir, args.nj),
        "e": lambda: step_e(device, args.cpu, args.work_dir, exp),
    }
    for key in args.steps:
        t0 = time.perf_counter()
        print(f"step {key} ...", flush=True)
        try:
            result = steps[key]()
            if key == "c":
                exp = result
        except Exception as e:  # noqa: BLE001 - every step reports; the exit status collects failures
            traceback.print_exc()
            row(key, "step", f"error: {type(e).__name__}: {str(e).splitlines()[0][:200]}", "FAIL")
        print(f"step {key}: {time.perf_counter() - t0:.0f} s", flush=True)
    total = time.perf_counter() - started
    lines = ["| step | check | result | status |", "|---|---|---|---|"]
    lines += [f"| {r.step} | {r.check} | {r.result} | {r.status} |" for r in ROWS]
    failed = [r for r in ROWS if r.status == "FAIL"]
    lines.append(f"\n{name}: {len(ROWS)} checks, {len(failed)} failed, {total:.0f} s in total")
    table = "\n".join(lines)
    print("\n" + table)
    (args.work_dir / "gpu_check.md").write_text(table + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
