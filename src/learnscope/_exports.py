"""Lazy package namespaces without a central list: a package exports the ``__all__`` of each
of its public modules, read from their source (no import), and imports a module on first use
of one of its names.

Used by :mod:`learnscope.measures` and :mod:`learnscope.probes`, so that
``from learnscope.probes import CurvatureProbe`` works and importing one submodule does not
import all the others.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from collections.abc import Callable, Iterable
from typing import Any


def module_exports(package: str, path: Iterable[str]) -> dict[str, str]:
    """name -> module (dotted) for every name in the literal ``__all__`` of the package's
    modules whose names do not start with ``_`` (modules without ``__all__`` export nothing).
    ValueError when two modules export the same name."""
    exports: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(list(path)), key=lambda m: m.name):
        if info.name.startswith("_") or info.ispkg:
            continue
        dotted = f"{package}.{info.name}"
        spec = info.module_finder.find_spec(dotted, None)  # type: ignore[call-arg]
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        with open(spec.origin, encoding="utf-8") as f:
            names = _literal_all(f.read())
        for name in names:
            if name in exports:
                raise ValueError(f"{name!r} is exported by both {exports[name]} and {dotted}")
            exports[name] = dotted
    return exports


_ALL = re.compile(r"^__all__\s*=\s*([\[(].*?[\])])\s*$", re.MULTILINE | re.DOTALL)


def _literal_all(source: str) -> list[str]:
    """The module's literal ``__all__``: read from its assignment alone when it stands at the
    start of a line (parsing whole modules took ~0.1 s per process for two packages),
    else from the parsed module."""
    match = _ALL.search(source)
    if match:
        try:
            value = ast.literal_eval(match.group(1))
        except (ValueError, SyntaxError):
            pass
        else:
            return [str(v) for v in value]
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            value = ast.literal_eval(node.value)
            return [str(v) for v in value]
    return []


def lazy_namespace(package: str, path: Iterable[str], namespace: dict[str, Any]
                   ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module-level ``__getattr__`` and ``__dir__`` for a package (PEP 562); ``__all__`` is
    provided the same way.

    A name exported by the module of the same name (``measures.svcca.svcca``) is bound now:
    importing that module sets the package attribute to the module, which would otherwise
    hide the function. (So ``import learnscope.measures.svcca as m`` gives the function;
    ``from learnscope.measures.svcca import ...`` works as usual.)
    """
    exports = module_exports(package, path)
    for name, module in exports.items():
        if module == f"{package}.{name}":
            namespace[name] = getattr(importlib.import_module(module), name)

    def getattr_(name: str) -> Any:
        if name == "__all__":
            return sorted(exports)
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # later lookups skip __getattr__
        return value

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return getattr_, dir_
