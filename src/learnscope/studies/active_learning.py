"""Pool-based active learning by uncertainty sampling (Lewis & Gale 1994, "A sequential
algorithm for training text classifiers"; Settles 2009, "Active learning literature survey").

A learner that may choose which examples to have labelled can reach a given accuracy with fewer
labels than one that labels examples at random. Uncertainty sampling asks, round after round,
for the labels of the pool examples the current model is least sure about: least confidence
(1 - the top class probability), margin (the top probability minus the runner-up; smallest
first) or entropy of the predicted distribution. Settles' survey notes that entropy suits
minimising log-loss while least confidence and margin (margin in particular) suit
classification error: entropy weighs the doubt spread over every class, margin only the doubt
between the two likeliest classes, which is the doubt that decides the prediction. Uncertainty sampling
can also lose to random sampling in the first rounds, while the model is still too poor to
judge its own doubt (a "cold start").

Setup: scikit-learn's 8x8 digits split into an unlabelled pool (default 1297 images) and a test
set (the rest). Every seed draws one random set of 20 seed labels shared by all strategies;
then each round fits a multinomial logistic regression (L2, scikit-learn's L-BFGS to
convergence) on the labelled examples, records its test accuracy, scores the unlabelled pool
and asks for the 10 top-scoring labels (ties to the lower index); random sampling draws 10
unlabelled examples uniformly. The learner is a convex model solved to its optimum, so two
strategies differ only by the examples they chose, never by optimiser noise or by a number of
epochs that means something else at 20 labels than at 120. N is the final number of labels
(20 + 10 x 10 = 120 at the default and quick sizes, which differ in seeds).

Measured per strategy and seed: the learning curve (test accuracy vs labels), its paired gain
over random sampling of the same seed, and the share of acquired examples that the model which
chose them misclassified (uncertainty sampling should pick the model's mistakes far more often
than random picks do). Label saving: with a_R the accuracy of random sampling at N labels
(median over seeds) and n_S the number of labels at which strategy S's median learning curve,
interpolated linearly between rounds, first reaches a_R, the saving is N / n_S: random sampling
needed N / n_S times the labels S needed for the same accuracy (NaN when S never reaches a_R
within N labels).

Claims: margin sampling beats random sampling at N labels (median paired gain over seeds at
least 2 points, and the lower end of the distribution-free confidence interval of that median
above 0) and saves labels (N / n_S > 1); the model misclassifies the examples margin sampling
asks for at least twice as often as random picks. Measured at the quick size and its
neighbouring configurations (20 seeds each): margin gains 3.0-4.5 points at N with a label
saving of 1.5-1.8x. Least confidence and entropy sampling are reported with the same numbers
but not gating: least confidence gains only 0.6-2.2 points here (positive in most seeds, not
in all), and entropy trails random sampling for most of the budget (-2.9 to +1.2 points at N).
The table also shows the gain after the first round, where the cold start shows.

Runs on the CPU whatever ``device`` says: each fit is a small convex problem.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from learnscope.analysis import Claim, LinePlot, Lines, Results, Table
from learnscope.analysis.claims import above, all_of, at_least, claim
from learnscope.analysis.curves import Curve, median_ci
from learnscope.config import StudyConfig, param
from learnscope.data import digits
from learnscope.errors import ConfigError
from learnscope.measures.acquisition import (
    ACQUISITION_STRATEGIES,
    acquisition_scores,
    select_top_k,
)
from learnscope.seeding import numpy_rng
from learnscope.store.records import Record
from learnscope.studies import register
from learnscope.studies.base import Part, Study, Trial, TrialOutput, part

RANDOM = "random"
STRATEGIES = (RANDOM, *ACQUISITION_STRATEGIES)
N_DIGITS = 1797

FitResult = tuple[np.ndarray, float]
"""What fitting on a labelled set gives: class probabilities of every pool example (pool,
classes) and the test accuracy."""


@dataclasses.dataclass(frozen=True)
class ActiveLearningConfig(StudyConfig):
    seeds: int = param(40, "seeds (pool/test split and seed labels); claims use medians over "
                           "seeds", ge=1)
    strategies: tuple[str, ...] = param(STRATEGIES, "acquisition strategies (random must be one: "
                                        "it is the baseline)", choices=STRATEGIES, min_len=2)
    n_pool: int = param(1297, "unlabelled pool size (the rest of the 1797 digits is the test "
                              "set)", ge=100, le=1700)
    seed_labels: int = param(20, "random labelled examples every strategy starts from", ge=2)
    batch: int = param(10, "labels acquired per round", ge=1)
    rounds: int = param(10, "acquisition rounds (N = seed_labels + rounds x batch)", ge=1)
    inverse_l2: float = param(1.0, "inverse L2 strength C of the logistic regression "
                                   "(scikit-learn's C)", gt=0)

    def check(self) -> None:
        if RANDOM not in self.strategies:
            raise ConfigError("field 'strategies' must contain 'random' (the baseline)")
        if self.final_labels > self.n_pool:
            raise ConfigError(f"seed_labels + rounds x batch = {self.final_labels} exceeds "
                              f"n_pool={self.n_pool}")

    @property
    def final_labels(self) -> int:
        """N: labels after the last round."""
        return self.seed_labels + self.rounds * self.batch


@register
class ActiveLearning(Study[ActiveLearningConfig]):
    name = "active-learning"
    title = "Active learning: uncertainty sampling vs random sampling"
    summary = ("Asking for the labels the model is least sure about reaches a given accuracy "
               "with fewer labels than random sampling.")
    source = ("Lewis & Gale 1994, A sequential algorithm for training text classifiers; "
              "Settles 2009, Active learning literature survey")
    Config = ActiveLearningConfig
    quick = {"seeds": 20}
    tiny = {"seeds": 2, "n_pool": 300, "seed_labels": 10, "batch": 5, "rounds": 2}

    def parts(self, cfg: ActiveLearningConfig) -> list[Part]:
        return [part("acquire", run_seed, batch_by=["seed"], strategy=list(cfg.strategies),
                     seed=cfg.seed_list())]

    def neighbours(self, cfg: ActiveLearningConfig) -> dict[str, dict[str, Any]]:
        return super().neighbours(cfg) | {
            "smaller pool": {"n_pool": cfg.n_pool // 2, "seed": cfg.seed + 5},
            "batches of 5": {"batch": max(1, cfg.batch // 2), "rounds": cfg.rounds * 2},
            "batches of 15": {"batch": cfg.batch * 3 // 2,
                              "rounds": max(1, round(cfg.rounds / 1.5))},
            "stronger L2": {"inverse_l2": cfg.inverse_l2 / 3},
            "more seed labels": {"seed_labels": cfg.seed_labels * 3 // 2, "seed": cfg.seed + 9},
        }

    def claims(self, cfg: ActiveLearningConfig, results: Results) -> list[Claim]:
        n = cfg.final_labels
        claims = []
        for strategy in (s for s in cfg.strategies if s != RANDOM):
            gating = strategy == "margin"
            gains = _finite(results.where(strategy=strategy).values("gain_over_random"))
            lo, hi, coverage = median_ci(gains)
            median_gain = float(np.median(gains)) if gains.size else math.nan
            saving = label_saving(results, strategy, n)
            weak = "" if gating else (" (not gating: the gain of this strategy varies from seed "
                                      "to seed at this size)")
            claims.append(all_of(
                f"{strategy}-beats-random", f"{strategy} sampling is more accurate than random "
                f"sampling at N = {n} labels: median paired gain over seeds of at least 2 points "
                "and the lower end of its distribution-free confidence interval above 0" + weak,
                {"median_gain_points": (100 * median_gain, at_least(2.0)),
                 "ci_low_gain_points": (100 * lo, above(0.0))},
                extra={"ci_high_gain_points": 100 * hi, "ci_coverage": coverage,
                       "seeds_with_gain": int((gains > 0).sum()), "seeds": int(gains.size)},
                gating=gating))
            claims.append(claim(
                f"{strategy}-saves-labels", f"{strategy} sampling reaches the accuracy random "
                f"sampling has at N = {n} labels with fewer labels: random sampling needs "
                "N / n_S times the labels (median learning curves, linear interpolation)" + weak,
                "label_saving", saving["saving"], above(1.0),
                extra={k: v for k, v in saving.items() if k != "saving"}, gating=gating))
        errors = {s: results.where(strategy=s).median("acquired_error", "mean")
                  for s in cfg.strategies}
        if "margin" in cfg.strategies:
            claims.append(claim(
                "margin-picks-mistakes", "the model misclassifies the examples margin sampling "
                "asks for at least twice as often as the ones random sampling draws (share of "
                "acquired examples misclassified by the model that chose them, mean over rounds, "
                "median over seeds)", "error_ratio",
                errors["margin"] / errors[RANDOM] if errors[RANDOM] > 0 else math.nan,
                at_least(2.0), extra={f"acquired_error_{s}": v for s, v in errors.items()}))
        return claims

    def notes(self, cfg: ActiveLearningConfig, results: Results) -> list[str]:
        if "margin" in cfg.strategies:
            return []
        return ["margin sampling is not among this run's strategies, so its claims (the gating "
                "ones) were not checked and the verdict cannot be 'reproduced'."]

    def figures(self, cfg: ActiveLearningConfig) -> list[LinePlot]:
        uncertain = [s for s in cfg.strategies if s != RANDOM]
        by_strategy = (Lines({"part": "acquire", "strategy": uncertain}, group="strategy",
                             label="{strategy}"),
                       Lines({"part": "acquire", "strategy": RANDOM}, label="random",
                             dash="dash"))
        return [
            LinePlot("Test accuracy vs number of labels (median, IQR over seeds)", "step",
                     by_strategy, key="test_acc", x_title="labelled examples",
                     y_title="test accuracy (%)", scale=100,
                     caption="Every strategy starts from the same random seed labels; a curve "
                             "above random sampling's (dashed) reaches the same accuracy with "
                             "fewer labels."),
            LinePlot("Gain over random sampling of the same seed (median, IQR over seeds)",
                     "step", by_strategy[:1], key="gain_over_random",
                     x_title="labelled examples", y_title="test accuracy gain (points)",
                     scale=100, hlines=((0.0, "random"),),
                     caption="Above zero the strategy is ahead of random sampling with the same "
                             "number of labels; early rounds may dip below (cold start)."),
            LinePlot("Share of acquired examples the current model misclassifies (median, IQR "
                     "over seeds)", "step", by_strategy, key="acquired_error",
                     x_title="labelled examples when the batch was chosen",
                     y_title="acquired examples misclassified (%)", scale=100,
                     caption="Uncertainty sampling asks for the model's mistakes; random "
                             "sampling's share (dashed) is the model's error on the pool."),
        ]

    def tables(self, cfg: ActiveLearningConfig, results: Results) -> list[Table]:
        n, first_round = cfg.final_labels, cfg.seed_labels + cfg.batch
        rows = []
        for strategy in cfg.strategies:
            sub = results.where(strategy=strategy)
            acc = 100 * sub.values("test_acc")
            row: list[Any] = [strategy, _median_iqr_text(acc)]
            if strategy == RANDOM:
                row += ["baseline", "baseline", str(n), "1x"]
            else:
                gains = 100 * sub.values("gain_over_random")
                first = 100 * _values_at(sub, "gain_over_random", first_round)
                saving = label_saving(results, strategy, n)
                reached = not math.isnan(saving["labels_needed"])
                row += [f"{np.median(first):+.1f}",
                        f"{np.median(gains):+.1f} ({gains.min():+.1f} .. {gains.max():+.1f})",
                        f"{saving['labels_needed']:.0f}" if reached else f"not within {n}",
                        f"{saving['saving']:.2f}x" if reached else "-"]
            row.append(f"{100 * sub.median('acquired_error', 'mean'):.1f}")
            rows.append(row)
        return [Table(f"Strategies at N = {n} labels (medians over seeds; gains are paired with "
                      "random sampling of the same seed, min .. max over seeds in brackets; "
                      "misclassified: mean over rounds)",
                      ["strategy", "test acc % (IQR)",
                       f"gain at {first_round} labels, points", f"gain at {n}, points",
                       f"labels to reach random's accuracy at {n}", "label saving N / n_S",
                       "acquired misclassified %"], rows)]


def labels_to_reach(labels: Sequence[float], accuracy: Sequence[float], target: float) -> float:
    """The smallest number of labels at which the learning curve ``(labels, accuracy)``, read
    as straight lines between its points, reaches ``target``; NaN when it never does.

    >>> labels_to_reach([20, 30, 40], [0.5, 0.7, 0.9], 0.8)
    35.0
    """
    xs, ys = np.asarray(labels, dtype=float), np.asarray(accuracy, dtype=float)
    if xs.size == 0 or math.isnan(target):
        return math.nan
    if ys[0] >= target:
        return float(xs[0])
    for i in range(1, xs.size):
        if ys[i] >= target:
            frac = (target - ys[i - 1]) / (ys[i] - ys[i - 1])
            return float(xs[i - 1] + frac * (xs[i] - xs[i - 1]))
    return math.nan


def label_saving(results: Results, strategy: str, n_labels: int) -> dict[str, float]:
    """N / n_S on the median learning curves: n_S is where ``strategy`` first reaches random
    sampling's median accuracy at ``n_labels`` (see :func:`labels_to_reach`)."""
    random_curve = results.where(strategy=RANDOM).over_time("test_acc")
    curve = results.where(strategy=strategy).over_time("test_acc")
    target = random_curve[n_labels] if n_labels in random_curve.x else math.nan
    needed = labels_to_reach(curve.x, curve.y, target)
    return {"saving": n_labels / needed if needed > 0 else math.nan, "labels_needed": needed,
            "random_acc_at_n": target, "strategy_acc_at_n": _at(curve, n_labels)}


def _at(curve: Curve, x: float) -> float:
    return curve[x] if x in curve.x else math.nan


def _values_at(results: Results, key: str, step: int) -> np.ndarray:
    """One value of ``key`` per trial at ``step``."""
    rows = results.records
    return rows[(rows["key"] == key) & (rows["step"] == step)]["value"].to_numpy(dtype=float)


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


def _median_iqr_text(values: np.ndarray) -> str:
    q25, med, q75 = np.percentile(values, [25, 50, 75])
    return f"{med:.1f} ({q25:.1f} .. {q75:.1f})"


# -- the acquisition loop -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Round:
    """One fit of the loop: on ``labels`` labelled examples, then the batch it asked for."""

    labels: int
    test_acc: float
    acquired: np.ndarray
    """Pool indices acquired after this fit (empty after the last)."""
    acquired_error: float
    """Share of ``acquired`` the fitted model misclassified (NaN after the last fit)."""


def acquisition_rounds(fit: Callable[[np.ndarray], FitResult], y_pool: np.ndarray,
                       initial: np.ndarray, strategy: str, batch: int, rounds: int,
                       rng: np.random.Generator) -> list[Round]:
    """Fit on the labelled set, ask for ``batch`` more labels, ``rounds`` times, then fit once
    more. ``fit(labelled_indices)`` gives the pool's class probabilities and the test accuracy;
    ``strategy`` is ``random`` (uniform over the unlabelled, from ``rng``) or an uncertainty
    score of :mod:`learnscope.measures.acquisition` (top-k, ties to the lower index)."""
    if strategy != RANDOM and strategy not in ACQUISITION_STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; known: {list(STRATEGIES)}")
    labelled = np.zeros(len(y_pool), dtype=bool)
    labelled[np.asarray(initial)] = True
    out = []
    for r in range(rounds + 1):
        probs, test_acc = fit(np.flatnonzero(labelled))
        if r == rounds:
            out.append(Round(int(labelled.sum()), test_acc, np.zeros(0, dtype=int), math.nan))
            break
        if strategy == RANDOM:
            picked = np.sort(rng.choice(np.flatnonzero(~labelled), batch, replace=False))
        else:
            picked = select_top_k(acquisition_scores(probs, strategy), batch, labelled)
        error = float((probs[picked].argmax(axis=1) != y_pool[picked]).mean())
        out.append(Round(int(labelled.sum()), test_acc, picked, error))
        labelled[picked] = True
    return out


def logistic_fit(x_pool: np.ndarray, y_pool: np.ndarray, x_test: np.ndarray,
                 y_test: np.ndarray, n_classes: int, inverse_l2: float
                 ) -> Callable[[np.ndarray], FitResult]:
    """``fit(indices)``: multinomial logistic regression (L2, L-BFGS to convergence) on the
    labelled pool examples. Probabilities get one column per class of the task, zero for
    classes not labelled yet; a single labelled class predicts that class with certainty."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression  # loads scipy's BLAS

    def fit(indices: np.ndarray) -> FitResult:
        y = y_pool[indices]
        probs = np.zeros((len(y_pool), n_classes))
        classes = np.unique(y)
        if classes.size == 1:
            probs[:, classes[0]] = 1.0
            return probs, float((y_test == classes[0]).mean())
        model = LogisticRegression(C=inverse_l2, max_iter=5000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x_pool[indices], y)
        probs[:, model.classes_] = model.predict_proba(x_pool)
        return probs, float((model.predict(x_test) == y_test).mean())

    return fit


def run_seed(cfg: ActiveLearningConfig, trials: list[Trial]) -> list[TrialOutput]:
    """Every strategy of one seed: the same pool, test set and seed labels. BLAS runs on one
    thread: fits this small gain nothing from more, and scipy's BLAS, loaded on the first fit
    (after the runner set its limits), would otherwise start one thread per core and run ~15x
    slower on a busy machine."""
    from threadpoolctl import threadpool_limits

    seed = trials[0].seed
    data = digits(cfg.n_pool, seed=seed)
    x_pool, y_pool = data.x_train.double().numpy(), data.y_train.numpy()
    fit = logistic_fit(x_pool, y_pool, data.x_test.double().numpy(), data.y_test.numpy(),
                       data.n_classes, cfg.inverse_l2)
    initial = numpy_rng(seed, "active-learning", "seed-labels").permutation(cfg.n_pool)[
        :cfg.seed_labels]
    strategies = dict.fromkeys([RANDOM, *(t.strategy for t in trials)])  # the baseline always
    with threadpool_limits(limits=1):
        curves = {s: acquisition_rounds(fit, y_pool, initial, s, cfg.batch, cfg.rounds,
                                        numpy_rng(seed, "active-learning", s))
                  for s in strategies}
    baseline = {r.labels: r.test_acc for r in curves[RANDOM]}
    outputs = []
    for t in trials:
        records = []
        for r in curves[t.strategy]:
            records.append(Record("test_acc", r.test_acc, r.labels, "rounds"))
            if not math.isnan(r.acquired_error):
                records.append(Record("acquired_error", r.acquired_error, r.labels, "rounds"))
            if t.strategy != RANDOM:
                records.append(Record("gain_over_random", r.test_acc - baseline[r.labels],
                                      r.labels, "rounds"))
        outputs.append(TrialOutput(records))
    return outputs
