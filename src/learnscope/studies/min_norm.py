"""Implicit bias of gradient descent on least squares, and the spectrum behind it.

With more parameters than points (d > n) least squares has infinitely many interpolants.
Gradient descent on ||X w - y||^2 / (2 n) chooses one: every gradient X^T (X w - y) / n
lies in the row space of X, so the part of the start w0 in the null space never moves
and the iterates converge to w0 + X^+ (y - X w0) (the projection of w0 onto the set of
interpolants). From zero that is X^+ y, the minimum-norm interpolant (Engl, Hanke & Neubauer
1996 for the Landweber iteration; Zhang et al. 2017, "Understanding deep learning requires
rethinking generalization", section 5; Gunasekar et al. 2018, "Characterizing implicit bias in
terms of optimization geometry"). How fast it gets there is set by the spectrum of
X^T X / n: for i.i.d. unit-variance entries and q = d / n the eigenvalues follow the
Marchenko-Pastur law (Marchenko & Pastur 1967) on [(1 - sqrt q)^2, (1 + sqrt q)^2] (plus
d - n zeros when q > 1). The lower edge touches zero at d = n, so the condition
number of the non-zero spectrum, and with noisy targets the norm of the minimum-norm
interpolant, blow up there (the peak of double descent: Hastie et al. 2022, "Surprises in
high-dimensional ridgeless least squares interpolation").

Setup. A noisy linear teacher y = x . beta + N(0, noise_sd^2), x ~ N(0, I_d),
||beta|| = 1. Part gd: n points, d = gd_ratio x n, explicit full-batch gradient
descent (gd_steps updates, step 1 / lambda_max) from zero and from a random
w0 ~ N(0, I_d / d). Part spectrum: Gaussian X of n and growth x n rows for each
ratio q; eigenvalues of X^T X / n against the law (histogram against density, Kolmogorov
distance, edges). Part condition: the condition number of the non-zero spectrum and the norm
of X^+ y over d / n around 1. Everything is a median over seeds.

Claims. From zero, gradient descent ends at X^+ y (relative distance below 1e-6, while the
run from w0 is far from it); from w0 it ends at w0 + X^+ (y - X w0); the null-space
part of w0 does not move (to rounding); the run from zero has the smaller norm. The
non-zero eigenvalues are closer to the Marchenko-Pastur law than independent draws from it
would typically be (Kolmogorov distance below the 5% critical value 1.358 / sqrt(m)); the
extreme eigenvalues approach the edges as n grows (median relative gap shrinks from n to
growth x n). The condition number and the min-norm solution's norm peak at d = n, and the
condition number stands above d = n/2 and 2n beyond the spread over seeds. That the norm also
stands out beyond the spread is reported but not gating (with n = 30 and little noise the
intervals just touch). That the condition number at
d = n/4 is within a factor 2 of the law's ((1 + sqrt q) / (1 - sqrt q))^2 is reported but
not gating (finite-size edges move it).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from learnscope.analysis import Claim, LinePlot, Lines, Marker, Results, Table
from learnscope.analysis.claims import all_of, at_least, below, between, claim, peak_at, stands_out
from learnscope.config import StudyConfig, param
from learnscope.data.regression import linear_teacher
from learnscope.errors import ConfigError
from learnscope.measures.least_squares import (
    condition_number,
    gd_least_squares,
    ks_distance_to_mp,
    mp_density,
    mp_edges,
    null_space_part,
    projection_solution,
)
from learnscope.models.regression import min_norm_fit
from learnscope.seeding import numpy_rng
from learnscope.store.records import Record
from learnscope.studies import register
from learnscope.studies.base import Part, Study, Trial, part


@dataclasses.dataclass(frozen=True)
class MinNormConfig(StudyConfig):
    seeds: int = param(8, "seeds; every claim is on medians over them", ge=1)
    noise_sd: float = param(0.5, "target noise of the linear teacher", ge=0, le=100)
    n_train: int = param(100, "points n of the gradient-descent and condition parts", ge=4)
    gd_ratio: float = param(2.0, "d / n of the gradient-descent part (over-parameterized)",
                            gt=1, le=20)
    gd_steps: int = param(4000, "full-batch gradient-descent updates (step 1 / lambda_max)",
                          ge=10)
    spectrum_n: int = param(400, "rows n of the smaller spectrum matrices", ge=10)
    spectrum_growth: int = param(4, "the larger spectrum matrices have this many times more "
                                    "rows (same ratio)", ge=2, le=16)
    spectrum_ratios: tuple[float, ...] = param((0.25, 0.5, 2.0), "ratios q = d / n of the "
                                               "spectrum part (not 1: the lower edge is 0 there)",
                                               gt=0, le=20, min_len=1)
    bins: int = param(30, "histogram bins between the edges", ge=5, le=200)
    condition_ratios: tuple[float, ...] = param(
        (0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 4.0),
        "d / n of the condition-number sweep (must contain 1/2, 1 and 2)", gt=0, le=20,
        min_len=3)

    def check(self) -> None:
        for r in (0.5, 1.0, 2.0):
            if r not in self.condition_ratios:
                raise ConfigError(f"field 'condition_ratios' must contain {r:g}")
        if 1.0 in self.spectrum_ratios:
            raise ConfigError("field 'spectrum_ratios' must not contain 1 (lower edge 0)")

    def condition_dims(self) -> list[int]:
        return sorted({max(1, round(r * self.n_train)) for r in self.condition_ratios})


def _checkpoints(steps: int) -> list[int]:
    return sorted({0, steps, *np.unique(np.geomspace(1, steps, 20).round().astype(int)).tolist()})


@register
class MinNorm(Study[MinNormConfig]):
    name = "min-norm"
    title = "Gradient descent finds the minimum-norm solution"
    summary = ("GD on over-parameterized least squares ends at w0 + X^+(y - X w0); the spectrum "
               "of X^T X / n follows Marchenko-Pastur and its condition blows up at d = n.")
    source = "Marchenko & Pastur 1967; Zhang et al. 2017; Hastie et al. 2022"
    Config = MinNormConfig
    quick = {"seeds": 6, "n_train": 60, "gd_steps": 3000, "spectrum_n": 200}
    tiny = {"seeds": 3, "n_train": 20, "gd_steps": 2000, "spectrum_n": 40,
            "condition_ratios": [0.5, 1.0, 2.0], "spectrum_ratios": [0.5]}

    def parts(self, cfg: MinNormConfig) -> list[Part]:
        seeds = cfg.seed_list()
        return [
            part("gd", run_gd, init=["zero", "random"], seed=seeds),
            part("spectrum", run_spectrum, q=list(cfg.spectrum_ratios),
                 rows=[cfg.spectrum_n, cfg.spectrum_n * cfg.spectrum_growth], seed=seeds),
            part("condition", run_condition, d=cfg.condition_dims(), seed=seeds),
        ]

    def neighbours(self, cfg: MinNormConfig) -> dict[str, dict[str, Any]]:
        return super().neighbours(cfg) | {
            "n x1.5, more noise": {"n_train": round(cfg.n_train * 1.5),
                                   "noise_sd": cfg.noise_sd * 2, "seed": cfg.seed + 7},
            "n /2, less noise": {"n_train": max(4, cfg.n_train // 2),
                                 "noise_sd": cfg.noise_sd / 2},
            "wider GD, larger spectra": {"gd_ratio": cfg.gd_ratio * 1.5,
                                         "spectrum_n": round(cfg.spectrum_n * 1.5)},
        }

    def memory_bytes(self, cfg: MinNormConfig) -> float:
        rows = cfg.spectrum_n * cfg.spectrum_growth
        return 8.0 * 4 * max(rows * rows * max(cfg.spectrum_ratios) * 2,
                             cfg.n_train * cfg.n_train * max(cfg.condition_ratios + (cfg.gd_ratio,)))

    def claims(self, cfg: MinNormConfig, results: Results) -> list[Claim]:
        gd = results.where(part="gd")
        zero, rand = gd.where(init="zero"), gd.where(init="random")
        claims = [
            all_of("gd-from-zero-is-min-norm", "from zero, gradient descent ends at the "
                   "minimum-norm interpolant X^+ y (relative distance, median over seeds), while "
                   "the run from a random w0 stays far from it",
                   {"rel_dist_zero_run_to_pinv": (zero.median("rel_dist_to_pinv"), below(1e-6)),
                    "rel_dist_random_run_to_pinv": (rand.median("rel_dist_to_pinv"),
                                                    at_least(0.1))}),
            claim("gd-from-w0-is-projection", "from a random w0, gradient descent ends at "
                  "w0 + X^+ (y - X w0): X^+ y plus the null-space part of w0 (worst seed)",
                  "max_rel_dist_random_run_to_formula",
                  float(np.max(rand.values("rel_dist_to_formula"))), below(1e-6)),
            claim("null-space-part-untouched", "the part of the iterate in the null space of X "
                  "never moves: it equals that of w0 to rounding (worst seed, relative to "
                  "||w0||)", "max_null_space_drift", float(np.max(gd.values("null_drift"))),
                  below(1e-9)),
            claim("zero-start-has-smaller-norm", "the run from zero ends with a smaller norm "
                  "than the run from w0 on every seed (both interpolate; the min-norm one is "
                  "the smallest)", "max_norm_ratio_zero_over_random",
                  float(np.max(zero.values("norm") / rand.values("norm"))), below(1.0)),
        ]
        spec = results.where(part="spectrum")
        small, large = cfg.spectrum_n, cfg.spectrum_n * cfg.spectrum_growth
        ks_checks: dict[str, tuple[float, Any]] = {}
        edge_checks: dict[str, tuple[float, Any]] = {}
        for q in cfg.spectrum_ratios:
            at = spec.where(q=q)
            m = min(large, round(q * large))
            ks_checks[f"ks_q{q:g}_over_critical"] = (
                at.where(rows=large).median("ks") / (1.358 / math.sqrt(m)), below(1.0))
            for edge in ("upper", "lower"):
                key = f"{edge}_edge_gap"
                shrink = at.where(rows=large).median(key) / at.where(rows=small).median(key)
                edge_checks[f"{edge}_gap_shrink_q{q:g}"] = (shrink, below(1.0))
        claims.append(all_of(
            "spectrum-follows-marchenko-pastur", f"the non-zero eigenvalues of X^T X / n "
            f"(n = {large}) follow the Marchenko-Pastur law more closely than that many "
            "independent draws typically would: Kolmogorov distance (median over seeds) below "
            "the 5% critical value 1.358 / sqrt(m)", ks_checks))
        claims.append(all_of(
            "edges-converge", f"the largest and smallest non-zero eigenvalues approach the edges "
            f"(1 +- sqrt q)^2: the median relative gap shrinks from n = {small} to n = {large}",
            edge_checks))
        cond = results.where(part="condition")
        n = cfg.n_train
        kappa = cond.curve("condition", "d")
        norm = cond.curve("solution_norm", "d")
        claims += [
            peak_at("condition-peaks-at-d-equals-n", "the condition number of the non-zero "
                    "spectrum of X^T X / n peaks at d = n (within 10%)", kappa, n),
            stands_out("condition-blows-up", f"the condition number at d = n = {n} stands above "
                       "d = n/2 and 2n beyond the spread over seeds", kappa, n, [n / 2, 2 * n]),
            peak_at("min-norm-norm-peaks-at-d-equals-n", "the norm of the minimum-norm "
                    "interpolant X^+ y of noisy targets peaks at d = n (within 10%)", norm, n),
            stands_out("min-norm-norm-blows-up", "the norm of X^+ y at d = n stands above "
                       "d = n/2 and 2n beyond the spread over seeds (not gating: with few points "
                       "and little noise the intervals touch)", norm, n, [n / 2, 2 * n],
                       gating=False),
        ]
        if 0.25 in cfg.condition_ratios:
            d_q = kappa.nearest(0.25 * n)
            a, b = mp_edges(d_q / n)
            claims.append(claim(
                "condition-matches-law", f"the condition number at d = {d_q:g} is within a "
                "factor 2 of the law's ((1 + sqrt q) / (1 - sqrt q))^2 (not gating: finite-size "
                "edges move it)", "measured_over_law", kappa[d_q] / (b / a),
                between(0.5, 2.0), extra={"law": b / a, "measured": kappa[d_q]}, gating=False))
        return claims

    def figures(self, cfg: MinNormConfig) -> list[LinePlot]:
        large = cfg.spectrum_n * cfg.spectrum_growth
        plots = [
            LinePlot(f"Eigenvalues of X^T X / n against the Marchenko-Pastur law, q = d/n = "
                     f"{q:g}, n = {large}", "lam",
                     (Lines({"part": "spectrum", "q": q, "rows": large}, key="hist_density",
                            label="histogram of the non-zero eigenvalues"),
                      Lines({"part": "spectrum", "q": q, "rows": large}, key="law_density",
                            label="Marchenko-Pastur density", dash="dash", band=False)),
                     x_title="eigenvalue of X^T X / n", y_title="density (per unit eigenvalue)",
                     markers=(Marker(mp_edges(q)[0], "lower edge"),
                              Marker(mp_edges(q)[1], "upper edge")),
                     caption="The histogram (median over seeds) should lie on the dashed law "
                             "and vanish outside the two edges.")
            for q in cfg.spectrum_ratios]
        plots += [
            LinePlot(f"Condition number of X^T X / n around d = n = {cfg.n_train}", "d",
                     (Lines({"part": "condition"}, key="condition", label="measured"),
                      Lines({"part": "condition"}, key="law_condition",
                            label="Marchenko-Pastur ((1 + sqrt q)/(1 - sqrt q))^2", dash="dash",
                            band=False)),
                     x_title="parameters d", y_title="lambda_max / lambda_min (non-zero)",
                     log_y=True, log_x=True, markers=(Marker(cfg.n_train, "d = n"),),
                     caption="The smallest non-zero eigenvalue goes to zero at d = n, so the "
                             "ratio shoots up there and falls on both sides."),
            LinePlot(f"Norm of the minimum-norm interpolant X^+ y (noise sd {cfg.noise_sd:g})",
                     "d", (Lines({"part": "condition"}, key="solution_norm", label="||X^+ y||"),),
                     x_title="parameters d", y_title="norm (teacher norm 1)", log_y=True,
                     log_x=True, markers=(Marker(cfg.n_train, "d = n"),),
                     caption="Fitting noise through near-zero singular values costs a huge norm "
                             "at d = n; more parameters make it cheap again."),
            LinePlot(f"Gradient descent, n = {cfg.n_train}, d = "
                     f"{round(cfg.gd_ratio * cfg.n_train)}: distance to the predicted limit",
                     "step", (Lines({"part": "gd"}, key="rel_dist_to_formula", group="init",
                                    label="start {init}"),),
                     x_title="gradient-descent step", y_title="||w_t - w_limit|| / ||w_limit||",
                     log_x=True, log_y=True,
                     caption="Both runs converge geometrically to w0 + X^+(y - X w0) (from zero: "
                             "X^+ y) down to rounding."),
        ]
        return plots

    def tables(self, cfg: MinNormConfig, results: Results) -> list[Table]:
        gd = results.where(part="gd")
        rows = [[init, gd.where(init=init).median("rel_dist_to_pinv"),
                 gd.where(init=init).median("rel_dist_to_formula"),
                 gd.where(init=init).median("null_drift"), gd.where(init=init).median("norm"),
                 gd.where(init=init).median("train_mse")] for init in ("zero", "random")]
        cond = results.where(part="condition")
        kappa, law = cond.curve("condition", "d"), cond.curve("law_condition", "d")
        norm = cond.curve("solution_norm", "d")
        spec = results.where(part="spectrum")
        spec_rows = [[q, r, spec.where(q=q, rows=r).median("ks"),
                      spec.where(q=q, rows=r).median("upper_edge_gap"),
                      spec.where(q=q, rows=r).median("lower_edge_gap")]
                     for q in cfg.spectrum_ratios
                     for r in (cfg.spectrum_n, cfg.spectrum_n * cfg.spectrum_growth)]
        return [
            Table("Gradient descent end points (medians over seeds)",
                  ["start", "rel. distance to X^+ y", "rel. distance to w0 + X^+(y - X w0)",
                   "null-space drift", "||w||", "train MSE"], rows),
            Table("Spectrum against the Marchenko-Pastur law (medians over seeds)",
                  ["q = d/n", "rows n", "Kolmogorov distance", "upper edge rel. gap",
                   "lower edge rel. gap"], spec_rows),
            Table("Condition number and min-norm norm over d (medians over seeds)",
                  ["d", "condition number", "law", "||X^+ y||"],
                  [[d, kappa[d], law.as_dict().get(d, math.nan), norm[d]] for d in kappa.x]),
        ]


def run_gd(cfg: MinNormConfig, trial: Trial) -> list[Record]:
    """Explicit gradient descent from zero or from a random w0, checked against the formula."""
    n, d = cfg.n_train, round(cfg.gd_ratio * cfg.n_train)
    data = linear_teacher(n, 1, d, cfg.noise_sd, seed=trial.seed)
    x, y = data.x_train, data.y_train
    w0 = (np.zeros(d) if trial.init == "zero"
          else numpy_rng(trial.seed, "min-norm-w0").standard_normal(d) / math.sqrt(d))
    pinv_sol = min_norm_fit(x, y)
    limit = projection_solution(x, y, w0)
    lr = 1.0 / (np.linalg.norm(x, 2) ** 2 / n)
    records = []
    w, done = w0, 0
    for step in _checkpoints(cfg.gd_steps):
        w = gd_least_squares(x, y, w, lr, step - done)
        done = step
        records.append(Record("rel_dist_to_formula",
                              np.linalg.norm(w - limit) / np.linalg.norm(limit), step=step))
    drift = np.linalg.norm(null_space_part(x, w) - null_space_part(x, w0))
    return records + [
        Record("rel_dist_to_pinv", np.linalg.norm(w - pinv_sol) / np.linalg.norm(pinv_sol),
               step=done),
        Record("null_drift", drift / max(np.linalg.norm(w0), 1.0), step=done),
        Record("norm", np.linalg.norm(w), step=done),
        Record("train_mse", np.mean((x @ w - y) ** 2), step=done),
    ]


def run_spectrum(cfg: MinNormConfig, trial: Trial) -> list[Record]:
    """Eigenvalues of X^T X / n for Gaussian X: Kolmogorov distance, edges and histogram."""
    n = int(trial.rows)
    q = float(trial.q)
    d = max(1, round(q * n))
    x = numpy_rng(trial.seed, "min-norm-spectrum", n, d).standard_normal((n, d))
    small = x @ x.T if d > n else x.T @ x
    nonzero = np.linalg.eigvalsh(small / n)  # the min(n, d) non-zero ones (ascending)
    q_eff = d / n
    a, b = mp_edges(q_eff)
    bin_edges = np.linspace(a, b, cfg.bins + 1)
    counts, _ = np.histogram(nonzero, bins=bin_edges)
    width = bin_edges[1] - bin_edges[0]
    centres = (bin_edges[1:] + bin_edges[:-1]) / 2
    # the density of the whole law (zeros included) over the continuous part: mass min(1, 1/q)
    scale = min(1.0, 1.0 / q_eff) / nonzero.size
    law = mp_density(centres, q_eff)
    return [
        Record("ks", ks_distance_to_mp(nonzero, q_eff)),
        Record("upper_edge_gap", abs(nonzero[-1] / b - 1.0)),
        Record("lower_edge_gap", abs(nonzero[0] / a - 1.0)),
    ] + [Record(key, v, meta={"lam": float(c)})
         for c, h, lv in zip(centres, counts, law, strict=True)
         for key, v in (("hist_density", h * scale / width), ("law_density", lv))]


def run_condition(cfg: MinNormConfig, trial: Trial) -> list[Record]:
    """Condition number of X^T X / n and the norm of X^+ y at one d."""
    data = linear_teacher(cfg.n_train, 1, int(trial.d), cfg.noise_sd, seed=trial.seed)
    q = trial.d / cfg.n_train
    a, b = mp_edges(q)
    records = [Record("condition", condition_number(data.x_train)),
               Record("solution_norm", np.linalg.norm(min_norm_fit(data.x_train, data.y_train)))]
    if a > 0:  # the law's lower edge is 0 at d = n: no finite prediction there
        records.append(Record("law_condition", b / a))
    return records


__all__ = ["MinNorm", "MinNormConfig"]
