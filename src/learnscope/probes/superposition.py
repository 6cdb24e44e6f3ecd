"""Superposition probe: how many features a weight matrix represents, and how they share dims."""

from __future__ import annotations

import math

import numpy as np
from torch import nn

from learnscope.measures.superposition import (
    feature_dimensionality,
    feature_norms,
    interference,
    superposition_summary,
)
from learnscope.probes.base import Probe, ProbeContext
from learnscope.probes.checks import check_choice, check_int, check_number, check_schedule
from learnscope.probes.schedule import Schedule, log_spaced
from learnscope.store.records import Record

__all__ = ["SuperpositionProbe"]


class SuperpositionProbe(Probe):
    """Toy-models-of-superposition measures of one weight matrix W (m hidden x n features,
    features as columns): the number of represented features (``||W_i|| > threshold``),
    dimensions per feature ``m / ||W||_F^2``, the mean feature dimensionality
    ``D_i = ||W_i||^2 / sum_j (W_hat_i . W_j)^2`` over the represented features, the largest
    interference ``sum_{j != i} (W_hat_i . W_j)^2`` over all features, and per feature its norm
    and dimensionality (``meta["feature"] = i``).

    Keys: ``n_represented``, ``dims_per_feature``, ``mean_dimensionality``,
    ``max_interference``, ``feature_norm``, ``feature_dimensionality``.

    Cost: cheap (one n x n Gram matrix, no forward pass).
    Sources: Elhage et al. 2022, "Toy models of superposition".

    Args:
        parameter: the weight's name as ``model.get_parameter`` takes it, e.g. ``"W"`` or
            ``"encoder.weight"``.
        schedule: when to measure.
        threshold: a feature counts as represented when its norm exceeds this.
        features_axis: the axis that indexes features: 1 (columns, W is m x n, e.g. an
            ``nn.Linear`` encoder's weight) or 0 (rows, e.g. a decoder's weight).
    """

    name = "superposition"
    cost = "cheap"
    source = "Elhage et al. 2022"

    def __init__(self, parameter: str, *, schedule: Schedule | None = None,
                 threshold: float = 0.5, features_axis: int = 1) -> None:
        self.schedule = check_schedule(schedule, log_spaced(3))
        if not isinstance(parameter, str) or not parameter:
            raise ValueError(f"parameter must be a parameter name, got {parameter!r}")
        self.parameter = parameter
        self.threshold = check_number(threshold, "threshold", low=0.0)
        self.features_axis = check_choice(check_int(features_axis, "features_axis", 0),
                                          "features_axis", (0, 1))

    def _weight(self, model: nn.Module) -> np.ndarray:
        try:
            p = model.get_parameter(self.parameter)
        except AttributeError as exc:
            known = ", ".join(n for n, _ in model.named_parameters())
            raise ValueError(f"model has no parameter named {self.parameter!r}; known: "
                             f"{known}") from exc
        if p.ndim != 2:
            raise ValueError(f"parameter {self.parameter!r} must be a 2-D weight matrix, got "
                             f"shape {tuple(p.shape)}")
        w = p.detach().cpu().double().numpy()
        return w if self.features_axis == 1 else w.T

    def setup(self, model: nn.Module) -> None:
        self._weight(model)

    def measure(self, ctx: ProbeContext) -> list[Record]:
        w = self._weight(ctx.model)
        meta = {"parameter": self.parameter, "threshold": self.threshold,
                "features_axis": self.features_axis}
        if np.any(w != 0):
            s = superposition_summary(w, self.threshold)
            n_rep, dims = s.n_represented, s.dims_per_feature
            norms, dim, inter = s.norms, s.dimensionality, s.interference
            dims_meta = meta
        else:  # all-zero W: nothing represented, dims per feature undefined
            norms, dim, inter = feature_norms(w), feature_dimensionality(w), interference(w)
            n_rep, dims = 0, math.nan
            dims_meta = meta | {"note": "undefined for an all-zero W"}
        rep = norms > self.threshold
        recs = [Record("n_represented", float(n_rep), meta=meta),
                Record("dims_per_feature", dims, meta=dims_meta)]
        if rep.any():
            recs.append(Record("mean_dimensionality", float(dim[rep].mean()),
                               meta=meta | {"over": "represented features"}))
        else:
            recs.append(Record("mean_dimensionality", math.nan,
                               meta=meta | {"over": "represented features",
                                            "note": "no feature is represented"}))
        recs.append(Record("max_interference", float(inter.max()),
                           meta=meta | {"over": "all features"}))
        for i in range(len(norms)):
            recs.append(Record("feature_norm", float(norms[i]), meta=meta | {"feature": i}))
            recs.append(Record("feature_dimensionality", float(dim[i]),
                               meta=meta | {"feature": i}))
        return recs
