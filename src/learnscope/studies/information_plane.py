"""The information plane (Shwartz-Ziv & Tishby 2017, "Opening the black box of deep neural
networks via information"; Saxe et al. 2018, "On the information bottleneck theory of deep
learning").

Shwartz-Ziv & Tishby followed each hidden layer T of a small tanh network in the plane of
I(X;T) (what the layer keeps about the input) and I(T;Y) (what it keeps about the label): a
short *fitting* phase in which both grow, then a long *compression* phase in which I(X;T) falls.
Saxe et al. showed that the compression comes from the double-sided saturation of tanh under a
binning estimator: the same networks with ReLU units do not compress, and the absolute bits are
properties of the estimator (bin count and range, noise variance), not of the network alone.
This study therefore claims only the *difference* between tanh and ReLU under one fixed
estimator, never absolute bits.

Setup: the 12-bit task (all 4096 binary patterns, X uniform so H(X) = 12 bits; labels from a
fixed random threshold function of the seed with pairwise terms, balanced; 85% of the patterns
train), networks 12-10-7-5-4-3-2 with tanh or ReLU units, Adam with batch 256 and
cross-entropy; the seeds of one activation train as one stack of models. The original ran
about 3000 epochs at lr 4e-4; this study uses a ten times larger learning rate and ~1000 epochs
(the compression happens at the same pace per update, within minutes on a CPU). The
information-plane probe measures every hidden layer on all 4096 patterns during training with
two estimators: binning (30 equal bins per unit on [-1, 1] for tanh, on the measured [min, max]
of the layer for ReLU, as in both papers) and the pairwise-KL (KDE) upper bound with Gaussian
noise of variance 0.1 (on a fixed random subset of 512 patterns: its cost grows as n^2).

A layer's *relative compression* is (peak I(X;T) - final I(X;T)) / peak I(X;T) over training:
0 for no compression. A network whose last hidden layer is constant (all ReLUs dead: it happens
to some narrow ReLU nets) has no defined compression and is left out of the medians (counted in
the table).

Claims: under binning, the median relative compression of the last hidden layer (3 units)
over seeds is larger for tanh than for ReLU (measured 0.35-0.57 vs 0.11-0.23 at the quick size
and its neighbours); under the KDE bound it is larger by more than the spread over seeds (the
larger of the two interquartile ranges; measured tanh 0.17-0.34 vs ReLU 0.00-0.01). Under
binning the same margin over the spread is reported but not gating: it fails with fewer epochs
or a smaller learning rate, where ReLU's binned compression varies widely between seeds (its bin
range follows the largest activation, and units that die during training lose information:
the "compression" of ReLU nets under binning is partly an artefact, as Saxe et al. note). The
first hidden layer (10 units) sits near H(X) = 12 bits under binning for both activations:
binning cannot resolve anything there, which is one of the estimator's limits.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from learnscope.analysis import Claim, LinePlot, Lines, Results, Scatter, Table
from learnscope.analysis.claims import above, claim
from learnscope.analysis.curves import median_iqr
from learnscope.config import StudyConfig, param
from learnscope.data.bits12 import all_patterns, bits12, threshold_labels
from learnscope.models import mlp
from learnscope.probes import InformationPlaneProbe, at_steps, default_layers
from learnscope.probes.session import ProbeSession
from learnscope.store.records import Record
from learnscope.studies import register
from learnscope.studies.base import Part, Study, Trial, TrialOutput, part
from learnscope.train.monitored import train_monitored
from learnscope.train.stacked import make_stack

ACTIVATIONS = ("tanh", "relu")
ESTIMATORS = ("binning", "kde")
# Measurement epochs as fractions of the run: dense early (the fitting phase), then even.
_FRACTIONS = (0.0, 0.01, 0.02, 0.04, 0.07, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9,
              1.0)


@dataclasses.dataclass(frozen=True)
class InformationPlaneConfig(StudyConfig):
    seeds: int = param(8, "networks per activation (trained as one stack)", ge=1)
    hidden: tuple[int, ...] = param((10, 7, 5, 4, 3), "hidden layer widths", ge=1, min_len=1)
    epochs: int = param(1500, "training epochs (the original: ~3000 at a 10x smaller lr)",
                        ge=1)
    lr: float = param(4e-3, "Adam learning rate", gt=0)
    batch_size: int = param(256, "minibatch size", ge=1)
    test_fraction: float = param(0.15, "share of the 4096 patterns held out", gt=0, lt=1)
    bins: int = param(30, "equal bins per unit (binning estimator)", ge=2)
    noise_variance: float = param(0.1, "variance of the Gaussian noise of the KDE bound", gt=0)
    kde_samples: int = param(512, "patterns the KDE bound is computed on (a fixed subset)",
                             ge=2, le=4096)


@register
class InformationPlane(Study[InformationPlaneConfig]):
    name = "information-plane"
    title = "The information plane: tanh compresses, ReLU does not"
    summary = ("I(X;T) and I(T;Y) per layer over training (binning and KDE): the last hidden "
               "layer of tanh nets compresses, of ReLU nets much less; absolute bits depend on "
               "the estimator.")
    source = "Shwartz-Ziv & Tishby 2017; Saxe et al. 2018"
    Config = InformationPlaneConfig
    quick = {"seeds": 6, "epochs": 800}
    tiny = {"seeds": 2, "epochs": 20, "kde_samples": 64}

    def parts(self, cfg: InformationPlaneConfig) -> list[Part]:
        return [part("train", train_activation, batch_by=["activation"],
                     activation=list(ACTIVATIONS), seed=cfg.seed_list())]

    def neighbours(self, cfg: InformationPlaneConfig) -> dict[str, dict[str, Any]]:
        return super().neighbours(cfg) | {
            "fewer epochs": {"epochs": max(1, cfg.epochs // 2), "seed": cfg.seed + 7},
            "more epochs": {"epochs": cfg.epochs * 3 // 2},
            "smaller step": {"lr": cfg.lr / 2, "seed": cfg.seed + 13},
            "coarser estimators": {"bins": max(2, cfg.bins // 2),
                                   "noise_variance": cfg.noise_variance * 2},
            "finer estimators": {"bins": cfg.bins * 3 // 2,
                                 "noise_variance": cfg.noise_variance / 2},
        }

    def memory_bytes(self, cfg: InformationPlaneConfig) -> float:
        return 4096.0 * 4096 * 8 * 2 + cfg.seeds * 4096 * (12 + sum(cfg.hidden)) * 8

    def claims(self, cfg: InformationPlaneConfig, results: Results) -> list[Claim]:
        last = len(cfg.hidden)
        claims = []
        for estimator in ESTIMATORS:
            c = {act: _finite(results.where(activation=act, estimator=estimator, depth=last)
                              .values("relative_compression")) for act in ACTIVATIONS}
            (med_t, q1_t, q3_t), (med_r, q1_r, q3_r) = (median_iqr(c[a]) if len(c[a]) else
                                                        (math.nan,) * 3 for a in ACTIVATIONS)
            spread = max(q3_t - q1_t, q3_r - q1_r)
            counts = {"tanh_median": med_t, "relu_median": med_r, "spread": spread,
                      "tanh_nets": len(c["tanh"]), "relu_nets": len(c["relu"])}
            words = _ESTIMATOR_WORDS[estimator]
            if estimator == "binning":
                claims.append(claim(
                    "tanh-compresses-more-binning",
                    f"under the {words}, the last hidden layer's median relative compression "
                    "of I(X;T) (peak to end of training, median over seeds) is larger for tanh "
                    "than for ReLU", "tanh_minus_relu", med_t - med_r, above(0), extra=counts))
            claims.append(claim(
                f"tanh-compresses-more-than-spread-{estimator}",
                f"under the {words}, the last hidden layer's median relative compression of "
                "I(X;T) is larger for tanh than for ReLU by more than the spread over seeds (the "
                "larger interquartile range)" + ("; not gating: under binning, ReLU's "
                "compression varies widely between seeds (its bin range follows the largest "
                "activation, and units that die during training lose information)"
                                                  if estimator == "binning" else ""),
                "margin_over_spread", (med_t - med_r) - spread, above(0), extra=counts,
                gating=estimator != "binning"))
        return claims

    def figures(self, cfg: InformationPlaneConfig) -> list[LinePlot | Scatter]:
        last = len(cfg.hidden)
        figs: list[LinePlot | Scatter] = []
        for act in ACTIVATIONS:
            figs.append(Scatter(
                f"Information plane of the {act} networks (binning, every seed and epoch)",
                "i_ty", "i_xt_bits", where={"activation": act, "estimator": "binning"},
                group="depth", label="hidden layer {depth}", color="epoch",
                color_title="epoch",
                x_title="I(X;T) (bits, binning)", y_title="I(T;Y) (bits, binning)",
                caption="One symbol per layer, coloured by epoch (dark early, yellow late), one "
                        "point per seed and measurement: each layer's trajectory moves right and "
                        "up while fitting; compression moves the deep layers back left late in "
                        "training (yellow points left of the green ones)."))
        for estimator in ESTIMATORS:
            figs.append(LinePlot(
                f"Last hidden layer: I(X;T) over training ({_ESTIMATOR_WORDS[estimator]})",
                "epoch", (Lines({"estimator": estimator, "depth": last}, group="activation",
                                label="{activation}"),),
                key="i_xt", x_title="epoch",
                y_title=f"I(X;T) (bits, {estimator}; median, IQR over seeds)",
                caption="Both rise while fitting; tanh then falls (compression), ReLU much "
                        "less. Compare the shapes, not the bits: they depend on the estimator."))
        figs.append(LinePlot(
            "Relative compression of each hidden layer (binning, median and IQR over seeds)",
            "depth", (Lines({"estimator": "binning"}, group="activation", label="{activation}"),),
            key="relative_compression", x_title="hidden layer (1 = closest to the input)",
            y_title="(peak - final) / peak of I(X;T)",
            caption="0 means the layer never lost information about the input after its "
                    "peak; wide early layers sit at H(X) and cannot compress under binning."))
        return figs

    def tables(self, cfg: InformationPlaneConfig, results: Results) -> list[Table]:
        rows = []
        for act in ACTIVATIONS:
            sub = results.where(activation=act)
            for depth in range(1, len(cfg.hidden) + 1):
                row: list[Any] = [act, depth]
                for estimator in ESTIMATORS:
                    at = sub.where(estimator=estimator, depth=depth)
                    row += [_fmt(at.values("i_xt", "max")), _fmt(at.values("i_xt")),
                            _fmt(at.values("relative_compression"))]
                row.append(_fmt(sub.where(estimator="binning", depth=depth).values("i_ty")))
                rows.append(row)
        fit_rows = []
        for act in ACTIVATIONS:
            sub = results.where(activation=act)
            dead = int(np.sum(~np.isfinite(sub.where(estimator="binning", depth=len(cfg.hidden))
                                           .values("relative_compression"))))
            fit_rows.append([act, len(sub), _fmt(sub.values("train_acc")),
                             _fmt(sub.values("test_acc")), dead])
        return [
            Table("Per layer, median over seeds: peak and final I(X;T) (bits) and relative "
                  "compression under each estimator; final I(T;Y) (binning)",
                  ["activation", "hidden layer", "binning peak", "binning final",
                   "binning compression", "KDE peak", "KDE final", "KDE compression",
                   "I(T;Y) final"], rows),
            Table("Fit at the end of training (median over seeds)",
                  ["activation", "networks", "train accuracy", "test accuracy",
                   "constant last layer (left out)"], fit_rows),
        ]

    def notes(self, cfg: InformationPlaneConfig, results: Results) -> list[str]:
        return [
            "Absolute values of I(X;T) and I(T;Y) depend on the estimator (bin count and range, "
            "KDE noise variance, sample size): compare tanh with ReLU under one estimator, "
            "never bits across estimators or with the papers' figures.",
            f"Trained {cfg.epochs} epochs at Adam lr {cfg.lr:g} instead of the original ~3000 "
            "epochs at 4e-4, to fit a CPU budget.",
            "The KDE values are the pairwise-KL upper bound on a fixed subset of "
            f"{cfg.kde_samples} patterns (at most log2 of that many bits).",
        ]


_ESTIMATOR_WORDS = {"binning": "binning estimator", "kde": "KDE upper bound"}


def _finite(values: np.ndarray) -> list[float]:
    return [float(v) for v in values if np.isfinite(v)]


def _fmt(values: np.ndarray) -> str:
    finite = _finite(values)
    return f"{median_iqr(finite)[0]:.2f}" if finite else "-"


def measurement_epochs(epochs: int) -> list[int]:
    """The epochs at which the probes measure: dense early (fitting), then evenly spaced."""
    return sorted({round(epochs * f) for f in _FRACTIONS})


def relative_compression(i_xt: list[float]) -> float:
    """(peak - final) / peak of a layer's I(X;T) over training; NaN when the peak is 0 (a
    constant layer: nothing to compress)."""
    peak = max(i_xt)
    return (peak - i_xt[-1]) / peak if peak > 0 else math.nan


def train_activation(cfg: InformationPlaneConfig, trials: list[Trial]) -> list[TrialOutput]:
    """Every seed of one activation as one stack; each network measured by its own session
    (binning and KDE information-plane probes on all 4096 patterns)."""
    activation = trials[0].activation
    data = bits12(seed=cfg.seed, test_fraction=cfg.test_fraction)
    x_all = all_patterns()
    y_all = threshold_labels(x_all, seed=cfg.seed)
    sizes = [12, *cfg.hidden, 2]
    stack = make_stack(lambda seed: mlp(sizes, activation=activation, seed=seed),
                       seeds=[t.seed for t in trials], loss="ce", optimizer="adam", lr=cfg.lr,
                       batch_size=cfg.batch_size, x_train=data.x_train, y_train=data.y_train,
                       x_test=data.x_test, y_test=data.y_test, device=cfg.device)
    steps_per_epoch = stack.steps_per_epoch or 1
    epochs = measurement_epochs(cfg.epochs)
    schedule = at_steps(*(e * steps_per_epoch for e in epochs))
    value_range = (-1.0, 1.0) if activation == "tanh" else None
    twins = [stack.export(k) for k in range(stack.K)]
    sessions = [ProbeSession(twin, [
        InformationPlaneProbe(schedule=schedule, estimator="binning", bins=cfg.bins,
                              value_range=value_range),
        InformationPlaneProbe(schedule=schedule, estimator="kde",
                              noise_variance=cfg.noise_variance, kde_samples=cfg.kde_samples),
    ], data=(x_all, y_all)) for twin in twins]
    records = train_monitored(stack, sessions, epochs=cfg.epochs)
    depth_of = {name: i + 1 for i, name in enumerate(default_layers(twins[0]))}
    outputs = []
    for recs, history in zip(records, stack.histories, strict=True):
        outputs.append(TrialOutput(_trial_records(recs, depth_of, steps_per_epoch) + [
            Record("train_acc", history.logs[-1].train_acc, history.logs[-1].step, "train"),
            Record("test_acc", history.logs[-1].test_acc, history.logs[-1].step, "train")],
            "diverged" if history.diverged else "finished"))
    return outputs


def _trial_records(recs: list[Record], depth_of: dict[str, int],
                   steps_per_epoch: int) -> list[Record]:
    """The probe records with the layer's depth and the epoch; each I(T;Y) also carries its
    I(X;T) (for the information-plane scatter); one relative compression per layer and
    estimator (none for a layer that stayed constant)."""
    i_xt = {(r.meta["estimator"], r.meta["layer"], r.step): r.value
            for r in recs if r.key == "i_xt"}
    out = []
    for r in recs:
        if r.key not in ("i_xt", "i_ty"):
            continue
        meta = r.meta | {"depth": depth_of[r.meta["layer"]], "epoch": r.step // steps_per_epoch}
        if r.key == "i_ty":
            meta["i_xt_bits"] = i_xt[(r.meta["estimator"], r.meta["layer"], r.step)]
        out.append(Record(r.key, r.value, r.step, r.probe, meta))
    last_step = max(r.step for r in out)
    for estimator in ESTIMATORS:
        for layer, depth in depth_of.items():
            series = [v for (e, name, _), v in sorted(i_xt.items(), key=lambda kv: kv[0][2])
                      if e == estimator and name == layer]
            compression = relative_compression(series) if series else math.nan
            if math.isnan(compression):  # no record: a constant layer has nothing to compress
                continue
            out.append(Record("relative_compression", compression, last_step,
                              "information_plane", {"estimator": estimator, "depth": depth}))
    return out
