"""Weight-spectrum probe: ESD, Marchenko-Pastur fit, ranks, tail exponent, distance from init."""

from __future__ import annotations

import numpy as np
from torch import nn

from learnscope.measures.spectra import (
    distance_from_init,
    marchenko_pastur_fit,
    power_law_alpha,
    weight_spectrum,
)
from learnscope.probes.base import Probe, ProbeContext
from learnscope.probes.checks import check_int, check_number, check_schedule
from learnscope.probes.schedule import Schedule, log_spaced
from learnscope.store.records import Record

__all__ = ["WeightSpectrumProbe"]


class WeightSpectrumProbe(Probe):
    """Per weight matrix: eigenvalues of W^T W / N, their Marchenko-Pastur bulk edges and the
    spikes above it, stable and effective rank, the power-law tail exponent alpha, and the
    distance from initialisation.

    Cost: cheap (one SVD per weight matrix, no forward pass).
    Sources: Martin & Mahoney 2021 (heavy-tailed self-regularisation, WeightWatcher);
    Marchenko & Pastur 1967; Roy & Vetterli 2007 (effective rank); Clauset et al. 2009
    (power-law fit, xmin by KS).

    Args:
        schedule: when to measure.
        xmin: power-law ``xmin``: ``"auto"`` (Clauset KS search) or a number.
        min_size: skip matrices with fewer rows or columns than this.
    """

    name = "weight_spectrum"
    cost = "cheap"
    source = "Martin & Mahoney 2021; Marchenko & Pastur 1967; Roy & Vetterli 2007"

    def __init__(self, schedule: Schedule | None = None, xmin: str | float = "auto",
                 min_size: int = 2) -> None:
        self.schedule = check_schedule(schedule, log_spaced(2))
        self.xmin = xmin if xmin == "auto" else check_number(xmin, "xmin", low=0.0,
                                                              low_open=True)
        self.min_size = check_int(min_size, "min_size", 1)

    def measure(self, ctx: ProbeContext) -> list[Record]:
        recs: list[Record] = []
        for name, module in ctx.model.named_modules():
            if not isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d):
                continue
            w = module.weight.detach().reshape(module.weight.shape[0], -1).cpu()
            if min(w.shape) < self.min_size:
                continue
            n_rows, n_cols = w.shape
            meta = {"layer": name}
            try:
                spec = weight_spectrum(w)  # one SVD for the ESD and both ranks
            except ValueError:  # an all-zero matrix: no spectrum to speak of
                recs.append(Record("stable_rank", np.nan, meta=meta | {"note": "zero matrix"}))
                continue
            eigs = spec.eigenvalues
            fit = marchenko_pastur_fit(eigs, n_cols / n_rows)
            recs += [
                Record("lambda_max", float(eigs.max()), meta=meta),
                Record("mp_lambda_plus", fit.lambda_plus, meta=meta),
                Record("mp_spikes", fit.n_spikes, meta=meta),
                Record("stable_rank", spec.stable_rank, meta=meta),
                Record("effective_rank", spec.effective_rank, meta=meta),
            ]
            nonzero = eigs[eigs > 1e-12 * max(float(eigs.max()), 1e-300)]
            if len(nonzero) >= 10:
                try:
                    pl = power_law_alpha(nonzero, xmin=self.xmin)
                    recs.append(Record("alpha", pl.alpha, meta=meta | {
                        "xmin": pl.xmin, "xmin_method": pl.xmin_method, "n_tail": pl.n_tail}))
                except ValueError:
                    recs.append(Record("alpha", np.nan, meta=meta | {"xmin": str(self.xmin)}))
        dist = distance_from_init(dict(ctx.model.named_parameters()), ctx.init_state)
        for key, value in dist.items():
            kind, _, pname = key.partition("/")
            recs.append(Record(f"distance_from_init_{kind}", value,
                               meta={"parameter": pname or "all"}))
        return recs
