"""speechattn-info: what this installation is and what it would run on.

    speechattn-info            # human-readable report
    speechattn-info --json     # the same as JSON

Prints the versions of speechattn, Python, torch and torchaudio (and whether torchaudio's compiled
extension loaded), CUDA availability and every visible GPU, the attention engine that
``engine=auto`` picks on each device for inference and for training, and the thread settings. The
recipes log it at their start, and ``speechattn-train`` keeps it as ``info.txt`` next to ``config.yaml``
in every experiment directory, so a result can always be traced to the software that produced it.
"""
from __future__ import annotations

import argparse
import importlib.metadata as metadata
import json
import os
import platform
import sys
from typing import Any

import torch


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _torchaudio() -> dict[str, Any]:
    try:
        import torchaudio
        from torchaudio import _extension
    except Exception as e:  # noqa: BLE001 - reported, not raised: this is a diagnostic tool
        return {"version": _version("torchaudio"), "error": f"{type(e).__name__}: {e}"}
    return {"version": torchaudio.__version__, "extension_loaded": bool(_extension._IS_TORCHAUDIO_EXT_AVAILABLE)}


def _engines(device: torch.device) -> dict[str, str]:
    """The concrete engine of ``engine=auto`` for a banded layer, per use and precision."""
    from speechattn.models.attention import resolve_engine

    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        name = str(dtype).replace("torch.", "")
        out[f"inference {name}"] = resolve_engine("auto", device, dtype)
        out[f"training {name}, attention dropout"] = resolve_engine("auto", device, dtype, dropout_active=True)
        out[f"training {name}, no attention dropout"] = resolve_engine("auto", device, dtype)
    out["attention map (weights)"] = resolve_engine("auto", device, torch.float32, need_weights=True)
    return out


def environment_report() -> dict[str, Any]:
    """Everything ``speechattn-info`` prints, as plain data."""
    cuda = torch.cuda.is_available()
    devices = [torch.device("cpu")] + ([torch.device("cuda", 0)] if cuda else [])
    gpus = []
    if cuda:
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append({"index": i, "name": props.name, "memory_gb": round(props.total_memory / 2**30, 1),
                         "capability": f"{props.major}.{props.minor}", "bf16": torch.cuda.is_bf16_supported()})
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = os.cpu_count()
    return {
        "speechattn": _version("speechattn"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda_build": torch.version.cuda,
        "torchaudio": _torchaudio(),
        "packages": {d: _version(d) for d in ("hydra-core", "kaldiio", "soundfile", "numpy", "praatio")},
        "cuda_available": cuda,
        "gpus": gpus,
        "attention_engine": {str(d): _engines(d) for d in devices},
        "threads": {"cpu_count": os.cpu_count(), "usable_cpus": affinity,
                    "torch_intra_op": torch.get_num_threads(), "torch_inter_op": torch.get_num_interop_threads(),
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset"),
                    "speechattn_default": "1 intra-op thread per job (trainer.threads=1, threads=1 for inference)"},
    }


def format_report(report: dict[str, Any]) -> str:
    ta = report["torchaudio"]
    ta_line = ta["version"] + (f"  ERROR: {ta['error']}" if "error" in ta else
                               f"  (compiled extension {'loaded' if ta['extension_loaded'] else 'NOT loaded'})")
    lines = [f"speechattn   {report['speechattn']}",
             f"python       {report['python']}  ({report['platform']})",
             f"torch        {report['torch']}  (CUDA build: {report['torch_cuda_build'] or 'none'})",
             f"torchaudio   {ta_line}",
             "packages     " + ", ".join(f"{k} {v}" for k, v in report["packages"].items()),
             f"CUDA         {'available' if report['cuda_available'] else 'not available'}"]
    for gpu in report["gpus"]:
        lines.append(f"  cuda:{gpu['index']}     {gpu['name']}, {gpu['memory_gb']} GB, compute capability "
                     f"{gpu['capability']}, bf16 {'yes' if gpu['bf16'] else 'no'}")
    lines.append("attention engine (model.engine=auto, banded layers):")
    for device, engines in report["attention_engine"].items():
        for use, engine in engines.items():
            lines.append(f"  {device:6s} {use:40s} {engine}")
    t = report["threads"]
    lines.append(f"threads      {t['usable_cpus']} usable of {t['cpu_count']} CPUs; torch intra-op "
                 f"{t['torch_intra_op']}, inter-op {t['torch_inter_op']}; OMP_NUM_THREADS={t['OMP_NUM_THREADS']}; "
                 f"{t['speechattn_default']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="speechattn-info", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    report = environment_report()
    print(json.dumps(report, indent=1) if args.json else format_report(report), end="\n" if args.json else "")


if __name__ == "__main__":
    main()
