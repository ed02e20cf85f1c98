"""Long-form inference benchmark: label a 1-hour recording with bounded memory.

    .venv/bin/python bench/longform.py --exp-dir recipes/speechocean762/phone/exp/truncated_transformer
    .venv/bin/python bench/longform.py --exp-dir EXP --minutes 6 60       # the default

For each duration, builds a 16 kHz FLAC by concatenating speechocean762 utterances from ../shared (or
noise + tones when it is absent), writes a one-line Kaldi data dir, runs ``speechattn-infer task=phone`` in a
fresh process and reports wall time, real-time factor and the child's peak RSS. Peak memory that does not
grow with duration is the point: the whole-utterance path would need the full feature matrix and, for dense
attention, a T×T score matrix (T = 360,000 frames for an hour). Target: peak RSS ≤ 3 GB for 1 hour.
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
CORPUS_WAVE = ROOT.parent / "shared" / "corpora" / "speechocean762" / "WAVE"


def make_recording(path: Path, minutes: float, sr: int = 16000) -> None:
    """Write ``minutes`` of speech (corpus utterances in a loop) block by block (bounded memory)."""
    files = sorted(CORPUS_WAVE.glob("*/*.flac"))[:200] if CORPUS_WAVE.is_dir() else []
    target = int(minutes * 60 * sr)
    rng = np.random.default_rng(0)
    written = 0
    with sf.SoundFile(path, "w", samplerate=sr, channels=1, format="FLAC") as out:
        i = 0
        while written < target:
            if files:
                block, _ = sf.read(files[i % len(files)], dtype="float32")
            else:
                t = np.arange(sr * 3) / sr
                block = (0.2 * np.sin(2 * np.pi * (200 + 50 * (i % 7)) * t) + 0.01 * rng.standard_normal(t.size))
            block = np.asarray(block[: target - written], dtype=np.float32)
            out.write(block)
            written += block.size
            i += 1


def run_infer(exp_dir: Path, wav: Path, work: Path, chunk_frames: int, threads: int) -> tuple[float, float]:
    data = work / f"data_{wav.stem}"
    data.mkdir(exist_ok=True)
    (data / "wav.scp").write_text(f"long {wav}\n")
    out = work / f"out_{wav.stem}"
    cmd = [str(ROOT / ".venv" / "bin" / "speechattn-infer"), "task=phone", f"exp_dir={exp_dir}", f"data_dir={data}",
           f"output_dir={out}", f"chunk_frames={chunk_frames}", f"threads={threads}", "force=true"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    seconds = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak_kb < before:  # ru_maxrss of children is the max over all children so far
        peak_kb = before
    frames = len((out / "frames.txt").read_text().split()) - 1
    print(f"  labelled {frames} frames -> {out / 'frames.txt'}", flush=True)
    return seconds, peak_kb / 1024 / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp-dir", type=Path, required=True, help="trained phone experiment (bounded receptive field)")
    parser.add_argument("--minutes", type=float, nargs="+", default=[6, 60], help="recording durations, ascending")
    parser.add_argument("--chunk-frames", type=int, default=6000, help="frames per chunk (60 s)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of the inference process")
    parser.add_argument("--work-dir", type=Path, default=None, help="where recordings go (default: a temp dir)")
    args = parser.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="speechattn_longform_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for minutes in sorted(args.minutes):  # ascending: ru_maxrss of children only grows
        wav = work / f"rec_{minutes:g}min.flac"
        if not wav.exists():
            print(f"writing {minutes:g} min recording {wav}", flush=True)
            make_recording(wav, minutes)
        print(f"labelling {wav.name} ...", flush=True)
        seconds, peak_gb = run_infer(args.exp_dir.resolve(), wav, work, args.chunk_frames, args.threads)
        rows.append((minutes, seconds, minutes * 60 / seconds, peak_gb))
    print("\n| recording | wall time (s) | real-time factor | peak RSS of speechattn-infer (GB) |")
    print("|---:|---:|---:|---:|")
    for minutes, seconds, rtf, peak in rows:
        print(f"| {minutes:g} min | {seconds:.0f} | {rtf:.0f}x | {peak:.2f} |")
    if len(rows) > 1:
        print(f"\npeak RSS growth {rows[0][0]:g} -> {rows[-1][0]:g} min: {rows[-1][3] / rows[0][3]:.2f}x "
              f"(duration {rows[-1][0] / rows[0][0]:.0f}x)")
    print(f"1-hour target peak RSS <= 3 GB: {'PASS' if rows[-1][3] <= 3.0 else 'FAIL'} ({rows[-1][3]:.2f} GB)"
          if rows[-1][0] >= 60 else "")


if __name__ == "__main__":
    sys.exit(main())
