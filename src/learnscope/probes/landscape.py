"""Loss-landscape probes, run once when the scope closes: the linear path from the
initialisation (or any reference) to the trained model, and random filter-normalised slices
around it."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from learnscope.measures._readonly import OutputSelector, model_device, select_output
from learnscope.measures.landscape import (
    PathResult,
    _check_compatible_states,
    filter_normalized_direction,
    linear_path,
    loss_slice_1d,
    loss_slice_2d,
)
from learnscope.probes.base import Probe, ProbeContext
from learnscope.probes.checks import check_bool, check_callable, check_choice, check_int
from learnscope.probes.schedule import at_end
from learnscope.store.records import Record

__all__ = ["LinearPathProbe", "LossSliceProbe", "classification_eval", "interpolation_between"]

EvalFn = Callable[[nn.Module], Any]


def classification_eval(inputs: Tensor, targets: Tensor,
                        output: OutputSelector = None) -> EvalFn:
    """``eval_fn(model) -> (cross-entropy loss, classification error)`` on a fixed batch.

    The model is called as it is (the landscape measures pass eval-mode copies) under
    ``torch.no_grad``, with the inputs moved to the model's device. ``targets`` must be
    integer class labels and the outputs ``(n, classes)`` logits (``output`` selects them
    from a dict or tuple output, as the Scope's ``output=``).
    """
    if targets is None:
        raise ValueError("the default eval_fn needs targets: Scope(..., data=(inputs, "
                         "targets)) or pass eval_fn")
    if targets.is_floating_point() or targets.is_complex():
        raise ValueError("the default eval_fn needs integer class targets (cross-entropy and "
                         "classification error); pass eval_fn for other tasks")

    def eval_fn(model: nn.Module) -> tuple[float, float]:
        dev = model_device(model)
        with torch.no_grad():
            out = select_output(model(inputs.to(dev)), output)
            y = targets.to(dev)
            if out.dim() != 2:
                raise ValueError(f"the default eval_fn needs (n, classes) logits, got outputs "
                                 f"of shape {tuple(out.shape)}; pass eval_fn")
            loss = F.cross_entropy(out, y)
            error = (out.argmax(dim=1) != y).to(torch.float64).mean()
        return float(loss), float(error)

    return eval_fn


def interpolation_between(model_a: nn.Module, model_b: nn.Module, inputs: Tensor,
                          targets: Tensor, alphas: int | Sequence[float] = 11, *,
                          bn_recompute_loader: Iterable[Any] | None = None) -> PathResult:
    """Loss and error on the straight line between two trained networks (mode connectivity).

    ``θ(α) = (1 - α) θ_a + α θ_b`` for ``alphas`` (a number of evenly spaced points in
    [0, 1], or the points themselves, which must include 0 and 1), evaluated with
    cross-entropy and classification error on ``(inputs, targets)``. Both models are left
    untouched (the measure works on a deep copy in eval mode). Buffers (BatchNorm running
    statistics) are interpolated too, unless ``bn_recompute_loader`` (a re-iterable of input
    batches) is given, in which case they are recomputed at every point.

    Two runs from the same initialisation that differ only in SGD noise are *linearly mode
    connected* when the error barrier is about zero (Frankle et al. 2020)::

        >>> res = interpolation_between(run_a, run_b, x_test, y_test)  # doctest: +SKIP
        >>> res.barrier_error                                          # doctest: +SKIP
        0.004
        >>> list(zip(res.alphas, res.errors))                          # doctest: +SKIP

    Returns :class:`learnscope.measures.landscape.PathResult` (alphas, losses, errors,
    barrier_loss, barrier_error).
    """
    return linear_path(model_a, model_b, classification_eval(inputs, targets),
                       alphas=_path_alphas(alphas), bn_recompute_loader=bn_recompute_loader)


class LinearPathProbe(Probe):
    """Loss and error along the straight line from a reference to the final model.

    When the scope closes, ``θ(α) = (1 - α) θ_ref + α θ_final`` is evaluated at every alpha
    (``path_loss`` and ``path_error``, meta ``{"alpha": α}``), and the barrier
    ``max_α f(α) - (f(0) + f(1)) / 2`` is recorded (``barrier_loss``, ``barrier_error``;
    Frankle et al. 2020). From the initialisation (the default) this is Goodfellow et al.'s
    (2015) one-dimensional check of whether the path from initialisation to solution is
    monotone; from a reference trained from the same start with different SGD noise, it is
    linear mode connectivity (Frankle et al. 2020; see also :func:`interpolation_between`).

    The reference ``"init"`` is the model's full ``state_dict`` (parameters *and* buffers)
    when the scope opens, copied by the probe in ``setup``. An ``nn.Module`` reference is
    read when the scope closes; a ``state_dict`` reference is used as given. Buffers (e.g.
    BatchNorm running statistics) are interpolated like the parameters (``meta["buffers"]
    == "interpolated"``), or, when ``bn_recompute_loader`` is given, recomputed on it at
    every alpha (``"recomputed"``; Jordan et al. 2023), which is what makes the path of a
    BatchNorm network meaningful. The path is evaluated on deep copies in eval mode; the
    model (and the reference) are never modified. At ``α = 0`` and ``α = 1`` (without
    recomputation) the copies are bit-for-bit the reference and the final model.

    Cost: forward (``len(alphas)`` forward passes over the probe data, once, at the end; plus
    one copy of the model's state kept from the start for ``reference="init"``).
    Sources: Frankle, Dziugaite, Roy & Carbin 2020; Goodfellow, Vinyals & Saxe 2015;
    Jordan et al. 2023 (REPAIR: recomputing BatchNorm statistics).

    Args:
        eval_fn: ``eval_fn(model) -> (loss, error)``; default: cross-entropy and
            classification error on the scope's probe data.
        reference: ``"init"``, an ``nn.Module`` of the same architecture, or a state_dict.
        alphas: the number of evenly spaced points in [0, 1] (>= 2), or the points (in
            [0, 1], including 0 and 1).
        bn_recompute_loader: re-iterable of input batches (or (inputs, ...) tuples) on which
            to recompute BatchNorm statistics at every point; None interpolates them.
    """

    name = "linear_path"
    cost = "forward"
    source = "Frankle et al. 2020; Goodfellow et al. 2015; Jordan et al. 2023"

    def __init__(self, eval_fn: EvalFn | None = None, *,
                 reference: str | nn.Module | Mapping[str, Any] = "init",
                 alphas: int | Sequence[float] = 11,
                 bn_recompute_loader: Iterable[Any] | None = None) -> None:
        if eval_fn is not None:
            check_callable(eval_fn, "eval_fn", "eval_fn(model) -> (loss, error)")
        if isinstance(reference, str):
            if reference != "init":
                raise ValueError(f"reference must be 'init', an nn.Module or a state_dict, "
                                 f"got {reference!r}")
        elif not isinstance(reference, nn.Module | Mapping):
            raise ValueError(f"reference must be 'init', an nn.Module or a state_dict, got "
                             f"{type(reference).__name__}")
        if bn_recompute_loader is not None and (
                isinstance(bn_recompute_loader, Tensor) or
                not isinstance(bn_recompute_loader, Iterable) or
                isinstance(bn_recompute_loader, Iterator)):
            raise ValueError("bn_recompute_loader must be a re-iterable of input batches (a "
                             "list or a DataLoader; not a tensor, iterator or generator)")
        grid = _path_alphas(alphas)
        self.eval_fn = eval_fn
        self.reference = reference
        self.alphas = alphas if isinstance(alphas, int) else tuple(float(a) for a in grid)
        self.bn_recompute_loader = bn_recompute_loader
        self.schedule = at_end()
        self._grid = grid
        self._ref_state: dict[str, Any] | None = None

    def params(self) -> dict[str, Any]:
        out = super().params()
        out["reference"] = _describe_reference(self.reference)
        if self.bn_recompute_loader is not None:
            out["bn_recompute_loader"] = type(self.bn_recompute_loader).__name__
        return out

    def setup(self, model: nn.Module) -> None:
        state = model.state_dict()
        if isinstance(self.reference, str):
            self._ref_state = {k: v.detach().clone() if isinstance(v, Tensor) else
                               copy.deepcopy(v) for k, v in state.items()}
            return
        ref = self.reference.state_dict() if isinstance(self.reference, nn.Module) \
            else self.reference
        try:
            _check_compatible_states(ref, state)
        except ValueError as e:
            raise ValueError(f"LinearPathProbe: the reference does not match the model: {e}") \
                from None

    def measure(self, ctx: ProbeContext) -> list[Record]:
        return []

    def uses_output(self) -> bool:
        return self.eval_fn is None

    def finish(self, ctx: ProbeContext) -> list[Record]:
        eval_fn = self.eval_fn or classification_eval(*ctx.labelled_batch("LinearPathProbe"),
                                                      ctx.output_selector)
        if isinstance(self.reference, nn.Module):
            ref = self.reference
        else:
            state = self._ref_state if isinstance(self.reference, str) else self.reference
            if state is None:
                raise RuntimeError("LinearPathProbe.finish before setup")
            ref = copy.deepcopy(ctx.model)
            ref.load_state_dict(state)
        res = linear_path(ref, ctx.model, eval_fn, alphas=self._grid,
                          bn_recompute_loader=self.bn_recompute_loader)
        meta = {"reference": _describe_reference(self.reference),
                "buffers": "interpolated" if self.bn_recompute_loader is None else "recomputed"}
        recs = []
        for a, loss, err in zip(res.alphas, res.losses, res.errors, strict=True):
            m = meta | {"alpha": float(a)}
            recs += [Record("path_loss", float(loss), meta=m),
                     Record("path_error", float(err), meta=m)]
        m = meta | {"n_alphas": len(res.alphas),
                    "definition": "max over the path - mean of the endpoints"}
        recs += [Record("barrier_loss", res.barrier_loss, meta=m),
                 Record("barrier_error", res.barrier_error, meta=m)]
        return recs


class LossSliceProbe(Probe):
    """The loss around the final model along random filter-normalised directions.

    When the scope closes, a Gaussian direction ``d`` is drawn and each filter (row of a
    weight matrix, output filter of a convolution) is rescaled to the norm of the
    corresponding filter of the weights (Li et al. 2018); biases and other 1-D parameters are
    held fixed (``ignore_bias_and_bn``) or moved by their own value. ``eval_fn`` is evaluated
    at ``θ + α d`` for every alpha (``dims=1``: ``slice_loss``/``slice_error`` with meta
    ``{"alpha": α}``) or at ``θ + α d1 + β d2`` on the grid ``alphas × alphas``
    (``dims=2``: meta ``{"alpha": α, "beta": β}``). Filter normalisation removes the scale
    invariance of ReLU networks, so slices of different models are comparable. Buffers are not
    moved. Directions are drawn from ``torch.Generator().manual_seed(seed)`` (``d2`` after
    ``d1`` from the same stream); the global RNG is untouched. The evaluation uses deep
    copies in eval mode; the model is never modified.

    Cost: forward (``len(alphas)`` forward passes over the probe data, or ``len(alphas)²``
    with ``dims=2``, once, at the end).
    Sources: Li, Xu, Taylor, Studer & Goldstein 2018 (filter-normalised loss landscapes).

    Args:
        eval_fn: ``eval_fn(model) -> loss`` or ``-> (loss, error)``; default: cross-entropy
            and classification error on the scope's probe data.
        alphas: the coordinates along each direction (default 21 points in [-1, 1]).
        dims: 1 for a line, 2 for a plane.
        seed: seed of the random direction(s).
        ignore_bias_and_bn: hold parameters with ``dim <= 1`` fixed (Li et al.'s default).
    """

    name = "loss_slice"
    cost = "forward"
    source = "Li et al. 2018"

    def __init__(self, eval_fn: EvalFn | None = None, *,
                 alphas: Sequence[float] | np.ndarray | None = None, dims: int = 1,
                 seed: int = 0, ignore_bias_and_bn: bool = True) -> None:
        if eval_fn is not None:
            check_callable(eval_fn, "eval_fn", "eval_fn(model) -> loss or (loss, error)")
        grid = np.linspace(-1.0, 1.0, 21) if alphas is None else _finite_grid(alphas)
        self.eval_fn = eval_fn
        self.alphas = tuple(float(a) for a in grid)
        self.dims = check_choice(check_int(dims, "dims", 1), "dims", (1, 2))
        self.seed = check_int(seed, "seed", 0)
        self.ignore_bias_and_bn = check_bool(ignore_bias_and_bn, "ignore_bias_and_bn")
        self.schedule = at_end()

    def directions(self, model: nn.Module) -> list[dict[str, Tensor]]:
        """The ``dims`` directions this probe uses for ``model``."""
        gen = torch.Generator().manual_seed(self.seed)
        return [filter_normalized_direction(model, generator=gen,
                                            ignore_bias_and_bn=self.ignore_bias_and_bn)
                for _ in range(self.dims)]

    def measure(self, ctx: ProbeContext) -> list[Record]:
        return []

    def uses_output(self) -> bool:
        return self.eval_fn is None

    def finish(self, ctx: ProbeContext) -> list[Record]:
        eval_fn = self.eval_fn or classification_eval(*ctx.labelled_batch("LossSliceProbe"),
                                                      ctx.output_selector)
        dirs = self.directions(ctx.model)
        grid = np.asarray(self.alphas)
        if self.dims == 1:
            values = loss_slice_1d(ctx.model, eval_fn, dirs[0], grid)
            coords = [{"alpha": a} for a in self.alphas]
        else:
            values = loss_slice_2d(ctx.model, eval_fn, dirs[0], dirs[1], grid, grid)
            coords = [{"alpha": a, "beta": b} for a in self.alphas for b in self.alphas]
        values = values.reshape(len(coords), -1)
        if values.shape[1] > 2:
            raise ValueError("eval_fn must return a loss or a (loss, error) pair")
        meta = {"direction": "filter-normalized gaussian", "seed": self.seed,
                "ignore_bias_and_bn": self.ignore_bias_and_bn, "dims": self.dims}
        recs = []
        for c, row in zip(coords, values, strict=True):
            recs.append(Record("slice_loss", float(row[0]), meta=meta | c))
            if values.shape[1] == 2:
                recs.append(Record("slice_error", float(row[1]), meta=meta | c))
        return recs


def _finite_grid(alphas: Any) -> np.ndarray:
    try:
        grid = np.asarray(alphas, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"alphas must be a sequence of numbers, got {alphas!r}") from None
    if grid.size == 0 or not np.isfinite(grid).all():
        raise ValueError("alphas must be a non-empty sequence of finite numbers")
    return grid


def _path_alphas(alphas: Any) -> np.ndarray:
    """An int n -> n evenly spaced points in [0, 1]; a sequence -> checked points."""
    if isinstance(alphas, int) and not isinstance(alphas, bool):
        if alphas < 2:
            raise ValueError(f"alphas must be >= 2 points, got {alphas}")
        return np.linspace(0.0, 1.0, alphas)
    if isinstance(alphas, bool | float | str):
        raise ValueError(f"alphas must be a number of points or a sequence, got {alphas!r}")
    grid = _finite_grid(alphas)
    if (grid < 0).any() or (grid > 1).any() or not ((grid == 0).any() and (grid == 1).any()):
        raise ValueError("alphas of a linear path must lie in [0, 1] and include 0 and 1")
    return grid


def _describe_reference(reference: Any) -> str:
    if isinstance(reference, str):
        return reference
    if isinstance(reference, nn.Module):
        return f"module:{type(reference).__name__}"
    return "state_dict"

