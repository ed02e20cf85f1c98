"""Helpers for the tests of the corpus preparations: the speechocean762 source, the fixture generators in
``local/corpus_fixtures`` and the ``local/prepare_*.py`` scripts loaded as modules."""
from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOCAL = REPO / "local"
SOURCE = REPO.parent / "shared" / "corpora" / "speechocean762"

if str(LOCAL) not in sys.path:
    sys.path.insert(0, str(LOCAL))

needs_shared = pytest.mark.skipif(
    not (SOURCE / "alignments" / "phones.ctm").is_file(),
    reason=f"speechocean762 with alignments not found at {SOURCE} (../shared): the corpus-layout fixtures are made "
           f"from it")


@functools.lru_cache(maxsize=None)
def source():
    """The aligned speechocean762 utterances, read once per test session."""
    from corpus_fixtures.source import load_source
    return load_source(SOURCE)


def load_script(name: str):
    """``local/<name>.py`` as a module (registered, so that --nj worker processes can find its functions)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, LOCAL / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
