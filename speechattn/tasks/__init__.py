"""Tasks: one kind of supervised output each, behind one interface (:class:`speechattn.tasks.base.Task`).

    >>> get_task("phone").name, get_task("sid").labels_file
    ('phone', 'speakers.txt')

``phone``  one phone label per 10 ms frame (:mod:`speechattn.tasks.phone`);
``sid``    one speaker label per utterance, embeddings for verification (:mod:`speechattn.tasks.sid`).

A task in its own module ``speechattn/tasks/<name>.py`` that calls :func:`register_task` is found by name
(``task=<name>``) without being listed anywhere else.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, TypeVar

from speechattn.utils.plugins import import_plugin

if TYPE_CHECKING:
    from speechattn.tasks.base import Task

_TASKS: dict[str, "Task"] = {}
_T = TypeVar("_T", bound=type)


def register_task(name: str) -> Callable[[_T], _T]:
    """Class decorator: one instance of the task class becomes ``get_task(name)``."""
    def register(cls: _T) -> _T:
        if name in _TASKS and type(_TASKS[name]) is not cls:
            raise ValueError(f"task name '{name}' is registered twice")
        cls.name = name
        _TASKS[name] = cls()
        return cls
    return register


def get_task(name: str) -> "Task":
    """The task registered as ``name``; ``speechattn.tasks.<name>`` is imported on first use."""
    name = str(name)
    if name not in _TASKS:
        import_plugin("speechattn.tasks", name)
    if name not in _TASKS:
        raise ValueError(f"unknown task '{name}': expected one of phone, sid or a module speechattn/tasks/{name}.py "
                         f"registering it")
    return _TASKS[name]
