"""Real patterns first, noise later (Arpit et al. 2017, "A closer look at memorization in deep
networks").

A network trained on data whose labels are partly wrong first learns the patterns the correct
examples share, and only later memorises the wrong labels one by one. During the first phase
test accuracy rises; once memorisation starts it falls, so the best test accuracy comes long
before the last epoch. Dropout slows the memorisation of wrong labels far more than the
learning of the real ones. Because wrong labels are learned late, forgotten and held with a
small margin, a network's training dynamics rank the training examples by how mislabeled they
look.

Setup: scikit-learn's 8x8 digits (1000 training images, the other 797 are the clean test set);
a fraction of the training labels (40%) is replaced by a *different* class chosen uniformly, so
every flipped label is wrong. An MLP 64-h-h-10 (ReLU) trained with Adam (lr 1e-3, batch 100),
without and with dropout on both hidden layers; every (seed, dropout) pair trains as one stack
of models. After every epoch an evaluation pass (no dropout) measures each training example on
its *assigned* label: the clean-subset and noisy-subset fit, each example's margin, whether it
is classified as labelled and the probability of its label. An example's learned epoch is the
first epoch from which it stays fitted to the end (Toneva et al. 2019).

Ranking the flipped labels: the per-example measures score every training example (higher =
more suspicious): the fit-weighted area under the margin (the margin averaged over the epochs
weighted by the fraction of the training set still unfitted), the plain area under the margin
(Pleiss et al. 2020), one minus the data-map confidence (Swayamdipta et al. 2020), the learned
epoch and the number of forgetting events (Toneva et al. 2019), all from the run without
dropout. The baseline is confident learning (Northcutt et al. 2021): out-of-fold predicted
probabilities of a logistic regression (5-fold cross-validation on the same noisy labels),
ranked by low self-confidence in the given label. Each ranking is scored by its AUROC (the
probability that a flipped example ranks above a clean one; 0.5 is chance) and its precision
at k (the fraction of flipped examples among the k most suspicious, k = the number flipped; the
noise fraction is chance).

Claims (medians over seeds, network without dropout unless said): when the clean subset is
95% fitted, at most a fifth of the flipped labels are; flipped examples are learned at least
twice as late as clean ones (median learned epoch); memorisation is a later phase (the
noisy-subset fit at the last epoch is at least 10 times its value when the clean subset was
fitted; how far it gets depends on width and epochs: 0.5 at width 128, 0.95 at 256, 1.0 at 384
after 150 epochs); the best test accuracy exceeds the last one by at
least 5 points in every seed (memorisation hurts); at the epoch where the network without
dropout has memorised half of the flipped labels, dropout has memorised at most half as many
while its clean-subset fit is within 3 points; the fit-weighted area under the margin finds the
flipped labels (AUROC at least 0.8, precision at k at least 1.5 times the noise fraction).
Dropout's better final test accuracy and the comparison of the per-example ranking with
confident learning are reported, not gating (both depend on the epoch budget and the
classifier).

Sources: Arpit et al. 2017 (ICML); Zhang et al. 2017 (random labels); Toneva et al. 2019
(forgetting events); Swayamdipta et al. 2020 (data maps); Pleiss et al. 2020 (area under the
margin); Northcutt, Jiang & Chuang 2021 (confident learning, JAIR).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import numpy as np
import torch

from learnscope.analysis import Claim, LinePlot, Lines, Results, Table
from learnscope.analysis.claims import above, all_of, at_least, at_most, claim, ratio
from learnscope.config import StudyConfig, param
from learnscope.data import digits
from learnscope.data.classification import ClassificationData
from learnscope.data.corruptions import flip_labels
from learnscope.measures.per_example import (
    data_map,
    detection_auroc,
    forgetting_events,
    learned_epoch,
    rank_suspicious,
)
from learnscope.seeding import derive_seed
from learnscope.store.records import Record
from learnscope.studies import register
from learnscope.studies.base import Part, Study, Trial, TrialOutput, part
from learnscope.train.batched import BatchedTrainer, ModelSpec

CLEAN_FITTED = 0.95
"""The clean-subset fit at which "the real patterns are learned"."""

RANKINGS = ("fit-weighted AUM", "AUM", "data-map confidence", "learned epoch",
            "forgetting events")
CONFIDENT_LEARNING = "confident learning"


@dataclasses.dataclass(frozen=True)
class MemorizationConfig(StudyConfig):
    seeds: int = param(3, "seeds (label flips, initialisation, batch order); claims use "
                          "medians over seeds", ge=1)
    n_train: int = param(1000, "training images (the rest of the 1797 digits are the test set)",
                         ge=100, le=1700)
    noise: float = param(0.4, "fraction of training labels flipped to a different class",
                         gt=0, lt=1)
    hidden: int = param(512, "width of each of the two hidden layers", ge=2)
    dropout: float = param(0.5, "dropout probability of the regularised networks (hidden "
                                "layers)", gt=0, lt=1)
    epochs: int = param(300, "training epochs", ge=2)
    lr: float = param(1e-3, "Adam learning rate", gt=0)
    batch_size: int = param(100, "minibatch size", ge=1)
    folds: int = param(5, "cross-validation folds of the confident-learning baseline", ge=2)


@register
class MemorizationOrder(Study[MemorizationConfig]):
    name = "memorization-order"
    title = "Real patterns first, noise later"
    summary = ("Clean examples are fitted long before flipped labels; dropout slows memorisation; "
               "training dynamics rank the flipped labels.")
    source = "Arpit et al. 2017, A closer look at memorization in deep networks"
    Config = MemorizationConfig
    quick = {"hidden": 256, "epochs": 150}
    tiny = {"seeds": 2, "hidden": 16, "epochs": 4, "n_train": 200, "folds": 2}

    def parts(self, cfg: MemorizationConfig) -> list[Part]:
        seeds = cfg.seed_list()
        return [part("train", train_networks, batch_by=[], dropout=[0.0, cfg.dropout],
                     seed=seeds),
                part("confident-learning", confident_learning, seed=seeds)]

    def neighbours(self, cfg: MemorizationConfig) -> dict[str, dict[str, Any]]:
        return super().neighbours(cfg) | {
            "narrower": {"hidden": max(2, cfg.hidden // 2), "seed": cfg.seed + 5},
            "wider": {"hidden": int(cfg.hidden * 1.5), "seed": cfg.seed + 9},
            "fewer images": {"n_train": int(cfg.n_train * 0.6)},
            "less noise": {"noise": cfg.noise / 2, "seed": cfg.seed + 13},
        }

    def memory_bytes(self, cfg: MemorizationConfig) -> float:
        k = 2 * cfg.seeds
        params = 64 * cfg.hidden + cfg.hidden**2 + 10 * cfg.hidden
        histories = cfg.epochs * cfg.n_train * (4 + 4 + 1)  # margins, prob, correct
        return 4.0 * k * (4 * params + 3 * cfg.batch_size * cfg.hidden) + k * histories

    def claims(self, cfg: MemorizationConfig, results: Results) -> list[Claim]:
        erm = results.where(part="train", dropout=0.0)
        drop = results.where(part="train", dropout=cfg.dropout)
        seeds = len(erm)
        at_clean = erm.median("noisy_fit_when_clean_fitted")
        one_flipped = 1.0 / max(1, round(cfg.noise * cfg.n_train))
        claims = [
            claim("clean-before-noisy", f"when the clean subset is {CLEAN_FITTED:.0%} fitted "
                  "(first such epoch), at most a fifth of the flipped labels are fitted",
                  "noisy_fit_when_clean_fitted", at_clean, at_most(0.2),
                  extra={"epoch_clean_fitted": erm.median("epoch_clean_fitted")}),
            ratio("flipped-learned-later", "flipped examples are learned at least twice as late "
                  "as clean ones (median learned epoch; never learned counts as epochs + 1)",
                  "learned_epoch_ratio",
                  erm.where(subset="flipped").median("median_learned_epoch"),
                  erm.where(subset="clean").median("median_learned_epoch"), at_least(2.0),
                  names=("learned_epoch_flipped", "learned_epoch_clean")),
            claim("memorizes-later", "memorisation of the flipped labels is a later phase: "
                  "the noisy-subset fit on the assigned labels at the last epoch is at least 10 "
                  "times its value when the clean subset was fitted (that value counted as at "
                  "least one flipped example)", "noisy_fit_ratio",
                  erm.median("noisy_fit") / max(at_clean, one_flipped), at_least(10.0),
                  extra={"final_noisy_fit": erm.median("noisy_fit"),
                         "noisy_fit_when_clean_fitted": at_clean}),
        ]
        gaps = erm.values("test_acc", "max") - erm.values("test_acc")
        claims.append(claim(
            "memorization-hurts-test", "the best test accuracy (early in training) exceeds the "
            "last one by at least 5 points in every seed: memorising wrong labels hurts",
            "smallest_gap_over_seeds", float(np.min(gaps)) if len(gaps) else math.nan,
            at_least(0.05), extra={"median_best_test": erm.median("test_acc", "max"),
                                   "median_last_test": erm.median("test_acc"), "seeds": seeds}))
        epoch_half = _first_epoch(erm.over_time("noisy_fit"), 0.5)
        noisy_erm = _at_epoch(erm, "noisy_fit", epoch_half)
        noisy_drop = _at_epoch(drop, "noisy_fit", epoch_half)
        clean_gap = abs(_at_epoch(drop, "clean_fit", epoch_half)
                        - _at_epoch(erm, "clean_fit", epoch_half))
        claims.append(all_of(
            "dropout-slows-memorization", f"dropout {cfg.dropout:g} slows memorisation of the "
            "flipped labels far more than learning of the clean ones: at the epoch where the "
            "network without dropout fits half of the flipped labels, dropout fits at most half "
            "as many, and its clean-subset fit is within 3 points",
            {"noisy_fit_ratio": (noisy_drop / noisy_erm if noisy_erm > 0 else math.nan,
                                 at_most(0.5)),
             "clean_fit_difference": (clean_gap, at_most(0.03))},
            extra={"epoch": epoch_half, "noisy_fit_erm": noisy_erm, "noisy_fit_dropout":
                   noisy_drop}))
        claims.append(claim(
            "dropout-better-last-test", "dropout ends with a better test accuracy than the "
            "network without it (not gating: depends on the epoch budget)",
            "last_test_difference", drop.median("test_acc") - erm.median("test_acc"), above(0.0),
            extra={"last_test_dropout": drop.median("test_acc"),
                   "last_test_erm": erm.median("test_acc")}, gating=False))
        fw = erm.where(method=RANKINGS[0])
        chance_precision = erm.median("noise_fraction")
        claims.append(all_of(
            "ranking-finds-flipped", "the fit-weighted area under the margin ranks the flipped "
            "labels first: AUROC at least 0.8 and precision at k at least 1.5 times the noise "
            "fraction (chance)",
            {"auroc": (fw.median("detection_auroc"), at_least(0.8)),
             "precision_at_k": (fw.median("detection_precision_at_k"),
                                at_least(1.5 * chance_precision))},
            extra={"noise_fraction": chance_precision}))
        cl = results.where(part="confident-learning")
        claims.append(claim(
            "ranking-vs-confident-learning", "the network's own training dynamics rank the "
            "flipped labels about as well as confident learning with a logistic regression "
            "(AUROC difference; not gating: depends on how good the baseline classifier is)",
            "auroc_difference", fw.median("detection_auroc") - cl.median("detection_auroc"),
            at_least(-0.02), extra={"auroc_fit_weighted_aum": fw.median("detection_auroc"),
                                    "auroc_confident_learning": cl.median("detection_auroc")},
            gating=False))
        return claims

    def figures(self, cfg: MemorizationConfig) -> list[LinePlot]:
        fits = tuple(
            Lines({"part": "train", "dropout": d}, key=key, label=f"{name}, {cond}", dash=dash)
            for d, cond, dash in ((0.0, "no dropout", None),
                                  (cfg.dropout, f"dropout {cfg.dropout:g}", "dash"))
            for key, name in (("clean_fit", "clean subset"), ("noisy_fit", "flipped subset")))
        return [
            LinePlot("Fit on the assigned labels: clean vs flipped examples", "step", fits,
                     x_title="epoch", y_title="fraction fitted (median over seeds)",
                     caption="The clean subset is fitted within a few epochs; the flipped "
                             "labels are memorised much later, and later still with dropout."),
            LinePlot("Test accuracy on clean labels", "step",
                     (Lines({"part": "train", "dropout": 0.0}, label="no dropout"),
                      Lines({"part": "train", "dropout": cfg.dropout},
                            label=f"dropout {cfg.dropout:g}", dash="dash")),
                     key="test_acc", x_title="epoch", y_title="test accuracy (median over seeds)",
                     caption="Test accuracy peaks while the real patterns are learned and falls "
                             "as the flipped labels are memorised."),
            LinePlot("When examples are learned: fraction learned by each epoch", "step",
                     tuple(Lines({"part": "train", "dropout": d, "subset": s},
                                 label=f"{s} examples, {cond}", dash=dash)
                           for d, cond, dash in ((0.0, "no dropout", None),
                                                 (cfg.dropout, f"dropout {cfg.dropout:g}",
                                                  "dash"))
                           for s in ("clean", "flipped")),
                     key="fraction_learned", x_title="epoch",
                     y_title="fraction learned (fitted from then on)",
                     caption="The cumulative distribution of the learned epoch: the clean "
                             "curve rises at once, the flipped one much later."),
        ]

    def tables(self, cfg: MemorizationConfig, results: Results) -> list[Table]:
        rows = []
        for d, cond in ((0.0, "no dropout"), (cfg.dropout, f"dropout {cfg.dropout:g}")):
            sub = results.where(part="train", dropout=d)
            if not len(sub):
                continue
            for epoch in sorted({10, 50, 100, cfg.epochs} & set(range(1, cfg.epochs + 1))):
                rows.append([cond, epoch, _at_epoch(sub, "clean_fit", epoch),
                             _at_epoch(sub, "noisy_fit", epoch), _at_epoch(sub, "test_acc",
                                                                           epoch)])
            rows.append([cond, "best test", "-", "-", sub.median("test_acc", "max")])
        fit = Table("Fit on the assigned labels and test accuracy (medians over seeds)",
                    ["network", "epoch", "clean-subset fit", "noisy-subset fit",
                     "test accuracy"], rows)
        erm = results.where(part="train", dropout=0.0)
        det = []
        for method in RANKINGS:
            sub = erm.where(method=method)
            det.append([f"{method} (training dynamics)", sub.median("detection_auroc"),
                        sub.median("detection_precision_at_k")])
        cl = results.where(part="confident-learning")
        det.append(["confident learning (logistic regression, out-of-fold)",
                    cl.median("detection_auroc"), cl.median("detection_precision_at_k")])
        detection = Table("Finding the flipped labels: AUROC and precision at k = number "
                          "flipped (medians over seeds; chance: 0.5 and the noise fraction)",
                          ["ranking", "AUROC", "precision at k"], det)
        return [fit, detection]


def _first_epoch(curve: Any, level: float) -> float:
    """The first recorded epoch at which the median curve reaches ``level`` (NaN if never)."""
    for x, y in zip(curve.x, curve.y, strict=True):
        if y >= level:
            return float(x)
    return math.nan


def _at_epoch(results: Results, key: str, epoch: float) -> float:
    """Median over trials of ``key`` at ``epoch`` (NaN when not recorded)."""
    if math.isnan(epoch):
        return math.nan
    curve = results.over_time(key)
    return curve[int(epoch)] if int(epoch) in curve.x else math.nan


# ---------------------------------------------------------------------------- measures


def precision_at_k(scores: np.ndarray, is_positive: np.ndarray, k: int | None = None) -> float:
    """Fraction of positives among the ``k`` highest scores (ties broken by index), ``k``
    defaulting to the number of positives.

    >>> precision_at_k(np.array([0.9, 0.1, 0.8, 0.3]), np.array([True, False, False, True]))
    0.5
    """
    positive = np.asarray(is_positive, dtype=bool)
    k = int(positive.sum()) if k is None else int(k)
    if k < 1:
        raise ValueError("precision at k needs k >= 1 (and at least one positive)")
    top = np.argsort(-np.asarray(scores, dtype=float), kind="stable")[:k]
    return float(positive[top].mean())


def suspicion_scores(correct: np.ndarray, prob_true: np.ndarray, margins: np.ndarray
                     ) -> dict[str, np.ndarray]:
    """Each ranking's score per example (higher = more suspicious) from ``[epoch, example]``
    histories."""
    n_epochs = correct.shape[0]
    learned = learned_epoch(correct)
    return {
        "fit-weighted AUM": rank_suspicious(correct, prob_true, margins=margins).scores,
        "AUM": rank_suspicious(correct, prob_true, margins=margins, method="aum").scores,
        "data-map confidence": 1.0 - data_map(prob_true, correct).confidence,
        "learned epoch": np.where(learned < 0, n_epochs, learned).astype(float),
        "forgetting events": forgetting_events(correct).astype(float),
    }


def out_of_fold_probabilities(x: np.ndarray, y: np.ndarray, *, folds: int, seed: int
                              ) -> np.ndarray:
    """Out-of-fold predicted class probabilities ``(n, classes)`` of a logistic regression
    (stratified ``folds``-fold cross-validation): each example is scored by a model that never
    saw its label, as confident learning requires."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    rs = derive_seed(seed, "confident-learning") % 2**31
    split = StratifiedKFold(folds, shuffle=True, random_state=rs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return cross_val_predict(LogisticRegression(max_iter=500), x, y, cv=split,
                                 method="predict_proba")


def self_confidence_scores(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Confident learning's ranking score (Northcutt et al. 2021): minus the predicted
    probability of the given label (self-confidence), higher = more suspicious.

    >>> self_confidence_scores(np.array([[0.9, 0.1], [0.3, 0.7]]), np.array([1, 1])).tolist()
    [-0.1, -0.7]
    """
    return -np.asarray(probs)[np.arange(len(y)), np.asarray(y)]


# ---------------------------------------------------------------------------- training


def _noisy_data(cfg: MemorizationConfig, seed: int) -> tuple[ClassificationData, torch.Tensor,
                                                              torch.Tensor]:
    data = digits(cfg.n_train, seed=cfg.seed)
    y, mask = flip_labels(data.y_train, cfg.noise, data.n_classes, seed=seed)
    return data, y, mask


def train_networks(cfg: MemorizationConfig, trials: list[Trial]) -> list[TrialOutput]:
    """Every (seed, dropout) network as one stack; per-epoch fits and per-example histories."""
    data = digits(cfg.n_train, seed=cfg.seed)
    labels = [_noisy_data(cfg, t.seed)[1:] for t in trials]
    sizes = [data.n_features, cfg.hidden, cfg.hidden, data.n_classes]
    specs = [ModelSpec(sizes, seed=t.seed, y_train=y, noisy_mask=m, dropout=t.dropout)
             for t, (y, m) in zip(trials, labels, strict=True)]
    trainer = BatchedTrainer(specs, data, optimizer="adam", lr=cfg.lr,
                             batch_size=cfg.batch_size, device=cfg.device)
    histories = run_with_histories(trainer, cfg.epochs)
    return [_output(cfg, trainer, k, histories[k], mask)
            for k, (_, mask) in enumerate(labels)]


def run_with_histories(trainer: BatchedTrainer, epochs: int
                       ) -> list[dict[str, list[np.ndarray]]]:
    """Train ``epochs`` epochs; after each, every model's per-example correctness, probability
    of the assigned label and margin on its un-mixed training examples (eval pass)."""
    K = len(trainer.specs)
    hist: list[dict[str, list[np.ndarray]]] = [{"correct": [], "prob": [], "margin": []}
                                               for _ in range(K)]
    for _ in range(epochs):
        trainer.run_epoch()
        if not trainer.K:
            break
        for k, log in zip(trainer.active, trainer.evaluate(), strict=True):
            trainer.results[k].history.append(log)
        logits = trainer.train_logits().double()
        y = trainer.train_labels.unsqueeze(-1)
        true = logits.gather(2, y).squeeze(-1)
        other = logits.scatter(2, y, -math.inf).amax(2)
        prob = torch.softmax(logits, 2).gather(2, y).squeeze(-1)
        correct = logits.argmax(2) == y.squeeze(-1)
        for pos, k in enumerate(trainer.active):
            hist[k]["correct"].append(correct[pos].cpu().numpy())
            hist[k]["prob"].append(prob[pos].cpu().numpy())
            hist[k]["margin"].append((true[pos] - other[pos]).cpu().numpy())
    return hist


def _output(cfg: MemorizationConfig, trainer: BatchedTrainer, k: int,
            hist: dict[str, list[np.ndarray]], mask: torch.Tensor) -> TrialOutput:
    result = trainer.results[k]
    records = result.records()
    noisy = mask.numpy().astype(bool)
    records.append(Record("noise_fraction", float(noisy.mean()), probe="data"))
    if not hist["correct"]:
        return TrialOutput(records, "diverged")
    correct = np.stack(hist["correct"])
    epochs = correct.shape[0]
    learned = learned_epoch(correct)
    learned_at = np.where(learned < 0, epochs + 1, learned + 1)  # 1-based epoch numbers
    for subset, sel in (("clean", ~noisy), ("flipped", noisy)):
        if not sel.any():
            continue
        records.append(Record("median_learned_epoch", float(np.median(learned_at[sel])),
                              probe="per_example", meta={"subset": subset}))
        counts = np.bincount(np.minimum(learned_at[sel], epochs + 1), minlength=epochs + 2)
        learned_by = np.cumsum(counts)[1:epochs + 1] / sel.sum()
        records += [Record("fraction_learned", float(v), e + 1, "per_example",
                           {"subset": subset}) for e, v in enumerate(learned_by)]
    clean_fit = [log.clean_fit for log in result.history]
    first = next((i for i, v in enumerate(clean_fit) if v >= CLEAN_FITTED), None)
    records.append(Record("epoch_clean_fitted", math.nan if first is None else first + 1,
                          probe="fit"))
    records.append(Record("noisy_fit_when_clean_fitted",
                          math.nan if first is None else result.history[first].noisy_fit,
                          probe="fit"))
    if noisy.any() and not noisy.all():
        scores = suspicion_scores(correct, np.stack(hist["prob"]), np.stack(hist["margin"]))
        for method, score in scores.items():
            records += [Record("detection_auroc", detection_auroc(score, noisy), probe="ranking",
                               meta={"method": method}),
                        Record("detection_precision_at_k", precision_at_k(score, noisy),
                               probe="ranking", meta={"method": method})]
    status = "diverged" if result.diverged else "finished"
    return TrialOutput(records, status, {"epochs": epochs})


def confident_learning(cfg: MemorizationConfig, trial: Trial) -> TrialOutput:
    """The baseline on the same noisy labels: out-of-fold self-confidence ranking."""
    data, y, mask = _noisy_data(cfg, trial.seed)
    noisy = mask.numpy().astype(bool)
    probs = out_of_fold_probabilities(data.x_train.numpy(), y.numpy(), folds=cfg.folds,
                                      seed=trial.seed)
    scores = self_confidence_scores(probs, y.numpy())
    meta = {"method": CONFIDENT_LEARNING}
    return TrialOutput([
        Record("detection_auroc", detection_auroc(scores, noisy), probe="ranking", meta=meta),
        Record("detection_precision_at_k", precision_at_k(scores, noisy), probe="ranking",
               meta=meta)])
