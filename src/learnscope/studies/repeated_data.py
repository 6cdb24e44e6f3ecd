"""Learning from repeated data (Hernandez et al. 2022, "Scaling laws and interpretability of
learning from repeated data").

A model trained on a fixed budget of samples of which a fraction are many repeats of a small
subset learns less than one trained on the same budget of unique samples: Hernandez et al.
found that repeating 0.1% of the data 100 times (10% of the tokens) degrades an 800M-parameter
language model to the level of one half its size, with the damage largest at an intermediate
number of repeats, the range where the model memorizes the repeated subset. Deduplicating the
data avoids it.

Setup: MNIST-1D (40-dim sequences, 10 classes), one pass over a multiset of budget training
samples: a subset of round(fraction * budget / r) examples repeated r times each, the rest
unique examples seen once (r = 1: the same budget of unique samples). An MLP 40-h-h-10
(ReLU) trains with Adam in minibatches; the whole pass is shuffled. For each r a
deduplicated control trains on the same distinct examples with the same budget, spread evenly
(each seen budget // n or one more times): same compute, same examples, no concentration on
one subset. Within a seed every condition starts from the same initial weights; the repeated
subsets of a seed are nested (a larger r repeats a prefix of a smaller one's subset). All
conditions of a seed train as one stack of models. Default size: a budget of 16000 samples,
half of them repeats, h = 128, Adam with learning rate 1e-3, batches of 50, r from 1 to 1024,
5 seeds (--quick: 3 seeds, 6 values of r). Memorization is read off the training
accuracy and loss on the repeated subset against the unique part; test accuracy is on held-out
examples.

Claims (medians over seeds, compared with distribution-free confidence intervals of the medians;
with few seeds the interval is the range over seeds):

- repetition costs test accuracy: the all-unique budget (r = 1) is better than the most
  damaging r beyond the spread over seeds;
- the repeated subset is memorized: at the largest r the training accuracy on it is at least
  99% while the test accuracy is below that of r = 1;
- memorization grows with repetition: the training loss on the repeated subset does not rise as
  r grows;
- deduplication restores test accuracy: at the most damaging r the deduplicated control beats
  the repeated run beyond the spread over seeds; that it comes back to the all-unique level is
  reported, not gating;
- the dip in the middle (not gating): Hernandez et al.'s damage peaks at intermediate
  repetition, so test accuracy at some intermediate r should lie below both r = 1 and the
  largest r beyond the spread. In this small setting the model is limited by the number of
  useful steps more than by capacity, the samples spent on a tiny memorized subset are wasted,
  and test accuracy tends to fall monotonically with r instead (also with a narrower MLP, more
  steps or a smaller repeated fraction, in calibration runs): so it is reported, not gating.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F

from learnscope.analysis import Claim, LinePlot, Lines, Results, Table
from learnscope.analysis.claims import above, all_of, at_least, below, claim, monotone
from learnscope.analysis.curves import Curve, median_ci
from learnscope.config import StudyConfig, param
from learnscope.data import mnist1d
from learnscope.data.repetition import balanced_multiset, pool_order, repeated_subset
from learnscope.errors import ConfigError
from learnscope.models import mlp
from learnscope.store.records import Record
from learnscope.studies import register
from learnscope.studies.base import Part, Study, Trial, TrialOutput, part
from learnscope.train.stacked import make_stack

KINDS = ("repeated", "deduplicated")
MEMORIZED = 0.99
"""Training accuracy on the repeated subset that counts as memorized."""


@dataclasses.dataclass(frozen=True)
class RepeatedDataConfig(StudyConfig):
    seeds: int = param(5, "seeds per condition; claims use medians over seeds", ge=1)
    budget: int = param(16000, "training samples seen (gradient examples): one pass over the "
                               "multiset", ge=100, le=100000)
    fraction: float = param(0.5, "fraction of the budget spent on repeats of the subset",
                            gt=0, lt=1)
    repeats: tuple[int, ...] = param((1, 2, 4, 8, 16, 32, 64, 128, 256, 1024),
                                     "repetition factors r (each subset example seen r times); "
                                     "must contain 1", ge=1, min_len=3)
    hidden: int = param(128, "width of each of the two hidden layers", ge=1)
    lr: float = param(1e-3, "Adam learning rate", gt=0)
    batch_size: int = param(50, "minibatch size", ge=1)
    n_test: int = param(2000, "held-out test examples", ge=100, le=20000)
    evals: int = param(8, "evaluations during the pass (evenly spaced, the last at its end)",
                       ge=1, le=100)
    n_eval: int = param(1000, "repeated-subset examples evaluated during the pass (all of "
                              "them at its end)", ge=1)
    deduplicated: bool = param(True, "also train the deduplicated control at every r")

    def check(self) -> None:
        if 1 not in self.repeats:
            raise ConfigError("field 'repeats' must contain 1 (the all-unique baseline)")
        if max(self.repeats) > self.fraction * self.budget:
            raise ConfigError(
                f"field 'repeats': r={max(self.repeats)} exceeds fraction * budget = "
                f"{self.fraction * self.budget:g}, the most repeats one example can get")


@register
class RepeatedData(Study[RepeatedDataConfig]):
    name = "repeated-data"
    title = "Learning from repeated data"
    summary = ("A budget with many repeats of a small subset memorizes it and loses test "
               "accuracy; deduplicating restores it.")
    source = ("Hernandez et al. 2022, Scaling laws and interpretability of learning from "
              "repeated data")
    Config = RepeatedDataConfig
    quick = {"seeds": 3, "repeats": [1, 4, 16, 64, 256, 1024]}
    tiny = {"seeds": 2, "budget": 2000, "repeats": [1, 16, 256], "hidden": 16, "n_test": 200,
            "evals": 2, "n_eval": 100}

    def parts(self, cfg: RepeatedDataConfig) -> list[Part]:
        kinds = list(KINDS) if cfg.deduplicated else ["repeated"]
        return [part("train", train_seed, batch_by=["seed"], kind=kinds,
                     repeats=sorted(cfg.repeats), seed=cfg.seed_list())]

    def neighbours(self, cfg: RepeatedDataConfig) -> dict[str, dict[str, Any]]:
        return super().neighbours(cfg) | {
            "smaller budget": {"budget": cfg.budget // 2, "seed": cfg.seed + 5},
            "larger budget": {"budget": cfg.budget * 3 // 2},
            "narrower": {"hidden": cfg.hidden // 2},
            "fewer repeats": {"fraction": round(cfg.fraction * 0.7, 3), "seed": cfg.seed + 9},
        }

    def memory_bytes(self, cfg: RepeatedDataConfig) -> float:
        k = len(cfg.repeats) * (2 if cfg.deduplicated else 1)
        params = 40 * cfg.hidden + cfg.hidden * cfg.hidden + cfg.hidden * 10 + 2 * cfg.hidden + 10
        data = (_pool_samples(cfg) * 41 + k * cfg.budget * 2) * 8
        return 4.0 * k * params * 4 + data + k * cfg.budget * 10 * 4

    def claims(self, cfg: RepeatedDataConfig, results: Results) -> list[Claim]:
        rep = results.where(kind="repeated")
        test = rep.curve("test_acc", "repeats")
        r_max, r_worst = test.x[-1], _worst(test)
        lo1, hi1, cov = median_ci(test.values_at(1))
        lo_w, hi_w, _ = median_ci(test.values_at(r_worst))
        claims = [claim(
            "repetition-costs-test-accuracy", "the same budget of unique samples (r = 1) reaches "
            "a higher test accuracy than the most damaging repetition factor, beyond the spread "
            "over seeds (lower end of the median's interval at r = 1 minus the upper end at the "
            "worst r)", "ci_gap", lo1 - hi_w, above(0.0),
            extra={"worst_r": r_worst, "test_acc_r1": test[1], "test_acc_worst": test[r_worst],
                   "ci_coverage": cov})]
        mem = rep.where(repeats=r_max)
        claims.append(all_of(
            "repeated-subset-memorized", f"at the largest repetition factor (r = {r_max:g}) the "
            f"repeated subset is memorized (training accuracy on it >= {MEMORIZED:.0%}) while "
            "test accuracy is below that of the all-unique budget",
            {"repeated_acc": (mem.median("repeated_acc"), at_least(MEMORIZED)),
             "test_acc_minus_r1": (test[r_max] - test[1], below(0.0))},
            extra={"unique_acc": mem.median("unique_acc"), "test_acc": test[r_max]}))
        loss = rep.curve("repeated_loss", "repeats")
        claims.append(monotone(
            "memorization-grows-with-repeats", "the training loss on the repeated subset does "
            "not rise as r grows (median over seeds): the more often an example is seen, the "
            "better it is memorized", loss, increasing=False, strict=False))
        dedup = results.where(kind="deduplicated")
        if len(dedup):
            dcurve = dedup.curve("test_acc", "repeats")
            lo_d, _, _ = median_ci(dcurve.values_at(r_worst))
            claims.append(claim(
                "deduplication-restores", f"at the most damaging repetition factor (r = "
                f"{r_worst:g}) the deduplicated control (same distinct examples, same budget, "
                "spread evenly) beats the repeated run beyond the spread over seeds (lower end "
                "of its interval minus the upper end of the repeated run's)", "ci_gap",
                lo_d - hi_w, above(0.0),
                extra={"test_acc_deduplicated": dcurve[r_worst], "test_acc_repeated":
                       test[r_worst]}))
            claims.append(claim(
                "deduplication-reaches-unique-level", "the deduplicated control at the most "
                "damaging r comes back to the all-unique level: its median test accuracy is "
                "at least the lower end of the interval at r = 1 (not gating: half the distinct "
                "examples seen twice need not equal all of them seen once)",
                "median_minus_r1_ci_low", dcurve[r_worst] - lo1, at_least(0.0),
                extra={"test_acc_deduplicated": dcurve[r_worst], "r1_ci_low": lo1},
                gating=False))
        claims.append(_dip_claim(test))
        return claims

    def figures(self, cfg: RepeatedDataConfig) -> list[LinePlot]:
        by_r = Lines({"kind": "repeated"}, group="repeats", label="r = {repeats}")
        return [
            LinePlot("Test accuracy vs repetition factor (median, IQR over seeds)", "repeats",
                     (Lines({"kind": "repeated"}, label="repeated subset"),
                      Lines({"kind": "deduplicated"}, label="deduplicated (same examples, "
                            "spread evenly)", dash="dash")),
                     key="test_acc", x_title="repetition factor r (times each subset example "
                     "is seen)", y_title="test accuracy", log_x=True,
                     caption="At r = 1 both are the same budget of unique samples; a gap "
                             "between the lines is what concentrating the repeats costs."),
            LinePlot("Memorization: training accuracy on the repeated subset vs the unique part "
                     "(median, IQR)", "repeats",
                     (Lines({"kind": "repeated"}, key="repeated_acc", label="repeated subset"),
                      Lines({"kind": "repeated"}, key="unique_acc", label="unique part"),
                      Lines({"kind": "repeated"}, key="test_acc", label="test set",
                            dash="dot")),
                     x_title="repetition factor r", y_title="accuracy", log_x=True,
                     hlines=((MEMORIZED, "memorized"),),
                     caption="The repeated subset climbs to 100% as r grows while the unique "
                             "part stays at the test-set level: it is memorized, not learned."),
            LinePlot("Training loss on the repeated subset and the unique part (median, IQR)",
                     "repeats",
                     (Lines({"kind": "repeated"}, key="repeated_loss", label="repeated subset"),
                      Lines({"kind": "repeated"}, key="unique_loss", label="unique part")),
                     x_title="repetition factor r", y_title="cross-entropy (nats)", log_x=True,
                     log_y=True,
                     caption="The repeated subset's loss falls by orders of magnitude with r; "
                             "the unique part's rises as fewer useful samples remain."),
            LinePlot("Test accuracy during the pass (median over seeds)", "step", (by_r,),
                     key="test_acc", x_title="training samples seen",
                     y_title="test accuracy", seeds="median",
                     caption="Each line is one repetition factor; lower lines learned less "
                             "from the same number of samples."),
            LinePlot("Repeated-subset accuracy during the pass (median over seeds)", "step",
                     (by_r,), key="repeated_acc", x_title="training samples seen",
                     y_title="training accuracy on the repeated subset",
                     hlines=((MEMORIZED, "memorized"),),
                     caption=f"Large r memorizes its subset early in the pass, small r never "
                             f"does (measured on at most {cfg.n_eval} subset examples before "
                             f"the end of the pass, on all of them at its end)."),
        ]

    def tables(self, cfg: RepeatedDataConfig, results: Results) -> list[Table]:
        rows = []
        for r in results.axis("repeats"):
            rep = results.where(kind="repeated", repeats=r)
            dedup = results.where(kind="deduplicated", repeats=r)
            rows.append([r, rep.median("subset_size"), rep.median("repeated_fraction"),
                         rep.median("test_acc"),
                         dedup.median("test_acc") if len(dedup) else math.nan,
                         rep.median("repeated_acc"), rep.median("unique_acc"),
                         rep.median("repeated_loss"), rep.median("unique_loss")])
        return [Table("Repetition factor r: subset size, and medians over seeds (training "
                      "accuracy and loss on the repeated subset and on the unique part)",
                      ["r", "subset size", "repeated fraction", "test acc",
                       "test acc deduplicated", "repeated-subset acc", "unique-part acc",
                       "repeated-subset loss", "unique-part loss"], rows)]

    def notes(self, cfg: RepeatedDataConfig, results: Results) -> list[str]:
        rep = results.where(kind="repeated")
        if not len(rep):
            return []
        test = rep.curve("test_acc", "repeats")
        worst = _worst(test)
        largest = "" if worst == test.x[-1] else (
            f"; at the largest r = {test.x[-1]:g} it is {test.last:.3f}")
        return [f"Test accuracy falls from {test[1]:.3f} (r = 1) to {test[worst]:.3f} at the "
                f"most damaging r = {worst:g}{largest} (medians over "
                f"{len(test.values_at(1))} seeds)."]


def _worst(test: Curve) -> float:
    """The repetition factor (r > 1) with the lowest median test accuracy."""
    return test.between(lo=1.5).argmin()


def _dip_claim(test: Curve) -> Claim:
    """Hernandez et al.'s peak of damage at intermediate repetition: the worst intermediate r
    lies below both ends beyond the spread over seeds."""
    inner = test.between(lo=1.5, hi=test.x[-1] - 0.5)
    gap, r_dip = math.nan, math.nan
    if len(inner):
        r_dip = inner.argmin()
        _, hi_dip, _ = median_ci(test.values_at(r_dip))
        lo_ends = min(median_ci(test.values_at(1))[0], median_ci(test.values_at(test.x[-1]))[0])
        gap = lo_ends - hi_dip
    return claim(
        "dip-at-intermediate-repetition", "test accuracy dips at an intermediate repetition "
        "factor: the worst intermediate r lies below both r = 1 and the largest r beyond the "
        "spread over seeds (Hernandez et al.'s peak of damage; not gating: on this small MLP the "
        "accuracy tends to fall monotonically instead)", "ci_gap", gap, above(0.0),
        extra={"dip_r": r_dip, "test_acc_dip": test.at(r_dip) if len(inner) else math.nan,
               "test_acc_r1": test[1], "test_acc_largest_r": test.last}, gating=False)


def _pool_samples(cfg: RepeatedDataConfig) -> int:
    """MNIST-1D examples to generate: 80% train (the pool, one per budget sample), 20% test."""
    return max(5000, math.ceil(cfg.budget / 0.8), math.ceil(cfg.n_test / 0.2))


def train_seed(cfg: RepeatedDataConfig, trials: list[Trial]) -> list[TrialOutput]:
    """Every condition of one seed as one stack: one shuffled pass over its multiset."""
    seed = trials[0].seed
    data = mnist1d(_pool_samples(cfg), n_train=cfg.budget, n_test=cfg.n_test)
    pool = len(data.x_train)
    draws = [repeated_subset(pool, cfg.budget, cfg.fraction, t.repeats, seed=seed)
             for t in trials]
    samples = [d.samples if t.kind == "repeated"
               else balanced_multiset(d.distinct, cfg.budget, seed=seed)
               for t, d in zip(trials, draws, strict=True)]
    sizes = [data.n_features, cfg.hidden, cfg.hidden, data.n_classes]
    # Same initial weights and batch-order seed for every condition of a seed: the conditions
    # differ only in their multiset.
    stack = make_stack(lambda s: mlp(sizes, seed=s), seeds=[seed] * len(trials), loss="ce",
                       optimizer="adam", lr=cfg.lr, batch_size=cfg.batch_size,
                       x_train=data.x_train, y_train=data.y_train,
                       subsets=torch.stack(samples), x_test=data.x_test, y_test=data.y_test,
                       device=cfg.device)
    steps = stack.steps_per_epoch or 1
    due = sorted({max(1, round(steps * (i + 1) / cfg.evals)) for i in range(cfg.evals)})
    # The repeated subsets of a seed are prefixes of one permutation: one shared set of inputs
    # serves every model's subset during the pass.
    probe_idx = pool_order(pool, seed=seed)[:cfg.n_eval]
    seen = [min(len(d.repeated), cfg.n_eval) for d in draws]
    records: list[list[Record]] = [[] for _ in trials]
    done = 0
    for at in due:
        stack.run_steps(at - done)
        done = at
        if at == steps:
            break
        n_seen = min(at * cfg.batch_size, cfg.budget)
        test_acc = _accuracy(stack.predict(data.x_test), data.y_test)
        hits = stack.predict(data.x_train[probe_idx]).argmax(-1) == data.y_train[probe_idx]
        for k in range(len(trials)):
            records[k].append(Record("test_acc", test_acc[k], n_seen, "pass"))
            records[k].append(Record("repeated_acc", hits[k, :seen[k]].float().mean(), n_seen,
                                     "pass"))
    logits = stack.predict(data.x_train)
    test_logits = stack.predict(data.x_test)
    outputs = []
    for k, (trial, draw, sample) in enumerate(zip(trials, draws, samples, strict=True)):
        rep_acc, rep_loss = _fit(logits[k], data.y_train, draw.repeated)
        uni_acc, uni_loss = _fit(logits[k], data.y_train, draw.unique)
        test_loss = float(F.cross_entropy(test_logits[k].double(), data.y_test))
        end = cfg.budget
        final = [
            Record("test_acc", _accuracy(test_logits[k:k + 1], data.y_test)[0], end, "pass"),
            Record("test_loss", test_loss, end, "pass"),
            Record("repeated_acc", rep_acc, end, "pass"),
            Record("repeated_loss", rep_loss, end, "pass"),
            Record("unique_acc", uni_acc, end, "pass"),
            Record("unique_loss", uni_loss, end, "pass"),
            Record("subset_size", len(draw.repeated), end, "data"),
            Record("repeated_fraction", torch.isin(sample, draw.repeated).double().mean(), end,
                   "data"),
        ]
        outputs.append(TrialOutput(records[k] + final,
                                   "diverged" if stack.diverged[k] else "finished",
                                   {"subset_size": len(draw.repeated),
                                    "unique": len(draw.unique), "kind": trial.kind}))
    return outputs


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Per-model accuracy from logits ``(K, n, C)``."""
    return (logits.argmax(-1) == labels).double().mean(1).tolist()


def _fit(logits: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of one model on the examples ``idx`` (NaN when empty)."""
    if len(idx) == 0:
        return math.nan, math.nan
    z, y = logits[idx].double(), labels[idx]
    return float((z.argmax(-1) == y).double().mean()), float(F.cross_entropy(z, y))
