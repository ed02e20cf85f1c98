"""The context column of the phone results table: described by the encoder at scoring time
(``describe_context``), stored in scores.json and copied by speechattn/bin/results_table.py (no model names)."""
from __future__ import annotations

import json

from speechattn.bin.results_table import main, phone_row
from speechattn.models.encoders import describe_context
from speechattn.models.frame_classifier import build_phone_model

SMALL = {"d_model": 16, "num_heads": 2, "ffn_dim": 32}


def _context(model_cfg: dict) -> str:
    model = build_phone_model(model_cfg, 8, 3)
    return describe_context(model.encoder, model.frame_stack)


def test_context_column_names_each_models_reach():
    assert _context({"name": "mlp_context", "context": 5, "hidden_dim": 8, "num_layers": 1}) == "±5"
    truncated = {"name": "truncated_transformer", "frame_stack": 3, "left": 32, "right": 16, "num_layers": 4, **SMALL}
    assert _context(truncated) == "[t-33, t+18] × 4 layers"  # rounded up to whole 3-frame positions
    assert _context({**truncated, "conv_kernel": 15}) == "[t-33, t+18] + conv ±21 × 4 layers"
    assert _context({"name": "transformer", "conv_kernel": 15, "num_layers": 1, **SMALL}) == "whole utterance"
    assert _context({"name": "blstm", "hidden_dim": 8, "num_layers": 1}) == "whole utterance"
    # An encoder without describe_context: derived from its receptive field (None -> whole utterance).
    assert _context({"name": "torchaudio_conformer", "num_layers": 1, "conv_kernel": 3, **SMALL}) == "whole utterance"


def test_results_table_copies_the_stored_context(tmp_path, capsys):
    scores = {"num_params": 1_320_000, "context": "[t-9, t+9] × 2 layers", "frame_accuracy": 50.0,
              "non_silence_frame_accuracy": 40.0, "per": {"per": 90.0}, "best_valid_accuracy": 49.5, "epochs": 2,
              "model": {"name": "a_new_encoder"}}
    assert phone_row(tmp_path / "x", scores)["context"] == "[t-9, t+9] × 2 layers"
    (tmp_path / "exp" / "x" / "scores").mkdir(parents=True)
    (tmp_path / "exp" / "x" / "scores" / "scores.json").write_text(json.dumps(scores))
    main(["task=phone", f"exp_root={tmp_path / 'exp'}"])
    assert "| x | 1.32 | [t-9, t+9] × 2 layers | 50.00 |" in capsys.readouterr().out
