"""Shared helpers of the Hydra entry points: where the configs live, logging outside Hydra."""
from __future__ import annotations

import logging
from pathlib import Path

# The Hydra config groups ship inside the package (speechattn/conf/), so an installed wheel finds them from
# any working directory, as the source tree does.
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def setup_logging(level: int = logging.INFO) -> None:
    """Console logging for code running outside a Hydra app (e.g. worker processes); idempotent."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    else:
        root.setLevel(level)
