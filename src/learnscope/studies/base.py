"""The study kit: a study declares its science, the kit does the rest.

A study declares

- its typed config (``Config``: a frozen dataclass of :func:`~learnscope.config.param` fields)
  and the overrides of its ``--quick`` size;
- its trials as a grid (:meth:`Study.parts`): named :class:`Part` s, each a product of named
  axes dispatched to its own run function. With ``batch_by`` the run function receives a *batch*:
  all trials of the part that agree on those axes (e.g. every noise level of one seed, trained as
  one stack of models); otherwise it receives one trial;
- its claims (:meth:`Study.claims`), built from a :class:`~learnscope.analysis.Results` with the
  claim library of :mod:`learnscope.analysis.claims`;
- its figures as plain data (:meth:`Study.figures`), tables, metrics and notes.

The kit forms the trial specs (``{"part": ..., **axis values}``), their batches, runs them
(through any executor), stores a batch's trials in one transaction (so a resumed run equals an
uninterrupted one), aggregates over seeds and draws the figures. Data flow is one way::

    config -> parts -> trial specs -> batches -> run functions (any process) -> store
           -> Results -> claims, figures, tables -> report

``analyze`` sees only what the store holds, so ``learnscope report`` rebuilds a report from the
store alone.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from learnscope.analysis import Analysis, Claim, Results, Table, evaluate
from learnscope.analysis.figures import Graph, Heatmap, LinePlot, Scatter
from learnscope.config import StudyConfig
from learnscope.store.records import Record, TrialResult

__all__ = ["Output", "Part", "Study", "Trial", "TrialOutput", "part"]

Cfg = TypeVar("Cfg", bound=StudyConfig)


@dataclass
class TrialOutput:
    """What a trial produced: its records, its status (``finished`` or ``diverged``) and
    free-form info stored beside it."""

    records: list[Record]
    status: str = "finished"
    info: dict[str, Any] = field(default_factory=dict)


Output = TrialOutput | list[Record] | dict[str, float]
"""A run function may return a TrialOutput, a list of records, or ``{key: value}`` scalars."""


class Trial(Mapping[str, Any]):
    """One point of a part's grid: its spec (``part`` plus one value per axis). Read the axes as
    attributes (``trial.seed``) or items (``trial["seed"]``)."""

    __slots__ = ("_spec",)

    def __init__(self, spec: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_spec", dict(spec))

    def __getitem__(self, name: str) -> Any:
        return self._spec[name]

    def __getattr__(self, name: str) -> Any:
        try:
            return self._spec[name]
        except KeyError:
            raise AttributeError(f"trial has no axis {name!r}; axes: {list(self._spec)}") \
                from None

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._spec)

    def __len__(self) -> int:
        return len(self._spec)

    def __repr__(self) -> str:
        return f"Trial({self._spec})"

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self._spec)


@dataclass(frozen=True)
class Part:
    """A named sub-experiment: the product of ``axes``, run by ``run``.

    Without ``batch_by``, ``run(cfg, trial) -> Output``. With ``batch_by``, trials of this part
    that agree on those axes form one batch and ``run(cfg, trials) -> list[Output]`` (in order).
    """

    name: str
    run: Callable[..., Any]
    axes: dict[str, tuple[Any, ...]]
    batch_by: tuple[str, ...] | None = None
    work: Callable[[Any, Trial], float] | None = None
    """``work(cfg, trial)``: the trial's cost relative to the part's other trials (e.g. epochs
    x parameters), for the progress bar; None: every trial of the part costs the same."""

    def specs(self) -> list[dict[str, Any]]:
        names = list(self.axes)
        return [{"part": self.name, **dict(zip(names, combo, strict=True))}
                for combo in itertools.product(*(self.axes[n] for n in names))]


def part(name: str, run: Callable[..., Any], /, *, batch_by: Sequence[str] | None = None,
         work: Callable[[Any, Trial], float] | None = None,
         **axes: Sequence[Any] | Any) -> Part:
    """Declare a part: ``part("labels", self.train, batch_by=["seed"], noise=[0, 1], seed=[0, 1])``.

    An axis given a single (non-list) value is an axis with that one value. Values are
    de-duplicated keeping their order. ``work(cfg, trial)`` (optional) is a trial's relative
    cost within the part (see :meth:`Study.trial_work`).
    """
    clean: dict[str, tuple[Any, ...]] = {}
    for axis, values in axes.items():
        seq = list(values) if isinstance(values, list | tuple | range) else [values]
        clean[axis] = tuple(dict.fromkeys(_plain(v) for v in seq))
    if batch_by is not None:
        unknown = [a for a in batch_by if a not in clean]
        if unknown:
            raise ValueError(f"part {name!r}: batch_by names unknown axes {unknown}")
    return Part(name, run, clean, tuple(batch_by) if batch_by is not None else None, work)


class Study(Generic[Cfg]):
    """Base class of every study: set the class attributes, declare :meth:`parts` and
    :meth:`claims`; :meth:`figures`, :meth:`tables`, :meth:`metrics` and :meth:`notes` are
    optional. The module docstring of a study is its explanation (phenomenon, setup, sources,
    what the claims mean), shown by ``learnscope show`` and in the report."""

    name: ClassVar[str]
    title: ClassVar[str]
    summary: ClassVar[str]
    source: ClassVar[str]
    """The papers the study reproduces."""
    Config: ClassVar[type[StudyConfig]]
    quick: ClassVar[dict[str, Any]] = {}
    """Overrides that make the ``--quick`` size (under a minute on 2 cores)."""
    tiny: ClassVar[dict[str, Any]] = {}
    """Overrides applied on top of ``quick`` for the test suite's end-to-end smoke run (a few
    seconds: proves the pipeline, its claims mean nothing)."""

    # -- what a study declares --------------------------------------------------------------
    def parts(self, cfg: Cfg) -> list[Part]:
        raise NotImplementedError

    def claims(self, cfg: Cfg, results: Results) -> list[Claim]:
        raise NotImplementedError

    def figures(self, cfg: Cfg) -> list[LinePlot | Heatmap | Scatter | Graph]:
        return []

    def tables(self, cfg: Cfg, results: Results) -> list[Table]:
        return []

    def metrics(self, cfg: Cfg, results: Results) -> dict[str, Any]:
        return {}

    def notes(self, cfg: Cfg, results: Results) -> list[str]:
        return []

    def neighbours(self, cfg: Cfg) -> dict[str, dict[str, Any]]:
        """Neighbouring configurations under which every gating claim must still hold: named
        overrides applied on top of ``cfg`` (the ``--quick`` size in the robustness sweep):
        other seeds, sizes changed by about 50%, another noise level. ``learnscope robustness
        STUDY`` runs them; a claim that holds only where it was written is not a reproduction.
        Studies extend this (``super().neighbours(cfg) | {...}``)."""
        return {"other seeds": {"seed": cfg.seed + 1000}}

    def memory_bytes(self, cfg: Cfg) -> float | None:
        """Bytes the costliest batch of trials of ``cfg`` holds at once, or None when unknown.

        The runner refuses a config whose estimate exceeds the memory this machine has
        available, before it creates a run, so a size that cannot be allocated is one line
        instead of a crash minutes in. Override with the sizes the study allocates (data,
        parameters, gradients and optimizer state of a stack, work buffers); an estimate
        within a factor of two is enough. Unknown (None): an allocation that fails at run time
        still ends as one line and the run is marked failed.
        """
        return None

    def trial_work(self, cfg: Cfg, spec: Mapping[str, Any]) -> float:
        """The relative cost of one trial, so the progress bar fills by work, not by count.

        Only ratios between trials of one part matter: the runner measures each part's time
        per unit of work as trials finish, and shows an ETA only once the measurements support
        one. Default: the part's ``work(cfg, trial)`` where it declares one, else 1.
        """
        p = self._parts(cfg)[spec["part"]]
        if p.work is None:
            return 1.0
        w = float(p.work(cfg, Trial(spec)))
        return w if math.isfinite(w) and w > 0 else 1.0

    @classmethod
    def about(cls) -> str:
        """The study's explanation (its module's docstring), reflowed: one line per paragraph
        and per ``- `` list item, paragraphs separated by blank lines."""
        module = inspect.getmodule(cls)
        text = inspect.cleandoc(module.__doc__ or "") if module else ""
        paragraphs = []
        for para in text.split("\n\n"):
            items: list[str] = []
            for line in para.splitlines():
                if line.lstrip().startswith("- ") or not items:
                    items.append(line.strip())
                else:
                    items[-1] += " " + line.strip()
            paragraphs.append("\n".join(items))
        return "\n\n".join(p for p in paragraphs if p)

    # -- what the kit does with it ----------------------------------------------------------
    def trials(self, cfg: Cfg) -> list[dict[str, Any]]:
        """Every trial spec of the run, in grid order."""
        specs = [s for p in self._parts(cfg).values() for s in p.specs()]
        seen: set[str] = set()
        for s in specs:
            key = repr(sorted(s.items()))
            if key in seen:
                raise ValueError(f"study {self.name}: trial {s} appears twice in the grid")
            seen.add(key)
        return specs

    def group_trials(self, cfg: Cfg, specs: list[dict[str, Any]]) -> list[list[int]]:
        """Batches (indices into ``specs``): trials of a batched part that agree on its
        ``batch_by`` axes; every other trial alone. Depends on the specs only, so every
        executor forms the same batches."""
        parts = self._parts(cfg)
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, spec in enumerate(specs):
            p = parts[spec["part"]]
            key = (p.name, tuple(spec[a] for a in p.batch_by)) if p.batch_by is not None \
                else (p.name, i)
            groups.setdefault(key, []).append(i)
        return list(groups.values())

    def run_group(self, cfg: Cfg, specs: list[dict[str, Any]]) -> list[TrialOutput]:
        """Run one batch (as formed by :meth:`group_trials`) and normalise its outputs."""
        if not specs:
            return []
        p = self._parts(cfg)[specs[0]["part"]]
        trials = [Trial(s) for s in specs]
        if p.batch_by is None:
            outputs = [p.run(cfg, t) for t in trials]
        else:
            outputs = list(p.run(cfg, trials))
            if len(outputs) != len(trials):
                raise RuntimeError(f"part {p.name!r} returned {len(outputs)} outputs for "
                                   f"{len(trials)} trials")
        return [_normalise(o) for o in outputs]

    def analyze(self, cfg: Cfg, trials: list[TrialResult]) -> Analysis:
        """Claims, figures, tables, metrics and notes, computed only from the stored trials."""
        results = Results(trials)
        specs = self.figures(cfg)
        figures = [evaluate(spec, results) for spec in specs]
        # Every swept curve's medians go into result.json too (not training-time curves).
        curves = {f.title: {s.name: dict(zip(s.x, s.y, strict=True)) for s in f.series}
                  for spec, f in zip(specs, figures, strict=True)
                  if isinstance(spec, LinePlot) and spec.x != "step" and not f.empty}
        metrics = ({"curves": curves} if curves else {}) | self.metrics(cfg, results)
        return Analysis(self.claims(cfg, results), metrics, [f for f in figures if not f.empty],
                        self.tables(cfg, results), self.notes(cfg, results))

    def _parts(self, cfg: Cfg) -> dict[str, Part]:
        # The last config's parts are kept: trial_work asks once per trial.
        cached = self.__dict__.get("_parts_of")
        if cached is not None and cached[0] is cfg:
            return cached[1]
        parts = self.parts(cfg)
        names = [p.name for p in parts]
        if len(set(names)) != len(names):
            raise ValueError(f"study {self.name}: duplicate part names {names}")
        by_name = {p.name: p for p in parts}
        self.__dict__["_parts_of"] = (cfg, by_name)
        return by_name


def _normalise(output: Output) -> TrialOutput:
    if isinstance(output, TrialOutput):
        return output
    if isinstance(output, dict):
        return TrialOutput([Record(k, v) for k, v in output.items()])
    return TrialOutput(list(output))


def _plain(v: Any) -> Any:
    """JSON-plain axis values (numpy scalars -> Python numbers)."""
    if hasattr(v, "item") and not isinstance(v, str):
        v = v.item()
    if isinstance(v, float) and v.is_integer() and not math.isinf(v):
        return v  # keep 1.0 a float: it is part of the trial key
    return v
