"""Simplicity probe: how much of the network's performance a linear classifier explains."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from learnscope.measures.simplicity import simplicity_measures
from learnscope.probes.base import Probe, ProbeContext
from learnscope.probes.checks import check_schedule
from learnscope.probes.schedule import Schedule, log_spaced
from learnscope.store.records import Record

__all__ = ["SimplicityProbe"]

_LOGREG = "LogisticRegression(max_iter=1000)"


def _labels(x: Any, name: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != 1 or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of labels, got shape {arr.shape}")
    if arr.dtype.kind not in "iub":
        raise ValueError(f"{name} must be integer labels, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _flat(x: Any) -> np.ndarray:
    t = torch.as_tensor(x).detach().cpu()
    return t.reshape(t.shape[0], -1).to(torch.float64).numpy()


class SimplicityProbe(Probe):
    """Nakkiran et al.'s simplicity measures on the scope's data: with F the network's
    predictions (argmax of its outputs), L a linear classifier's predictions and Y the labels,
    the mutual informations I(F;Y), I(L;Y), the conditional I(F;Y|L) (performance of F that
    L does not explain), ``linear_part`` = I(F;Y) - I(F;Y|L) (the paper's mu_Y(F;L), the
    performance of F that L explains), the agreement P(F = L) and F's accuracy. Early in
    training ``linear_part`` is close to I(F;Y): SGD first learns the linear function.

    Keys: ``i_fy``, ``i_fy_given_l``, ``i_ly``, ``linear_part`` (bits, plug-in estimates),
    ``agreement`` and ``accuracy`` (fractions).

    Cost: forward (uses the outputs of the scope's shared pass; the linear classifier is fit
    once in ``setup``).
    Sources: Nakkiran, Kalimeris, Kaplun, Edelman, Yang, Barak & Zhang 2019, "SGD on neural
    networks learns functions of increasing complexity".

    Args:
        linear_predictions: L given directly: the linear classifier's integer predictions
            on the scope's inputs, ``(n,)``.
        schedule: when to measure.
        fit_on: ``(x_train, y_train)``: fit a scikit-learn ``LogisticRegression(max_iter=1000)``
            on these (flattened) and use its predictions on the scope's inputs as L.
            Give exactly one of ``linear_predictions`` and ``fit_on``.
    """

    name = "simplicity"
    cost = "forward"
    source = "Nakkiran et al. 2019"
    needs_activations = False
    needs_outputs = True

    def __init__(self, linear_predictions: Any = None, *, schedule: Schedule | None = None,
                 fit_on: tuple[Any, Any] | None = None) -> None:
        self.schedule = check_schedule(schedule, log_spaced(4))
        if (linear_predictions is None) == (fit_on is None):
            raise ValueError("give exactly one of linear_predictions and fit_on=(x_train, "
                             "y_train)")
        self.linear_predictions = None
        self.fit_on = None
        if linear_predictions is not None:
            self.linear_predictions = torch.as_tensor(
                _labels(linear_predictions, "linear_predictions"))
        else:
            if not isinstance(fit_on, tuple | list) or len(fit_on) != 2:
                raise ValueError("fit_on must be a pair (x_train, y_train)")
            x, y = torch.as_tensor(fit_on[0]), torch.as_tensor(_labels(fit_on[1], "fit_on[1]"))
            if x.ndim < 1 or x.shape[0] != y.shape[0]:
                raise ValueError(f"fit_on: x_train has {x.shape[0] if x.ndim else 0} rows but "
                                 f"y_train has {y.shape[0]} labels")
            if len(torch.unique(y)) < 2:
                raise ValueError("fit_on: y_train needs at least two classes")
            self.fit_on = (x, y)
        self._clf: Any = None
        self._cache: tuple[torch.Tensor, np.ndarray] | None = None

    def params(self) -> dict[str, Any]:
        out = super().params()
        if self.fit_on is not None:
            out["fit_on"] = [f"tensor{tuple(t.shape)}" for t in self.fit_on]
        return out

    def setup(self, model: nn.Module) -> None:
        self._cache = None
        if self.fit_on is not None:
            from sklearn.linear_model import LogisticRegression

            x, y = self.fit_on
            self._clf = LogisticRegression(max_iter=1000).fit(_flat(x), y.numpy())

    def _linear(self, inputs: torch.Tensor | None, n: int) -> np.ndarray:
        if self.linear_predictions is not None:
            pred = self.linear_predictions.numpy()
            if pred.shape[0] != n:
                raise ValueError(f"linear_predictions has {pred.shape[0]} entries but the "
                                 f"scope's data has {n} examples")
            return pred
        if self._cache is not None and self._cache[0] is inputs:
            return self._cache[1]
        if self._clf is None:
            raise ValueError("the linear classifier is not fit: setup(model) was not called")
        assert inputs is not None
        pred = np.asarray(self._clf.predict(_flat(inputs)))
        self._cache = (inputs, pred)
        return pred

    def measure(self, ctx: ProbeContext) -> list[Record]:
        ctx.check_data("SimplicityProbe", targets=True)
        assert ctx.outputs is not None and ctx.targets is not None  # the shared pass ran
        out = ctx.outputs.detach().cpu()
        if out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1):
            f = (out.reshape(-1) > 0).to(torch.int64).numpy()  # one logit: binary
        elif out.ndim == 2:
            f = out.argmax(dim=1).numpy()
        else:
            raise ValueError(f"SimplicityProbe needs outputs (n, classes), got shape "
                             f"{tuple(out.shape)}")
        y = _labels(ctx.targets, "targets")
        ell = self._linear(ctx.inputs, len(f))
        p = simplicity_measures(f, ell, y)
        linear = "given" if self.linear_predictions is not None else _LOGREG
        bits = {"estimator": "plugin", "units": "bits", "linear": linear, "n": len(f)}
        frac = bits | {"units": "fraction"}
        return [Record("agreement", p.agreement, meta=frac),
                Record("i_fy", p.i_fy, meta=bits),
                Record("i_fy_given_l", p.i_fy_given_l, meta=bits),
                Record("i_ly", p.i_ly, meta=bits),
                Record("linear_part", p.linear_part, meta=bits),
                Record("accuracy", float(np.mean(f == y)), meta=frac)]
