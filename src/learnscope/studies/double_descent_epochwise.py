"""Epoch-wise double descent: test error over training time falls, rises, and falls again.

**The phenomenon.** Nakkiran et al. 2019 ("Deep double descent") trained wide networks on noisy
labels for thousands of epochs: test error first falls, rises after an early minimum, then falls
a second time. Heckel & Yilmaz 2021 ("Early stopping in deep networks: double descent and how
to eliminate it") and Pezeshki et al. 2022 ("Multi-scale feature learning dynamics: insights
for double descent") explain it with features learned at different speeds: the test-error curve
is a sum of bias-variance U-curves, one per time scale. Features learned fast fit their share
of the signal, then overfit the residual (label noise plus the signal only the slow features
can explain), which raises the test error; much later the slow features learn their signal,
the residual the fast features were fitting shrinks, and the error falls again.

**The setup** (exact, no network). Linear regression ``y = x . theta + N(0, noise_sd^2)`` with
Gaussian inputs in two independent blocks: ``dim_fast`` features of variance 1 and
``dim_slow`` features of variance ``1 / scale_ratio``. The teacher puts ``signal_fast`` and
``signal_slow`` of test-error variance in each block (``E[(x . theta_block)^2]``, so the zero
predictor's test error is their sum). Full-batch gradient descent from zero with learning
rate ``lr`` learns a feature direction of variance ``s`` on the time scale ``1 / (lr s)``, so
the blocks have time scales ``t_fast = 1 / lr`` and ``t_slow = scale_ratio / lr``. Gradient
descent on least squares has a closed form at every step
(:func:`learnscope.models.regression.gd_least_squares_path`), so a curve over 89 log-spaced
steps from 1 to 1e6 costs one SVD. The test error is the exact population excess risk
``(w - theta)^T Sigma (w - theta)``: the test MSE on noise-free targets with an infinite test
set, so no test-set noise enters the curves.

Default (``DEFAULT_SETUP``): n_train=1000, dim_fast=400, dim_slow=5, scale_ratio=100,
noise_sd=1, signal_fast=0.5, signal_slow=0.5, lr=0.01. The fast block alone has 0.4
parameters per training point; fitting the residual (noise variance 1 plus the slow block's
0.5) would add about 1.5 * 0.4 / 0.6 = 1.0 to the test error if it finished before the slow
block starts to learn (measured peak: 1.31 over 0.5 of unlearned slow signal).

**The claim** (scale-free): :func:`epochwise_bump` finds the most prominent interior maximum
of the curve over log time (the point that stands highest above both the lowest point before
it and the lowest point after it). Epoch-wise double descent is shown when the curve descends
to a first minimum (at least ``MIN_DROP`` of its value after step 1 below it), rises to the
peak (at least ``MIN_RISE`` times the first minimum above it) and falls again (the later
minimum at least ``MIN_FALL`` times the peak below it). Gate on the median curve over seeds
(:func:`epochwise_summary`); the per-seed count is reported. Where it happens: the peak comes
when the fast block alone has fitted its slowest direction (``t_fast_block_fit``; measured
peak at 1.1-2.8 times it in every configuration below) and the second descent on the slow
time scale (halfway down at 0.5-5.6 ``t_slow``).

Measured (50 seeds each, default and every size changed by +-50%: n_train, dim_fast,
dim_slow, noise_sd, scale_ratio, signal_fast, signal_slow, lr): the median curve meets the
claim in all 17 configurations (smallest median drop/rise/fall 0.09/0.14/0.20; default
0.20/0.68/0.47, peak at step ~1300 = 13 t_fast = 0.13 t_slow); every seed meets it in 16,
and 40/50 seeds at n_train=500 (0.8 fast features per point: the final least-squares fit is
itself noisy there). One curve takes about 0.09 s.

**Controls.** One time scale (``equal_scales=True``: the slow features rescaled to the fast
variance, which is the same as giving each block its own step size, Heckel & Yilmaz's remedy;
same data, same end point): a single U that rises 86% above its minimum and never falls
(0 of 50 seeds, median curve fails). Without fast-block signal (``signal_fast=0``) there is
no first minimum (0/50). Without label noise the bump shrinks (median rise 0.07 instead of
0.68) but does not vanish (39/50 seeds): the slow block's signal, not yet learned, is itself
a residual the fast block overfits: what the bump needs is a residual the fast features
cannot explain, of which label noise is the largest part here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from learnscope.analysis import Claim, LinePlot, Lines, Marker, Results
from learnscope.analysis.claims import all_of, at_least, below, between, claim
from learnscope.models.regression import gd_least_squares_path
from learnscope.seeding import numpy_rng
from learnscope.store.records import Record
from learnscope.studies.base import Trial

if TYPE_CHECKING:
    from learnscope.studies.double_descent import DoubleDescentConfig

#: The calibrated setup (see the module docstring).
DEFAULT_SETUP: dict[str, Any] = {
    "n_train": 1000, "dim_fast": 400, "dim_slow": 5, "scale_ratio": 100.0, "noise_sd": 1.0,
    "signal_fast": 0.5, "signal_slow": 0.5, "lr": 0.01,
}
#: Thresholds of the claim: met by the median curve of every configuration tried (module
#: docstring) with a margin of at least 1.8x, and by every seed of the default.
MIN_DROP = 0.05
MIN_RISE = 0.05
MIN_FALL = 0.10


def log_steps(max_step: int = 1_000_000, per_decade: int = 16) -> np.ndarray:
    """Distinct integer steps from 1 to ``max_step``, evenly spaced in log time."""
    if max_step < 1 or per_decade < 1:
        raise ValueError("max_step and per_decade must be at least 1")
    count = int(round(np.log10(max_step) * per_decade)) + 1
    return np.unique(np.round(np.logspace(0.0, np.log10(max_step), count)).astype(np.int64))


@dataclass(frozen=True)
class TwoScaleData:
    """A training set whose features come at two scales, and the teacher behind it.

    ``feature_var`` is the population variance of every input coordinate (the diagonal of the
    input covariance); ``theta`` the teacher's coefficients in the same units as ``x_train``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    theta: np.ndarray
    feature_var: np.ndarray
    dim_fast: int


def two_scale_teacher(n_train: int, dim_fast: int, dim_slow: int, scale_ratio: float,
                      noise_sd: float, signal_fast: float, signal_slow: float, *, seed: int,
                      equal_scales: bool = False) -> TwoScaleData:
    """Gaussian inputs with a fast block (variance 1) and a slow block (variance 1/ratio).

    The teacher's direction within each block is random, its size fixed so that the block
    contributes exactly ``signal_fast`` / ``signal_slow`` to the test error of the zero
    predictor. ``equal_scales=True`` returns the same draw with the slow block rescaled to
    variance 1 (the one-time-scale control: same data, same teacher function).
    """
    if n_train < 1 or dim_fast < 1 or dim_slow < 1:
        raise ValueError("n_train, dim_fast and dim_slow must be at least 1")
    if scale_ratio <= 0 or noise_sd < 0 or signal_fast < 0 or signal_slow < 0:
        raise ValueError("scale_ratio must be positive; noise and signals non-negative")
    rng = numpy_rng(seed, "two-scale-teacher")
    # Standardised coordinates first: every block's draw is the same whatever the scales.
    beta = np.concatenate([_direction(rng, dim_fast) * np.sqrt(signal_fast),
                           _direction(rng, dim_slow) * np.sqrt(signal_slow)])
    z = rng.standard_normal((n_train, dim_fast + dim_slow))
    y = z @ beta + noise_sd * rng.standard_normal(n_train)
    slow_var = 1.0 if equal_scales else 1.0 / scale_ratio
    var = np.concatenate([np.ones(dim_fast), np.full(dim_slow, slow_var)])
    scale = np.sqrt(var)
    return TwoScaleData(z * scale, y, beta / scale, var, dim_fast)


def _direction(rng: np.random.Generator, dim: int) -> np.ndarray:
    v = rng.standard_normal(dim)
    return v / np.linalg.norm(v)


def epochwise_curves(seed: int, *, n_train: int = 1000, dim_fast: int = 400,
                     dim_slow: int = 5, scale_ratio: float = 100.0, noise_sd: float = 1.0,
                     signal_fast: float = 0.5, signal_slow: float = 0.5, lr: float = 0.01,
                     steps: np.ndarray | None = None, equal_scales: bool = False
                     ) -> dict[str, np.ndarray]:
    """Test and train MSE of gradient descent from zero at every step of ``steps``.

    Returns ``steps``, ``test_mse`` (exact excess risk, noise-free targets), ``train_mse``,
    the population time scales ``t_fast = 1/(lr s_fast)`` and ``t_slow = 1/(lr s_slow)``
    (0-d arrays; equal under ``equal_scales``), ``t_fast_block_fit`` (when the fast block alone
    has fitted its slowest direction: ``1/(lr s_fast (1 - sqrt(dim_fast/n))^2)``, the lower
    Marchenko-Pastur edge of its sample covariance; inf when ``dim_fast >= n``) and
    ``lr_times_max_eig`` (gradient descent diverges at 2).
    """
    steps = log_steps() if steps is None else np.asarray(steps)
    data = two_scale_teacher(n_train, dim_fast, dim_slow, scale_ratio, noise_sd, signal_fast,
                             signal_slow, seed=seed, equal_scales=equal_scales)
    coef = gd_least_squares_path(data.x_train, data.y_train, lr, steps)
    err = coef - data.theta
    test = (err**2) @ data.feature_var
    train = np.mean((data.x_train @ coef.T - data.y_train[:, None]) ** 2, axis=0)
    max_eig = np.linalg.norm(data.x_train, 2) ** 2 / n_train
    s_fast, s_slow = data.feature_var[0], data.feature_var[-1]
    edge = (1.0 - np.sqrt(dim_fast / n_train)) ** 2 if dim_fast < n_train else 0.0
    with np.errstate(divide="ignore"):
        t_fit = np.float64(1.0) / np.float64(lr * s_fast * edge)
    return {"steps": steps, "test_mse": test, "train_mse": train,
            "t_fast": np.asarray(1.0 / (lr * s_fast)), "t_slow": np.asarray(1.0 / (lr * s_slow)),
            "t_fast_block_fit": np.asarray(t_fit), "lr_times_max_eig": np.asarray(lr * max_eig)}


_BUMP_KEYS = ("start", "first_min", "first_min_step", "peak", "peak_step", "later_min",
              "later_min_step", "half_fall_step", "final", "initial_drop", "rise", "fall",
              "prominence", "later_min_over_first_min")


def epochwise_bump(steps: np.ndarray, test_mse: np.ndarray, *, rel_tol: float = 1e-6
                   ) -> dict[str, float]:
    """The statistics of the claim for one test-error curve over (log-spaced) steps.

    The peak is the interior point that stands highest above both the lowest value before it
    and the lowest after it (its ``prominence``: picking the most prominent one ignores small
    wiggles). ``first_min``/``later_min`` are the lowest values before/after it;
    ``half_fall_step`` is the first step after the peak where the curve is halfway down from
    the peak to ``later_min`` (when the second descent happens: the later minimum itself often
    sits on a flat tail, so its step is a poor time marker).
    Relative sizes: ``initial_drop = (start - first_min) / start``,
    ``rise = (peak - first_min) / first_min``, ``fall = (peak - later_min) / peak``.
    A curve without such a point (monotone, or a U that rises to a plateau; prominence at most
    ``rel_tol`` times the largest value) has ``rise = fall = prominence = 0`` and NaN for the
    peak and the later minimum. A curve with any non-finite value (diverged training) gives
    NaN everywhere, so every threshold comparison fails.
    """
    steps = np.asarray(steps, dtype=np.float64)
    curve = np.asarray(test_mse, dtype=np.float64)
    if curve.ndim != 1 or steps.shape != curve.shape or curve.size < 3:
        raise ValueError("steps and test_mse must be 1-D of the same length (at least 3)")
    if np.any(np.diff(steps) <= 0):
        raise ValueError("steps must be strictly increasing")
    if not np.all(np.isfinite(curve)):
        return dict.fromkeys(_BUMP_KEYS, float("nan"))
    lowest_before = np.minimum.accumulate(curve)
    lowest_after = np.minimum.accumulate(curve[::-1])[::-1]
    prominence = np.minimum(curve - lowest_before, curve - lowest_after)
    peak = int(np.argmax(prominence))
    start, final = float(curve[0]), float(curve[-1])
    if prominence[peak] <= rel_tol * float(np.max(np.abs(curve))):
        low = int(np.argmin(curve))
        nan = float("nan")
        return {"start": start, "first_min": float(curve[low]),
                "first_min_step": float(steps[low]), "peak": nan, "peak_step": nan,
                "later_min": nan, "later_min_step": nan, "half_fall_step": nan, "final": final,
                "initial_drop": _ratio(start - curve[low], start), "rise": 0.0, "fall": 0.0,
                "prominence": 0.0, "later_min_over_first_min": nan}
    first = int(np.argmin(curve[: peak + 1]))
    later = peak + int(np.argmin(curve[peak:]))
    top, low1, low2 = curve[peak], curve[first], curve[later]
    half = peak + int(np.argmax(curve[peak:] <= (top + low2) / 2))
    return {"start": start, "first_min": float(low1), "first_min_step": float(steps[first]),
            "peak": float(top), "peak_step": float(steps[peak]), "later_min": float(low2),
            "later_min_step": float(steps[later]), "half_fall_step": float(steps[half]),
            "final": final,
            "initial_drop": _ratio(start - low1, start), "rise": _ratio(top - low1, low1),
            "fall": _ratio(top - low2, top), "prominence": float(prominence[peak]),
            "later_min_over_first_min": _ratio(low2, low1)}


def _ratio(num: float, den: float) -> float:
    """num / den; a zero denominator (a noise-free curve that reaches 0) gives inf or NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(num) / np.float64(den))


def shows_epochwise_double_descent(stats: dict[str, float], *, min_drop: float = MIN_DROP,
                                   min_rise: float = MIN_RISE, min_fall: float = MIN_FALL
                                   ) -> bool:
    """Whether one curve's statistics (from :func:`epochwise_bump`) meet the claim."""
    return bool(stats["initial_drop"] >= min_drop and stats["rise"] >= min_rise
                and stats["fall"] >= min_fall)


def epochwise_summary(steps: np.ndarray, test_mse: np.ndarray, *, min_drop: float = MIN_DROP,
                      min_rise: float = MIN_RISE, min_fall: float = MIN_FALL
                      ) -> dict[str, float]:
    """The claim's statistics over seeds: ``test_mse`` has one row per seed.

    Keys: ``median_<stat>`` for the per-step median curve over seeds, ``seeds``,
    ``seeds_with_bump`` (rows that meet the claim on their own), ``min_<stat>`` and
    ``max_<stat>`` over seeds for the relative sizes (the worst seed decides a per-seed gate).
    """
    curves = np.atleast_2d(np.asarray(test_mse, dtype=np.float64))
    per_seed = [epochwise_bump(steps, row) for row in curves]
    limits = {"min_drop": min_drop, "min_rise": min_rise, "min_fall": min_fall}
    out: dict[str, float] = {f"median_{k}": v for k, v in
                             epochwise_bump(steps, np.median(curves, axis=0)).items()}
    out["median_curve_shows_bump"] = float(shows_epochwise_double_descent(
        {k.removeprefix("median_"): v for k, v in out.items()}, **limits))
    out["seeds"] = float(len(per_seed))
    out["seeds_with_bump"] = float(sum(shows_epochwise_double_descent(s, **limits)
                                       for s in per_seed))
    for key in ("initial_drop", "rise", "fall", "peak_step", "half_fall_step"):
        values = np.array([s[key] for s in per_seed])
        out[f"min_{key}"] = float(np.min(values))
        out[f"max_{key}"] = float(np.max(values))
    return out


# -- the study's part ------------------------------------------------------------------------

def gd_over_time(cfg: DoubleDescentConfig, trial: Trial) -> list[Record]:
    """One seed's test and train MSE over log-spaced gradient-descent steps (closed form), and
    the time scales theory predicts."""
    out = epochwise_curves(trial.seed, n_train=cfg.ew_n_train, dim_fast=cfg.ew_dim_fast,
                           dim_slow=cfg.ew_dim_slow, scale_ratio=cfg.ew_scale_ratio,
                           noise_sd=cfg.ew_noise_sd, lr=cfg.ew_lr,
                           steps=log_steps(cfg.ew_max_step),
                           equal_scales=trial.condition == "one-scale")
    records = [Record(key, float(v), int(t), "gd") for key in ("test_mse", "train_mse")
               for t, v in zip(out["steps"], out[key], strict=True)]
    return records + [Record(k, float(out[k]), 0, "theory")
                      for k in ("t_fast", "t_slow", "t_fast_block_fit", "lr_times_max_eig")]


def epochwise_claims(results: Results) -> list[Claim]:
    if not len(results):
        return []
    two, one = results.where(condition="two-scale"), results.where(condition="one-scale")
    curve = two.over_time("test_mse")
    stats = epochwise_bump(np.array(curve.x), np.array(curve.y))
    per_seed = [shows_epochwise_double_descent(epochwise_bump(np.array(s), np.array(v)))
                for _, s, v in two.series("test_mse")]
    t_fit, t_slow = two.median("t_fast_block_fit"), two.median("t_slow")
    control = one.over_time("test_mse")
    control_stats = epochwise_bump(np.array(control.x), np.array(control.y))
    return [
        all_of("epochwise-double-descent", "test error over training time (median over seeds) "
               "falls to a first minimum, rises after it and falls again: epoch-wise double "
               "descent", {"initial_drop": (stats["initial_drop"], at_least(MIN_DROP)),
                           "rise": (stats["rise"], at_least(MIN_RISE)),
                           "fall": (stats["fall"], at_least(MIN_FALL))},
               extra={"first_min_step": stats["first_min_step"], "peak_step": stats["peak_step"],
                      "seeds_with_bump": sum(per_seed), "seeds": len(per_seed)}),
        claim("epochwise-peak-where-fast-block-fits", "the peak comes when the fast features "
              "have fitted the training set (their slowest sample direction, 1/(lr s (1 - "
              "sqrt(d/n))^2) steps): the overfitting of the fast block, before the slow block "
              "learns", "peak_step_over_t_fit", stats["peak_step"] / t_fit, between(0.5, 4),
              extra={"peak_step": stats["peak_step"], "t_fast_block_fit": t_fit,
                     "t_slow": t_slow}),
        claim("epochwise-one-time-scale-control", "with one time scale (the slow features "
              "rescaled, i.e. each block its own step size) there is no second descent",
              "fall", control_stats["fall"], below(MIN_FALL),
              extra={"rise": control_stats["rise"], "final": control_stats["final"]}),
        claim("epochwise-ends-below-first-minimum", "the second descent ends below the first "
              "minimum (not gating: only where the slow features carry "
              "enough signal)", "later_min_over_first_min", stats["later_min_over_first_min"],
              below(1.0), gating=False),
    ]


def epochwise_figures(cfg: DoubleDescentConfig) -> list[LinePlot]:
    if not cfg.ew_seeds:
        return []
    t_fast, t_slow = 1 / cfg.ew_lr, cfg.ew_scale_ratio / cfg.ew_lr
    markers = [Marker(t_fast, "t fast"), Marker(t_slow, "t slow")]
    if cfg.ew_dim_fast < cfg.ew_n_train:
        t_fit = 1 / (cfg.ew_lr * (1 - (cfg.ew_dim_fast / cfg.ew_n_train) ** 0.5) ** 2)
        markers.insert(1, Marker(t_fit, "fast block fitted"))
    return [LinePlot(
        f"Epoch-wise double descent: gradient descent, {cfg.ew_dim_fast} fast + "
        f"{cfg.ew_dim_slow} slow features, n={cfg.ew_n_train}", "step",
        (Lines({"part": "epochwise"}, key="test_mse", group="condition",
               label="test MSE, {condition}"),
         Lines({"part": "epochwise", "condition": "two-scale"}, key="train_mse", dash="dot",
               label="train MSE, two-scale")),
        x_title="gradient-descent step", y_title="MSE (median over seeds, IQR band)",
        log_x=True, markers=tuple(markers),
        caption="Two time scales: the fast features overfit (first rise), the slow ones then "
                "learn the signal (second descent). One time scale: a single U.")]
