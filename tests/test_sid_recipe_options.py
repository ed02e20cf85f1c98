"""The speaker recipes' options (utils/recipe_sid.sh) without training: bad values and combinations stop the
recipe with one line before anything runs, and `--dry-run true` shows each option reaching the right
command (training / inference / scoring), the experiment names, and the synthetic RIR unit.

The options' effect on real runs (RIR set made once, augmented training, stamps) is in test_sid_recipe.py.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from augment_data import make_musan, make_rirs_noises

ROOT = Path(__file__).resolve().parents[1]


def recipe(corpus: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "recipes" / corpus / "sid" / "run.sh"), *args],
                          capture_output=True, text=True, timeout=120, cwd=cwd)


def dry_run(corpus: str, tmp_path: Path, *args: str) -> dict[str, str]:
    """unit name -> the command it would run (`--dry-run true` from a fresh work dir)."""
    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir(exist_ok=True)
    work = tmp_path / "work"
    result = recipe(corpus, "--corpus-dir", str(corpus_dir), "--work-dir", str(work), "--dry-run", "true", *args,
                    cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    units = dict(re.findall(r"\) (stage \d [^:]+): [^;\n]+; dry run, would run: (.*)", result.stderr))
    assert units, result.stderr[-3000:]
    assert list(work.iterdir()) == []  # nothing written
    return units


@pytest.fixture
def musan(tmp_path: Path) -> Path:
    return make_musan(tmp_path / "corpora", per_part=1, seconds=0.5)


def test_defaults_pass_nothing_on(tmp_path: Path) -> None:
    units = dry_run("fsdd", tmp_path)
    train = units["stage 3 train exp/ident"]
    assert train.startswith("speechattn-train --config-name train_sid data=fsdd_sid_ident exp_dir=exp/ident ")
    for word in ("augment", "make_rir_set", "average_best"):  # the defaults' commands (and stamps) are unchanged
        assert word not in train
    assert "stage 3 rirs data/rirs" not in units
    assert "embedding=" not in units["stage 4 infer exp/ident on data/ident_test"]
    assert "asnorm" not in units["stage 5 score exp/ident"]


def test_augment_speaker_reaches_training_with_the_rir_unit_first(tmp_path: Path) -> None:
    units = dry_run("fsdd", tmp_path, "--augment", "speaker", "--average-best", "3", "--embedding", "crops",
                    "--asnorm", "false", "--rir-rooms", "2", "--train-args", "augment.babble.prob=0")
    names = list(units)
    rirs = units["stage 3 rirs data/rirs"]
    assert rirs.startswith(f"python {ROOT}/local/make_rir_set.py data/rirs --num-rooms 2 --sample-rate 16000")
    assert names.index("stage 3 rirs data/rirs") < names.index("stage 3 train exp/ident_aug_avg3")
    train = units["stage 3 train exp/ident_aug_avg3"]
    assert ("exp_dir=exp/ident_aug_avg3 trainer.threads=1 augment=speaker make_rir_set=false "
            "augment.reverb.rir_dir=data/rirs trainer.average_best=3 augment.babble.prob=0") in train  # --train-args last
    infer = units["stage 4 infer exp/ident_aug_avg3 on data/ident_test"]
    assert "exp_dir=exp/ident_aug_avg3" in infer and "output_dir=exp/ident_aug_avg3/decode_ident_test" in infer
    assert "embedding=crops" in infer
    score = units["stage 5 score exp/ident_aug_avg3"]
    assert "hyp_dir=exp/ident_aug_avg3/decode_ident_test" in score and score.endswith("asnorm=false")
    assert not any(name.endswith(("exp/ident", "on data/ident_test")) and "_aug" not in name for name in names)


def test_musan_and_rir_dirs_reach_both_experiments(tmp_path: Path, musan: Path) -> None:
    rirs = make_rirs_noises(tmp_path / "corpora", rooms=("smallroom",), per_room=1)
    # relative paths, as a user types them: the commands get absolute ones (training runs in the work dir)
    units = dry_run("speechocean762", tmp_path, "--musan-dir", "corpora/musan", "--rir-dir", "corpora/RIRS_NOISES")
    assert "stage 3 rirs data/rirs" not in units  # a real RIR set: no synthetic one
    for task in ("ident", "verif"):
        train = units[f"stage 3 train exp/{task}_musan_rirs"]
        assert (f"augment=speaker_musan make_rir_set=false augment.reverb.rir_dir={rirs} "
                f"augment.musan_dir={musan}") in train
    assert "trainer.select_by=valid_acc" in units["stage 3 train exp/verif_musan_rirs"]  # the recipe's own override


@pytest.mark.parametrize("args, fragment", [
    (["--augment", "babble"], "--augment 'babble': none | speaker | speaker_musan"),
    (["--embedding", "mean"], "--embedding 'mean': full | crops"),
    (["--asnorm", "yes"], "option --asnorm needs true or false, got 'yes'"),
    (["--average-best", "two"], "option --average-best needs an integer, got 'two'"),
    (["--average-best", "1"], "--average-best 1: 0 (off) or the number N >= 2"),
    (["--average-best", "-3"], "--average-best -3: 0 (off)"),
    (["--rir-rooms", "0"], "--rir-rooms 0: needs at least 1"),
    (["--augment", "speaker_musan"], "--augment speaker_musan needs --musan-dir DIR"),
    (["--musan-dir", "no/such/musan"], "--musan-dir no/such/musan: directory not found"),
    (["--augment", "speaker", "--rir-dir", "no/such/rirs"], "--rir-dir no/such/rirs: directory not found"),
    (["--rir-dir", "."], "--rir-dir is used by augmentation: add --augment speaker"),
    (["--augment", "speaker", "--rir-dir", "."], "--rir-dir .: not the RIRS_NOISES layout: no simulated_rirs/<room>/rir_list"),
], ids=lambda x: x if isinstance(x, str) else " ".join(x))
@pytest.mark.parametrize("corpus", ["fsdd", "speechocean762", "voxceleb1"])
def test_bad_value_is_one_line_before_anything_runs(corpus: str, args: list[str], fragment: str,
                                                    tmp_path: Path) -> None:
    result = recipe(corpus, *args, cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and fragment in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("remove, missing", [("noise", "noise/"), ("speech/librivox", "speech/")])
def test_musan_dir_without_the_layout_names_the_dir(tmp_path: Path, musan: Path, remove: str, missing: str) -> None:
    for wav in (musan / remove).rglob("*.wav"):  # the part's directory stays, without audio
        wav.unlink()
    result = recipe("fsdd", "--musan-dir", str(musan), "--work-dir", str(tmp_path / "work"), cwd=tmp_path)
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, result.stderr
    assert f"--musan-dir {musan}: not MUSAN's layout: no {missing}" in result.stderr
    assert not (tmp_path / "work").exists()


def test_musan_dir_with_augment_speaker_is_refused(tmp_path: Path, musan: Path) -> None:
    result = recipe("fsdd", "--augment", "speaker", "--musan-dir", str(musan), cwd=tmp_path)
    assert result.returncode == 1 and "MUSAN is used by --augment speaker_musan" in result.stderr
