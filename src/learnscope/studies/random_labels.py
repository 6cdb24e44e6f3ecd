"""Fitting random labels and random pixels (Zhang et al. 2017): PHENOMENA.md section 2.

An MLP that generalises on real digits also reaches 100% training accuracy when a growing
fraction of its labels is replaced by random classes, or when its inputs are replaced by
noise; test accuracy falls to chance, and fitting random labels takes only a small constant
factor more epochs than fitting the real ones.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from typing import Any

import numpy as np
import torch

from learnscope.config import StudyConfig, param
from learnscope.data import digits, gaussian_inputs, shuffled_pixels
from learnscope.data.classification import ClassificationData
from learnscope.models import mlp
from learnscope.report.figures import Series, line_figure
from learnscope.seeding import torch_generator
from learnscope.store.records import Record, TrialResult
from learnscope.studies import register
from learnscope.studies.base import Analysis, Claim, Study, Table, TrialOutput, compare_claim
from learnscope.train import train_classifier
from learnscope.train.loop import TrainResult

CHANCE = 0.1


@dataclasses.dataclass(frozen=True)
class RandomLabelsConfig(StudyConfig):
    seeds: int = param(2, "seeds per condition; claims use medians over seeds", ge=1)
    noise_levels: tuple[float, ...] = param(
        (0.0, 0.2, 0.5, 0.8, 1.0),
        "fractions of training labels replaced by a uniformly random class (Zhang et al.)",
        ge=0, le=1, min_len=2)
    gaussian_pixels: bool = param(True, "also train on Gaussian-noise inputs with true labels")
    shuffled_pixels: bool = param(False, "also train on inputs with one fixed pixel permutation")
    n_train: int = param(1000, "training images (the rest of the 1797 digits are the test set)",
                         ge=100, le=1700)
    hidden: int = param(256, "width of each of the two hidden layers", ge=1)
    optimizer: str = param("sgd", "optimizer", choices=("sgd", "adam"))
    lr: float = param(0.01, "learning rate", gt=0)
    momentum: float = param(0.9, "SGD momentum", ge=0, lt=1)
    batch_size: int = param(100, "minibatch size", ge=1)
    max_epochs: int = param(1000, "give up fitting after this many epochs", ge=1)
    batched: bool = param(True, "train all label conditions of a seed as one batch of models "
                                "(same numbers as separate runs up to float32 rounding)")

    def check(self) -> None:
        from learnscope.errors import ConfigError

        if 0.0 not in self.noise_levels or 1.0 not in self.noise_levels:
            raise ConfigError("field 'noise_levels' must contain 0 (clean) and 1 (random labels)")


@register
class RandomLabels(Study):
    name = "random-labels"
    title = "Fitting random labels and random pixels"
    summary = "Nets reach 100% train accuracy on random labels; test accuracy falls to chance."
    source = ("Zhang et al. 2017, Understanding deep learning requires rethinking "
              "generalization; seed 002 (Paul, On the learning dynamics of neural nets); "
              "PHENOMENA §2")
    Config = RandomLabelsConfig
    quick = {"seeds": 2, "noise_levels": [0.0, 1.0], "max_epochs": 800}

    def trials(self, cfg: RandomLabelsConfig) -> list[dict[str, Any]]:
        conditions: list[dict[str, Any]] = [{"condition": "labels", "noise": float(p)}
                                            for p in sorted(set(cfg.noise_levels))]
        if cfg.gaussian_pixels:
            conditions.append({"condition": "gaussian-pixels", "noise": 0.0})
        if cfg.shuffled_pixels:
            conditions.append({"condition": "shuffled-pixels", "noise": 0.0})
        return [c | {"seed": s} for s in cfg.seed_list() for c in conditions]

    def group_trials(self, cfg: RandomLabelsConfig, specs: list[dict[str, Any]]
                     ) -> list[list[int]]:
        """With ``batched``, the label conditions of one seed share their inputs and train
        as one batch of models; the random-pixel conditions have inputs of their own."""
        if not cfg.batched:
            return super().group_trials(cfg, specs)
        by_seed: dict[int, list[int]] = defaultdict(list)
        singles = []
        for i, spec in enumerate(specs):
            if spec["condition"] == "labels":
                by_seed[spec["seed"]].append(i)
            else:
                singles.append([i])
        return list(by_seed.values()) + singles

    def run_group(self, cfg: RandomLabelsConfig, specs: list[dict[str, Any]]
                  ) -> list[TrialOutput]:
        if len(specs) == 1 or any(s["condition"] != "labels" for s in specs) or \
                len({s["seed"] for s in specs}) != 1:
            return super().run_group(cfg, specs)
        from learnscope.train.batched import ModelSpec, train_models

        seed = specs[0]["seed"]
        base = digits(cfg.n_train, seed=seed)
        sizes = [base.n_features, cfg.hidden, cfg.hidden, base.n_classes]
        datas = [random_labels(base, s["noise"], seed=seed) for s in specs]
        model_specs = [ModelSpec(sizes, seed=seed, y_train=d.y_train, noisy_mask=d.noisy_mask,
                                 stop_at_train_acc=1.0) for d in datas]
        results = train_models(model_specs, base, max_epochs=cfg.max_epochs,
                               optimizer=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum,
                               batch_size=cfg.batch_size)
        return [_output(r, d, batched=True) for r, d in zip(results, datas, strict=True)]

    def run_trial(self, cfg: RandomLabelsConfig, spec: dict[str, Any]) -> TrialOutput:
        seed = spec["seed"]
        data = make_condition(digits(cfg.n_train, seed=seed), spec["condition"],
                              spec["noise"], seed=seed)
        model = mlp([data.n_features, cfg.hidden, cfg.hidden, data.n_classes], seed=seed)
        result = train_classifier(
            model, data, optimizer=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum,
            batch_size=cfg.batch_size, max_epochs=cfg.max_epochs, seed=seed,
            stop_at_train_acc=1.0)
        return _output(result, data, batched=False)

    # -- analysis ------------------------------------------------------------------------
    def analyze(self, cfg: RandomLabelsConfig, results: list[TrialResult]) -> Analysis:
        rows: dict[tuple[str, float], dict[str, list[float]]] = defaultdict(
            lambda: defaultdict(list))
        for t in results:
            cond = (t.spec["condition"], t.spec["noise"])
            rows[cond]["epochs"].append(t.last("epochs_to_fit"))
            rows[cond]["train_acc"].append(t.last("train_acc"))
            rows[cond]["test_acc"].append(t.last("test_acc"))
            rows[cond]["best_test_acc"].append(max(t.values("test_acc"), default=math.nan))
            rows[cond]["changed"].append(t.last("labels_changed"))
            rows[cond]["diverged"].append(float(t.status == "diverged"))

        def med(cond: tuple[str, float], key: str) -> float:
            vals = rows[cond][key] if cond in rows else []
            # A condition that never fit counts as not fitted: NaN propagates into the claim.
            return float(np.median(vals)) if vals and not any(map(math.isnan, vals)) \
                else math.nan

        clean, rand = ("labels", 0.0), ("labels", 1.0)
        levels = sorted(p for c, p in rows if c == "labels")
        claims: list[Claim] = []
        fitted_random = sum(1 for e in rows[rand]["epochs"] if not math.isnan(e))
        claims.append(compare_claim(
            "random-labels-fit", "with 100% random labels the net still reaches 100% training "
            f"accuracy (every seed, within {cfg.max_epochs} epochs)", "seeds_fitted",
            fitted_random, ">=", len(rows[rand]["epochs"]),
            extra={"median_epochs": med(rand, "epochs")}))
        test_rand = med(rand, "test_acc")
        claims.append(Claim(
            "random-labels-test-at-chance", "test accuracy with random labels is at chance "
            "(10 classes)", {"test_acc": test_rand}, "0.05 <= test_acc <= 0.16",
            0.05 <= test_rand <= 0.16))
        ratio = med(rand, "epochs") / med(clean, "epochs")
        claims.append(Claim(
            "fit-time-small-factor", "fitting random labels takes only a small constant factor "
            "more epochs than clean labels (Zhang et al.: 1.5-3.5x)",
            {"epochs_ratio": ratio, "epochs_clean": med(clean, "epochs"),
             "epochs_random": med(rand, "epochs")}, "1.5 <= epochs_ratio <= 4",
            1.5 <= ratio <= 4.0))
        test_by_level = [med(("labels", p), "test_acc") for p in levels]
        drops = [b - a for a, b in zip(test_by_level, test_by_level[1:], strict=False)]
        claims.append(Claim(
            "test-acc-falls-with-noise", "test accuracy falls monotonically as the noise "
            "fraction grows", {"noise": levels, "test_acc": test_by_level},
            "each step down", bool(drops) and all(d < 0 for d in drops)))
        if ("gaussian-pixels", 0.0) in rows:
            g = ("gaussian-pixels", 0.0)
            fitted = sum(1 for e in rows[g]["epochs"] if not math.isnan(e))
            tg = med(g, "test_acc")
            claims.append(Claim(
                "random-pixels-fit", "Gaussian-noise inputs with the true labels are fitted "
                "too, and test accuracy on real images is at chance",
                {"seeds_fitted": fitted, "test_acc": tg, "median_epochs": med(g, "epochs")},
                f"seeds_fitted >= {len(rows[g]['epochs'])} and 0.05 <= test_acc <= 0.16",
                fitted == len(rows[g]["epochs"]) and 0.05 <= tg <= 0.16))
        epochs_by_level = [med(("labels", p), "epochs") for p in levels]
        claims.append(Claim(
            "fit-time-grows-with-noise", "time to fit grows with the noise fraction (Zhang et "
            "al.; PHENOMENA §2 finds it saturates above ~25% at this size, so not gating)",
            {"noise": levels, "epochs": epochs_by_level}, "non-decreasing",
            all(b >= a for a, b in zip(epochs_by_level, epochs_by_level[1:], strict=False)),
            gating=False))

        table_rows = []
        for cond in sorted(rows, key=lambda c: (c[0] != "labels", c)):
            name = f"{cond[1]:.0%} random labels" if cond[0] == "labels" else cond[0]
            e = med(cond, "epochs")
            table_rows.append([name, med(cond, "changed"), med(cond, "train_acc"),
                               med(cond, "test_acc"), med(cond, "best_test_acc"), e,
                               e / med(clean, "epochs")])
        tables = [Table("Zhang et al. table (medians over seeds): train accuracy is on the "
                        "assigned labels, test accuracy on clean test labels",
                        ["condition", "labels changed", "train acc", "test acc",
                         "best test acc", "epochs to 100% train", "epochs / clean"],
                        table_rows)]
        figures = _figures(results, cfg, levels, epochs_by_level, test_by_level)
        metrics = {"epochs_ratio_random_over_clean": ratio, "test_acc_random_labels": test_rand,
                   "noise_levels": levels, "median_epochs_to_fit": epochs_by_level,
                   "median_test_acc": test_by_level}
        notes = [f"MLP 64-{cfg.hidden}-{cfg.hidden}-10 on scikit-learn digits ({cfg.n_train} "
                 f"train / {1797 - cfg.n_train} test), {cfg.optimizer} lr {cfg.lr:g}, batch "
                 f"{cfg.batch_size}; training stops at the first epoch with 100% training "
                 "accuracy on the assigned labels (eval pass). Random labels follow Zhang et al.: "
                 "the chosen fraction of labels is replaced by a uniformly random class, so "
                 "about 10% of them keep their true class ('labels changed' column)."]
        return Analysis(claims, metrics, figures, tables, notes)


def _output(result: TrainResult, data: ClassificationData, *, batched: bool) -> TrialOutput:
    records = result.records()
    fit = result.fit_epoch
    records.append(Record("epochs_to_fit", math.nan if fit is None else fit, probe="fit"))
    records.append(Record("labels_changed", float(data.noisy_mask.float().mean()),
                          probe="data"))
    return TrialOutput(records, "diverged" if result.diverged else "finished",
                       {"fit_epoch": fit, "batched": batched})


def make_condition(data: ClassificationData, condition: str, noise: float, *, seed: int
                   ) -> ClassificationData:
    """The training set of one condition: random labels, Gaussian or shuffled pixels."""
    if condition == "labels":
        return random_labels(data, noise, seed=seed)
    if condition == "gaussian-pixels":
        return gaussian_inputs(data, seed=seed)
    if condition == "shuffled-pixels":
        return shuffled_pixels(data, seed=seed)
    raise ValueError(f"unknown condition {condition!r}")


def random_labels(data: ClassificationData, fraction: float, *, seed: int) -> ClassificationData:
    """Zhang et al.'s corruption: a chosen ``fraction`` of examples (exact count) get a
    uniformly random label, which may coincide with the true one; ``noisy_mask`` marks the
    labels that actually changed. (For memorisation studies use ``flip_labels``, which always
    changes the class.)"""
    g = torch_generator(seed, "random-labels")
    n = len(data.y_train_clean)
    k = round(fraction * n)
    idx = torch.randperm(n, generator=g)[:k]
    y = data.y_train_clean.clone()
    y[idx] = torch.randint(0, data.n_classes, (k,), generator=g)
    return data.with_train(y_train=y, noisy_mask=y != data.y_train_clean)


def _figures(results: list[TrialResult], cfg: RandomLabelsConfig, levels: list[float],
             epochs: list[float], test: list[float]) -> list[Any]:
    first_seed = min(t.spec["seed"] for t in results)
    curves = sorted((t for t in results if t.spec["seed"] == first_seed),
                    key=lambda t: (t.spec["condition"] != "labels", t.spec["noise"]))

    def label(t: TrialResult) -> str:
        c = t.spec["condition"]
        return f"{t.spec['noise']:.0%} random labels" if c == "labels" else c

    train = [Series(label(t), *t.series("train_acc"), mode="lines") for t in curves]
    testc = [Series(label(t), *t.series("test_acc"), mode="lines") for t in curves]
    return [
        line_figure(f"Training accuracy on the assigned labels (seed {first_seed})", train,
                    x_title="epoch", y_title="train accuracy"),
        line_figure(f"Test accuracy on clean labels (seed {first_seed})", testc,
                    x_title="epoch", y_title="test accuracy",
                    vlines=[]),
        line_figure("Epochs to reach 100% training accuracy vs label noise (median)",
                    [Series("epochs to fit", levels, epochs)], x_title="fraction of random labels",
                    y_title="epochs"),
        line_figure("Final test accuracy vs label noise (median)",
                    [Series("test accuracy", levels, test),
                     Series("chance", [0, 1], [CHANCE, CHANCE], dash="dash", mode="lines")],
                    x_title="fraction of random labels", y_title="test accuracy"),
    ]
