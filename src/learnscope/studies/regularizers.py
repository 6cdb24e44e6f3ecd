"""Regularisers against flipped labels: what stops a network from memorising them (Zhang et al.
2018, "mixup: Beyond empirical risk minimization"; Arpit et al. 2017; Zhang et al. 2017).

A network trained long enough on partly wrong labels memorises them, and its test accuracy falls
from the peak it reached while it learned the real patterns. Regularisers differ in what they
change: some slow or stop the memorisation of the wrong labels, others leave it intact but still
end with a better network. mixup (training on convex combinations of pairs of examples and of
their labels) was reported to "reduce the memorization of corrupt labels"; at the scale run here
it mainly improves the last-epoch test accuracy while the network still fits the flipped labels
of the un-mixed training inputs.

Setup: scikit-learn's 8x8 digits, 1000 training images of which 40% carry a label flipped to a
*different* class; of the remaining 797 images, 200 form a validation set whose labels are
flipped at the same rate (the noisy labels a practitioner would have) and 597 the clean test set.
An MLP 64-h-h-10 (ReLU; h = 256, 128 at the quick size) trained with SGD (lr 0.05, momentum 0.9, batch 50) under each
regulariser: none (ERM), dropout 0.5 on both hidden layers, weight decay, mixup with alpha 1 and
alpha 8 (one Beta(alpha, alpha) weight and one partner permutation per batch), label smoothing,
and early stopping (the ERM network taken at the epoch of its best validation accuracy, a
checkpoint of the same run). Every (regulariser, seed) network trains in one stack of models.
Memorisation is measured on the un-mixed training inputs against their assigned labels: the
noisy-subset fit (flipped examples predicted as their wrong label) and the clean-subset fit.

Claims (medians over seeds): ERM memorises most of the flipped labels (noisy-subset fit above
one half) and its last test accuracy lies at least 5 points below its best; early stopping on
the noisy validation set stops before memorisation (noisy-subset fit at most half of ERM's) and
keeps a test accuracy at least 3 points above ERM's last; mixup with the strongest mixing
(the largest alpha, 8) ends with a last-epoch test accuracy at least 3 points above ERM's.
Reported, not gating: the same for the other alphas (alpha 1 gains 3-8 points at the quick
size but under 3 at width 256: not robust), whether mixup prevents memorisation (its
noisy-subset fit at most half of ERM's: it depends on alpha, width and epochs; measured with
alpha 8, 0.24 of the flipped labels fitted at width 128 after 150 epochs but 0.88 at width 256
after 300, against 1.0 for ERM), and whether dropout, weight decay and label smoothing each
beat ERM's last test accuracy.

Sources: Zhang, Cisse, Dauphin & Lopez-Paz 2018 (mixup, ICLR); Arpit et al. 2017 (ICML);
Zhang et al. 2017 (random labels); Szegedy et al. 2016 (label smoothing); Srivastava et al.
2014 (dropout).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from learnscope.analysis import Claim, LinePlot, Lines, Results, Table
from learnscope.analysis.claims import above, all_of, at_least, at_most, claim
from learnscope.config import StudyConfig, param
from learnscope.data import digits
from learnscope.data.classification import ClassificationData
from learnscope.data.corruptions import flip_labels
from learnscope.errors import ConfigError
from learnscope.store.records import Record
from learnscope.studies import register
from learnscope.studies.base import Part, Study, Trial, TrialOutput, part
from learnscope.train.batched import BatchedTrainer, ModelSpec
from learnscope.train.loop import EpochLog

ERM = "none (ERM)"
EARLY_STOPPING = "early stopping"
N_VALIDATION = 200


def _regularisers(cfg: RegularizersConfig) -> list[str]:
    names = [ERM, f"dropout {cfg.dropout:g}", f"weight decay {cfg.weight_decay:g}"]
    names += [f"mixup alpha {a:g}" for a in cfg.mixup_alphas]
    names += [f"label smoothing {cfg.label_smoothing:g}", EARLY_STOPPING]
    return names


@dataclasses.dataclass(frozen=True)
class RegularizersConfig(StudyConfig):
    seeds: int = param(3, "seeds (label flips, initialisation, batch order, dropout and mixup "
                          "draws); claims use medians over seeds", ge=1)
    n_train: int = param(1000, "training images (of the rest, 200 validate and the others "
                               "test)", ge=100, le=1500)
    noise: float = param(0.4, "fraction of training and validation labels flipped to a "
                              "different class", gt=0, lt=1)
    hidden: int = param(256, "width of each of the two hidden layers", ge=2)
    epochs: int = param(300, "training epochs", ge=2)
    lr: float = param(0.05, "SGD learning rate (momentum 0.9)", gt=0)
    batch_size: int = param(50, "minibatch size", ge=1)
    dropout: float = param(0.5, "dropout probability (hidden layers)", gt=0, lt=1)
    weight_decay: float = param(5e-4, "L2 weight decay", gt=0)
    mixup_alphas: tuple[float, ...] = param((1.0, 8.0), "mixup alphas: lam ~ Beta(alpha, alpha)",
                                            gt=0, min_len=1)
    label_smoothing: float = param(0.1, "label smoothing eps", gt=0, lt=1)

    def check(self) -> None:
        if len(set(self.mixup_alphas)) != len(self.mixup_alphas):
            raise ConfigError("field 'mixup_alphas' must not repeat a value")


@register
class Regularizers(Study[RegularizersConfig]):
    name = "regularizers"
    title = "Regularisers against flipped labels"
    summary = ("ERM, dropout, weight decay, mixup, label smoothing and early stopping on 40% "
               "flipped labels: who memorises, who generalises.")
    source = "Zhang et al. 2018, mixup: Beyond empirical risk minimization; Arpit et al. 2017"
    Config = RegularizersConfig
    quick = {"hidden": 128, "epochs": 150}
    tiny = {"seeds": 1, "hidden": 16, "epochs": 3, "n_train": 200}

    def parts(self, cfg: RegularizersConfig) -> list[Part]:
        return [part("train", train_networks, batch_by=[], regularizer=_regularisers(cfg),
                     seed=cfg.seed_list())]

    def neighbours(self, cfg: RegularizersConfig) -> dict[str, dict[str, Any]]:
        return super().neighbours(cfg) | {
            "narrower": {"hidden": max(2, cfg.hidden // 2), "seed": cfg.seed + 5},
            "wider": {"hidden": int(cfg.hidden * 1.5), "seed": cfg.seed + 9},
            "fewer images": {"n_train": int(cfg.n_train * 0.6)},
            "less noise": {"noise": round(cfg.noise * 0.75, 3), "seed": cfg.seed + 13},
        }

    def memory_bytes(self, cfg: RegularizersConfig) -> float:
        k = len(_regularisers(cfg)) * cfg.seeds
        params = 64 * cfg.hidden + cfg.hidden**2 + 10 * cfg.hidden
        return 4.0 * k * (4 * params + 4 * cfg.batch_size * cfg.hidden)

    def claims(self, cfg: RegularizersConfig, results: Results) -> list[Claim]:
        train = results.where(part="train")
        erm = train.where(regularizer=ERM)
        stop = train.where(regularizer=EARLY_STOPPING)
        erm_last, erm_best = erm.median("test_acc"), erm.median("test_acc", "max")
        erm_noisy = erm.median("noisy_fit")
        claims = [
            all_of("erm-memorizes", "without a regulariser the network memorises most of the "
                   "flipped labels (noisy-subset fit on the assigned labels above one half) and "
                   "its last test accuracy lies at least 5 points below its best",
                   {"noisy_fit": (erm_noisy, above(0.5)),
                    "best_minus_last_test": (erm_best - erm_last, at_least(0.05))},
                   extra={"best_test": erm_best, "last_test": erm_last}),
            all_of("early-stopping-avoids-memorization", "early stopping on the noisy "
                   "validation set stops before memorisation (noisy-subset fit at most half of "
                   "ERM's last) and keeps a test accuracy at least 3 points above ERM's last",
                   {"noisy_fit_ratio": (stop.median("noisy_fit") / erm_noisy
                                        if erm_noisy > 0 else math.nan, at_most(0.5)),
                    "test_gain": (stop.median("test_acc") - erm_last, at_least(0.03))},
                   extra={"stop_epoch": stop.median("stop_epoch"),
                          "noisy_fit_early_stopping": stop.median("noisy_fit")}),
        ]
        strongest = max(cfg.mixup_alphas)
        for alpha in cfg.mixup_alphas:
            mix = train.where(regularizer=f"mixup alpha {alpha:g}")
            claims.append(claim(
                f"mixup-{alpha:g}-better-last-test", f"mixup (alpha {alpha:g}) ends with a "
                "last-epoch test accuracy at least 3 points above ERM's" + (
                    "" if alpha == strongest else " (not gating: only the strongest mixing "
                    "does so robustly)"), "last_test_gain",
                mix.median("test_acc") - erm_last, at_least(0.03),
                extra={"last_test_mixup": mix.median("test_acc"), "last_test_erm": erm_last,
                       "best_test_mixup": mix.median("test_acc", "max")},
                gating=alpha == strongest))
        for alpha in cfg.mixup_alphas:
            mix = train.where(regularizer=f"mixup alpha {alpha:g}")
            claims.append(claim(
                f"mixup-{alpha:g}-prevents-memorization", f"mixup (alpha {alpha:g}) prevents the "
                "memorisation of the flipped labels: noisy-subset fit of the un-mixed training "
                "inputs at most half of ERM's (not gating: the claim of Zhang et al. 2018 that "
                "is tested here, not assumed)", "noisy_fit_ratio",
                mix.median("noisy_fit") / erm_noisy if erm_noisy > 0 else math.nan,
                at_most(0.5), extra={"noisy_fit_mixup": mix.median("noisy_fit"),
                                     "noisy_fit_erm": erm_noisy}, gating=False))
        for slug, name in (("dropout", f"dropout {cfg.dropout:g}"),
                           ("weight-decay", f"weight decay {cfg.weight_decay:g}"),
                           ("label-smoothing", f"label smoothing {cfg.label_smoothing:g}")):
            sub = train.where(regularizer=name)
            claims.append(claim(
                f"{slug}-better-last-test", f"{name} ends with a last-epoch test accuracy at "
                "least 3 points above ERM's (not gating: the effect depends on the strength "
                "chosen)", "last_test_gain", sub.median("test_acc") - erm_last,
                at_least(0.03), extra={"noisy_fit": sub.median("noisy_fit"),
                                       "noisy_fit_erm": erm_noisy}, gating=False))
        return claims

    def figures(self, cfg: RegularizersConfig) -> list[LinePlot]:
        dashes = ({EARLY_STOPPING: "dot", f"label smoothing {cfg.label_smoothing:g}": "dashdot",
                   f"weight decay {cfg.weight_decay:g}": "longdash"}
                  | {f"mixup alpha {a:g}": "dash" for a in cfg.mixup_alphas})
        return [
            LinePlot("Memorisation of the flipped labels under each regulariser", "step",
                     tuple(Lines({"part": "train", "regularizer": r}, label=r,
                                 dash=dashes.get(r)) for r in _regularisers(cfg)),
                     key="noisy_fit", x_title="epoch",
                     y_title="noisy-subset fit (median over seeds)",
                     caption="The fraction of flipped training examples predicted as their "
                             "wrong assigned label, on un-mixed inputs: a curve that climbs to "
                             "1 memorises the noise; early stopping ends at its stop epoch."),
        ]

    def tables(self, cfg: RegularizersConfig, results: Results) -> list[Table]:
        rows = []
        for name in _regularisers(cfg):
            sub = results.where(part="train", regularizer=name)
            if len(sub):
                rows.append([name, sub.median("noisy_fit"), sub.median("clean_fit"),
                             sub.median("test_acc", "max"), sub.median("test_acc"),
                             sub.median("stop_epoch")])
        return [Table("Each regulariser on 40% flipped labels (medians over seeds; fits on the "
                      "un-mixed training inputs and their assigned labels, test accuracy on "
                      "clean labels; early stopping: at its stop epoch)",
                      ["regulariser", "noisy-subset fit", "clean-subset fit",
                       "best test accuracy", "last test accuracy", "last epoch"], rows)]


def _data(cfg: RegularizersConfig) -> tuple[ClassificationData, torch.Tensor, torch.Tensor]:
    """Digits split into training, validation (first 200 of the held-out images) and test."""
    base = digits(cfg.n_train, seed=cfg.seed)
    data = base.with_train(x_test=base.x_test[N_VALIDATION:], y_test=base.y_test[N_VALIDATION:])
    return data, base.x_test[:N_VALIDATION], base.y_test[:N_VALIDATION]


def _spec(cfg: RegularizersConfig, name: str, sizes: list[int], seed: int,
          y: torch.Tensor, mask: torch.Tensor) -> ModelSpec:
    options: dict[str, float] = {}
    if name.startswith("dropout"):
        options["dropout"] = cfg.dropout
    elif name.startswith("weight decay"):
        options["weight_decay"] = cfg.weight_decay
    elif name.startswith("mixup"):
        options["mixup_alpha"] = float(name.rsplit(" ", 1)[1])
    elif name.startswith("label smoothing"):
        options["label_smoothing"] = cfg.label_smoothing
    return ModelSpec(sizes, seed=seed, y_train=y, noisy_mask=mask, **options)


def train_networks(cfg: RegularizersConfig, trials: list[Trial]) -> list[TrialOutput]:
    """Every (regulariser, seed) network in one stack. Early stopping is a checkpoint of the
    ERM network of its seed (trained here if the batch has no ERM trial of that seed)."""
    data, x_val, y_val_clean = _data(cfg)
    sizes = [data.n_features, cfg.hidden, cfg.hidden, data.n_classes]
    seeds = sorted({t.seed for t in trials})
    flips = {s: flip_labels(data.y_train, cfg.noise, data.n_classes, seed=s) for s in seeds}
    y_val = {s: flip_labels(y_val_clean, cfg.noise, data.n_classes,
                            seed=s + 7919)[0] for s in seeds}  # an independent stream
    trained = [(t.regularizer, t.seed) for t in trials if t.regularizer != EARLY_STOPPING]
    trained += [(ERM, s) for s in seeds if (ERM, s) not in trained
                and any(t.regularizer == EARLY_STOPPING and t.seed == s for t in trials)]
    specs = [_spec(cfg, name, sizes, s, *flips[s]) for name, s in trained]
    trainer = BatchedTrainer(specs, data, optimizer="sgd", lr=cfg.lr, momentum=0.9,
                             batch_size=cfg.batch_size, device=cfg.device)
    val_acc: list[list[float]] = [[] for _ in specs]
    for _ in range(cfg.epochs):
        trainer.run_epoch()
        if not trainer.K:
            break
        for k, log in zip(trainer.active, trainer.evaluate(), strict=True):
            trainer.results[k].history.append(log)
        predictions = trainer.logits(x_val).argmax(2).cpu()
        for pos, k in enumerate(trainer.active):
            val_acc[k].append(float((predictions[pos] == y_val[trained[k][1]]).float().mean()))
    outputs = []
    for t in trials:
        if t.regularizer == EARLY_STOPPING:
            k = trained.index((ERM, t.seed))
            outputs.append(_early_stopped(trainer.results[k].history, val_acc[k],
                                          trainer.results[k].diverged))
        else:
            k = trained.index((t.regularizer, t.seed))
            outputs.append(_output(trainer.results[k].history, val_acc[k],
                                   trainer.results[k].diverged))
    return outputs


def _records(history: list[EpochLog], val_acc: list[float]) -> list[Record]:
    keys = ("train_acc", "clean_fit", "noisy_fit", "test_acc", "train_loss")
    records = [Record(key, float(getattr(log, key)), log.epoch, "train")
               for log in history for key in keys]
    records += [Record("val_acc", v, e + 1, "train") for e, v in enumerate(val_acc)]
    return records


def _output(history: list[EpochLog], val_acc: list[float], diverged: bool) -> TrialOutput:
    records = _records(history, val_acc)
    records.append(Record("stop_epoch", float(len(history)), probe="fit"))
    return TrialOutput(records, "diverged" if diverged else "finished")


def _early_stopped(history: list[EpochLog], val_acc: list[float], diverged: bool
                   ) -> TrialOutput:
    """The checkpoint at the first epoch of best validation accuracy: its records end there."""
    if not val_acc:
        return TrialOutput([], "diverged")
    stop = int(np.argmax(val_acc)) + 1
    records = _records(history[:stop], val_acc[:stop])
    records.append(Record("stop_epoch", float(stop), probe="fit"))
    return TrialOutput(records, "diverged" if diverged and stop == len(history) else "finished",
                       {"stop_epoch": stop})
