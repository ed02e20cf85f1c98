"""Installation: the lock agrees with pyproject.toml, set-up fails loudly, the wheel carries its configs,
``speechattn-info`` reports the environment."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import check_env  # noqa: E402  (tools/check_env.py: standard library only)

LOCK = ROOT / "requirements.lock"


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _locked() -> dict[str, tuple[str, str]]:
    return check_env.locked_versions(LOCK)


def test_torch_and_torchaudio_are_one_exact_pair_in_pyproject_and_lock():
    deps = {check_env.canonical(Requirement(d).name): Requirement(d) for d in _pyproject()["project"]["dependencies"]}
    locked = _locked()
    for name in ("torch", "torchaudio"):
        spec = list(deps[name].specifier)
        assert len(spec) == 1 and spec[0].operator == "==" and "*" not in spec[0].version, \
            f"pyproject.toml must pin {name} to one exact version, got '{deps[name].specifier}'"
        assert locked[name][0] == spec[0].version, f"{name}: pyproject {spec[0].version}, lock {locked[name][0]}"


def test_every_pyproject_requirement_is_locked_within_its_range():
    project = _pyproject()
    requirements = list(project["project"]["dependencies"])
    for extra in project["project"].get("optional-dependencies", {}).values():
        requirements += extra
    requirements += project["build-system"]["requires"]
    locked = _locked()
    for text in requirements:
        req = Requirement(text)
        name = check_env.canonical(req.name)
        assert name in locked, f"{text!r} is in pyproject.toml but not in requirements.lock: run tools/update_lock.sh"
        assert req.specifier.contains(locked[name][0], prereleases=True), \
            f"requirements.lock has {name}=={locked[name][0]}, outside pyproject's {text!r}: run tools/update_lock.sh"


def test_lock_pins_every_package_with_hashes():
    text = LOCK.read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 1)[1] if text.startswith("#") else text)
    pinned = [e for e in entries if re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*==", e)]
    assert len(pinned) >= len(_locked()) > 50  # a universal lock also pins versions for other Pythons
    for entry in pinned:
        assert "--hash=sha256:" in entry, f"no hash for {entry.splitlines()[0]}"
    assert not re.search(r"^[A-Za-z0-9][^=\n]*(>=|<=|~=|>|<)", text, re.M), "only exact pins belong in the lock"


def test_this_environment_matches_the_lock():
    assert check_env.check_versions(LOCK) == []


def test_check_env_reports_a_version_that_differs_from_the_lock(tmp_path):
    fake = tmp_path / "requirements.lock"
    fake.write_text("torchaudio==0.0.1 \\\n    --hash=sha256:00\nsix==99.0 ; sys_platform == 'nonexistent'\n")
    problems = check_env.check_versions(fake)
    assert len(problems) == 1 and problems[0].startswith("torchaudio: installed ")  # the marker one is skipped


def test_check_env_fails_loudly_naming_torchaudio_when_it_does_not_load(tmp_path):
    # An incompatible torchaudio build fails on import with an undefined symbol; simulate one ahead on sys.path.
    fake = tmp_path / "torchaudio"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "raise OSError('libtorchaudio.so: undefined symbol: torch_exception_get_what_without_backtrace')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "check_env.py"), "--quiet"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    assert "torchaudio: OSError: libtorchaudio.so: undefined symbol" in run.stderr
    assert "repair: tools/setup_venv.sh" in run.stderr


def _failing_setup(tmp_path: Path, free_gb: str) -> subprocess.CompletedProcess:
    """Run a copy of tools/setup_venv.sh on a lock that cannot install, with ``free_gb`` GB of free disk asked."""
    project = tmp_path / "project"
    (project / "tools").mkdir(parents=True)
    for name in ("setup_venv.sh", "check_env.py"):
        shutil.copy(ROOT / "tools" / name, project / "tools" / name)
    (project / "pyproject.toml").write_text("[project]\nname = 'x'\nversion = '0'\n")
    (project / "requirements.lock").write_text(
        "speechattn-no-such-package==1.0 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(tmp_path), "SPEECHATTN_VENV_FREE_GB": free_gb,
           "PYTHON": sys.executable if sys.version_info[:2] == (3, 11) else "python3.11"}
    return subprocess.run(["bash", str(project / "tools" / "setup_venv.sh")], env=env, capture_output=True,
                          text=True, timeout=600)


def test_setup_venv_exits_nonzero_and_never_says_ready_when_the_install_fails(tmp_path):
    run = _failing_setup(tmp_path, free_gb="0")
    assert run.returncode != 0
    assert "ERROR: pip could not install requirements.lock" in run.stderr
    assert "ready" not in run.stdout + run.stderr


def test_setup_venv_refuses_a_first_install_on_a_full_disk_before_pip_starts(tmp_path):
    # No disk has a billion GB free: the check must stop the first install with one line naming the venv.
    run = _failing_setup(tmp_path, free_gb="1000000000")
    assert run.returncode != 0
    assert "GB free; the first install needs about" in run.stderr
    assert f"{tmp_path / 'project' / '.venv'}" in run.stderr or "temporary dir" in run.stderr
    assert "installing the locked packages" not in run.stdout  # pip never started
    assert "ready" not in run.stdout + run.stderr


def test_wheel_carries_its_configs_and_runs_outside_the_source_tree(tmp_path):
    wheel_dir, target, src = tmp_path / "wheel", tmp_path / "site", tmp_path / "src"
    # Build from a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "speechattn", src / "speechattn", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(wheel_dir), str(src)], check=True, timeout=600, cwd=tmp_path)
    (wheel,) = wheel_dir.glob("speechattn-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("speechattn/py.typed", "speechattn/conf/train.yaml", "speechattn/conf/infer.yaml",
                   "speechattn/conf/model/truncated_transformer.yaml", "speechattn/conf/features/fbank.yaml"):
        assert needed in names, f"{needed} missing from {wheel.name}"
    conf_in_tree = {str(p.relative_to(ROOT)) for p in (ROOT / "speechattn" / "conf").rglob("*.yaml")}
    assert conf_in_tree <= names, f"configs not in the wheel: {sorted(conf_in_tree - names)}"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                    str(wheel)], check=True, timeout=600)
    # From "/", with only the installed copy importable (the editable checkout would otherwise be found).
    env = {**os.environ, "PYTHONPATH": str(target), "PYTHONNOUSERSITE": "1"}
    where = subprocess.run([sys.executable, "-c", "import speechattn; print(speechattn.__file__)"], cwd="/",
                           env=env, capture_output=True, text=True, check=True)
    assert where.stdout.strip().startswith(str(target))
    for script, config_key in (("speechattn-train", "trainer:"), ("speechattn-infer", "chunk_frames:")):
        job = subprocess.run([sys.executable, str(target / "bin" / script), "--cfg", "job"], cwd="/", env=env,
                             capture_output=True, text=True, timeout=300)
        assert job.returncode == 0, job.stderr
        assert config_key in job.stdout
        helped = subprocess.run([sys.executable, str(target / "bin" / script), "--help"], cwd="/", env=env,
                                capture_output=True, text=True, timeout=300)
        assert helped.returncode == 0 and "Compose your configuration" in helped.stdout


def test_speechattn_info_reports_versions_devices_engines_and_threads():
    exe = shutil.which("speechattn-info") or str(Path(sys.executable).parent / "speechattn-info")
    text = subprocess.run([exe], capture_output=True, text=True, check=True, timeout=300).stdout
    import torch
    import torchaudio
    assert f"torch        {torch.__version__}" in text
    assert f"torchaudio   {torchaudio.__version__}  (compiled extension loaded)" in text
    assert re.search(r"^cpu\s+inference float32\s+blockwise$", text.replace("  cpu", "cpu"), re.M)
    report = json.loads(subprocess.run([exe, "--json"], capture_output=True, text=True, check=True).stdout)
    assert report["cuda_available"] == torch.cuda.is_available()
    assert report["attention_engine"]["cpu"]["inference float32"] == "blockwise"
    assert report["threads"]["usable_cpus"] >= 1
