"""Double descent (Belkin et al. 2019, "Reconciling modern machine-learning practice and the
classical bias-variance trade-off"; Nakkiran et al. 2019, "Deep double descent").

The test error of a minimum-norm fit peaks where the model just interpolates its training set
(number of parameters ~ number of points for squared loss) and descends again beyond it: the
classical U-curve is only the first half of the picture. Shown here

- model-wise, with random ReLU features on a noisy linear teacher (n = 100 points, d = 20),
  with and without target noise (noise sharpens the peak), and with a ridge control that
  removes the peak;
- sample-wise at a fixed number of features: near the threshold more data hurts;
- with Legendre polynomial features on a 1-D sine (degree + 1 = number of points);
- epoch-wise, with gradient descent on a linear model whose features come at two scales: test
  error over training time falls, rises once the fast features overfit, and falls again when
  the slow features are learned (Heckel & Yilmaz 2021, "Early stopping in deep networks: double
  descent and how to eliminate it"; Pezeshki et al. 2022, "Multi-scale feature learning
  dynamics"). With one time scale (each block its own step size) the curve is a single U;
- with MLPs 40-h-h-10 on MNIST-1D over many widths, with 15% flipped labels and without,
  trained as stacks of models. The MNIST-1D authors' own peak is only 5-9 points above its
  neighbours, so these claims are reported but not gating.

Fits are minimum-norm least squares (the pseudo-inverse), the solution gradient descent from zero
converges to; any cut-off or ridge smooths the peak away. Every sweep is laid out relative to its
interpolation threshold (p / n, n / p), so changing a size moves the grid with it. Curves are
medians over seeds with quartile bands.

Claims, in the phenomenon's own terms: the error peaks at the threshold (within 10%); the peak
stands above its neighbours at half and twice the threshold beyond the spread over seeds (the
lower end of the median's distribution-free confidence interval at the threshold exceeds the
upper ends at the neighbours; with few seeds the interval's coverage drops and is reported);
past the threshold the error descends again; target noise makes the peak stand higher; a ridge
penalty tuned on held-out data removes the peak (Nakkiran et al. 2020, "Optimal regularization
can mitigate double descent"); near the threshold more data hurts, far past it more data helps;
the polynomial's error rises at every step as p approaches n. That the best model lies past the
threshold (Belkin et al.) is reported but not gating: with much noise the best model is a small
one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from learnscope.analysis import Claim, LinePlot, Lines, Marker, Results, Table
from learnscope.analysis.claims import above, below, monotone, peak_at, ratio, stands_out
from learnscope.analysis.curves import Curve
from learnscope.config import StudyConfig, param
from learnscope.data.regression import (
    legendre_features,
    linear_teacher,
    random_relu_features,
    sine_1d,
)
from learnscope.errors import ConfigError
from learnscope.models.regression import min_norm_fit, ridge_path
from learnscope.store.records import Record
from learnscope.studies import register
from learnscope.studies.base import Part, Study, Trial, part
from learnscope.studies.double_descent_epochwise import (
    epochwise_claims,
    epochwise_figures,
    gd_over_time,
)
from learnscope.studies.double_descent_mlp import (
    mlp_claims,
    mlp_figures,
    mlp_notes,
    train_widths,
)


@dataclasses.dataclass(frozen=True)
class DoubleDescentConfig(StudyConfig):
    seeds: int = param(10, "seeds per point; curves are medians over seeds", ge=1)
    n_train: int = param(100, "training points n of the random-features problems", ge=2)
    input_dim: int = param(20, "input dimension d of the linear teacher", ge=1)
    n_test: int = param(2000, "test points (noise-free targets)", ge=10)
    noise_sd: float = param(0.5, "target noise of the 'noisy' curves", ge=0, le=1e3)
    feature_ratios: tuple[float, ...] = param(
        (0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2, 1.5, 2, 4, 10, 30),
        "numbers of random ReLU features as multiples of n (model-wise sweep; p = ratio x n)",
        gt=0, le=1000, min_len=3)
    ridge_lambdas: tuple[float, ...] = param(
        (1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 10.0),
        "ridge penalties tried on a held-out set (n noisy points) for the tuned-ridge control",
        gt=0, min_len=1)
    samplewise_features: int = param(100, "fixed p of the sample-wise sweep", ge=1)
    sample_ratios: tuple[float, ...] = param(
        (0.4, 0.7, 0.9, 1.0, 1.1, 1.5, 3, 10),
        "training-set sizes of the sample-wise sweep as multiples of p", gt=0, le=1000,
        min_len=3)
    poly_points: int = param(20, "training points of the polynomial problem", ge=2)
    poly_noise_sd: float = param(0.1, "target noise of the polynomial problem", ge=0, le=1e3)
    poly_ratios: tuple[float, ...] = param(
        (0.25, 0.5, 0.75, 0.9, 0.95, 1.0, 1.05, 1.1, 1.25, 1.5, 2.5, 5, 15),
        "numbers of Legendre features (degree + 1) as multiples of the number of points",
        gt=0, le=1000, min_len=3)

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

    ew_seeds: int = param(10, "seeds of the epoch-wise curves (0: skip them)", ge=0)
    ew_n_train: int = param(1000, "training points of the epoch-wise problem", ge=2)
    ew_dim_fast: int = param(400, "features of the fast block (variance 1)", ge=1)
    ew_dim_slow: int = param(5, "features of the slow block (variance 1 / ew_scale_ratio)", ge=1)
    ew_scale_ratio: float = param(100.0, "variance ratio fast/slow: the slow block learns this "
                                         "many times more slowly", gt=1)
    ew_noise_sd: float = param(1.0, "label noise of the epoch-wise problem", ge=0)
    ew_lr: float = param(0.01, "gradient-descent step size of the epoch-wise curves", gt=0)
    ew_max_step: int = param(1_000_000, "last gradient-descent step (log-spaced grid)", ge=100)

    def check(self) -> None:
        for name in ("feature_ratios", "sample_ratios", "poly_ratios"):
            ratios = getattr(self, name)
            if min(ratios) >= 1 or max(ratios) <= 1:
                raise ConfigError(f"field '{name}' must span 1, the interpolation threshold "
                                  "(values below and above it)")

    def grid(self, ratios: tuple[float, ...], at: int) -> list[int]:
        """The integer sizes ``round(ratio * at)`` (at least 1, duplicates dropped)."""
        return sorted({max(1, round(r * at)) for r in ratios})


@register
class DoubleDescent(Study[DoubleDescentConfig]):
    name = "double-descent"
    title = "Double descent"
    summary = "Test error peaks where a min-norm model just interpolates, then falls again."
    source = "Belkin et al. 2019 (PNAS); Nakkiran et al. 2019 (Deep double descent)"
    Config = DoubleDescentConfig
    quick = {
        "n_test": 1000,
        "feature_ratios": [0.1, 0.4, 0.5, 0.8, 0.9, 1.0, 1.1, 1.2, 2, 10, 30],
        "sample_ratios": [0.4, 0.5, 0.7, 0.9, 1.0, 1.1, 1.5, 2, 10],
        "poly_ratios": [0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 2, 2.5, 15],
        "mlp_widths": [2, 4, 6, 9, 12, 16, 24, 36, 64, 150], "mlp_epochs": 300, "mlp_seeds": 1,
    }

    tiny = {"seeds": 2, "mlp_widths": [4, 16], "mlp_epochs": 3, "mlp_n_train": 200,
            "mlp_n_test": 200, "ew_seeds": 2, "ew_max_step": 1000}

    def parts(self, cfg: DoubleDescentConfig) -> list[Part]:
        seeds = cfg.seed_list()
        parts = [
            part("rf", fit_random_features, noise_sd=[cfg.noise_sd, 0.0],
                 p=cfg.grid(cfg.feature_ratios, cfg.n_train), seed=seeds),
            part("samplewise", fit_random_features,
                 n=cfg.grid(cfg.sample_ratios, cfg.samplewise_features), seed=seeds),
            part("poly", fit_polynomial, p=cfg.grid(cfg.poly_ratios, cfg.poly_points),
                 seed=seeds),
        ]
        if cfg.ew_seeds:
            parts.append(part("epochwise", gd_over_time, condition=["two-scale", "one-scale"],
                              seed=[cfg.seed + s for s in range(cfg.ew_seeds)]))
        if cfg.mlp_widths:
            parts.append(part("mlp", train_widths, batch_by=["noise", "seed"],
                              noise=sorted({0.0, cfg.mlp_label_noise}), width=cfg.mlp_widths,
                              seed=[cfg.seed + s for s in range(cfg.mlp_seeds)]))
        return parts

    def neighbours(self, cfg: DoubleDescentConfig) -> dict[str, dict[str, Any]]:
        return super().neighbours(cfg) | {
            "three seeds": {"seeds": 3},
            "n x1.5, d x1.5, less noise": {"n_train": round(cfg.n_train * 1.5),
                                           "input_dim": round(cfg.input_dim * 1.5),
                                           "noise_sd": cfg.noise_sd * 0.6},
            "n x0.6, d /2, twice the noise": {"n_train": round(cfg.n_train * 0.6),
                                              "input_dim": max(1, cfg.input_dim // 2),
                                              "noise_sd": cfg.noise_sd * 2},
            "other thresholds": {"samplewise_features": round(cfg.samplewise_features * 0.6),
                                 "poly_points": round(cfg.poly_points * 1.5), "seed": 7},
            "epoch-wise: half the fast features": {"ew_dim_fast": cfg.ew_dim_fast // 2},
            "epoch-wise: more points, more noise": {"ew_n_train": round(cfg.ew_n_train * 1.5),
                                                    "ew_noise_sd": cfg.ew_noise_sd * 1.5},
        }

    def claims(self, cfg: DoubleDescentConfig, results: Results) -> list[Claim]:
        n, p_fixed, n_poly = cfg.n_train, cfg.samplewise_features, cfg.poly_points
        rf = results.where(part="rf", fit="min_norm")
        noisy = rf.where(noise_sd=cfg.noise_sd).curve("test_mse", "p")
        claims = _peak_claims("rf", f"random-features test MSE (noise sd {cfg.noise_sd:g})",
                              noisy, n)
        if cfg.noise_sd > 0:
            clean = rf.where(noise_sd=0.0).curve("test_mse", "p")
            claims += _peak_claims("rf-noiseless", "random-features test MSE without target "
                                   "noise", clean, n)
            claims.append(ratio(
                "noise-sharpens-peak", "target noise makes the interpolation peak stand higher "
                "above its neighbours (p = n/2 and 2n)", "peak_ratio_noisy_over_noiseless",
                _over_neighbours(noisy, n), _over_neighbours(clean, n), above(1.0),
                names=("peak_over_neighbours_noisy", "peak_over_neighbours_noiseless")))
        ridge = results.where(part="rf", fit="ridge_tuned", noise_sd=cfg.noise_sd)
        claims.append(stands_out(
            "tuned-ridge-removes-peak", "with a ridge penalty tuned on held-out data the peak "
            "is gone: the error at p = n does not stand above p = n/2 and 2n beyond the spread "
            "over seeds (optimal regularisation mitigates double descent: Nakkiran et al. 2020)",
            ridge.curve("test_mse", "p"), n, [n / 2, 2 * n], above_them=False))
        sample = results.where(part="samplewise").curve("test_mse", "n")
        claims += _peak_claims("samplewise", f"sample-wise test MSE (p={p_fixed})", sample,
                               p_fixed, descent=False)
        below_threshold = [m for m in sample.x if sample.x[0] < m < p_fixed]
        if below_threshold:
            n_hi = below_threshold[-1]
            claims.append(ratio(
                "more-data-hurts", f"near the threshold more data hurts: MSE(n={n_hi:g}) > "
                f"MSE(n={sample.x[0]:g})", "mse_ratio", sample[n_hi], sample.first, above(1.0)))
        claims.append(ratio(
            "samplewise-more-data-helps-eventually", "far past the threshold more data helps: "
            f"MSE(n={sample.x[-1]:g}) < MSE(n={sample.x[0]:g})", "mse_ratio", sample.last,
            sample.first, below(1.0)))
        poly = results.where(part="poly").curve("test_mse", "p")
        claims.append(peak_at("poly-peak-location", "Legendre-polynomial test MSE (sin 2 pi x, "
                              f"n={n_poly}) peaks at p = n (within 10%)", poly, n_poly,
                              within=0.1))
        claims.append(monotone(
            "poly-error-rises-towards-threshold", "as the number of polynomial features "
            "approaches the number of points (p from n/2 to n), test error rises at every step",
            poly.between(lo=n_poly / 2, hi=n_poly), increasing=True))
        return claims + epochwise_claims(results.where(part="epochwise")) + mlp_claims(
            cfg, results.where(part="mlp"))

    def notes(self, cfg: DoubleDescentConfig, results: Results) -> list[str]:
        return mlp_notes(cfg)

    def memory_bytes(self, cfg: DoubleDescentConfig) -> float:
        """The largest part: random-feature matrices (float64, train + test, a few copies),
        the sample-wise sweep, the MLP stack (float32 weights, gradients, momentum and work
        buffers of every width at once), the epoch-wise design matrix."""
        p_max = max(cfg.feature_ratios) * cfg.n_train
        n_max = max(cfg.sample_ratios) * cfg.samplewise_features
        w, k = max(cfg.mlp_widths), len(cfg.mlp_widths)
        return max(
            8.0 * (cfg.n_train + cfg.n_test) * (cfg.input_dim + 3 * p_max),
            8.0 * (n_max + cfg.n_test) * (cfg.input_dim + 3 * cfg.samplewise_features),
            4.0 * k * (3 * (50 * w + w * w) + cfg.mlp_batch_size * (70 + 4 * w))
            + 4.0 * (cfg.mlp_n_train + cfg.mlp_n_test) * 40,
            24.0 * cfg.ew_n_train * (cfg.ew_dim_fast + cfg.ew_dim_slow))

    def figures(self, cfg: DoubleDescentConfig) -> list[LinePlot]:
        noise = f"noise sd {cfg.noise_sd:g}"
        mse = {"key": "test_mse", "y_title": "test MSE (median, IQR band)", "log_x": True,
               "log_y": True}
        return [
            LinePlot(f"Model-wise double descent: random ReLU features, n={cfg.n_train}, "
                     f"d={cfg.input_dim}", "p", (
                         Lines({"part": "rf", "fit": "min_norm"}, group="noise_sd",
                               label="min-norm, noise sd {noise_sd:g}"),
                         Lines({"part": "rf", "fit": "ridge_tuned", "noise_sd": cfg.noise_sd},
                               label=f"ridge tuned on held-out data, {noise}")),
                     x_title="number of random features p",
                     markers=(Marker(cfg.n_train, f"p = n = {cfg.n_train}"),),
                     caption="The min-norm error explodes where the features just suffice to "
                             "interpolate the training points, then falls; ridge flattens it.",
                     **mse),
            LinePlot(f"Sample-wise double descent: p={cfg.samplewise_features} random ReLU "
                     "features", "n", (Lines({"part": "samplewise"}, label=f"min-norm, {noise}"),),
                     x_title="training points n",
                     markers=(Marker(cfg.samplewise_features, f"n = p = {cfg.samplewise_features}"),),
                     **mse),
            LinePlot(f"Polynomial regression: Legendre features, n={cfg.poly_points} points",
                     "p", (Lines({"part": "poly"}, label="min-norm"),),
                     x_title="number of features (degree + 1)",
                     markers=(Marker(cfg.poly_points, f"p = n = {cfg.poly_points}"),), **mse),
            *epochwise_figures(cfg), *mlp_figures(cfg),
        ]

    def tables(self, cfg: DoubleDescentConfig, results: Results) -> list[Table]:
        rf = results.where(part="rf")

        def col(fit: str, noise: float, key: str = "test_mse") -> Curve:
            return rf.where(fit=fit, noise_sd=noise).curve(key, "p")

        noisy, clean = col("min_norm", cfg.noise_sd), col("min_norm", 0.0)
        ridge, train = col("ridge_tuned", cfg.noise_sd), col("min_norm", cfg.noise_sd, "train_mse")
        lam = col("ridge_tuned", cfg.noise_sd, "lambda")
        return [
            Table("Model-wise (random ReLU features): median test MSE over seeds",
                  ["p", f"noise {cfg.noise_sd:g}", "no noise", "tuned ridge", "its lambda",
                   "train (noisy)"],
                  [[p, noisy[p], clean.at(p), ridge[p], lam[p], train[p]] for p in noisy.x]),
            Table("Sample-wise: median test MSE", ["n", "test MSE"],
                  list(map(list, results.where(part="samplewise").curve("test_mse", "n")))),
            Table("Polynomial: median test MSE", ["p", "test MSE"],
                  list(map(list, results.where(part="poly").curve("test_mse", "p")))),
        ]


def fit_random_features(cfg: DoubleDescentConfig, trial: Trial) -> list[Record]:
    """Min-norm fits of random ReLU features (model-wise also a ridge fit whose penalty is
    tuned on n held-out noisy points); the data depend on the seed only, so every p of a seed
    sees the same problem."""
    n = trial.get("n", cfg.n_train)
    p = trial.get("p", cfg.samplewise_features)
    data = linear_teacher(n, cfg.n_test, cfg.input_dim, trial.get("noise_sd", cfg.noise_sd),
                          seed=trial.seed, n_val=n if trial.part == "rf" else 0)
    f_tr, f_te = random_relu_features(data.x_train, data.x_test, p, seed=trial.seed)
    fits = {"min_norm": min_norm_fit(f_tr, data.y_train)}
    records = []
    if trial.part == "rf":
        _, f_val = random_relu_features(data.x_train, data.x_val, p, seed=trial.seed)
        lams = np.array(cfg.ridge_lambdas)
        path = ridge_path(f_tr, data.y_train, lams)
        best = int(np.argmin(np.mean((path @ f_val.T - data.y_val) ** 2, axis=1)))
        fits["ridge_tuned"] = path[best]
        records.append(Record("lambda", float(lams[best]), probe="fit",
                              meta={"fit": "ridge_tuned"}))
    return records + _mse_records(fits, f_tr, f_te, data.y_train, data.y_test)


def fit_polynomial(cfg: DoubleDescentConfig, trial: Trial) -> list[Record]:
    data = sine_1d(cfg.poly_points, cfg.n_test, cfg.poly_noise_sd, seed=trial.seed)
    f_tr = legendre_features(data.x_train, trial.p)
    f_te = legendre_features(data.x_test, trial.p)
    return _mse_records({"min_norm": min_norm_fit(f_tr, data.y_train)}, f_tr, f_te,
                        data.y_train, data.y_test)


def _mse_records(fits: dict[str, np.ndarray], f_tr: np.ndarray, f_te: np.ndarray,
                 y_tr: np.ndarray, y_te: np.ndarray) -> list[Record]:
    return [Record(key, float(np.mean((f @ coef - y) ** 2)), probe="fit", meta={"fit": fit})
            for fit, coef in fits.items()
            for key, f, y in (("test_mse", f_te, y_te), ("train_mse", f_tr, y_tr))]


def _over_neighbours(curve: Curve, at: float) -> float:
    """The median at ``at`` over the larger median at the grid points nearest ``at/2``, ``2 at``."""
    return curve.at(at) / max(curve.at(at / 2), curve.at(2 * at))


def _peak_claims(prefix: str, what: str, curve: Curve, threshold: int, *,
                 descent: bool = True) -> list[Claim]:
    axis = curve.x_name
    claims = [
        peak_at(f"{prefix}-peak-location", f"{what} peaks at the interpolation threshold "
                f"{axis}={threshold} (within 10%)", curve, threshold, within=0.1),
        stands_out(f"{prefix}-peak-stands-out", f"{what}: the error at {axis} = {threshold} "
                   f"stands above its neighbours {axis} = {threshold}/2 and {2 * threshold} "
                   "beyond the spread over seeds (95% confidence intervals of the medians, or "
                   "the coverage the seeds allow)", curve, threshold,
                   [threshold / 2, 2 * threshold])]
    if descent:
        claims.append(_second_descent(prefix, what, curve, threshold))
        best_over = min(y for x, y in curve if x > threshold)
        best_under = min(y for x, y in curve if x < threshold)
        claims.append(ratio(
            f"{prefix}-best-model-overparameterized", f"{what}: the best model is past the "
            "threshold (not gating: holds only when the noise is small relative to what the "
            "features can fit)", "best_over_over_best_under", best_over, best_under,
            below(1.0), names=("best_past_threshold", "best_below_threshold"), gating=False))
    return claims


def _second_descent(prefix: str, what: str, curve: Curve, threshold: int) -> Claim:
    start = curve.nearest(1.5 * threshold)
    return ratio(f"{prefix}-second-descent", f"{what}: past the threshold the error descends "
                 f"again: the largest model ({curve.x_name}={curve.x[-1]:g}) is below "
                 f"{curve.x_name}={start:g} (1.5 x the threshold)", "mse_largest_over_1_5x",
                 curve.last, curve[start], below(1.0))
