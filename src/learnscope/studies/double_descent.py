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
converges to; any cut-off or ridge smooths the peak away. Curves are medians over seeds with
quartile bands.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from learnscope.analysis import Claim, LinePlot, Lines, Marker, Results, Table
from learnscope.analysis.claims import above, at_most, below, claim, peak_at, ratio
from learnscope.analysis.curves import Curve
from learnscope.config import StudyConfig, param
from learnscope.data.regression import (
    legendre_features,
    linear_teacher,
    random_relu_features,
    sine_1d,
)
from learnscope.errors import ConfigError
from learnscope.models.regression import min_norm_fit, ridge_fit
from learnscope.store.records import Record
from learnscope.studies import register
from learnscope.studies.base import Part, Study, Trial, part
from learnscope.studies.double_descent_epochwise import (
    epochwise_claims,
    epochwise_figures,
    gd_over_time,
)
from learnscope.studies.double_descent_mlp import mlp_claims, mlp_figures, train_widths


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
        for name, values, at in (("features", self.features, "n_train"),
                                 ("poly_features", self.poly_features, "poly_points"),
                                 ("sample_sizes", self.sample_sizes, "samplewise_features")):
            if min(values) >= getattr(self, at) or max(values) <= getattr(self, at):
                raise ConfigError(f"field '{name}' must span {at}={getattr(self, at)} "
                                  "(values below and above it)")


@register
class DoubleDescent(Study[DoubleDescentConfig]):
    name = "double-descent"
    title = "Double descent"
    summary = "Test error peaks where a min-norm model just interpolates, then falls again."
    source = "Belkin et al. 2019 (PNAS); Nakkiran et al. 2019 (Deep double descent)"
    Config = DoubleDescentConfig
    quick = {
        "n_test": 1000,
        "features": [10, 40, 80, 90, 100, 110, 120, 200, 1000, 3000],
        "sample_sizes": [40, 70, 90, 100, 110, 150, 1000],
        "poly_features": [5, 10, 15, 18, 20, 22, 25, 50, 300],
        "mlp_widths": [4, 16, 64, 256], "mlp_epochs": 100, "mlp_seeds": 1,
    }

    tiny = {"seeds": 2, "mlp_widths": [4, 16], "mlp_epochs": 3, "mlp_n_train": 200,
            "mlp_n_test": 200, "ew_seeds": 2, "ew_max_step": 1000}

    def parts(self, cfg: DoubleDescentConfig) -> list[Part]:
        seeds = cfg.seed_list()
        parts = [
            part("rf", fit_random_features, noise_sd=[cfg.noise_sd, 0.0], p=cfg.features,
                 seed=seeds),
            part("samplewise", fit_random_features, n=cfg.sample_sizes, seed=seeds),
            part("poly", fit_polynomial, p=cfg.poly_features, seed=seeds),
        ]
        if cfg.ew_seeds:
            parts.append(part("epochwise", gd_over_time, condition=["two-scale", "one-scale"],
                              seed=[cfg.seed + s for s in range(cfg.ew_seeds)]))
        if cfg.mlp_widths:
            parts.append(part("mlp", train_widths, batch_by=["noise", "seed"],
                              noise=sorted({0.0, cfg.mlp_label_noise}), width=cfg.mlp_widths,
                              seed=[cfg.seed + s for s in range(cfg.mlp_seeds)]))
        return parts

    def claims(self, cfg: DoubleDescentConfig, results: Results) -> list[Claim]:
        rf = results.where(part="rf", fit="min_norm")
        noisy = rf.where(noise_sd=cfg.noise_sd).curve("test_mse", "p")
        claims = _peak_claims("rf", f"random-features test MSE (noise sd {cfg.noise_sd:g})",
                              noisy, cfg.n_train)
        if cfg.noise_sd > 0:
            clean = rf.where(noise_sd=0.0).curve("test_mse", "p")
            claims += _peak_claims("rf-noiseless", "random-features test MSE without target "
                                   "noise", clean, cfg.n_train)
            claims.append(ratio(
                "noise-sharpens-peak", "target noise makes the interpolation peak higher",
                "peak_ratio_noisy_over_noiseless", _peak_over_ends(noisy, cfg.n_train),
                _peak_over_ends(clean, cfg.n_train), above(1.0),
                names=("peak_over_ends_noisy", "peak_over_ends_noiseless")))
        ridge = results.where(part="rf", fit="ridge", noise_sd=cfg.noise_sd).curve("test_mse", "p")
        claims.append(ratio(
            "ridge-removes-peak", f"ridge (lambda={cfg.ridge_lambda:g}) removes the peak: test "
            "MSE at p=n is close to the best over p", "ridge_mse_at_n_over_min",
            ridge.at(cfg.n_train), min(ridge.y), at_most(1.5), names=("at_n", "min")))
        sample = results.where(part="samplewise").curve("test_mse", "n")
        p_fixed = cfg.samplewise_features
        claims += _peak_claims("samplewise", f"sample-wise test MSE (p={p_fixed})", sample,
                               p_fixed, descent=False)
        below_threshold = [n for n in sample.x if sample.x[0] < n < p_fixed]
        if below_threshold:
            n_hi = below_threshold[-1]
            claims.append(ratio(
                "more-data-hurts", f"near the threshold more data hurts: MSE(n={n_hi}) > "
                f"MSE(n={sample.x[0]})", "mse_ratio", sample[n_hi], sample.first, above(1.0)))
        claims.append(ratio(
            "samplewise-more-data-helps-eventually", f"far past the threshold more data helps: "
            f"MSE(n={sample.x[-1]}) < MSE(n={sample.x[0]})", "mse_ratio", sample.last,
            sample.first, below(1.0)))
        poly = results.where(part="poly").curve("test_mse", "p")
        claims += _peak_claims("poly", "Legendre-polynomial test MSE (sin 2 pi x, "
                               f"n={cfg.poly_points})", poly, cfg.poly_points, descent=False)
        claims.append(claim("poly-recovers", f"with p={poly.x[-1]} features the min-norm "
                            "polynomial fits well again", "test_mse", poly.last, below(1.0)))
        return claims + epochwise_claims(results.where(part="epochwise")) + mlp_claims(
            cfg, results.where(part="mlp"))

    def figures(self, cfg: DoubleDescentConfig) -> list[LinePlot]:
        noise = f"noise sd {cfg.noise_sd:g}"
        mse = {"key": "test_mse", "y_title": "test MSE (median, IQR band)", "log_x": True,
               "log_y": True}
        return [
            LinePlot(f"Model-wise double descent: random ReLU features, n={cfg.n_train}, "
                     f"d={cfg.input_dim}", "p", (
                         Lines({"part": "rf", "fit": "min_norm"}, group="noise_sd",
                               label="min-norm, noise sd {noise_sd:g}"),
                         Lines({"part": "rf", "fit": "ridge", "noise_sd": cfg.noise_sd},
                               label=f"ridge lambda={cfg.ridge_lambda:g}, {noise}")),
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
        ridge, train = col("ridge", cfg.noise_sd), col("min_norm", cfg.noise_sd, "train_mse")
        return [
            Table("Model-wise (random ReLU features): median test MSE over seeds",
                  ["p", f"noise {cfg.noise_sd:g}", "no noise", "ridge", "train (noisy)"],
                  [[p, noisy[p], clean.at(p), ridge[p], train[p]] for p in noisy.x]),
            Table("Sample-wise: median test MSE", ["n", "test MSE"],
                  list(map(list, results.where(part="samplewise").curve("test_mse", "n")))),
            Table("Polynomial: median test MSE", ["p", "test MSE"],
                  list(map(list, results.where(part="poly").curve("test_mse", "p")))),
        ]


def fit_random_features(cfg: DoubleDescentConfig, trial: Trial) -> list[Record]:
    """Min-norm (and, model-wise, ridge) fits of random ReLU features; the data depend on the
    seed only, so every p of a seed sees the same problem."""
    n = trial.get("n", cfg.n_train)
    p = trial.get("p", cfg.samplewise_features)
    data = linear_teacher(n, cfg.n_test, cfg.input_dim, trial.get("noise_sd", cfg.noise_sd),
                          seed=trial.seed)
    f_tr, f_te = random_relu_features(data.x_train, data.x_test, p, seed=trial.seed)
    fits = {"min_norm": min_norm_fit(f_tr, data.y_train)}
    if trial.part == "rf":
        fits["ridge"] = ridge_fit(f_tr, data.y_train, cfg.ridge_lambda)
    return _mse_records(fits, f_tr, f_te, data.y_train, data.y_test)


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


def _peak_over_ends(curve: Curve, threshold: float) -> float:
    return curve.at(threshold) / max(curve.first, curve.last)


def _peak_claims(prefix: str, what: str, curve: Curve, threshold: int, *,
                 descent: bool = True) -> list[Claim]:
    axis, (x0, x1) = curve.x_name, (curve.x[0], curve.x[-1])
    claims = [
        peak_at(f"{prefix}-peak-location", f"{what} peaks at the interpolation threshold "
                f"{axis}={threshold} (within 10%)", curve, threshold, within=0.1),
        claim(f"{prefix}-peak-height", f"{what}: the peak is over 10x the error at both ends "
              f"of the sweep ({axis}={x0} and {axis}={x1})", "peak_over_ends",
              _peak_over_ends(curve, threshold), above(10.0))]
    if descent:
        claims.append(ratio(
            f"{prefix}-second-descent", f"{what}: past the threshold the error descends below "
            f"the smallest model's ({axis}={x1} vs {axis}={x0})", "mse_last_over_first",
            curve.last, curve.first, below(1.0)))
    return claims
