"""Weight-spectrum probe: ESD, Marchenko-Pastur fit, ranks, tail exponent, distance from init."""

from __future__ import annotations

import numpy as np
from torch import nn

from learnscope.measures.spectra import (
    MIN_RELIABLE_TAIL,
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
    """Per weight matrix: eigenvalues of W^T W / N, the Marchenko-Pastur bulk (noise variance
    fitted to the bulk, edges) and the spikes beyond its Tracy-Widom edge, stable and
    effective rank, the power-law tail exponent alpha with a reliability flag, and the
    distance from initialisation.

    Records per layer (meta ``layer``): ``lambda_max``; ``mp_lambda_plus``; ``mp_sigma2``
    (meta ``sigma2_method``); ``mp_spikes`` (meta ``significance``, ``spike_threshold``,
    ``sigma2_method``): eigenvalues that pure noise exceeds with probability
    ``significance``; ``stable_rank``; ``effective_rank``; ``alpha`` (meta ``xmin``,
    ``xmin_method``, ``n_tail``, ``reliable``, ``reason``): a fit on fewer than
    ``min_reliable_tail`` tail eigenvalues, or with a KS distance beyond the 5% critical
    value, is recorded with ``reliable=False`` and the reason, so a report can say so.

    Cost: cheap (one SVD per weight matrix, no forward pass).
    Sources: Martin & Mahoney 2021 (heavy-tailed self-regularisation, WeightWatcher);
    Marchenko & Pastur 1967; Johnstone 2001 (Tracy-Widom edge); Roy & Vetterli 2007
    (effective rank); Clauset et al. 2009 (power-law fit, xmin by KS).

    Args:
        schedule: when to measure.
        xmin: power-law ``xmin``: ``"auto"`` (Clauset KS search) or a number.
        min_size: skip matrices with fewer rows or columns than this.
        significance: false-positive rate of a spike on pure noise (Tracy-Widom level).
        min_reliable_tail: fewest tail eigenvalues for an alpha recorded as reliable.
    """

    name = "weight_spectrum"
    cost = "cheap"
    source = "Martin & Mahoney 2021; Marchenko & Pastur 1967; Johnstone 2001; Roy & Vetterli 2007"

    def __init__(self, schedule: Schedule | None = None, xmin: str | float = "auto",
                 min_size: int = 2, significance: float = 0.05,
                 min_reliable_tail: int = MIN_RELIABLE_TAIL) -> None:
        self.schedule = check_schedule(schedule, log_spaced(2))
        self.xmin = xmin if xmin == "auto" else check_number(xmin, "xmin", low=0.0,
                                                              low_open=True)
        self.min_size = check_int(min_size, "min_size", 1)
        self.significance = check_number(significance, "significance", low=1e-9, high=0.5)
        self.min_reliable_tail = check_int(min_reliable_tail, "min_reliable_tail", 2)

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
            fit = marchenko_pastur_fit(eigs, n_cols / n_rows, significance=self.significance)
            recs += [
                Record("lambda_max", float(eigs.max()), meta=meta),
                Record("mp_lambda_plus", fit.lambda_plus, meta=meta),
                Record("mp_sigma2", fit.sigma2, meta=meta | {"sigma2_method": fit.sigma2_method}),
                Record("mp_spikes", fit.n_spikes, meta=meta | {
                    "significance": fit.significance, "spike_threshold": fit.spike_threshold,
                    "sigma2_method": fit.sigma2_method}),
                Record("stable_rank", spec.stable_rank, meta=meta),
                Record("effective_rank", spec.effective_rank, meta=meta),
            ]
            nonzero = eigs[eigs > 1e-12 * max(float(eigs.max()), 1e-300)]
            if len(nonzero) >= 10:
                try:
                    pl = power_law_alpha(nonzero, xmin=self.xmin,
                                         min_reliable_tail=self.min_reliable_tail)
                    recs.append(Record("alpha", pl.alpha, meta=meta | {
                        "xmin": pl.xmin, "xmin_method": pl.xmin_method, "n_tail": pl.n_tail,
                        "reliable": pl.reliable, "reason": pl.unreliable_reason}))
                except ValueError as exc:
                    recs.append(Record("alpha", np.nan, meta=meta | {
                        "xmin": str(self.xmin), "reliable": False, "reason": str(exc)}))
        dist = distance_from_init(dict(ctx.model.named_parameters()), ctx.init_state)
        for key, value in dist.items():
            kind, _, pname = key.partition("/")
            recs.append(Record(f"distance_from_init_{kind}", value,
                               meta={"parameter": pname or "all"}))
        return recs
