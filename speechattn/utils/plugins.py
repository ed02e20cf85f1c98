"""Name-registered plugins found by their module: ``<package>.<name>`` registers ``name`` when imported.

The encoder registry (``model.name``) and the task registry (``task``) both look an unknown name up this way,
so a new encoder or task is one new file, listed nowhere else.
"""
from __future__ import annotations

import importlib

__all__ = ["import_plugin"]


def import_plugin(package: str, name: str) -> None:
    """Import ``package.name`` if that module exists (its import registers the plugin); a missing module is
    not an error (the caller reports the unknown name), an import error inside it is."""
    if not name.isidentifier():
        return
    module = f"{package}.{name}"
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
