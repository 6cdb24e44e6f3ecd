"""Fitting random labels and random pixels (Zhang et al. 2017, "Understanding deep learning
requires rethinking generalization").

An MLP that generalises on real images also reaches 100% training accuracy when a growing
fraction of its labels is replaced by random classes, or when its inputs are replaced by
Gaussian noise; test accuracy then falls to chance. Fitting random labels takes only a small
constant factor more epochs than fitting the real ones: capacity alone cannot explain why these
networks generalise on real data.

Setup: an MLP 64-256-256-10 on scikit-learn's 8x8 digits (1000 train / 797 test), SGD with
momentum, trained until the first epoch with 100% training accuracy on the assigned labels.
Random labels follow Zhang et al.: the chosen fraction of labels is replaced by a uniformly random
class, so about 10% of them keep their true class ("labels changed" column). The label
conditions of one seed share their inputs and train as one stack of models.

Claims: every seed fits 100% random labels; test accuracy with random labels is no better than
chance (at most 1/10 plus 4 binomial standard errors of the test set); the epochs needed exceed the clean ones by
less than an order of magnitude (Zhang et al. measured 1.5-3.5x; this MLP with SGD takes 2-5x);
test accuracy falls with the noise fraction. "Fit time grows with the noise fraction" is
reported but not gating: at this size it saturates above ~25% noise.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from learnscope.analysis import Claim, LinePlot, Lines, Results, Table
from learnscope.analysis.claims import (
    Test,
    above,
    all_of,
    at_least,
    at_most,
    below,
    claim,
    monotone,
    ratio,
)
from learnscope.config import StudyConfig, param
from learnscope.data import digits, gaussian_inputs, random_labels, shuffled_pixels
from learnscope.data.classification import ClassificationData
from learnscope.errors import ConfigError
from learnscope.models import mlp
from learnscope.store.records import Record
from learnscope.studies import register
from learnscope.studies.base import Part, Study, Trial, TrialOutput, part
from learnscope.train import train_classifier
from learnscope.train.batched import ModelSpec, train_models
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
    batched: bool = param(True, "train all label conditions of a seed as one stack of models "
                                "(same numbers as separate runs up to float32 rounding)")

    def check(self) -> None:
        if 0.0 not in self.noise_levels or 1.0 not in self.noise_levels:
            raise ConfigError("field 'noise_levels' must contain 0 (clean) and 1 (random labels)")


@register
class RandomLabels(Study[RandomLabelsConfig]):
    name = "random-labels"
    title = "Fitting random labels and random pixels"
    summary = "Nets reach 100% train accuracy on random labels; test accuracy falls to chance."
    source = "Zhang et al. 2017, Understanding deep learning requires rethinking generalization"
    Config = RandomLabelsConfig
    quick = {"seeds": 2, "noise_levels": [0.0, 1.0], "max_epochs": 800}

    tiny = {"seeds": 1, "hidden": 32, "n_train": 200, "max_epochs": 20}

    def memory_bytes(self, cfg: RandomLabelsConfig) -> float:
        """One seed's stack of label conditions (float32 weights, gradients and optimizer
        state, work buffers of a batch) plus the digits."""
        k = len(cfg.noise_levels) if cfg.batched else 1
        h = cfg.hidden
        params = 64 * h + h * h + 12 * h + 10
        state = 4 if cfg.optimizer == "adam" else 3
        return 4.0 * k * (params * state + cfg.batch_size * (64 + 4 * h + 30)) + 8.0 * 1797 * 64

    def parts(self, cfg: RandomLabelsConfig) -> list[Part]:
        seeds = cfg.seed_list()
        parts = [part("labels", train_labels, batch_by=["seed"], noise=sorted(cfg.noise_levels),
                      seed=seeds)]
        if cfg.gaussian_pixels:
            parts.append(part("gaussian-pixels", train_pixels, seed=seeds))
        if cfg.shuffled_pixels:
            parts.append(part("shuffled-pixels", train_pixels, seed=seeds))
        return parts

    def neighbours(self, cfg: RandomLabelsConfig) -> dict[str, dict[str, Any]]:
        return super().neighbours(cfg) | {
            "fewer images": {"n_train": int(cfg.n_train * 0.6)},
            "more images": {"n_train": min(1700, int(cfg.n_train * 1.5)), "seed": cfg.seed + 7},
            "narrower": {"hidden": cfg.hidden // 2},
            "half noise too": {"noise_levels": sorted({*cfg.noise_levels, 0.5})},
        }

    def claims(self, cfg: RandomLabelsConfig, results: Results) -> list[Claim]:
        labels = results.where(part="labels")
        clean, rand = labels.where(noise=0.0), labels.where(noise=1.0)
        claims = [
            claim("random-labels-fit", "with 100% random labels the net still reaches 100% "
                  f"training accuracy (every seed, within {cfg.max_epochs} epochs)",
                  "seeds_fitted", rand.count_finite("epochs_to_fit"), at_least(len(rand)),
                  extra={"median_epochs": rand.median("epochs_to_fit")}),
            claim("random-labels-test-at-chance", "test accuracy with random labels is no "
                  "better than chance: at most 1/classes plus 4 binomial standard errors of the "
                  "test set",
                  "test_acc", rand.median("test_acc"), _chance(cfg)),
            ratio("fit-time-small-factor", "fitting random labels takes longer than clean "
                  "labels, but only a small constant factor: less than an order of magnitude "
                  "(Zhang et al. measured 1.5-3.5x)", "epochs_ratio",
                  rand.median("epochs_to_fit"), clean.median("epochs_to_fit"),
                  above(1.0) & below(10.0), names=("epochs_random", "epochs_clean")),
            monotone("test-acc-falls-with-noise", "test accuracy falls monotonically as the "
                     "noise fraction grows", labels.curve("test_acc", "noise")),
        ]
        pixels = results.where(part="gaussian-pixels")
        if len(pixels):
            claims.append(all_of(
                "random-pixels-fit", "Gaussian-noise inputs with the true labels are fitted too "
                "(every seed), and test accuracy on real images is no better than chance",
                {"seeds_fitted": (pixels.count_finite("epochs_to_fit"), at_least(len(pixels))),
                 "test_acc": (pixels.median("test_acc"), _chance(cfg))},
                extra={"median_epochs": pixels.median("epochs_to_fit")}))
        claims.append(monotone(
            "fit-time-grows-with-noise", "time to fit grows with the noise fraction (Zhang et "
            "al.; saturates above ~25% noise at this size, so not gating)",
            labels.curve("epochs_to_fit", "noise"), increasing=True, strict=False, gating=False))
        return claims

    def figures(self, cfg: RandomLabelsConfig) -> list[LinePlot]:
        by_condition = (Lines({"part": "labels"}, group="noise", label="{noise:.0%} random labels"),
                        Lines({"part": "gaussian-pixels"}, label="Gaussian pixels"),
                        Lines({"part": "shuffled-pixels"}, label="shuffled pixels"))
        return [
            LinePlot("Training accuracy on the assigned labels", "step", by_condition,
                     key="train_acc", x_title="epoch", y_title="train accuracy", seeds="first",
                     caption="Every condition climbs to 100%: random labels just take longer."),
            LinePlot("Test accuracy on clean labels", "step", by_condition, key="test_acc",
                     x_title="epoch", y_title="test accuracy", seeds="first",
                     hlines=((CHANCE, "chance"),)),
            LinePlot("Epochs to reach 100% training accuracy vs label noise (median, IQR)",
                     "noise", (Lines({"part": "labels"}, label="epochs to fit"),),
                     key="epochs_to_fit", x_title="fraction of random labels", y_title="epochs"),
            LinePlot("Final test accuracy vs label noise (median, IQR)", "noise",
                     (Lines({"part": "labels"}, label="test accuracy"),), key="test_acc",
                     x_title="fraction of random labels", y_title="test accuracy",
                     hlines=((CHANCE, "chance"),)),
        ]

    def tables(self, cfg: RandomLabelsConfig, results: Results) -> list[Table]:
        clean = results.where(part="labels", noise=0.0).median("epochs_to_fit")
        rows = []
        for name, sub in [(f"{p:.0%} random labels", results.where(part="labels", noise=p))
                          for p in results.where(part="labels").axis("noise")] + [
                (p, results.where(part=p)) for p in ("gaussian-pixels", "shuffled-pixels")]:
            if len(sub):
                e = sub.median("epochs_to_fit")
                rows.append([name, sub.median("labels_changed"), sub.median("train_acc"),
                             sub.median("test_acc"), sub.median("test_acc", "max"), e, e / clean])
        return [Table("Zhang et al. table (medians over seeds): train accuracy is on the assigned "
                      "labels, test accuracy on clean test labels",
                      ["condition", "labels changed", "train acc", "test acc", "best test acc",
                       "epochs to 100% train", "epochs / clean"], rows)]


def _chance(cfg: RandomLabelsConfig) -> Test:
    """No better than chance: at most 1/10 plus 4 standard errors of a binomial over the test
    set. One-sided: a net whose predictions on real images pile onto a few classes can score
    below 1/10 (measured: 0.02-0.17 for Gaussian-pixel nets), which is still no generalisation."""
    n_test = 1797 - cfg.n_train
    return at_most(CHANCE + 4 * math.sqrt(CHANCE * (1 - CHANCE) / n_test))


def train_labels(cfg: RandomLabelsConfig, trials: list[Trial]) -> list[TrialOutput]:
    """One seed's label conditions: as one stack of models, or one by one."""
    seed = trials[0].seed
    base = digits(cfg.n_train, seed=seed)
    datas = [random_labels(base, t.noise, seed=seed) for t in trials]
    if not cfg.batched:
        return [_fit(cfg, d, seed) for d in datas]
    sizes = [base.n_features, cfg.hidden, cfg.hidden, base.n_classes]
    specs = [ModelSpec(sizes, seed=seed, y_train=d.y_train, noisy_mask=d.noisy_mask,
                       stop_at_train_acc=1.0) for d in datas]
    results = train_models(specs, base, max_epochs=cfg.max_epochs, optimizer=cfg.optimizer,
                           lr=cfg.lr, momentum=cfg.momentum, batch_size=cfg.batch_size)
    return [_output(r, d) for r, d in zip(results, datas, strict=True)]


def train_pixels(cfg: RandomLabelsConfig, trial: Trial) -> TrialOutput:
    base = digits(cfg.n_train, seed=trial.seed)
    make = gaussian_inputs if trial.part == "gaussian-pixels" else shuffled_pixels
    return _fit(cfg, make(base, seed=trial.seed), trial.seed)


def _fit(cfg: RandomLabelsConfig, data: ClassificationData, seed: int) -> TrialOutput:
    model = mlp([data.n_features, cfg.hidden, cfg.hidden, data.n_classes], seed=seed)
    result = train_classifier(model, data, optimizer=cfg.optimizer, lr=cfg.lr,
                              momentum=cfg.momentum, batch_size=cfg.batch_size,
                              max_epochs=cfg.max_epochs, seed=seed, stop_at_train_acc=1.0)
    return _output(result, data)


def _output(result: TrainResult, data: ClassificationData) -> TrialOutput:
    fit = result.fit_epoch
    return TrialOutput(result.records() + [
        Record("epochs_to_fit", math.nan if fit is None else fit, probe="fit"),
        Record("labels_changed", float(data.noisy_mask.float().mean()), probe="data")],
        "diverged" if result.diverged else "finished", {"fit_epoch": fit})
