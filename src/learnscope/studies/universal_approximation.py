"""Universal approximation with steep sigmoids (Cybenko 1989; Hornik, Stinchcombe and White 1989).

One hidden layer of sigmoids approximates any continuous function on a compact set. The proof a
student can check by hand: sigma(k (x - c)) tends to the unit step at c as the steepness k
grows, so N sigmoids placed at the midpoints (j + 1/2)/N and weighted by the target's increments
f((j+1)/N) - f(j/N) form a staircase that takes the target's value at the nearest knot j/N. For
an L-Lipschitz target its sup error is at most L/(2N): it falls as 1/N, provided the steepness
grows with N. With the steepness held fixed each sigmoid becomes wider than a step once N passes
about k, and the error stops falling (a plateau set by the smoothing of the target, not by the
number of units).

Setup: each seed draws a random trigonometric polynomial of low degree on [0, 1] (amplitudes
N(0, 1)/m, uniform phases) scaled to Lipschitz constant L, so every seed is a different target
with the same bound. For each width N the construction is evaluated with steepness k = c N and
with one fixed steepness; sup and mean absolute error are measured on a uniform grid (exact
float64 arithmetic, no training). For comparison a one-hidden-layer sigmoid net of the same
width (PyTorch's default initialisation) is trained by full-batch L-BFGS on mean squared error
on a uniform grid of the same interval, and its sup and mean error are measured on the same
evaluation grid. L-BFGS rather than SGD or Adam: first-order methods leave these nets far from
their best fit within a budget of seconds.

Claims: (1) with steepness growing with N the least-squares slope of log sup error against log N
is near -1 (between -1.25 and -0.75, median over seeds, every seed inside); (2) the construction
obeys the theorem's bound, sup error at most L/(2N) at every width and seed; (3) with fixed
steepness the error plateaus: over the widths at least a quarter of the steepness the slope is
above -0.5, nearer a plateau's 0 than the -1 of 1/N decay. Not gating: at the smallest width the
trained net's mean error is below the staircase's. The construction is a proof, not an efficient
approximation: a trained net bends its sigmoids to the target and beats the staircase at small
widths, but training has no 1/N guarantee: its error depends on the optimiser finding a good
minimum, and it need not fall with the width (measured: it does not, at these budgets).

Sources: G. Cybenko 1989, "Approximation by superpositions of a sigmoidal function"; K. Hornik,
M. Stinchcombe, H. White 1989, "Multilayer feedforward networks are universal approximators".
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from learnscope.analysis import Claim, LinePlot, Lines, Results, Table
from learnscope.analysis.claims import above, all_of, at_least, at_most, between, claim
from learnscope.config import StudyConfig, param
from learnscope.measures.approximation import (
    loglog_slope,
    random_trig_target,
    sigmoid_staircase,
)
from learnscope.seeding import torch_generator
from learnscope.store.records import Record
from learnscope.studies import register
from learnscope.studies.base import Part, Study, Trial, TrialOutput, part


@dataclasses.dataclass(frozen=True)
class UniversalApproximationConfig(StudyConfig):
    seeds: int = param(3, "seeds (random targets); claims use medians and every seed", ge=2)
    widths: tuple[int, ...] = param((8, 16, 32, 64, 128, 256), "numbers of sigmoid units N",
                                    ge=1, min_len=3)
    degree: int = param(3, "degree of the random trigonometric target", ge=1, le=20)
    lipschitz: float = param(2 * math.pi, "Lipschitz constant L of every target", gt=0)
    steepness_per_unit: float = param(50.0, "steepness k = this x N for the growing case",
                                      gt=0)
    fixed_steepness: float = param(100.0, "steepness of the fixed case", gt=0)
    eval_points: int = param(2000, "uniform grid on [0, 1] where errors are measured", ge=100)
    train: bool = param(True, "also train a sigmoid net of each width for comparison")
    train_points: int = param(256, "training points (uniform grid on [0, 1])", ge=8)
    train_steps: int = param(1000, "L-BFGS iterations of each trained net", ge=1)


@register
class UniversalApproximation(Study[UniversalApproximationConfig]):
    name = "universal-approximation"
    title = "Universal approximation with steep sigmoids"
    summary = ("N steep sigmoids make a staircase with sup error ~1/N when steepness grows with "
               "N, and a plateau when it does not; a trained net of the same width compared.")
    source = ("Cybenko 1989, Approximation by superpositions of a sigmoidal function; Hornik, "
              "Stinchcombe, White 1989, Multilayer feedforward networks are universal "
              "approximators")
    Config = UniversalApproximationConfig
    quick = {"seeds": 3, "widths": [8, 16, 32, 64, 128], "train_steps": 300,
             "train_points": 128}
    tiny = {"seeds": 2, "widths": [4, 8, 16], "train_steps": 10, "eval_points": 300,
            "fixed_steepness": 8.0}

    def memory_bytes(self, cfg: UniversalApproximationConfig) -> float:
        n = max(cfg.widths)
        return 8.0 * cfg.eval_points * n * 4 + 4.0 * cfg.seeds * cfg.train_points * n * 6

    def parts(self, cfg: UniversalApproximationConfig) -> list[Part]:
        seeds = cfg.seed_list()
        parts = [part("construction", construct, seed=seeds, width=list(cfg.widths))]
        if cfg.train:
            parts.append(part("trained", train_net, seed=seeds, width=list(cfg.widths),
                              work=lambda c, t: float(t.width)))
        return parts

    def neighbours(self, cfg: UniversalApproximationConfig) -> dict[str, dict[str, Any]]:
        return super().neighbours(cfg) | {
            "largest width x1.5": {"widths": list(cfg.widths)[:-1] + [int(cfg.widths[-1] * 1.5)]},
            "steeper by half": {"steepness_per_unit": cfg.steepness_per_unit * 1.5,
                                "fixed_steepness": cfg.fixed_steepness * 0.5},
            "rougher target": {"degree": cfg.degree * 2, "lipschitz": cfg.lipschitz * 1.5},
        }

    def claims(self, cfg: UniversalApproximationConfig, results: Results) -> list[Claim]:
        con = results.where(part="construction")
        steep = _per_seed_slopes(con, "sup_err_steep", None)
        fixed_from = cfg.fixed_steepness / 4
        fixed = _per_seed_slopes(con, "sup_err_fixed", fixed_from)
        bound_ratio = float(np.nanmax(con.values("bound_ratio_steep"))) if len(con) else math.nan
        claims = [
            all_of("one-over-n", "with steepness growing with N (k = "
                   f"{cfg.steepness_per_unit:g} N) the sup error falls as 1/N: slope of log sup "
                   "error vs log N between -1.25 and -0.75 (median over seeds and every seed)",
                   {"median_slope": (_median(steep), between(-1.25, -0.75)),
                    "steepest_seed": (min(steep, default=math.nan), at_least(-1.25)),
                    "flattest_seed": (max(steep, default=math.nan), at_most(-0.75))}),
            claim("within-bound", "the construction obeys the theorem's bound: sup error at "
                  "most L/(2N) at every width and seed (largest ratio shown)",
                  "max_err_over_bound", bound_ratio, at_most(1.0)),
            all_of("plateau-fixed-k", f"with fixed steepness k = {cfg.fixed_steepness:g} the "
                   f"error stops falling: slope over widths N >= k/4 = {fixed_from:g} above "
                   "-0.5 (median and every seed): nearer a plateau's 0 than the -1 of 1/N decay",
                   {"median_slope": (_median(fixed), above(-0.5)),
                    "steepest_seed": (min(fixed, default=math.nan), above(-0.5))}),
        ]
        trained = results.where(part="trained")
        if len(trained):
            n_small = min(cfg.widths)
            ratio = (trained.where(width=n_small).median("mean_err")
                     / con.where(width=n_small).median("mean_err_steep"))
            claims.append(claim(
                "trained-beats-staircase-small", f"at the smallest width N = {n_small} the "
                "trained net's mean error is below the staircase's (training finds a smooth "
                "fit; not gating: depends on the optimiser's budget)",
                "trained_over_staircase", ratio, at_most(1.0), gating=False))
        return claims

    def figures(self, cfg: UniversalApproximationConfig) -> list[LinePlot]:
        con = {"part": "construction"}
        return [
            LinePlot("Sup error of the sigmoid staircase vs number of units (median, IQR)",
                     "width", (Lines(con, key="sup_err_steep",
                                     label=f"k = {cfg.steepness_per_unit:g} N"),
                               Lines(con, key="sup_err_fixed",
                                     label=f"k = {cfg.fixed_steepness:g} fixed"),
                               Lines(con, key="bound", label="bound L/(2N)"),
                               Lines({"part": "trained"}, key="sup_err", label="trained net")),
                     key="sup_err_steep", x_title="units N", y_title="sup |f - f_N|",
                     log_x=True, log_y=True,
                     caption="On log axes a 1/N error is a line of slope -1 under the bound; "
                             "the fixed-steepness curve flattens once N passes about k."),
            LinePlot("Mean absolute error vs number of units (median, IQR)", "width",
                     (Lines(con, key="mean_err_steep",
                            label=f"staircase, k = {cfg.steepness_per_unit:g} N"),
                      Lines(con, key="mean_err_fixed",
                            label=f"staircase, k = {cfg.fixed_steepness:g} fixed"),
                      Lines({"part": "trained"}, key="mean_err", label="trained net")),
                     key="mean_err_steep", x_title="units N", y_title="mean |f - f_N|",
                     log_x=True, log_y=True,
                     caption="The trained net of the same width against the construction: "
                             "lower is a better fit on average over [0, 1]."),
        ]

    def tables(self, cfg: UniversalApproximationConfig, results: Results) -> list[Table]:
        con, trained = results.where(part="construction"), results.where(part="trained")
        rows = []
        for n in con.axis("width"):
            c, t = con.where(width=n), trained.where(width=n)
            rows.append([n, c.median("bound"), c.median("sup_err_steep"),
                         c.median("sup_err_fixed"), c.median("mean_err_steep"),
                         t.median("sup_err") if len(t) else math.nan,
                         t.median("mean_err") if len(t) else math.nan])
        return [Table("Errors by width (medians over seeds)",
                      ["units N", "bound L/(2N)", "sup err, k grows", "sup err, k fixed",
                       "mean err, k grows", "trained sup err", "trained mean err"], rows)]


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else math.nan


def _per_seed_slopes(con: Results, key: str, from_width: float | None) -> list[float]:
    """One log-log slope per seed over the widths (from ``from_width`` on when given)."""
    slopes = []
    for seed in con.axis("seed"):
        sub = con.where(seed=seed)
        widths = np.array(sub.values("width_value"))
        errs = np.array(sub.values(key))
        keep = widths >= (from_width or 0)
        if keep.sum() >= 2:
            slopes.append(loglog_slope(widths[keep], errs[keep]))
    return slopes


def construct(cfg: UniversalApproximationConfig, trial: Trial) -> TrialOutput:
    """The staircase of ``N`` sigmoids for this seed's target, with growing and fixed
    steepness."""
    target = random_trig_target(trial.seed, cfg.degree, cfg.lipschitz)
    n = int(trial.width)
    grid = np.linspace(0.0, 1.0, cfg.eval_points)
    truth = target(grid)
    knots = target(np.arange(n + 1) / n)
    bound = cfg.lipschitz / (2 * n)
    records = [Record("width_value", n, probe="construction"),
               Record("bound", bound, probe="construction")]
    for name, k in (("steep", cfg.steepness_per_unit * n), ("fixed", cfg.fixed_steepness)):
        err = np.abs(sigmoid_staircase(grid, knots, k) - truth)
        records += [Record(f"sup_err_{name}", err.max(), probe="construction"),
                    Record(f"mean_err_{name}", err.mean(), probe="construction"),
                    Record(f"bound_ratio_{name}", err.max() / bound, probe="construction")]
    return TrialOutput(records)


def train_net(cfg: UniversalApproximationConfig, trial: Trial) -> TrialOutput:
    """A one-hidden-layer sigmoid net of ``N`` units fitted to this seed's target by full-batch
    L-BFGS on mean squared error (one model at a time: the line search is per model)."""
    n = int(trial.width)
    target = random_trig_target(trial.seed, cfg.degree, cfg.lipschitz)
    x_train = torch.linspace(0.0, 1.0, cfg.train_points, dtype=torch.float64)
    y_train = torch.from_numpy(target(x_train.numpy()))
    g = torch_generator(trial.seed, "universal-approximation", n)

    def uniform(size: int, scale: float) -> torch.Tensor:
        return ((torch.rand(size, generator=g, dtype=torch.float64) * 2 - 1) * scale)

    # PyTorch's default init: fan-in 1 for the hidden layer, fan-in N for the output.
    params = [uniform(n, 1.0), uniform(n, 1.0), uniform(n, 1 / math.sqrt(n)),
              uniform(1, 1 / math.sqrt(n))]
    for p in params:
        p.requires_grad_()
    w1, b1, w2, b2 = params

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x[:, None] * w1 + b1) @ w2 + b2

    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=cfg.train_steps, history_size=50,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-12,
                            tolerance_change=1e-15)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = ((forward(x_train) - y_train) ** 2).mean()
        loss.backward()
        return loss

    opt.step(closure)  # type: ignore[arg-type]
    grid = np.linspace(0.0, 1.0, cfg.eval_points)
    with torch.no_grad():
        err = np.abs(forward(torch.from_numpy(grid)).numpy() - target(grid))
        train_mse = float(((forward(x_train) - y_train) ** 2).mean())
    finite = bool(np.isfinite(err).all())
    return TrialOutput([Record("width_value", n, probe="trained"),
                        Record("sup_err", err.max(), probe="trained"),
                        Record("mean_err", err.mean(), probe="trained"),
                        Record("train_mse", train_mse, probe="trained")],
                       "finished" if finite else "diverged")
