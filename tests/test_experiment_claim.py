"""speechattn/training/experiment.py: an experiment dir holding a training of other options is refused with
one line naming them, and an option the old run's config.yaml does not have is named as new."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from speechattn.training.experiment import ExperimentConfigError, claim_experiment_dir


def _earlier_run(exp: Path, config: dict) -> None:
    exp.mkdir()
    (exp / "config.yaml").write_text(yaml.safe_dump(config))
    (exp / "model.pt").write_bytes(b"weights")


def test_a_changed_option_is_named(tmp_path: Path) -> None:
    _earlier_run(tmp_path / "exp", {"model": {"d_model": 128}, "trainer": {"threads": 1}})
    claim_experiment_dir(tmp_path / "exp", {"model": {"d_model": 128}, "trainer": {"threads": 2}})  # speed only
    with pytest.raises(ExperimentConfigError, match=r"model.d_model: 128 -> 192\): choose another") as e:
        claim_experiment_dir(tmp_path / "exp", {"model": {"d_model": 192}, "trainer": {"threads": 1}})
    assert "did not exist" not in str(e.value) and "\n" not in str(e.value)


def test_an_option_added_since_the_run_is_named_as_new(tmp_path: Path) -> None:
    _earlier_run(tmp_path / "exp", {"model": {"d_model": 128}})
    new = {"model": {"d_model": 128}, "trainer": {"select_by": "auto"}}
    with pytest.raises(ExperimentConfigError, match=r"trainer.select_by: <unset> -> auto; trainer.select_by did not "
                                                    r"exist when that run was made .*force=true"):
        claim_experiment_dir(tmp_path / "exp", new)
    claim_experiment_dir(tmp_path / "exp", new, force=True)  # discards the old outputs
    assert not (tmp_path / "exp" / "model.pt").exists()
