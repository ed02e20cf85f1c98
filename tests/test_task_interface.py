"""The task interface of #10: tasks found by name, entry points without task or model branches, and a new
encoder (torchaudio's Conformer) trained, labelled and scored with its attention map and context column
without any change to the scoring code."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from phone_data import make_phone_corpus, phone_overrides
from speechattn.bin._hydra import CONF_DIR
from speechattn.bin.results_table import phone_row
from speechattn.bin.train import run
from speechattn.inference.driver import infer_dir, task_of
from speechattn.models.encoders import registered_encoders
from speechattn.tasks import get_task
from speechattn.tasks.base import Task

BIN = Path(__file__).resolve().parents[1] / "speechattn" / "bin"


def test_tasks_are_found_by_name():
    phone, sid = get_task("phone"), get_task("sid")
    assert isinstance(phone, Task) and isinstance(sid, Task) and get_task("phone") is phone
    assert (phone.name, phone.labels_file, sid.name, sid.checkpoint_labels_key) == ("phone", "phones.txt", "sid",
                                                                                   "speakers")
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        get_task("nope")


@pytest.mark.parametrize("entry", ["train.py", "infer.py", "score.py", "results_table.py"])
def test_entry_points_hold_no_model_or_task_name_branches(entry: str):
    """No string constant of the entry point names a model; train/infer/score name no task either."""
    names = set(registered_encoders()) | {"torchaudio_conformer"}
    if entry != "results_table.py":  # the results table picks its columns by task (phone | sid)
        names |= {"phone", "sid"}
    tree = ast.parse((BIN / entry).read_text())
    constants = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert not constants & names, f"{entry}: {sorted(constants & names)}"


@pytest.fixture(scope="module")
def conformer_exp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = make_phone_corpus(tmp_path_factory.mktemp("corpus"), train_utts=8, dev_utts=4)
    exp = root / "exp"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=phone_overrides(root, exp, "torchaudio_conformer")
                      + ["trainer.max_epochs=1"])
    run(cfg, exp)
    return root, exp


def test_a_new_encoder_gets_its_attention_map_and_context_column(conformer_exp, tmp_path: Path):
    root, exp = conformer_exp
    assert task_of(exp).name == "phone"  # from the checkpoint: infer and score need no task=
    hyp = tmp_path / "decode"
    infer_dir(exp, root / "dev", hyp)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="score", overrides=[f"exp_dir={exp}", f"ref_dir={root / 'dev'}",
                                                      f"hyp_dir={hyp}", f"output_dir={tmp_path / 'scores'}"])
    task_of(exp).score(cfg)
    scores = json.loads((tmp_path / "scores" / "scores.json").read_text())
    assert scores["context"] == "whole utterance" and scores["model"]["name"] == "torchaudio_conformer"
    assert (tmp_path / "scores" / "attention_map.png").stat().st_size > 1000
    assert phone_row(exp, scores)["context"] == "whole utterance"


@pytest.mark.parametrize("module", ["speechattn.tasks", "speechattn.tasks.sid_predictor", "speechattn.models.stacking",
                                    "speechattn.models.encoders", "speechattn.models.speaker",
                                    "speechattn.models.frame_classifier", "speechattn.data.trials",
                                    "speechattn.data.crops", "speechattn.data.sid_splits"])
def test_docstring_examples(module: str):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0 and result.attempted > 0
