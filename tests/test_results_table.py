"""The context column of the phone results table (speechattn/bin/results_table.py)."""
from __future__ import annotations

from speechattn.bin.results_table import _context


def test_context_column_names_each_models_reach():
    assert _context({"name": "mlp_context", "context": 5}) == "±5"
    truncated = {"name": "truncated_transformer", "frame_stack": 3, "left": 32, "right": 16, "num_layers": 4}
    assert _context(truncated) == "[t-33, t+18] × 4 layers"  # rounded up to whole 3-frame positions
    assert _context({**truncated, "conv_kernel": 15}) == "[t-33, t+18] + conv ±21 × 4 layers"
    assert _context({"name": "transformer", "conv_kernel": 15}) == "whole utterance"
