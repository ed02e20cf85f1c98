"""Shared test setup: tests import helpers from this folder (e.g. phone_data)."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
torch.set_num_threads(1)
