"""The study registry: one module per phenomenon, found without a central list.

Built-in studies are the modules of this package (names starting with ``_`` are skipped, and so
is every module without a ``@register`` class, e.g. ``base`` or helper modules). Third-party
packages add studies through the entry-point group ``learnscope.studies``: the entry point's
name is the study's name, its value ``"package.module:StudyClass"``::

    [project.entry-points."learnscope.studies"]
    my-study = "my_package.my_study:MyStudy"

Listing is fast because nothing is imported to list: :func:`study_infos` reads each built-in
module's source with :mod:`ast` and collects the ``@register`` classes whose bodies assign
string literals to ``name`` (and ``title``, ``summary``, ``source``). An entry point is not
loaded to be listed either: its title and summary are read the same way from the source of
the module it names (located with ``importlib.util.find_spec``, which imports that module's
parent packages, never the module itself); when that source cannot be read, only its name is
listed. :func:`get_study` imports exactly one module: the one that defines the study.

The names of :mod:`learnscope.studies.base` (``Study``, ``Claim``, ...) are re-exported here
on first use, so that importing the registry stays cheap.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import pkgutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from learnscope.errors import LearnscopeError

if TYPE_CHECKING:
    from learnscope.studies.base import Study

ENTRY_POINT_GROUP = "learnscope.studies"

_REGISTRY: dict[str, type[Study]] = {}


@dataclass(frozen=True)
class StudyInfo:
    """What ``learnscope list`` shows of a study, read without importing it."""

    name: str
    title: str
    summary: str
    source: str
    module: str
    """The module that defines the study (dotted name)."""
    class_name: str
    origin: Literal["builtin", "entry point", "registered"]
    """``registered``: added by a direct :func:`register` call (e.g. in a user's script)."""


def register(cls: type[Study]) -> type[Study]:
    """Class decorator adding a study to the registry under ``cls.name``."""
    known = _REGISTRY.get(cls.name)
    if known is not None and known is not cls:
        raise ValueError(f"study {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def study_infos() -> list[StudyInfo]:
    """Every study: built-in ones (by module name), entry points, then studies registered
    directly by :func:`register` calls outside this package.

    A built-in module whose source cannot be parsed is left out with a warning naming it;
    an entry point whose name is already taken by a built-in study is left out with a warning.
    """
    infos = _builtin_infos()
    taken = {i.name for i in infos}
    for ep in _entry_points():
        if ep.name in taken:
            warnings.warn(f"entry point {ep.name} = {ep.value!r} ignored: a study named "
                          f"{ep.name!r} exists already", stacklevel=2)
            continue
        taken.add(ep.name)
        infos.append(_entry_point_info(ep))
    for name, cls in _REGISTRY.items():
        if name not in taken:
            infos.append(StudyInfo(name, getattr(cls, "title", ""), getattr(cls, "summary", ""),
                                   getattr(cls, "source", ""), cls.__module__, cls.__name__,
                                   "registered"))
    return infos


def study_names() -> list[str]:
    """The names of every study, in the order of :func:`study_infos`."""
    return [i.name for i in study_infos()]


def get_study(name: str) -> Study:
    """The study registered as ``name``, importing only the module that defines it.

    LearnscopeError naming the known studies for an unknown name, and naming the module (or
    entry point) when it fails to load.
    """
    if name in _REGISTRY:
        return _REGISTRY[name]()
    infos = {i.name: i for i in study_infos()}
    info = infos.get(name)
    if info is None:
        known = ", ".join(infos)
        raise LearnscopeError(f"unknown study '{name}'; known studies: {known}")
    if info.origin == "builtin":
        module = _import(info.module, f"study '{name}': module {info.module}")
        cls = getattr(module, info.class_name, None)
        if getattr(cls, "name", None) != name:
            raise LearnscopeError(f"study '{name}': module {info.module} has no class "
                                  f"{info.class_name} named {name!r} once imported")
        return register(cls)()
    return _load_entry_point(name, info)


# -- built-in modules ------------------------------------------------------------------------
def _builtin_infos() -> list[StudyInfo]:
    infos: list[StudyInfo] = []
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module.name.startswith("_"):
            continue
        dotted = f"{__name__}.{module.name}"
        spec = module.module_finder.find_spec(dotted, None)  # type: ignore[call-arg]
        path = _source_path(spec)
        if path is None:
            continue
        try:
            infos += _registered_classes(path.read_text(encoding="utf-8"), dotted, "builtin")
        except (OSError, SyntaxError, ValueError) as e:
            warnings.warn(f"studies module {dotted} could not be read ({path}): "
                          f"{type(e).__name__}: {e}", stacklevel=3)
    return infos


def _source_path(spec: Any) -> Path | None:
    origin = getattr(spec, "origin", None)
    if not origin or not str(origin).endswith(".py"):
        return None
    return Path(origin)


def _registered_classes(source: str, module: str,
                        origin: Literal["builtin", "entry point"],
                        class_name: str | None = None) -> list[StudyInfo]:
    """The studies a module's source declares: ``@register`` classes (or the class named
    ``class_name``) whose ``name`` is a string literal."""
    infos = []
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        if class_name is None and not any(_is_register(d) for d in node.decorator_list):
            continue
        if class_name is not None and node.name != class_name:
            continue
        fields = _literal_fields(node)
        if "name" not in fields:
            raise ValueError(f"class {node.name} does not set name = '<literal string>'")
        infos.append(StudyInfo(fields["name"], fields.get("title", ""),
                               fields.get("summary", ""), fields.get("source", ""), module,
                               node.name, origin))
    return infos


def _is_register(decorator: ast.expr) -> bool:
    return (isinstance(decorator, ast.Name) and decorator.id == "register") or (
        isinstance(decorator, ast.Attribute) and decorator.attr == "register")


def _literal_fields(node: ast.ClassDef) -> dict[str, str]:
    """``name``, ``title``, ``summary``, ``source`` assigned string literals in a class body."""
    out: dict[str, str] = {}
    for stmt in node.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target, value = stmt.targets[0], stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            target, value = stmt.target, stmt.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in ("name", "title", "summary", "source") \
                and isinstance(value, ast.Constant) and isinstance(value.value, str):
            out[target.id] = value.value
    return out


def _import(module: str, who: str) -> Any:
    try:
        return importlib.import_module(module)
    except Exception as e:
        raise LearnscopeError(f"{who} failed to import: {type(e).__name__}: {e}") from e


# -- entry points ----------------------------------------------------------------------------
def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def _entry_point_info(ep: importlib.metadata.EntryPoint) -> StudyInfo:
    module, _, attr = ep.value.partition(":")
    module, attr = module.strip(), attr.strip()
    try:
        path = _source_path(importlib.util.find_spec(module))
        if path is not None:
            found = _registered_classes(path.read_text(encoding="utf-8"), module,
                                        "entry point", class_name=attr)
            if found and found[0].name == ep.name:
                return found[0]
    except Exception:  # noqa: BLE001 - listing never fails on a third-party package
        pass
    return StudyInfo(ep.name, "", f"(entry point {ep.value})", "", module, attr, "entry point")


def _load_entry_point(name: str, info: StudyInfo) -> Study:
    from learnscope.studies.base import Study

    (ep,) = [e for e in _entry_points() if e.name == name]
    who = f"study '{name}': entry point {ep.name} = {ep.value!r}"
    try:
        cls = ep.load()
    except Exception as e:
        raise LearnscopeError(f"{who} failed to load: {type(e).__name__}: {e}") from e
    if not (isinstance(cls, type) and issubclass(cls, Study)):
        raise LearnscopeError(f"{who} is not a learnscope Study class")
    if getattr(cls, "name", None) != name:
        raise LearnscopeError(f"{who} defines a study named {getattr(cls, 'name', None)!r}")
    register(cls)
    return cls()


def __getattr__(attr: str) -> Any:
    """``Study``, ``Claim``, ... of :mod:`learnscope.studies.base`, imported on first use."""
    if attr.startswith("_"):
        raise AttributeError(attr)
    base = importlib.import_module(f"{__name__}.base")
    try:
        return getattr(base, attr)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {attr!r}") from None


__all__ = ["ENTRY_POINT_GROUP", "StudyInfo", "get_study", "register", "study_infos",
           "study_names"]
