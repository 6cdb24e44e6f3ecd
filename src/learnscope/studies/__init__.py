"""The study registry: one module per phenomenon (see PHENOMENA.md)."""

from __future__ import annotations

import importlib

from learnscope.errors import LearnscopeError
from learnscope.studies.base import Analysis, Claim, Study, Table, TrialOutput, verdict

_REGISTRY: dict[str, type[Study]] = {}


def register(cls: type[Study]) -> type[Study]:
    """Class decorator adding a study to the registry under ``cls.name``."""
    if cls.name in _REGISTRY:
        raise ValueError(f"study {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


# One module per phenomenon; importing a module registers its study.
_BUILTIN = ["double_descent", "random_labels"]


def _load_builtin() -> None:
    for module in _BUILTIN:
        importlib.import_module(f"learnscope.studies.{module}")


def study_names() -> list[str]:
    _load_builtin()
    return list(_REGISTRY)


def get_study(name: str) -> Study:
    """The study registered as ``name``; LearnscopeError naming the known ones otherwise."""
    _load_builtin()
    try:
        return _REGISTRY[name]()
    except KeyError:
        known = ", ".join(_REGISTRY)
        raise LearnscopeError(f"unknown study '{name}'; known studies: {known}") from None


__all__ = ["Analysis", "Claim", "Study", "Table", "TrialOutput", "get_study", "register",
           "study_names", "verdict"]
