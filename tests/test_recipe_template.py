"""The recipe template (utils/recipe.sh) and its stage bookkeeping (utils/stage.sh), without training.

- every recipe's --help lists every option it accepts (its own and the template's) with default and help;
- a bad option stops every recipe with one line on stderr before anything runs;
- stage_unit, on a toy command: runs, skips when its stamp is current, redoes when the command, a
  configuration file or an upstream stamp changed (and only then), resumes an interrupted run of the same
  configuration without --force, ignores speed-only settings, and a failure is one line naming the unit.
The real recipes run end to end in test_phone_recipe.py and test_sid_recipe.py.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ["speechocean762/phone", "speechocean762/sid", "fsdd/sid", "voxceleb1/sid"]
SPEAKER_PART = ROOT / "utils" / "recipe_sid.sh"  # the options of every speaker recipe (test_sid_recipe_options.py)
OPTION = re.compile(r"^([a-z][a-z0-9_]*)=(\"[^\"]*\"|\S*)\s*(?:#\s*(.*))?$")


def declared_options(path: Path) -> dict[str, tuple[str, str]]:
    """name -> (default, help) of the `name=default  # help` lines before the first sourced file."""
    options = {}
    for line in path.read_text().splitlines():
        if line.startswith((". ", "source ")):
            break
        m = OPTION.match(line)
        if m:
            options[m.group(1)] = (m.group(2).strip('"'), (m.group(3) or "").strip())
    return options


def run(args: list[str], cwd: Path | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=cwd, **kw)


@pytest.mark.parametrize("recipe", RECIPES)
def test_help_lists_every_option_with_its_default(recipe: str) -> None:
    run_sh = ROOT / "recipes" / recipe / "run.sh"
    own, common = declared_options(run_sh), declared_options(ROOT / "utils" / "recipe.sh")
    assert len(own) >= 2 and {"stage", "stop_stage", "corpus_dir", "work_dir", "nj", "parallel", "train_args",
                              "force", "dry_run"} <= set(common)
    speaker = declared_options(SPEAKER_PART)
    assert {"augment", "musan_dir", "rir_dir", "average_best", "embedding", "asnorm"} <= set(speaker)
    if recipe.endswith("/sid"):
        common = {**speaker, **common}
    result = run(["bash", str(run_sh), "--help"])
    assert result.returncode == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    options = lines[lines.index("Options (default in brackets):"):]  # the header may mention options too
    for name, (default, help_text) in {**own, **common}.items():
        flag = "--" + name.replace("_", "-")
        line = next((x for x in options if x.split()[:1] == [flag]), None)
        assert line is not None, f"{flag} missing from --help"
        assert f"[{default}]" in line and help_text and help_text in line, line
    assert "Options of every recipe" in result.stdout
    assert lines[0].startswith(("speechocean762", "Free Spoken", "VoxCeleb1"))
    if recipe.endswith("/sid"):
        assert "Options of every speaker recipe (utils/recipe_sid.sh" in result.stdout
    else:  # the speaker part's options are not the phone recipes'
        assert "speaker recipe" not in result.stdout and "--augment" not in result.stdout


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("args, fragment", [
    (["--nope", "1"], "unknown option --nope"),
    (["--stage", "abc"], "option --stage needs an integer, got 'abc'"),
    (["--parallel", "yes"], "option --parallel needs true or false, got 'yes'"),
    (["--corpus-dir", "/c", "extra"], "unexpected argument 'extra'"),
    (["--root", "/x"], "unknown option --root"),  # internal variables are not options
], ids=["unknown", "stage abc", "parallel yes", "positional", "internal variable"])
def test_bad_option_is_one_line(recipe: str, args: list[str], fragment: str, tmp_path: Path) -> None:
    result = run(["bash", str(ROOT / "recipes" / recipe / "run.sh"), *args], cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and fragment in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing ran, nothing written


# ------------------------------------------------------------------------------ stage bookkeeping (toy)

HARNESS = """#!/usr/bin/env bash
set -euo pipefail
root={root}
force=${{FORCE:-false}}; parallel=false; dry_run=${{DRY:-false}}
. "$root/utils/log.sh"
. "$root/utils/stage.sh"
cd "$1"; shift
# toy: appends its arguments to calls.txt, writes out.txt; fails with status 3 when FAIL is set
toy() {{ echo "$*" >> calls.txt; echo "made by $*" > "$1/out.txt"; if [ -n "${{FAIL:-}}" ]; then echo "toy: $1 broke"; return 3; fi; }}
mkdir -p a b
stage_unit "stage 1 a" a/.stage.a --files conf.yaml --force-arg force=true -- toy a ${{A_ARGS:-x=1}} nj=${{NJ:-2}}
stage_unit "stage 2 b" b/.stage.b --after a/.stage.a --clean b --out log/b.out -- toy b y=1
"""


@pytest.fixture
def toy(tmp_path: Path):
    script = tmp_path / "toy.sh"
    script.write_text(HARNESS.format(root=ROOT))
    work = tmp_path / "work"
    work.mkdir()
    (work / "conf.yaml").write_text("k: 1\n")

    def go(**env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
        before = (work / "calls.txt").read_text().splitlines() if (work / "calls.txt").exists() else []
        result = run(["bash", str(script), str(work)], env={"PATH": "/usr/bin:/bin", **env})
        after = (work / "calls.txt").read_text().splitlines() if (work / "calls.txt").exists() else []
        return result, after[len(before):]

    return go, work


def test_stage_unit_runs_then_skips(toy) -> None:
    go, work = toy
    result, calls = go()
    assert result.returncode == 0, result.stderr
    assert calls == ["a x=1 nj=2 force=true", "b y=1"]  # first run: nothing known about the outputs, from scratch
    stamp = (work / "a" / ".stage.a").read_text()
    assert "command: toy a x=1\n" in stamp and "conf.yaml" in stamp and "finished: " in stamp  # nj= not recorded
    assert "input: " in (work / "b" / ".stage.b").read_text()
    result, calls = go()
    assert result.returncode == 0 and calls == []
    assert result.stderr.count("up to date, skipped") == 2, result.stderr
    result, calls = go(NJ="7")  # a speed-only setting: still up to date
    assert calls == []


def test_changed_option_redoes_the_unit_and_what_depends_on_it(toy) -> None:
    go, work = toy
    go()
    result, calls = go(A_ARGS="x=2")
    assert calls == ["a x=2 nj=2 force=true", "b y=1"]
    assert "stage 1 a: redoing: now 'command: toy a x=2'" in result.stderr
    assert "stage 2 b: redoing: now 'input: " in result.stderr
    assert (work / "a" / "out.txt").read_text() == "made by a x=2 nj=2 force=true\n"
    _, calls = go(A_ARGS="x=2")
    assert calls == []
    (work / "conf.yaml").write_text("k: 2\n")  # a configuration file the unit reads
    _, calls = go(A_ARGS="x=2")
    assert calls == ["a x=2 nj=2 force=true", "b y=1"]


def test_downstream_alone_is_redone_when_its_output_is_deleted(toy) -> None:
    go, work = toy
    go()
    subprocess.run(["rm", "-rf", str(work / "b")], check=True)
    _, calls = go()
    assert calls == ["b y=1"]


def test_dry_run_says_what_would_be_redone_and_changes_nothing(toy) -> None:
    go, work = toy
    go()
    stamps = {p: p.read_text() for p in (work / "a" / ".stage.a", work / "b" / ".stage.b")}
    result, calls = go(A_ARGS="x=2", DRY="true")
    assert result.returncode == 0, result.stderr
    assert calls == []
    assert "stage 1 a: redoing: now 'command: toy a x=2'; dry run, would run: toy a x=2 nj=2 force=true" in result.stderr
    assert "stage 2 b: redoing: a/.stage.a would be redone; dry run, would run: toy b y=1" in result.stderr
    assert (work / "b" / "out.txt").is_file()  # b's --clean directory is not removed
    assert {p: p.read_text() for p in stamps} == stamps and not list(work.rglob("*.started"))
    result, calls = go(DRY="true")  # nothing to do: both up to date, as without --dry-run
    assert calls == [] and result.stderr.count("up to date, skipped") == 2


def test_force_redoes_everything(toy) -> None:
    go, _ = toy
    go()
    result, calls = go(FORCE="true")
    assert calls == ["a x=1 nj=2 force=true", "b y=1"] and "--force true: redoing" in result.stderr


def test_interrupted_unit_resumes_only_with_the_same_configuration(toy) -> None:
    go, work = toy
    go()
    stamp = work / "a" / ".stage.a"
    signature = "".join(line for line in stamp.read_text().splitlines(keepends=True) if not line.startswith("finished"))
    stamp.unlink()
    (work / "a" / ".stage.a.started").write_text(signature)  # as a killed run leaves it
    result, calls = go()
    assert calls[0] == "a x=1 nj=2" and "resuming an interrupted run" in result.stderr  # no force: the tool resumes
    assert (work / "a" / ".stage.a").exists() and not (work / "a" / ".stage.a.started").exists()
    stamp.unlink()
    (work / "a" / ".stage.a.started").write_text(signature)
    result, calls = go(A_ARGS="x=5")  # interrupted, but another configuration: from scratch
    assert calls[0] == "a x=5 nj=2 force=true" and "interrupted run of another configuration" in result.stderr


def test_failure_is_one_line_naming_the_unit(toy) -> None:
    go, work = toy
    result, _ = go(FAIL="1")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "stage 1 a failed (exit 3): toy a x=1 force=true" in errors[0], result.stderr
    assert not (work / "a" / ".stage.a").exists() and (work / "a" / ".stage.a.started").exists()
    assert not (work / "b" / ".stage.b").exists() and not (work / "b" / ".stage.b.started").exists()  # b never ran
    (work / "a" / ".stage.a.started").unlink()
    go()
    (work / "b" / ".stage.b").unlink()
    result, _ = go(FAIL="1")  # unit b, whose output goes to a file: the error quotes its last line
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "stage 2 b failed (exit 3)" in errors[0]
    assert "last output: toy: b broke; full output: log/b.out" in errors[0]


SIDE_BY_SIDE = """#!/usr/bin/env bash
set -euo pipefail
root={root}
. "$root/utils/log.sh"
. "$root/utils/stage.sh"
cd "$1"
# a unit that runs a long child process, as a training does, and records its PID
unit() {{ bash -c 'echo $$ > "pid.$1"; exec sleep 300' _ "$1"; }}
side_by_side "a b" unit
"""


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_interrupted_side_by_side_units_stop_their_processes(signal_name: str, tmp_path: Path) -> None:
    import os
    import signal
    import time
    script = tmp_path / "side.sh"
    script.write_text(SIDE_BY_SIDE.format(root=ROOT))
    proc = subprocess.Popen(["bash", str(script), str(tmp_path)], stderr=subprocess.PIPE, text=True,
                            env={"PATH": "/usr/bin:/bin"})
    pid_files = [tmp_path / "pid.a", tmp_path / "pid.b"]
    deadline = time.time() + 30
    while not all(f.is_file() and f.read_text().strip() for f in pid_files):
        assert time.time() < deadline and proc.poll() is None, "the units did not start"
        time.sleep(0.1)
    children = [int(f.read_text()) for f in pid_files]
    proc.send_signal(getattr(signal, signal_name))
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted: stopping 2 unit(s)" in stderr

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # a zombie has stopped

    deadline = time.time() + 10
    while any(alive(pid) for pid in children) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in children), "a unit's process is still running after the interrupt"
