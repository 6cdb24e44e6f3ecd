"""Training response: how a step on one input moves the output at another (Nakazato 2024,
arXiv 2405.04074; the empirical neural tangent kernel of Jacot et al. 2018 and Fort et al.
2020).

One gradient step of size lr on the loss at an input x' changes the network's output at x by
-lr dL/df(x') K_t(x, x') to first order, where K_t is the empirical neural tangent kernel (NTK) at
training time t. The kernel therefore is the training response: its trace says how strongly a
step moves the outputs (the response magnitude), its shape how specifically (a narrow kernel
moves mainly the output at the stepped input). Nakazato's abstract states that for a very
simple network the response can stay constant or age (decay roughly like a power law), that
its make-up depends on the stage of training, the activation function and the training method,
and that stochastic training reduces the feature space, which can make the network fragile.

What follows the paper and what is ours. From the abstract: the questions (constant vs aging
response; the roles of activation, training stage and full-batch vs stochastic training;
feature-space reduction and fragility under stochastic training). Ours (the paper's exact
model, data and parameters could not be checked): the network, the task, every measure below
and every threshold. The response magnitude is tr K_t / tr K_0, its specificity the kernel
width (the share of input pairs whose normalised kernel K(x, x') / sqrt(K(x, x) K(x', x')) is
above 0.5), the size of the feature space the effective rank of the NTK (Roy & Vetterli 2007),
and the fragility the input sensitivity: the mean squared norm of the input-output Jacobian,
i.e. the expected squared output change per unit variance of small input noise.

Setup: a one-hidden-layer network d-h-1 (d = 10 inputs, h = 100 units, tanh or ReLU) regresses
y = 0.8 sin(frequency * sqrt(d) u.x) on 64 inputs on the unit sphere (u a random unit vector),
mean squared error, plain SGD without momentum at lr 0.05, for a fixed number of steps, either
full batch ("gd": every step sees all 64 inputs) or one input per step ("sgd"). The GD and SGD
networks of a seed start from the same weights; the seeds of one activation and method train as
one stack of models. The NTK probe measures the kernel on the 64 training inputs at
log-spaced steps inside training.

Claims (per activation, GD and SGD of a seed paired):

- stochastic training shrinks the response: the final tr K_t / tr K_0 of SGD is below GD's
  (median over seeds of the paired ratio below 1);
- stochastic training makes the response more specific: SGD's final kernel width is below GD's
  (median of the paired difference below 0);
- aging: with tanh, the SGD response falls from its peak over training in every seed, and its
  median final / peak is below the GD response's (which keeps growing); that it loses at least
  10% of its peak is reported, not gating (how far it has fallen depends on the learning rate
  and on when it is read: 0.88 after 4000 steps, 0.92 after 16000, 0.97 at lr 0.03);
- a near-constant response: ReLU with full-batch GD keeps its response within 20% over the
  second half of training;
- not gating: feature-space reduction (the NTK's effective rank under SGD below GD's) and the
  resulting fragility (input sensitivity under SGD above GD's). At this size neither holds:
  the NTK's effective rank grows under SGD, and the input sensitivity barely differs. Reported
  as not reproduced.

Measured beyond the defaults (3 seeds, 4000 steps): with a harder target (frequency 3.14),
tanh under batch-1 SGD fails to fit (its response falls to a third of its peak, its NTK's
effective rank ends 6% below GD's and its outputs become nearly constant: input sensitivity a
tenth of GD's, the opposite of fragility), and ReLU with GD is still changing late in training
(tr K grows 29% over the second half), so the "near-constant" claim then fails.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from learnscope.analysis import Claim, LinePlot, Lines, Results, Table
from learnscope.analysis.claims import above, all_of, at_least, at_most, below, between, claim
from learnscope.config import StudyConfig, param
from learnscope.models import mlp
from learnscope.probes import NTKProbe, at_steps
from learnscope.probes.session import ProbeSession
from learnscope.seeding import numpy_rng
from learnscope.store.records import Record
from learnscope.studies import register
from learnscope.studies.base import Part, Study, Trial, TrialOutput, part
from learnscope.train.monitored import train_monitored
from learnscope.train.stacked import make_stack

METHODS = ("gd", "sgd")
ACTIVATIONS = ("tanh", "relu")


@dataclasses.dataclass(frozen=True)
class TrainingResponseConfig(StudyConfig):
    seeds: int = param(5, "seeds (initial weights) per activation and method, one stack", ge=1)
    activations: tuple[str, ...] = param(ACTIVATIONS, "hidden-layer activations compared",
                                         choices=ACTIVATIONS, min_len=1)
    input_dim: int = param(10, "input dimension d (inputs on the unit sphere)", ge=2)
    n_train: int = param(64, "training inputs; the NTK is measured on all of them", ge=4, le=512)
    hidden: int = param(100, "hidden units of the one hidden layer", ge=2)
    frequency: float = param(1.0, "target 0.8 sin(frequency sqrt(d) u.x): higher is harder",
                             gt=0, le=10)
    noise_sd: float = param(0.0, "standard deviation of Gaussian noise added to the targets",
                            ge=0, le=1)
    steps: int = param(16000, "optimizer steps (the same for full batch and stochastic)", ge=20)
    lr: float = param(0.05, "SGD learning rate (no momentum), the same for both methods", gt=0)
    batch_size: int = param(1, "minibatch size of stochastic training", ge=1)


@register
class TrainingResponse(Study[TrainingResponseConfig]):
    name = "training-response"
    title = "Training response: the NTK over training, full batch vs stochastic"
    summary = ("How a step on one input moves the output at another (the empirical NTK): "
               "stochastic training shrinks and narrows it; tanh's response ages.")
    source = "Nakazato 2024 (arXiv 2405.04074), as far as its abstract; Jacot et al. 2018"
    Config = TrainingResponseConfig
    quick = {"seeds": 3, "steps": 4000}
    tiny = {"seeds": 2, "steps": 60, "n_train": 16, "hidden": 16}

    def parts(self, cfg: TrainingResponseConfig) -> list[Part]:
        return [part("train", train_condition, batch_by=["activation", "method"],
                     activation=list(cfg.activations), method=list(METHODS),
                     seed=cfg.seed_list())]

    def neighbours(self, cfg: TrainingResponseConfig) -> dict[str, dict[str, Any]]:
        return super().neighbours(cfg) | {
            "narrower": {"hidden": max(2, cfg.hidden // 2), "seed": cfg.seed + 3},
            "wider": {"hidden": int(cfg.hidden * 1.5)},
            "more inputs, longer": {"n_train": int(cfg.n_train * 1.5),
                                    "steps": int(cfg.steps * 1.5), "seed": cfg.seed + 7},
            "noisy targets": {"noise_sd": 0.1},
            "smaller step": {"lr": cfg.lr * 0.6},
        }

    def claims(self, cfg: TrainingResponseConfig, results: Results) -> list[Claim]:
        claims: list[Claim] = []
        for act in cfg.activations:
            gd, sgd = results.where(activation=act, method="gd"), \
                results.where(activation=act, method="sgd")
            shrink = _paired(sgd, gd, "ntk_trace_ratio", np.divide)
            claims.append(claim(
                f"{act}-sgd-shrinks-response", f"{act}: stochastic training ends with a weaker "
                "response than full-batch training from the same initial weights (final "
                "tr K_t / tr K_0, SGD over GD, median over seeds)",
                "ratio_sgd_over_gd", _median(shrink), below(1.0),
                extra={"seeds_below_1": int(np.sum(shrink < 1)), "seeds": len(shrink),
                       "gd": gd.median("ntk_trace_ratio"), "sgd": sgd.median("ntk_trace_ratio")}))
            narrow = _paired(sgd, gd, "ntk_kernel_width", np.subtract)
            claims.append(claim(
                f"{act}-sgd-narrows-kernel", f"{act}: stochastic training makes the response "
                "more input-specific: its final kernel width (share of pairs with normalised "
                "NTK > 0.5) is below full-batch training's (paired difference, median)",
                "width_sgd_minus_gd", _median(narrow), below(0.0),
                extra={"seeds_below_0": int(np.sum(narrow < 0)), "seeds": len(narrow),
                       "gd": gd.median("ntk_kernel_width"),
                       "sgd": sgd.median("ntk_kernel_width")}))
            rank = _paired(sgd, gd, "ntk_effective_rank", np.divide)
            claims.append(claim(
                f"{act}-sgd-reduces-feature-space", f"{act}: stochastic training reduces the "
                "feature space: the NTK's final effective rank under SGD is below GD's (paired "
                "ratio, median; not gating: does not hold at this size)",
                "rank_ratio_sgd_over_gd", _median(rank), below(1.0),
                extra={"gd": gd.median("ntk_effective_rank"),
                       "sgd": sgd.median("ntk_effective_rank")}, gating=False))
            fragile = _paired(sgd, gd, "input_sensitivity", np.divide)
            claims.append(claim(
                f"{act}-sgd-fragile", f"{act}: stochastic training leaves the outputs more "
                "fragile to small input noise: final input sensitivity (mean squared input "
                "Jacobian norm) under SGD above GD's (paired ratio, median; not gating)",
                "sensitivity_ratio_sgd_over_gd", _median(fragile), above(1.0),
                extra={"gd": gd.median("input_sensitivity"),
                       "sgd": sgd.median("input_sensitivity")}, gating=False))
        if "tanh" in cfg.activations:
            decay = {m: _final_over_peak(results.where(activation="tanh", method=m))
                     for m in METHODS}
            sgd_decay, gd_decay = _median(decay["sgd"]), _median(decay["gd"])
            claims.append(all_of(
                "tanh-sgd-ages", "tanh: the stochastic response ages: in every seed tr K_t "
                "ends below its peak, and the median final / peak is below full-batch "
                "training's",
                {"seeds_ending_below_peak": (int(np.sum(decay["sgd"] < 1)),
                                             at_least(len(decay["sgd"]))),
                 "sgd_minus_gd": (sgd_decay - gd_decay, below(0.0))},
                extra={"final_over_peak_sgd": sgd_decay, "final_over_peak_gd": gd_decay}))
            claims.append(claim(
                "tanh-sgd-ages-strongly", "tanh: the stochastic response loses at least 10% "
                "of its peak by the end (median final / peak; not gating: how far it has "
                "fallen depends on the learning rate and on when it is read: measured 0.88 "
                "after 4000 steps, 0.92 after 16000, 0.97 at lr 0.03 after 4000)",
                "final_over_peak_sgd", sgd_decay, at_most(0.9), gating=False))
        if "relu" in cfg.activations:
            late = _late_change(results.where(activation="relu", method="gd"), cfg.steps)
            claims.append(claim(
                "relu-gd-constant-late", "ReLU with full-batch GD: a near-constant response "
                "over the second half of training (tr K at the end over tr K at mid-training "
                "within 0.8-1.2, median over seeds)",
                "end_over_mid", _median(late), between(0.8, 1.2),
                extra={"seeds": len(late)}))
        return claims

    def figures(self, cfg: TrainingResponseConfig) -> list[LinePlot]:
        lines = (Lines(group=("activation", "method"), label="{activation}, {method}",
                       stat="final"),)
        return [
            LinePlot("Response magnitude over training: tr K_t / tr K_0 (median, IQR over "
                     "seeds)", "step", lines, key="ntk_trace_ratio", x_title="training step",
                     y_title="tr K_t / tr K_0", log_x=True, hlines=((1.0, "at init"),),
                     caption="1 means a step moves the outputs as much as at initialisation; "
                             "a fall after the peak is aging."),
            LinePlot("Specificity of the response: NTK kernel width (median, IQR)", "step",
                     lines, key="ntk_kernel_width", x_title="training step",
                     y_title="share of input pairs with normalised NTK > 0.5", log_x=True,
                     caption="Lower means a step on one input moves the outputs at fewer "
                             "other inputs."),
            LinePlot("Size of the feature space: effective rank of the NTK (median, IQR)",
                     "step", lines, key="ntk_effective_rank", x_title="training step",
                     y_title="effective rank (Roy & Vetterli)", log_x=True,
                     caption="A falling rank would be the feature-space reduction of "
                             "stochastic training."),
            LinePlot("Fragility: input sensitivity (median, IQR)", "step", lines,
                     key="input_sensitivity", x_title="training step",
                     y_title="mean ||df/dx||^2 (output change per unit input-noise variance)",
                     log_x=True,
                     caption="Higher means small input noise moves the outputs more."),
        ]

    def tables(self, cfg: TrainingResponseConfig, results: Results) -> list[Table]:
        rows = []
        for act in cfg.activations:
            for method in METHODS:
                sub = results.where(activation=act, method=method)
                rows.append([act, method, sub.median("ntk_trace_ratio", "max"),
                             sub.median("ntk_trace_ratio"), sub.median("ntk_kernel_width"),
                             sub.median("ntk_effective_rank"), sub.median("input_sensitivity"),
                             sub.median("train_mse")])
        return [Table("Final state by activation and method (medians over seeds)",
                      ["activation", "method", "peak tr K_t / tr K_0", "final tr K_t / tr K_0",
                       "kernel width", "NTK effective rank", "input sensitivity",
                       "train MSE"], rows)]

    def notes(self, cfg: TrainingResponseConfig, results: Results) -> list[str]:
        return ["Follows the paper (its abstract only: the full text could not be checked): "
                "the questions asked, i.e. constant vs aging response, the roles of activation "
                "and full-batch vs stochastic training, feature-space reduction and fragility "
                "under stochastic training. learnscope's operationalisation: the network, the "
                "task, the NTK-based measures (trace ratio, kernel width, effective rank), the "
                "input sensitivity and every threshold."]


def _median(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if len(finite) == len(values) and len(values) else math.nan


def _by_seed(res: Results, key: str, stat: str = "final") -> dict[int, float]:
    return {int(s): float(v) for s, v in zip(res.trials["seed"], res.per_trial(key, stat),
                                             strict=True)}


def _paired(a: Results, b: Results, key: str, op: Any) -> np.ndarray:
    """``op(a, b)`` per seed present in both (GD and SGD of a seed share initial weights)."""
    va, vb = _by_seed(a, key), _by_seed(b, key)
    seeds = sorted(set(va) & set(vb))
    with np.errstate(divide="ignore", invalid="ignore"):  # a diverged run: NaN or inf, no claim
        return np.array([op(np.float64(va[s]), np.float64(vb[s])) for s in seeds], dtype=float)


def _final_over_peak(res: Results) -> np.ndarray:
    final, peak = _by_seed(res, "ntk_trace_ratio"), _by_seed(res, "ntk_trace_ratio", "max")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.array([np.float64(final[s]) / np.float64(peak[s]) for s in sorted(final)],
                        dtype=float)


def _late_change(res: Results, steps: int) -> np.ndarray:
    """Per trial: tr K at the last measurement over tr K at the first one at or after half of
    training."""
    out = []
    for _, xs, ys in res.series("ntk_trace"):
        late = [(x, y) for x, y in zip(xs, ys, strict=True) if x >= steps // 2]
        out.append(late[-1][1] / late[0][1] if len(late) >= 2 and late[0][1] > 0 else math.nan)
    return np.array(out, dtype=float)


def checkpoints(steps: int) -> list[int]:
    """Log-spaced measurement steps (about three per decade) plus mid-training; the final
    state is measured when the probe session closes."""
    marks = {0, steps // 2}
    k = 0
    while (s := round(10 ** (k / 3))) < steps:
        marks.add(int(s))
        k += 1
    return sorted(m for m in marks if m < steps)


def sphere_regression(n: int, d: int, frequency: float, noise_sd: float, *,
                      seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` inputs uniform on the unit sphere in ``d`` dimensions and targets
    ``0.8 sin(frequency sqrt(d) u.x) + noise`` (``u`` a random unit vector): ``sqrt(d) u.x`` has
    unit variance, so the target's difficulty does not change with ``d``."""
    rng = numpy_rng(seed, "training-response-data")
    x = rng.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    u = rng.standard_normal(d)
    u /= np.linalg.norm(u)
    y = 0.8 * np.sin(frequency * math.sqrt(d) * (x @ u)) + noise_sd * rng.standard_normal(n)
    return (torch.tensor(x, dtype=torch.float32),
            torch.tensor(y, dtype=torch.float32).unsqueeze(1))


def train_condition(cfg: TrainingResponseConfig, trials: list[Trial]) -> list[TrialOutput]:
    """The seeds of one activation and method as one stack; an NTK probe per model."""
    act, method = trials[0].activation, trials[0].method
    x, y = sphere_regression(cfg.n_train, cfg.input_dim, cfg.frequency, cfg.noise_sd,
                             seed=cfg.seed)
    stack = make_stack(lambda s: mlp([cfg.input_dim, cfg.hidden, 1], activation=act, seed=s),
                       seeds=[t.seed for t in trials], loss="mse", optimizer="sgd",
                       momentum=0.0, lr=cfg.lr,
                       batch_size=None if method == "gd" else cfg.batch_size,
                       x_train=x, y_train=y, device=cfg.device)
    schedule = at_steps(*checkpoints(cfg.steps))
    twins = [stack.export(k) for k in range(stack.K)]
    sessions = [ProbeSession(twin, [NTKProbe(cfg.n_train, schedule=schedule,
                                             input_sensitivity=True)], data=(x, None))
                for twin in twins]
    records = train_monitored(stack, sessions, steps=cfg.steps)
    outputs = []
    for twin, recs, history in zip(twins, records, stack.histories, strict=True):
        with torch.no_grad():
            mse = float(((twin(x) - y) ** 2).mean())
        recs = [*recs, Record("train_mse", mse if math.isfinite(mse) else math.nan,
                              cfg.steps, "train")]
        outputs.append(TrialOutput(recs, "diverged" if history.diverged else "finished"))
    return outputs
