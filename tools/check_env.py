#!/usr/bin/env python3
"""Check that the running Python environment is the one ``requirements.lock`` describes, and that it works.

    .venv/bin/python tools/check_env.py            # exit 0: ready; exit 1: what failed and how to repair it
    .venv/bin/python tools/check_env.py --quiet    # only failures are printed

Two checks (standard library only, so it runs in a half-installed environment too):

1. **Versions**: every package pinned in ``requirements.lock`` whose environment marker applies to this
   machine is installed at exactly the locked version (a ``.venv`` left by an interrupted install, or a
   package replaced by hand, fails here).
2. **Imports that do real work**: torch; torchaudio *with its compiled extension* (an incompatible
   torch/torchaudio pair fails here with ``undefined symbol``) computing Kaldi fbank and a resampling;
   soundfile with libsndfile writing and reading FLAC; kaldiio writing and reading an ark; hydra composing
   the project's training config; speechattn importable from this checkout.

``tools/setup_venv.sh`` runs it after every install and before reporting ``ready``.
"""
from __future__ import annotations

import argparse
import importlib.metadata as metadata
import re
import sys
import tempfile
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPAIR = "repair: tools/setup_venv.sh (reinstalls from requirements.lock), or rm -rf .venv && tools/setup_venv.sh"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(lock: Path) -> dict[str, tuple[str, str]]:
    """The pins of ``requirements.lock`` that apply to this interpreter and platform:
    {canonical name: (version, marker)}, from ``name==version [; marker]`` lines. A universal lock can
    pin a package twice under exclusive markers (e.g. one version for Python < 3.12, one for >= 3.12)."""
    pins: dict[str, tuple[str, str]] = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$", line)
        if m and marker_applies((m.group(4) or "").strip()):
            pins[canonical(m.group(1))] = (m.group(3), (m.group(4) or "").strip())
    return pins


def marker_applies(marker: str) -> bool:
    if not marker:
        return True
    try:
        from packaging.markers import Marker
    except ImportError:  # packaging missing or broken: pip's vendored copy is always there
        from pip._vendor.packaging.markers import Marker
    return Marker(marker).evaluate()


def public(version: str) -> str:
    return version.split("+", 1)[0]


def check_versions(lock: Path) -> list[str]:
    problems = []
    for name, (version, _marker) in sorted(locked_versions(lock).items()):
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name}: not installed (locked {version})")
            continue
        if public(installed) != public(version):
            problems.append(f"{name}: installed {installed}, locked {version}")
    return problems


def _torch() -> str:
    import torch
    return f"torch {torch.__version__} (CUDA available: {torch.cuda.is_available()})"


def _torchaudio() -> str:
    import torch
    import torchaudio
    from torchaudio import _extension
    if not _extension._IS_TORCHAUDIO_EXT_AVAILABLE:
        raise ImportError("torchaudio's compiled extension (_torchaudio) did not load")
    feats = torchaudio.compliance.kaldi.fbank(torch.randn(1, 16000), num_mel_bins=80)
    resampled = torchaudio.functional.resample(torch.randn(8000), 8000, 16000)
    if feats.shape != (98, 80) or resampled.shape != (16000,):
        raise RuntimeError(f"unexpected shapes {tuple(feats.shape)}, {tuple(resampled.shape)}")
    return f"torchaudio {torchaudio.__version__} (extension loaded, fbank and resample computed)"


def _soundfile() -> str:
    import numpy as np
    import soundfile
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.flac"
        soundfile.write(path, np.zeros(1600, dtype=np.int16), 16000)
        data, rate = soundfile.read(path, dtype="int16")
    if len(data) != 1600 or rate != 16000:
        raise RuntimeError("FLAC round trip failed")
    return f"soundfile {soundfile.__version__} ({soundfile.__libsndfile_version__ and 'libsndfile ' + soundfile.__libsndfile_version__})"


def _kaldiio() -> str:
    import kaldiio
    import numpy as np
    with tempfile.TemporaryDirectory() as tmp:
        ark, scp = str(Path(tmp) / "a.ark"), str(Path(tmp) / "a.scp")
        kaldiio.save_ark(ark, {"u": np.ones((3, 2), dtype=np.float32)}, scp=scp)
        if kaldiio.load_scp(scp)["u"].shape != (3, 2):
            raise RuntimeError("ark/scp round trip failed")
    return f"kaldiio {metadata.version('kaldiio')}"


def _hydra() -> str:
    import hydra
    from hydra import compose, initialize_config_dir
    conf = ROOT / "speechattn" / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="train")
    if "model" not in cfg:
        raise RuntimeError(f"{conf}/train.yaml composed without a model group")
    return f"hydra-core {hydra.__version__} (composed speechattn/conf/train.yaml)"


def _speechattn() -> str:
    import speechattn
    where = Path(speechattn.__file__).resolve().parent
    if where != ROOT / "speechattn":
        raise ImportError(f"speechattn is imported from {where}, not from this checkout ({ROOT})")
    return f"speechattn from {where}"


CHECKS = {"torch": _torch, "torchaudio": _torchaudio, "soundfile": _soundfile, "kaldiio": _kaldiio,
          "hydra": _hydra, "speechattn": _speechattn}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lock", type=Path, default=ROOT / "requirements.lock")
    parser.add_argument("--quiet", action="store_true", help="print only failures")
    args = parser.parse_args(argv)
    failures = [f"version mismatch: {p}" for p in check_versions(args.lock)]
    for name, check in CHECKS.items():
        try:
            message = check()
        except Exception as e:  # noqa: BLE001 - every failure is reported, with its cause
            last = traceback.extract_tb(e.__traceback__)[-1]
            failures.append(f"{name}: {type(e).__name__}: {e} (at {last.filename}:{last.lineno})")
            continue
        if not args.quiet:
            print(f"  ok  {message}")
    for failure in failures:
        print(f"  FAILED  {failure}", file=sys.stderr)
    if failures:
        print(f"environment check failed ({len(failures)} problem(s)); {REPAIR}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
