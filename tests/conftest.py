"""Shared test setup: tests import helpers from this folder (e.g. phone_data)."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
torch.set_num_threads(1)


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "slow: takes more than 60 s on the 2-core machine (deselect with -m 'not slow')")
