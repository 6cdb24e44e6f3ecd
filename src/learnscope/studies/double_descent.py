"""Double descent (Belkin et al. 2019; Nakkiran et al. 2019): PHENOMENA.md section 1.

Test error of a min-norm fit peaks where the model just interpolates its training set
(number of parameters ~ number of points for squared loss) and descends again beyond it.
Shown here with random ReLU features on a noisy linear teacher (model-wise, with and without
target noise, and with a ridge control that removes the peak), sample-wise (more data hurts
near the threshold) and with Legendre polynomial features on a 1-D sine.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any

import numpy as np

from learnscope.config import StudyConfig, param
from learnscope.data.regression import (
    legendre_features,
    linear_teacher,
    random_relu_features,
    sine_1d,
)
from learnscope.errors import ConfigError
from learnscope.models.regression import min_norm_fit, ridge_fit
from learnscope.report.figures import Series, line_figure
from learnscope.store.records import Record, TrialResult
from learnscope.studies import register
from learnscope.studies.base import Analysis, Claim, Study, Table, TrialOutput, compare_claim
from learnscope.studies.double_descent_mlp import mlp_analysis, mlp_trials, run_mlp_group


@dataclasses.dataclass(frozen=True)
class DoubleDescentConfig(StudyConfig):
    seeds: int = param(10, "seeds per point; curves are medians over seeds", ge=1)
    n_train: int = param(100, "training points of the random-features problems", ge=2)
    input_dim: int = param(20, "input dimension d of the linear teacher", ge=1)
    n_test: int = param(2000, "test points (noise-free targets)", ge=10)
    noise_sd: float = param(0.5, "target noise of the 'noisy' curves", ge=0)
    features: tuple[int, ...] = param(
        (10, 20, 40, 60, 80, 90, 95, 100, 105, 110, 120, 150, 200, 400, 1000, 3000),
        "numbers p of random ReLU features (model-wise sweep)", ge=1, min_len=3)
    ridge_lambda: float = param(0.1, "ridge strength of the control curve", gt=0)
    samplewise_features: int = param(100, "fixed p of the sample-wise sweep", ge=1)
    sample_sizes: tuple[int, ...] = param(
        (40, 70, 90, 100, 110, 150, 300, 1000),
        "training-set sizes n of the sample-wise sweep", ge=2, min_len=3)
    poly_points: int = param(20, "training points of the polynomial problem", ge=2)
    poly_noise_sd: float = param(0.1, "target noise of the polynomial problem", ge=0)
    poly_features: tuple[int, ...] = param(
        (5, 10, 15, 18, 19, 20, 21, 22, 25, 30, 50, 100, 300),
        "numbers of Legendre features (degree + 1)", ge=1, min_len=3)

    mlp_widths: tuple[int, ...] = param(
        (2, 4, 6, 9, 12, 16, 24, 36, 47, 64, 100, 150, 300),
        "hidden widths h of the MNIST-1D MLPs 40-h-h-10 (empty: skip the MLP sweep)", ge=1)
    mlp_label_noise: float = param(0.15, "label noise of the noisy MLP sweep (flipped to a "
                                         "different class); a clean sweep always runs too",
                                   ge=0, le=1)
    mlp_n_train: int = param(1000, "MNIST-1D training points of the MLP sweep", ge=10)
    mlp_n_test: int = param(2000, "MNIST-1D test points of the MLP sweep", ge=10)
    mlp_epochs: int = param(300, "SGD epochs of each MLP", ge=1)
    mlp_lr: float = param(0.01, "SGD learning rate (momentum 0.9)", gt=0)
    mlp_batch_size: int = param(100, "minibatch size", ge=1)
    mlp_seeds: int = param(2, "seeds of the MLP sweep (it is far costlier than the rest)", ge=1)

    def check(self) -> None:
        if min(self.features) >= self.n_train or max(self.features) <= self.n_train:
            raise ConfigError(f"field 'features' must span n_train={self.n_train} "
                              "(values below and above it)")
        if min(self.poly_features) >= self.poly_points or \
                max(self.poly_features) <= self.poly_points:
            raise ConfigError(f"field 'poly_features' must span poly_points={self.poly_points}")
        if min(self.sample_sizes) >= self.samplewise_features or \
                max(self.sample_sizes) <= self.samplewise_features:
            raise ConfigError("field 'sample_sizes' must span "
                              f"samplewise_features={self.samplewise_features}")


@register
class DoubleDescent(Study):
    name = "double-descent"
    title = "Double descent"
    summary = "Test error peaks where a min-norm model just interpolates, then falls again."
    source = ("Belkin et al. 2019 (PNAS); Nakkiran et al. 2019; seed 000 "
              "(How Deep Neural Networks Learn); PHENOMENA §1")
    Config = DoubleDescentConfig
    quick = {
        "n_test": 1000,
        "features": [10, 40, 80, 90, 100, 110, 120, 200, 1000, 3000],
        "sample_sizes": [40, 70, 90, 100, 110, 150, 1000],
        "poly_features": [5, 10, 15, 18, 20, 22, 25, 50, 300],
        "mlp_widths": [4, 16, 64, 256], "mlp_epochs": 100, "mlp_seeds": 1,
    }

    def trials(self, cfg: DoubleDescentConfig) -> list[dict[str, Any]]:
        specs: list[dict[str, Any]] = []
        for seed in cfg.seed_list():
            for p in cfg.features:
                specs.append({"curve": "rf", "noise_sd": cfg.noise_sd, "seed": seed, "p": p})
                if cfg.noise_sd > 0:
                    specs.append({"curve": "rf", "noise_sd": 0.0, "seed": seed, "p": p})
            for n in cfg.sample_sizes:
                specs.append({"curve": "samplewise", "seed": seed, "n": n})
            for p in cfg.poly_features:
                specs.append({"curve": "poly", "seed": seed, "p": p})
        return specs + mlp_trials(cfg)

    def group_trials(self, cfg: DoubleDescentConfig, specs: list[dict[str, Any]]
                     ) -> list[list[int]]:
        # Closed-form fits take milliseconds: ship one seed's whole sweep to a worker at once.
        # The MLPs of one (noise, seed) train together as batches of models.
        groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        for i, spec in enumerate(specs):
            key = ("mlp", spec["noise"], spec["seed"]) if spec["curve"] == "mlp" else \
                ("fits", spec["seed"])
            groups[key].append(i)
        return list(groups.values())

    def run_group(self, cfg: DoubleDescentConfig, specs: list[dict[str, Any]]
                  ) -> list[TrialOutput]:
        if specs and all(s["curve"] == "mlp" for s in specs) and \
                len({(s["noise"], s["seed"]) for s in specs}) == 1:
            return run_mlp_group(cfg, specs)
        return super().run_group(cfg, specs)

    def run_trial(self, cfg: DoubleDescentConfig, spec: dict[str, Any]) -> TrialOutput:
        curve, seed = spec["curve"], spec["seed"]
        if curve == "mlp":
            return run_mlp_group(cfg, [spec])[0]
        if curve == "poly":
            data = sine_1d(cfg.poly_points, cfg.n_test, cfg.poly_noise_sd, seed=seed)
            f_tr = legendre_features(data.x_train, spec["p"])
            f_te = legendre_features(data.x_test, spec["p"])
            fits = {"min_norm": min_norm_fit(f_tr, data.y_train)}
        else:
            n = spec.get("n", cfg.n_train)
            p = spec.get("p", cfg.samplewise_features)
            noise = spec.get("noise_sd", cfg.noise_sd)
            # The data depend on the seed only, so every p of a seed sees the same problem.
            data = linear_teacher(n, cfg.n_test, cfg.input_dim, noise, seed=seed)
            f_tr, f_te = random_relu_features(data.x_train, data.x_test, p, seed=seed)
            fits = {"min_norm": min_norm_fit(f_tr, data.y_train)}
            if curve == "rf":
                fits["ridge"] = ridge_fit(f_tr, data.y_train, cfg.ridge_lambda)
        records = []
        for fit, coef in fits.items():
            test = float(np.mean((f_te @ coef - data.y_test) ** 2))
            train = float(np.mean((f_tr @ coef - data.y_train) ** 2))
            meta = {"fit": fit} | ({"lambda": cfg.ridge_lambda} if fit == "ridge" else {})
            records += [Record("test_mse", test, probe="fit", meta=meta),
                        Record("train_mse", train, probe="fit", meta=meta)]
        return TrialOutput(records)

    # -- analysis ------------------------------------------------------------------------
    def analyze(self, cfg: DoubleDescentConfig, results: list[TrialResult]) -> Analysis:
        def curve(select: dict[str, Any], x_key: str, fit: str = "min_norm",
                  key: str = "test_mse") -> dict[int, list[float]]:
            by_x: dict[int, list[float]] = defaultdict(list)
            for t in results:
                if all(t.spec.get(k) == v for k, v in select.items()):
                    by_x[t.spec[x_key]] += t.values(key, fit=fit)
            return dict(sorted(by_x.items()))

        rf_noisy = curve({"curve": "rf", "noise_sd": cfg.noise_sd}, "p")
        rf_clean = curve({"curve": "rf", "noise_sd": 0.0}, "p")
        rf_ridge = curve({"curve": "rf", "noise_sd": cfg.noise_sd}, "p", fit="ridge")
        rf_train = curve({"curve": "rf", "noise_sd": cfg.noise_sd}, "p", key="train_mse")
        sample = curve({"curve": "samplewise"}, "n")
        poly = curve({"curve": "poly"}, "p")
        med = {name: _medians(c) for name, c in [("rf_noisy", rf_noisy), ("rf_clean", rf_clean),
                                                 ("rf_ridge", rf_ridge), ("rf_train", rf_train),
                                                 ("samplewise", sample), ("poly", poly)]}
        n, p_fixed, n_poly = cfg.n_train, cfg.samplewise_features, cfg.poly_points
        claims: list[Claim] = []
        claims += _peak_claims("rf", "random-features test MSE (noise sd "
                               f"{cfg.noise_sd:g})", med["rf_noisy"], n, "p")
        if cfg.noise_sd > 0:
            claims += _peak_claims("rf-noiseless", "random-features test MSE without target "
                                   "noise", med["rf_clean"], n, "p", with_descent=True)
            claims.append(compare_claim(
                "noise-sharpens-peak", "target noise makes the interpolation peak higher",
                "peak_ratio_noisy_over_noiseless",
                _peak_ratio(med["rf_noisy"], n) / _peak_ratio(med["rf_clean"], n), ">", 1.0))
        ridge_at_n = _at(med["rf_ridge"], n)
        claims.append(compare_claim(
            "ridge-removes-peak", f"ridge (lambda={cfg.ridge_lambda:g}) removes the peak: "
            "test MSE at p=n is close to the best over p", "ridge_mse_at_n_over_min",
            ridge_at_n / min(med["rf_ridge"].values()), "<=", 1.5))
        claims += _peak_claims("samplewise", f"sample-wise test MSE (p={p_fixed})",
                               med["samplewise"], p_fixed, "n", with_descent=False)
        smallest, largest = min(med["samplewise"]), max(med["samplewise"])
        below = max((m for m in med["samplewise"] if m < p_fixed and m > smallest),
                    default=None)
        if below is not None:
            claims.append(compare_claim(
                "more-data-hurts", f"near the threshold more data hurts: MSE(n={below}) > "
                f"MSE(n={smallest})", "mse_ratio", med["samplewise"][below] /
                med["samplewise"][smallest], ">", 1.0))
        claims.append(compare_claim(
            "samplewise-more-data-helps-eventually",
            f"far past the threshold more data helps: MSE(n={largest}) < MSE(n={smallest})",
            "mse_ratio", med["samplewise"][largest] / med["samplewise"][smallest], "<", 1.0))
        claims += _peak_claims("poly", "Legendre-polynomial test MSE (sin 2 pi x, "
                               f"n={n_poly})", med["poly"], n_poly, "p", with_descent=False)
        p_max = max(med["poly"])
        claims.append(compare_claim(
            "poly-recovers", f"with p={p_max} features the min-norm polynomial fits well again",
            "test_mse", med["poly"][p_max], "<", 1.0))

        figures = [
            line_figure(
                f"Model-wise double descent: random ReLU features, n={n}, d={cfg.input_dim}",
                [_series(f"min-norm, noise sd {cfg.noise_sd:g}", rf_noisy),
                 _series("min-norm, no noise", rf_clean),
                 _series(f"ridge lambda={cfg.ridge_lambda:g}, noise sd {cfg.noise_sd:g}",
                         rf_ridge)],
                x_title="number of random features p", y_title="test MSE (median, IQR band)",
                log_x=True, log_y=True, vlines=[(n, f"interpolation threshold p = n = {n}")]),
            line_figure(
                f"Sample-wise double descent: p={p_fixed} random ReLU features",
                [_series(f"min-norm, noise sd {cfg.noise_sd:g}", sample)],
                x_title="training points n", y_title="test MSE (median, IQR band)",
                log_x=True, log_y=True, vlines=[(p_fixed, f"n = p = {p_fixed}")]),
            line_figure(
                f"Polynomial regression: Legendre features, n={n_poly} points",
                [_series("min-norm", poly)], x_title="number of features (degree + 1)",
                y_title="test MSE (median, IQR band)", log_x=True, log_y=True,
                vlines=[(n_poly, f"p = n = {n_poly}")]),
        ]
        tables = [
            Table("Model-wise (random ReLU features): median test MSE over seeds",
                  ["p", f"noise {cfg.noise_sd:g}", "no noise", "ridge", "train (noisy)"],
                  [[p, med["rf_noisy"][p], med["rf_clean"].get(p, float("nan")),
                    med["rf_ridge"][p], med["rf_train"][p]] for p in med["rf_noisy"]]),
            Table("Sample-wise: median test MSE", ["n", "test MSE"],
                  [[k, v] for k, v in med["samplewise"].items()]),
            Table("Polynomial: median test MSE", ["p", "test MSE"],
                  [[k, v] for k, v in med["poly"].items()]),
        ]
        metrics = {f"median_test_mse_{k}": {str(x): v for x, v in c.items()}
                   for k, c in med.items()}
        notes = [f"Medians over {cfg.seeds} seeds; bands show the 25-75% range. Fits are "
                 "minimum-norm least squares (pseudo-inverse), the solution gradient descent "
                 "from zero converges to; any cut-off or ridge smooths the peak away."]
        m_claims, m_figures, m_tables, m_metrics = mlp_analysis(cfg, results)
        if m_claims:
            notes.append("MLP sweep: 40-h-h-10 on an MNIST-1D subset, SGD (momentum 0.9), "
                         "trained as batches of models; PHENOMENA §1 calls this peak weak "
                         "(5-9 points in the MNIST-1D authors' notebook), so its claims do not "
                         "decide the verdict.")
        return Analysis(claims + m_claims, metrics | m_metrics, figures + m_figures,
                        tables + m_tables, notes)


def _medians(c: dict[int, list[float]]) -> dict[int, float]:
    return {x: float(np.median(v)) for x, v in c.items() if v}


def _at(curve: dict[int, float], x: int) -> float:
    """Value at the grid point nearest to x."""
    nearest = min(curve, key=lambda k: abs(k - x))
    return curve[nearest]


def _peak_ratio(curve: dict[int, float], x: int) -> float:
    xs = sorted(curve)
    return _at(curve, x) / max(curve[xs[0]], curve[xs[-1]])


def _peak_claims(prefix: str, what: str, curve: dict[int, float], threshold: int,
                 axis: str, with_descent: bool = True) -> list[Claim]:
    xs = sorted(curve)
    peak = max(curve, key=lambda k: curve[k])
    claims = [compare_claim(
        f"{prefix}-peak-location", f"{what} peaks at the interpolation threshold "
        f"{axis}={threshold} (within 10%)", "relative_distance_of_peak",
        abs(peak - threshold) / threshold, "<=", 0.1, extra={f"peak_{axis}": peak}),
        compare_claim(
        f"{prefix}-peak-height", f"{what}: the peak is over 10x the error at both ends of the "
        f"sweep ({axis}={xs[0]} and {axis}={xs[-1]})", "peak_over_ends",
        _peak_ratio(curve, threshold), ">", 10.0)]
    if with_descent:
        claims.append(compare_claim(
            f"{prefix}-second-descent", f"{what}: past the threshold the error descends below "
            f"the smallest model's ({axis}={xs[-1]} vs {axis}={xs[0]})", "mse_last_over_first",
            curve[xs[-1]] / curve[xs[0]], "<", 1.0))
    return claims


def _series(name: str, c: dict[int, list[float]], dash: str | None = None) -> Series:
    xs = list(c)
    return Series(name, xs, [float(np.median(c[x])) for x in xs],
                  [float(np.percentile(c[x], 25)) for x in xs],
                  [float(np.percentile(c[x], 75)) for x in xs], dash=dash)
