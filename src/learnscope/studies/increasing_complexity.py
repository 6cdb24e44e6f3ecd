"""SGD learns functions of increasing complexity (Nakkiran, Kalimeris, Kaplun, Edelman, Yang,
Barak & Zhang 2019, "SGD on neural networks learns functions of increasing complexity").

Early in training, almost all of what a network's predictions tell about the label is also told
by a linear classifier: the network first learns (nearly) the linear function, and only then
goes beyond it. What it learned first is kept: at the end of training the network still carries
most of the linear classifier's information about the label.

The measures are information-theoretic, on discrete predictions: with F the network's
predictions, L the linear classifier's and Y the labels, I(F;Y) is how much F tells about Y,
I(F;Y|L) how much of that L does not explain, and the paper's performance correlation
mu = I(F;Y) - I(F;Y|L) ("linear part") how much of F's performance L explains. mu can never
exceed I(L;Y) (it equals I(L;Y) - I(L;Y|F)).

Setup: MNIST-1D made binary (digits 0-4 against 5-9), 5000 training and 2500 test sequences;
L is scikit-learn's logistic regression fitted on the training set (test accuracy about 0.64:
clearly better than chance, far from the network's 0.78). F is an MLP 40-256-256-2 (ReLU)
trained with SGD (learning rate 0.01, momentum 0.9, batch 32) to 100% training accuracy; all
seeds train as one stack of models. The simplicity probe measures I(F;Y), I(F;Y|L), I(L;Y), mu
and the agreement P(F = L) on the test set (plug-in estimates, bits) at log-spaced steps inside
the training. The "linear phase" of a seed is the checkpoints at which F carries between half
and 1.5 times the linear classifier's information I(L;Y): F is about as good as L.

Claims (medians over seeds):

- early performance is linear: during the linear phase, L explains almost all of F's
  information (mu >= 3/4 of I(F;Y): at most a quarter is beyond L);
- the network is closest to the linear classifier early: its peak agreement with L lies above
  its final agreement beyond the spread over seeds (distribution-free interval of the median);
- it then goes beyond linear: at the end, most of F's information is not explained by L
  (I(F;Y|L) >= I(F;Y)/2);
- the linear part is retained: at the end mu is still at least 3/4 of I(L;Y) (measured
  0.80-0.89 without label noise; not gating: with 10% random training labels it falls to the
  threshold, 0.75, as the network memorises the noise).

What the measurements cannot say: the estimates are on 2500 test predictions (the plug-in bias
of I(F;Y|L) is below 0.001 bits here, but the seed-to-seed spread is several hundredths); the
linear phase depends on the learning rate (large steps shorten it, Nakkiran et al.); and
"retained" is informative only while F is far from perfect: any classifier that approaches 100%
test accuracy has mu -> I(L;Y) whatever it learned first. Agreement alone is no measure of
linearity: two classifiers that each are right 64% of the time agree on about 54% of the
inputs even when their errors are independent.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from learnscope.analysis import Claim, LinePlot, Lines, Results, Table
from learnscope.analysis.claims import above, at_least, claim
from learnscope.analysis.curves import median_ci
from learnscope.config import StudyConfig, param
from learnscope.data import mnist1d, random_labels
from learnscope.data.classification import ClassificationData
from learnscope.errors import ConfigError
from learnscope.models import mlp
from learnscope.probes import SimplicityProbe, at_steps
from learnscope.probes.session import ProbeSession
from learnscope.store.records import Record
from learnscope.studies import register
from learnscope.studies.base import Part, Study, Trial, TrialOutput, part
from learnscope.train.monitored import train_monitored
from learnscope.train.stacked import make_stack

N_TEST = 2500
ALMOST_ALL = 0.75
"""The paper's "almost all of the performance": at most a quarter of I(F;Y) beyond L."""


@dataclasses.dataclass(frozen=True)
class IncreasingComplexityConfig(StudyConfig):
    seeds: int = param(5, "seeds (independent networks), trained as one stack", ge=1)
    n_train: int = param(5000, "binary MNIST-1D training sequences (the test set is separate)",
                         ge=100, le=10000)
    hidden: int = param(256, "width of each of the two hidden layers", ge=2)
    steps: int = param(8000, "SGD steps (5000 examples, batch 32: about 50 epochs)", ge=10)
    lr: float = param(0.01, "SGD learning rate (momentum 0.9)", gt=0)
    batch_size: int = param(32, "minibatch size", ge=1)
    n_test: int = param(N_TEST, "test sequences every measurement is made on", ge=20,
                        le=N_TEST)
    label_noise: float = param(0.0, "fraction of training labels replaced by a random class "
                                    "(test labels stay clean)", ge=0, lt=1)
    checkpoints: tuple[int, ...] = param(
        (0, 5, 10, 15, 20, 30, 40, 50, 75, 100, 150, 200, 300, 400, 600, 800, 1200, 1600,
         2400, 3200, 4800, 6400), "steps at which the probe measures (those below steps; the "
        "final step is always one)", ge=0, min_len=3)
    phase_low: float = param(0.5, "the linear phase starts when I(F;Y) reaches this fraction "
                                  "of I(L;Y)", gt=0, lt=1)
    phase_high: float = param(1.5, "the linear phase ends when I(F;Y) exceeds this multiple of "
                                   "I(L;Y)", gt=1)

    def check(self) -> None:
        if sum(c < self.steps for c in self.checkpoints) < 3:
            raise ConfigError(f"field 'checkpoints' needs at least 3 steps below "
                              f"steps={self.steps}")


@register
class IncreasingComplexity(Study[IncreasingComplexityConfig]):
    name = "increasing-complexity"
    title = "SGD learns functions of increasing complexity"
    summary = ("Early in training a linear classifier explains almost all of a network's "
               "performance; the network then goes beyond it and keeps the linear part.")
    source = ("Nakkiran, Kalimeris, Kaplun, Edelman, Yang, Barak & Zhang 2019, SGD on neural "
              "networks learns functions of increasing complexity")
    Config = IncreasingComplexityConfig
    quick = {"seeds": 3, "steps": 6000,
             "checkpoints": [0, 5, 10, 15, 20, 30, 40, 50, 75, 100, 150, 200, 300, 400, 600,
                             800, 1200, 1600, 2400, 3200, 4800]}
    tiny = {"seeds": 2, "hidden": 16, "n_train": 400, "n_test": 400, "steps": 60,
            "checkpoints": [0, 10, 20, 40]}

    def parts(self, cfg: IncreasingComplexityConfig) -> list[Part]:
        return [part("train", train_seeds, batch_by=[], seed=cfg.seed_list())]

    def memory_bytes(self, cfg: IncreasingComplexityConfig) -> float:
        """The stack (weights, gradients, momentum), its minibatch work buffers and the data."""
        h = cfg.hidden
        params = 40 * h + h * h + 2 * h + 2 * h + 2
        work = cfg.batch_size * (40 + 4 * h + 4) + (cfg.n_train + cfg.n_test) * (2 * h + 2)
        return 4.0 * cfg.seeds * (3 * params + work) + 8.0 * (cfg.n_train + cfg.n_test) * 41

    def neighbours(self, cfg: IncreasingComplexityConfig) -> dict[str, dict[str, Any]]:
        return super().neighbours(cfg) | {
            "fewer examples": {"n_train": cfg.n_train // 2},
            "more examples": {"n_train": min(10000, cfg.n_train * 3 // 2), "seed": cfg.seed + 7},
            "narrower": {"hidden": cfg.hidden // 2},
            "larger step": {"lr": cfg.lr * 1.5, "seed": cfg.seed + 3},
            "10% random labels": {"label_noise": 0.1},
        }

    def claims(self, cfg: IncreasingComplexityConfig, results: Results) -> list[Claim]:
        seeds = [_summary(cfg, spec, results) for spec, _, _ in results.series("i_fy")]
        med = {k: _median([s[k] for s in seeds]) for k in seeds[0]} if seeds else {}
        peak_lo, _, cov = median_ci([s["peak_agreement"] for s in seeds])
        _, final_hi, _ = median_ci([s["final_agreement"] for s in seeds])
        return [
            claim("early-performance-is-linear", "during the linear phase (F carries "
                  f"{cfg.phase_low:g}-{cfg.phase_high:g} x I(L;Y)), the linear classifier "
                  "explains almost all of the network's information about the label: "
                  f"I(F;Y) - I(F;Y|L) >= {ALMOST_ALL:g} I(F;Y) (median over the phase's "
                  "checkpoints, then over seeds)", "explained_fraction_in_phase",
                  med.get("phase_fraction", math.nan), at_least(ALMOST_ALL),
                  extra={"agreement_in_phase": med.get("phase_agreement", math.nan),
                         "phase_checkpoints": med.get("phase_checkpoints", math.nan),
                         "phase_end_step": med.get("phase_end", math.nan),
                         "seeds": len(seeds)}),
            claim("closest-to-linear-early", "the network agrees most with the linear "
                  "classifier early in training: the lower end of the interval of its peak "
                  "agreement (median over seeds) lies above the upper end of its final "
                  "agreement's", "peak_ci_low_minus_final_ci_high", peak_lo - final_hi,
                  above(0), extra={"peak_agreement": med.get("peak_agreement", math.nan),
                                   "peak_step": med.get("peak_step", math.nan),
                                   "final_agreement": med.get("final_agreement", math.nan),
                                   "ci_coverage": cov}),
            claim("goes-beyond-linear", "at the end of training most of the network's "
                  "information about the label is beyond the linear classifier: "
                  "I(F;Y|L) >= I(F;Y) / 2", "final_beyond_fraction",
                  med.get("final_beyond", math.nan), at_least(0.5),
                  extra={"final_i_fy_bits": med.get("final_i_fy", math.nan),
                         "final_i_fy_given_l_bits": med.get("final_i_fy_given_l", math.nan),
                         "final_test_acc": med.get("final_acc", math.nan)}),
            claim("linear-part-retained", "the linear part is retained: at the end, "
                  "I(F;Y) - I(F;Y|L) is still at least 3/4 of the linear classifier's own "
                  "information I(L;Y) (it can never exceed it; not gating: random training "
                  "labels bring it down to the threshold)", "final_linear_part_over_i_ly",
                  med.get("retained", math.nan), at_least(0.75), gating=False,
                  extra={"final_linear_part_bits": med.get("final_linear_part", math.nan),
                         "i_ly_bits": med.get("i_ly", math.nan)}),
        ]

    def figures(self, cfg: IncreasingComplexityConfig) -> list[LinePlot]:
        return [
            LinePlot("Information about the label over training (median over seeds)", "step",
                     (Lines(key="i_fy", label="I(F;Y): network"),
                      Lines(key="linear_part", label="I(F;Y) − I(F;Y|L): explained by L"),
                      Lines(key="i_fy_given_l", label="I(F;Y|L): beyond L"),
                      Lines(key="i_ly", label="I(L;Y): linear classifier", dash="dot")),
                     x_title="training step", y_title="bits (plug-in, test set)", log_x=True,
                     caption="Early on the network's curve and the explained curve coincide "
                             "below the linear classifier's level; later the network rises "
                             "through the part beyond L while the explained part stays."),
            LinePlot("Fraction of the network's information that the linear classifier "
                     "explains", "step",
                     (Lines(label="(I(F;Y) − I(F;Y|L)) / I(F;Y)"),),
                     key="explained_fraction", x_title="training step",
                     y_title="fraction of I(F;Y)", log_x=True,
                     hlines=((ALMOST_ALL, "almost all"),),
                     caption="Near 1 in the linear phase, then falling as the network learns "
                             "what a linear classifier cannot; meaningless at step 0, where "
                             "the network carries no information."),
            LinePlot("Agreement with the linear classifier and test accuracy", "step",
                     (Lines(key="agreement", label="P(F = L): agreement"),
                      Lines(key="accuracy", label="test accuracy of F")),
                     x_title="training step", y_title="fraction of test inputs", log_x=True,
                     caption="Agreement peaks while the network is as accurate as the linear "
                             "classifier and falls as its accuracy grows past it."),
        ]

    def tables(self, cfg: IncreasingComplexityConfig, results: Results) -> list[Table]:
        steps = sorted({int(s) for s in results.records["step"]})
        rows = []
        for step in steps:
            at = results.records
            at = at[at["step"] == step]
            row: list[Any] = [step]
            for key in ("accuracy", "agreement", "i_fy", "i_fy_given_l", "linear_part"):
                vals = at[at["key"] == key]["value"].to_numpy(dtype=float)
                row.append(_median(list(vals)))
            rows.append(row)
        return [Table("Nakkiran et al. quantities at each checkpoint (test set, medians over "
                      "seeds; bits)", ["step", "F accuracy", "agreement(F, L)", "I(F;Y)",
                                       "I(F;Y|L)", "I(F;Y) − I(F;Y|L)"], rows)]

    def notes(self, cfg: IncreasingComplexityConfig, results: Results) -> list[str]:
        i_ly = results.median("i_ly")
        return [f"The linear classifier carries I(L;Y) = {i_ly:.3f} bits about the label on "
                "the test set; the explained part I(F;Y) − I(F;Y|L) can never exceed it.",
                "A classifier that approached 100% test accuracy would have an explained part "
                "equal to I(L;Y) whatever it learned first: 'retained' says something only "
                "because the network stays far from perfect on this task."]


def _median(values: list[float]) -> float:
    v = np.asarray(values, dtype=float)
    return float(np.median(v)) if v.size and not np.isnan(v).any() else math.nan


def _summary(cfg: IncreasingComplexityConfig, spec: dict[str, Any],
             results: Results) -> dict[str, float]:
    """One seed's numbers: its linear phase, its agreement peak and its final state."""
    sub = results.where(seed=spec["seed"])
    by_step: dict[int, dict[str, float]] = {}
    for key in ("i_fy", "i_fy_given_l", "i_ly", "linear_part", "agreement", "accuracy"):
        for _, steps, values in sub.series(key):
            for step, value in zip(steps, values, strict=True):
                by_step.setdefault(step, {})[key] = value
    order = sorted(by_step)
    final = by_step[order[-1]]
    i_ly = final["i_ly"]
    phase = [s for s in order if cfg.phase_low * i_ly <= by_step[s]["i_fy"]
             <= cfg.phase_high * i_ly]
    peak = max(order, key=lambda s: by_step[s]["agreement"])
    return {
        "phase_fraction": _median([by_step[s]["linear_part"] / by_step[s]["i_fy"]
                                   for s in phase]),
        "phase_agreement": _median([by_step[s]["agreement"] for s in phase]),
        "phase_checkpoints": float(len(phase)),
        "phase_end": float(phase[-1]) if phase else math.nan,
        "peak_agreement": by_step[peak]["agreement"],
        "peak_step": float(peak),
        "final_agreement": final["agreement"],
        "final_beyond": final["i_fy_given_l"] / final["i_fy"] if final["i_fy"] > 0
        else math.nan,
        "final_i_fy": final["i_fy"],
        "final_i_fy_given_l": final["i_fy_given_l"],
        "final_linear_part": final["linear_part"],
        "final_acc": final["accuracy"],
        "retained": final["linear_part"] / i_ly if i_ly > 0 else math.nan,
        "i_ly": i_ly,
    }


def binary_mnist1d(n_train: int, n_test: int = N_TEST) -> ClassificationData:
    """MNIST-1D with digits 0-4 as class 0 and 5-9 as class 1: a task on which a linear
    classifier is clearly better than chance yet far from what an MLP reaches. Up to 10000
    training sequences share one generated set (12500 sequences, split 80/20) with the default
    2500 test sequences; a smaller test set generates fewer (the tiny size)."""
    total = max(5 * n_test, math.ceil(n_train * 5 / 4))
    data = mnist1d(total, n_train=n_train, n_test=n_test)
    return ClassificationData("mnist1d-binary", data.x_train, (data.y_train >= 5).long(),
                              data.x_test, (data.y_test >= 5).long(), 2)


def train_seeds(cfg: IncreasingComplexityConfig, trials: list[Trial]) -> list[TrialOutput]:
    """Every seed as one stack of models, each measured by its own simplicity probe."""
    data = binary_mnist1d(cfg.n_train, cfg.n_test)
    if cfg.label_noise > 0:
        data = random_labels(data, cfg.label_noise, seed=cfg.seed)
    stack = make_stack(lambda seed: mlp([data.n_features, cfg.hidden, cfg.hidden, 2], seed=seed),
                       seeds=[t.seed for t in trials], loss="ce", optimizer="sgd", lr=cfg.lr,
                       momentum=0.9, batch_size=cfg.batch_size, x_train=data.x_train,
                       y_train=data.y_train, x_test=data.x_test, y_test=data.y_test,
                       device=cfg.device)
    schedule = at_steps(*[c for c in cfg.checkpoints if c < cfg.steps])
    sessions = [ProbeSession(stack.export(k),
                             [SimplicityProbe(fit_on=(data.x_train, data.y_train),
                                              schedule=schedule)],
                             data=(data.x_test, data.y_test)) for k in range(stack.K)]
    records = train_monitored(stack, sessions, steps=cfg.steps)
    outputs = []
    for recs, history in zip(records, stack.histories, strict=True):
        info = {(r.step, r.key): r.value for r in recs}
        recs = list(recs) + [
            Record("explained_fraction", info[(step, "linear_part")] / value, step, "derived",
                   {"units": "fraction", "of": "i_fy"})
            for (step, key), value in sorted(info.items()) if key == "i_fy" and value > 1e-3]
        log = history.logs[-1]
        recs += [Record("test_acc", log.test_acc, log.step, "train"),
                 Record("train_acc", log.train_acc, log.step, "train")]
        outputs.append(TrialOutput(recs, "diverged" if history.diverged else "finished"))
    return outputs
