"""Information-plane probe: I(X;T) and I(T;Y) per layer, by binning or a KDE upper bound."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from learnscope.measures.information import information_plane_binning, information_plane_kde
from learnscope.probes.base import LayerProbe, ProbeContext
from learnscope.probes.checks import check_choice, check_int, check_number, check_schedule
from learnscope.probes.schedule import Schedule, log_spaced
from learnscope.seeding import numpy_rng
from learnscope.store.records import Record

__all__ = ["InformationPlaneProbe"]

_ESTIMATORS = ("binning", "kde")


class InformationPlaneProbe(LayerProbe):
    """Per layer T: the information-plane coordinates I(X;T) and I(T;Y), in bits, on the
    scope's probe data (X = the probe inputs, each its own symbol; Y = the integer targets).

    * ``estimator="binning"`` (Shwartz-Ziv & Tishby 2017): every unit is cut into ``bins``
      equal bins on ``value_range`` (or fixed-width bins of ``bin_size``) and each binned row
      is one symbol; I(X;T) is then H(binned T). ``value_range=None`` takes the range from the
      layer's activations at each measurement (recorded in ``meta["range"]``); pass
      ``value_range=(-1, 1)`` for tanh layers to reproduce the original setup.
    * ``estimator="kde"`` (Kolchinsky & Tracey 2017; Saxe et al. 2018): T plus Gaussian noise
      of variance ``noise_variance``; I(X;T) is the pairwise-KL **upper bound**, I(T;Y) a
      difference of two bounds. Both depend on the noise variance. Its cost grows as n^2:
      ``kde_samples=m`` computes it on a fixed random subset of m probe rows (the same rows
      at every measurement; the bound is then at most log2(m) bits).

    The values are estimator artefacts to a large degree (Saxe et al. 2018): compare runs only
    under one fixed estimator, never absolute bits. Wide layers saturate at H(X) = log2(n).

    Records ``i_xt`` and ``i_ty`` per layer, meta ``{"layer", "estimator", "units": "bits",
    "n"}`` plus ``"bins"``, ``"bin_size"``, ``"range"`` (the one actually used), ``"range_source"``
    (binning) or ``"noise_variance"`` (kde, and ``"kde_samples"``: the rows used). The final state is measured when the session closes
    unless the last scheduled step already was.

    Cost: forward (the scope's shared capture pass; binning is O(n width), the KDE bound
    O(n^2 width)).
    Sources: Shwartz-Ziv & Tishby 2017 ("Opening the black box of deep neural networks via
    information"); Saxe et al. 2018 ("On the information bottleneck theory of deep learning");
    Kolchinsky & Tracey 2017 (pairwise-distance mixture entropy bounds).

    Args:
        layers: module names; ``None`` means :func:`~learnscope.probes.base.default_layers`.
        schedule: when to measure.
        estimator: ``"binning"`` or ``"kde"``.
        bins: number of equal bins per unit (binning); ignored when ``bin_size`` is given.
        bin_size: fixed bin width instead of a bin count (binning).
        value_range: ``(lo, hi)`` for binning; values outside are clipped into the end bins.
        noise_variance: variance of the Gaussian noise added to T (kde).
        kde_samples: the KDE bound on at most this many probe rows, a fixed random subset
            (None: all rows).
    """

    name = "information_plane"
    cost = "forward"
    source = "Shwartz-Ziv & Tishby 2017; Saxe et al. 2018; Kolchinsky & Tracey 2017"
    needs_activations = True

    def __init__(self, layers: Sequence[str] | None = None, *, schedule: Schedule | None = None,
                 estimator: str = "binning", bins: int | None = 30,
                 bin_size: float | None = None,
                 value_range: tuple[float, float] | None = None,
                 noise_variance: float = 0.1, kde_samples: int | None = None) -> None:
        self.layer_names = self.check_layer_names(layers)
        self.schedule = check_schedule(schedule, log_spaced(4))
        self.estimator = check_choice(estimator, "estimator", _ESTIMATORS)
        self.bin_size = None if bin_size is None else \
            check_number(bin_size, "bin_size", low=0.0, low_open=True)
        self.bins = None if bin_size is not None and bins is None else \
            check_int(bins, "bins", 1)
        if value_range is not None:
            try:
                lo, hi = (float(v) for v in value_range)
            except (TypeError, ValueError):
                raise ValueError(f"value_range must be (lo, hi), got {value_range!r}") from None
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"value_range must be finite with lo < hi, got {value_range!r}")
            value_range = (lo, hi)
        self.value_range = value_range
        self.noise_variance = check_number(noise_variance, "noise_variance", low=0.0,
                                           low_open=True)
        self.kde_samples = None if kde_samples is None else check_int(kde_samples,
                                                                      "kde_samples", 2)
        self._resolved: list[str] = []

    def params(self) -> dict[str, Any]:
        out = super().params()
        out["value_range"] = None if self.value_range is None else list(self.value_range)
        return out

    def setup(self, model: nn.Module) -> None:
        self._resolved = self.resolve_layers(model)

    def _targets(self, ctx: ProbeContext) -> np.ndarray:
        ctx.check_data("InformationPlaneProbe", targets=True)
        y = ctx.targets
        if isinstance(y, torch.Tensor):
            if y.dtype.is_floating_point or y.dtype.is_complex:
                raise ValueError("InformationPlaneProbe needs integer class labels as targets, "
                                 f"got dtype {y.dtype}")
            y = y.detach().cpu().numpy()
        y = np.asarray(y)
        if y.dtype.kind not in "iub":
            raise ValueError(f"InformationPlaneProbe needs integer class labels as targets, got "
                             f"dtype {y.dtype}")
        if y.ndim not in (1, 2):
            raise ValueError(f"targets must be (n,) labels or (n, k) integer codes, got shape "
                             f"{y.shape}")
        return y

    def _kde_rows(self, n: int) -> np.ndarray:
        """The probe rows the KDE bound uses: all, or a fixed random subset (sorted) of
        ``kde_samples`` of them, the same at every measurement of this probe."""
        if self.kde_samples is None or self.kde_samples >= n:
            return np.arange(n)
        rng = numpy_rng(0, "information-plane-kde-rows", n, self.kde_samples)
        return np.sort(rng.choice(n, size=self.kde_samples, replace=False))

    def measure(self, ctx: ProbeContext) -> list[Record]:
        y = self._targets(ctx)
        n = len(y)
        x_ids = np.arange(n)
        rows = self._kde_rows(n)
        recs: list[Record] = []
        for layer in self._resolved:
            if layer not in ctx.activations:
                raise ValueError(f"InformationPlaneProbe: layer {layer!r} produced no output in "
                                 "the forward pass")
            t = ctx.activations[layer].detach().cpu().to(torch.float64).numpy()
            meta: dict[str, Any] = {"layer": layer, "estimator": self.estimator,
                                    "units": "bits", "n": n}
            if not np.all(np.isfinite(t)):
                meta["note"] = "non-finite activations: information undefined"
                recs += [Record("i_xt", math.nan, meta=meta),
                         Record("i_ty", math.nan, meta=dict(meta))]
                continue
            if self.estimator == "binning":
                bins = None if self.bin_size is not None else self.bins
                p = information_plane_binning(t, x_ids, y, bins=bins, bin_size=self.bin_size,
                                              value_range=self.value_range)
                used = p.params["value_range"]
                meta |= {"bins": p.params["bins"], "bin_size": p.params["bin_size"],
                         "range": None if used is None else [float(v) for v in used],
                         "range_source": p.params["value_range_source"]}
            else:
                p = information_plane_kde(t[rows], y[rows], noise_variance=self.noise_variance)
                meta |= {"noise_variance": self.noise_variance, "bound": p.params["bound"],
                         "kde_samples": len(rows)}
            recs += [Record("i_xt", p.i_xt, meta=meta), Record("i_ty", p.i_ty, meta=dict(meta))]
        return recs
