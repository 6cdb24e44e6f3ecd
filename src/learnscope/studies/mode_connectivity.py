"""Linear mode connectivity and instability to SGD noise (Frankle, Dziugaite, Roy & Carbin
2020, "Linear mode connectivity and the lottery ticket hypothesis").

Train a parent network for k steps, then copy it into two children that finish training with
different data orders (different batch-sampling seeds, everything else equal). If the test
error stays low everywhere on the straight line between the two trained children, the network
was already stable to SGD noise at step k: the remaining noise of training only moves it
within one linearly connected basin. Frankle et al. found that small networks on MNIST are
stable from initialisation, while larger ones on harder tasks become stable only after an
early phase of training; two networks from different initialisations are separated by a
large barrier (without permutation alignment of their units).

Barrier (Frankle et al.): the maximum test error along the linear path
theta(alpha) = (1 - alpha) theta_a + alpha theta_b, measured at evenly spaced alphas from 0 to
1 (11 points by default), minus the mean of the two endpoints' test errors.

Setup: MNIST-1D (4000 training / 1000 test signals), the MNIST-1D paper's 1-D CNN (three
strided convolutions of 16 channels, ReLU, a linear read-out) trained by SGD with momentum 0.9
at a constant learning rate of 0.1 (large for this net: it makes early training noisy),
batch 100, no warm-up. For each seed the parent trains once and is copied at every spawn step
k (k = 0 copies the initialisation); each child trains a fixed number of steps after spawning
with its own batch order, its momentum buffer starting from zero; all children of a seed train
as one stack of models. The contrast: two networks from two different initialisations with
their own data orders, trained for the same number of steps. Barriers are measured on the test
set (the training-set barrier and the loss barrier are recorded too). With the MLP
40-256-256-10 instead (field model = mlp, learning rate 0.05, 3000 steps) the children are
stable already at initialisation (measured: barrier ~0.01 at every k against ~0.36 between
different initialisations), as Frankle et al. found for small networks on MNIST.

Claims (medians and distribution-free intervals over seeds):
- different-init-barrier: two networks trained from different initialisations are separated by
  a barrier that stands out beyond the seed spread: the lower end of its interval over seeds
  exceeds the upper end of the same-parent barrier's interval at every spawn step.
- stable-late: children spawned at the latest k are linearly connected: their median barrier
  is at most 1/5 of the different-initialisation barrier.
- instability-early (not gating): children spawned at initialisation (k = 0) are separated by
  a larger barrier than those spawned at the latest k, beyond the seed spread. The medians show
  the transition everywhere it was measured (k = 0: 0.04-0.20; k = 300: 0.004-0.03, at the
  quick size and its neighbours; default size 0.15, 0.17, 0.14 at k = 0, 10, 30, then 0.03,
  0.007, 0.011 at k = 100, 300, 1000), but single seeds are already stable at initialisation
  (barrier 0.005-0.02), so the lower end of the k = 0 interval drops below the upper end of the
  late one at two of the five neighbours (fewer examples, smaller step) and at the default
  size: reported, not gating.
The first spawn step whose median barrier is at most 0.02 (Frankle et al.'s 2% stability
criterion) is reported as a metric.

Sources: Frankle, Dziugaite, Roy & Carbin 2020 (ICML), "Linear mode connectivity and the
lottery ticket hypothesis"; Garipov et al. 2018 and Draxler et al. 2018 (curved low-loss paths
between independently trained networks); Greydanus 2020 (MNIST-1D).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from learnscope.analysis import Claim, LinePlot, Lines, Results, Table
from learnscope.analysis.claims import above, at_most, claim, ratio
from learnscope.analysis.curves import median_ci
from learnscope.config import StudyConfig, param
from learnscope.data import mnist1d
from learnscope.data.classification import ClassificationData
from learnscope.errors import ConfigError
from learnscope.measures.landscape import PathResult, linear_path
from learnscope.models import cnn1d, mlp
from learnscope.seeding import derive_seed
from learnscope.store.records import Record
from learnscope.studies import register
from learnscope.studies.base import Part, Study, Trial, TrialOutput, part
from learnscope.train.stacked import ModelStack, make_stack

STABLE_BARRIER = 0.02
"""Frankle et al.'s criterion: a network is stable when the error barrier is at most 2%."""


@dataclasses.dataclass(frozen=True)
class ModeConnectivityConfig(StudyConfig):
    seeds: int = param(4, "seeds (parents); claims use medians and intervals over seeds", ge=1)
    model: str = param("cnn1d", "network: the MNIST-1D CNN or an MLP 40-h-h-10",
                       choices=("cnn1d", "mlp"))
    channels: int = param(16, "channels of every convolution (model cnn1d)", ge=1, le=256)
    hidden: int = param(256, "width of both hidden layers (model mlp)", ge=1, le=4096)
    n_train: int = param(4000, "MNIST-1D training signals (the test set is 1000 signals)",
                         ge=100, le=4000)
    lr: float = param(0.1, "SGD learning rate (constant)", gt=0)
    momentum: float = param(0.9, "SGD momentum", ge=0, lt=1)
    batch_size: int = param(100, "minibatch size", ge=1)
    spawn_steps: tuple[int, ...] = param(
        (0, 10, 30, 100, 300, 1000),
        "parent steps k after which the two children are spawned (0: at initialisation)",
        ge=0, min_len=2)
    steps: int = param(2000, "SGD steps every child (and every different-init net) trains after "
                             "spawning", ge=1, le=1_000_000)
    path_points: int = param(11, "evenly spaced alphas on the linear path, ends included",
                             ge=3, le=101)

    def check(self) -> None:
        if len(set(self.spawn_steps)) != len(self.spawn_steps):
            raise ConfigError("field 'spawn_steps' has repeated values")
        if max(self.spawn_steps) > 1_000_000:
            raise ConfigError("field 'spawn_steps' must be at most 1000000")


@register
class ModeConnectivity(Study[ModeConnectivityConfig]):
    name = "mode-connectivity"
    title = "Linear mode connectivity and stability to SGD noise"
    summary = ("Children of a parent trained k steps end in one linearly connected basin once k "
               "is past an early phase; different inits are separated by a large error barrier.")
    source = ("Frankle, Dziugaite, Roy & Carbin 2020, Linear mode connectivity and the lottery "
              "ticket hypothesis")
    Config = ModeConnectivityConfig
    quick = {"seeds": 3, "spawn_steps": [0, 30, 300], "steps": 800}
    tiny = {"seeds": 1, "spawn_steps": [0, 5], "steps": 20, "n_train": 400, "channels": 4,
            "path_points": 5}

    def memory_bytes(self, cfg: ModeConnectivityConfig) -> float:
        """One seed's stack of children (float32 weights, gradients, momentum; activations of
        a batch) plus the parent's snapshots and the data."""
        k = 2 * len(cfg.spawn_steps)
        if cfg.model == "cnn1d":
            c = cfg.channels
            params = 6 * c * c + 58 * c + 10
            activations = cfg.batch_size * c * (19 + 10 + 5) * 3
        else:
            h = cfg.hidden
            params = 40 * h + h * h + 12 * h + 10
            activations = cfg.batch_size * (40 + 4 * h + 30)
        return 4.0 * (k * (3 * params + activations) + len(cfg.spawn_steps) * params
                      + 5000 * 41)

    def parts(self, cfg: ModeConnectivityConfig) -> list[Part]:
        seeds = cfg.seed_list()
        return [part("spawn", train_spawned, batch_by=["seed"], k=sorted(cfg.spawn_steps),
                     seed=seeds),
                part("different-init", train_different_inits, seed=seeds)]

    def neighbours(self, cfg: ModeConnectivityConfig) -> dict[str, dict[str, Any]]:
        return super().neighbours(cfg) | {
            "fewer examples": {"n_train": cfg.n_train // 2, "seed": cfg.seed + 5},
            "longer training": {"steps": int(cfg.steps * 1.5)},
            "smaller step": {"lr": cfg.lr * 0.6, "seed": cfg.seed + 9},
            "narrower": {"channels": cfg.channels // 2, "seed": cfg.seed + 13},
        }

    def claims(self, cfg: ModeConnectivityConfig, results: Results) -> list[Claim]:
        spawn = results.where(part="spawn")
        diff = results.where(part="different-init")
        ks = sorted(spawn.axis("k"))
        k_last = ks[-1]
        curve = spawn.curve("barrier_test_error", "k")
        diff_values = list(diff.values("barrier_test_error"))
        diff_lo, diff_hi, diff_cov = median_ci(diff_values)
        diff_median = diff.median("barrier_test_error")
        highs = {k: median_ci(curve.values_at(k))[1] for k in ks}
        top_k = max(highs, key=lambda k: highs[k]) if highs else math.nan
        top = highs.get(top_k, math.nan)
        early_lo = median_ci(curve.values_at(ks[0]))[0]
        late_hi = highs.get(k_last, math.nan)
        return [
            claim("different-init-barrier", "two networks trained from different "
                  "initialisations are separated by an error barrier that stands out beyond the "
                  "seed spread: the lower end of its interval over seeds exceeds the upper end "
                  "of the same-parent barrier's interval at every spawn step",
                  "different_init_ci_low_over_largest_same_parent_ci_high",
                  diff_lo / top if top > 0 else (math.inf if diff_lo > 0 else math.nan),
                  above(1.0),
                  extra={"different_init_median": diff_median, "different_init_ci_low": diff_lo,
                         "different_init_ci_high": diff_hi, "largest_same_parent_ci_high": top,
                         "at_k": top_k, "ci_coverage": diff_cov, "seeds": len(diff_values)}),
            ratio("stable-late", f"children spawned at the latest step (k = {k_last:g}) are "
                  "linearly connected: their median error barrier is at most 1/5 of the barrier "
                  "between different initialisations", "late_over_different_init",
                  curve.at(k_last), diff_median, at_most(0.2),
                  names=(f"barrier_at_k_{k_last:g}", "different_init_barrier")),
            claim("instability-early", f"children spawned at k = {ks[0]:g} are separated by a "
                  f"larger error barrier than those spawned at k = {k_last:g}, beyond the seed "
                  "spread (the lower end of the early interval exceeds the upper end of the late "
                  "one); not gating: the early barrier varies a lot between seeds at this size",
                  "early_ci_low_over_late_ci_high",
                  early_lo / late_hi if late_hi > 0 else (math.inf if early_lo > 0 else math.nan),
                  above(1.0), gating=False,
                  extra={f"median_at_k_{ks[0]:g}": curve.at(ks[0]),
                         f"median_at_k_{k_last:g}": curve.at(k_last),
                         "early_ci_low": early_lo, "late_ci_high": late_hi}),
        ]

    def metrics(self, cfg: ModeConnectivityConfig, results: Results) -> dict[str, Any]:
        curve = results.where(part="spawn").curve("barrier_test_error", "k")
        stable = [k for k, b in curve if b <= STABLE_BARRIER]
        return {"first_stable_k": stable[0] if stable else None,
                "barrier_by_k": {f"{k:g}": b for k, b in curve},
                "different_init_barrier": results.where(part="different-init").median(
                    "barrier_test_error")}

    def figures(self, cfg: ModeConnectivityConfig) -> list[LinePlot]:
        spawn, diff = {"part": "spawn"}, {"part": "different-init"}
        return [
            LinePlot("Error barrier between the two children vs the step k at which they were "
                     "spawned (median, IQR over seeds)", "k_plus_1",
                     (Lines(spawn, label="children of one parent"),
                      Lines(diff, label="different initialisations", dash="dash")),
                     key="barrier_test_error", x_title="spawn step k + 1 (log scale)",
                     y_title="test error barrier", log_x=True,
                     hlines=((STABLE_BARRIER, "stable (2%)"),),
                     caption="Low means the children ended in one linearly connected basin; the "
                             "dashed line (different initialisations, the same at every k) is "
                             "the barrier without a shared parent."),
            LinePlot("Test error along the linear path between the two networks (median over "
                     "seeds)", "alpha",
                     (Lines(spawn, group="k", label="spawned at k = {k}", band=False),
                      Lines(diff, label="different initialisations", dash="dash", band=False)),
                     key="path_test_error", x_title="alpha (0: one network, 1: the other)",
                     y_title="test error",
                     caption="A bump in the middle is a barrier: the straight line between the "
                             "two trained networks leaves the low-error region."),
        ]

    def tables(self, cfg: ModeConnectivityConfig, results: Results) -> list[Table]:
        rows = []
        spawn = results.where(part="spawn")
        groups = [(f"children spawned at k = {k:g}", spawn.where(k=k)) for k in spawn.axis("k")]
        groups.append(("different initialisations", results.where(part="different-init")))
        for name, sub in groups:
            lo, hi, _ = median_ci(list(sub.values("barrier_test_error")))
            rows.append([name, sub.median("barrier_test_error"), f"{lo:.3f} - {hi:.3f}",
                         sub.median("barrier_train_error"), sub.median("barrier_test_loss"),
                         sub.median("endpoint_test_error"), sub.median("relative_distance"),
                         sub.median("parent_test_error") if sub.count_finite("parent_test_error")
                         else "-"])
        return [Table("Linear-path barriers per spawn step (medians over seeds; interval: "
                      "distribution-free interval of the median)",
                      ["pair", "test error barrier", "interval over seeds", "train error barrier",
                       "test loss barrier", "endpoints' test error", "distance / norm",
                       "parent's test error at k"], rows)]


def _data(cfg: ModeConnectivityConfig) -> ClassificationData:
    return mnist1d(n_train=cfg.n_train)


def _network(cfg: ModeConnectivityConfig, seed: int) -> nn.Module:
    if cfg.model == "cnn1d":
        return cnn1d(40, 10, channels=cfg.channels, seed=seed)
    return mlp([40, cfg.hidden, cfg.hidden, 10], seed=seed)


def _stack(cfg: ModeConnectivityConfig, data: ClassificationData, models: list[nn.Module],
           order_seeds: list[int]) -> ModelStack:
    return make_stack(models, seeds=order_seeds, optimizer="sgd", lr=cfg.lr,
                      momentum=cfg.momentum, batch_size=cfg.batch_size,
                      x_train=data.x_train.float(), y_train=data.y_train,
                      x_test=data.x_test.float(), y_test=data.y_test)


def _evaluator(x: torch.Tensor, y: torch.Tensor) -> Any:
    """``eval_fn(model) -> (mean cross-entropy, error rate)`` on one fixed set."""

    @torch.no_grad()
    def evaluate(model: nn.Module) -> tuple[float, float]:
        out = model(x)
        return (float(nn.functional.cross_entropy(out, y)),
                float((out.argmax(1) != y).double().mean()))

    return evaluate


def _relative_distance(a: nn.Module, b: nn.Module) -> float:
    """||theta_a - theta_b|| / mean(||theta_a||, ||theta_b||) over all parameters."""
    va = torch.cat([p.detach().reshape(-1) for p in a.parameters()]).double()
    vb = torch.cat([p.detach().reshape(-1) for p in b.parameters()]).double()
    return float(torch.linalg.vector_norm(va - vb)
                 / (0.5 * (torch.linalg.vector_norm(va) + torch.linalg.vector_norm(vb))))


def pair_records(cfg: ModeConnectivityConfig, data: ClassificationData, a: nn.Module,
                 b: nn.Module, ks: list[int]) -> list[Record]:
    """The barrier records of one pair of trained networks: test and train paths, endpoints,
    distance. ``ks`` are the spawn steps the figure of barrier vs k places this pair at (one
    record per k, e.g. the different-init line drawn across every k)."""
    alphas = np.linspace(0.0, 1.0, cfg.path_points)
    test: PathResult = linear_path(a, b, _evaluator(data.x_test.float(), data.y_test),
                                   alphas=alphas)
    train = linear_path(a, b, _evaluator(data.x_train.float(), data.y_train), alphas=alphas)
    records = [Record("barrier_test_error", test.barrier_error, probe="path",
                      meta={"k_plus_1": k + 1}) for k in ks]
    records += [
        Record("barrier_test_loss", test.barrier_loss, probe="path"),
        Record("barrier_train_error", train.barrier_error, probe="path"),
        Record("barrier_train_loss", train.barrier_loss, probe="path"),
        Record("endpoint_test_error", 0.5 * (test.errors[0] + test.errors[-1]), probe="path"),
        Record("relative_distance", _relative_distance(a, b), probe="path"),
    ]
    for alpha, err, loss, train_err in zip(alphas, test.errors, test.losses, train.errors,
                                           strict=True):
        meta = {"alpha": round(float(alpha), 6)}
        records += [Record("path_test_error", err, probe="path", meta=meta),
                    Record("path_test_loss", loss, probe="path", meta=meta),
                    Record("path_train_error", train_err, probe="path", meta=meta)]
    return records


def train_spawned(cfg: ModeConnectivityConfig, trials: list[Trial]) -> list[TrialOutput]:
    """One seed: the parent trains to the last spawn step, snapshotted at every k; then two
    children per k (copies of the snapshot, different batch orders) train as one stack."""
    seed = trials[0].seed
    data = _data(cfg)
    ks = [int(t.k) for t in trials]
    parent = _stack(cfg, data, [_network(cfg, seed)], [derive_seed(seed, "parent-order")])
    snapshots: dict[int, nn.Module] = {}
    parent_error: dict[int, float] = {}
    evaluate = _evaluator(data.x_test.float(), data.y_test)

    def snapshot(step: int, stack: ModelStack) -> None:
        if step in ks:
            snapshots[step] = stack.export(0)
            parent_error[step] = evaluate(snapshots[step].eval())[1]

    snapshot(0, parent)
    parent.train(steps=max(ks), on_step=snapshot)
    children = [snapshots[k] for k in ks for _ in range(2)]
    orders = [derive_seed(seed, "child-order", k, j) for k in ks for j in range(2)]
    stack = _stack(cfg, data, children, orders)
    stack.train(steps=cfg.steps)
    diverged = stack.diverged
    outputs = []
    for i, k in enumerate(ks):
        a, b = stack.export(2 * i), stack.export(2 * i + 1)
        records = pair_records(cfg, data, a, b, [k])
        records.append(Record("parent_test_error", parent_error[k], probe="parent"))
        status = "diverged" if diverged[2 * i] or diverged[2 * i + 1] else "finished"
        outputs.append(TrialOutput(records, status))
    return outputs


def train_different_inits(cfg: ModeConnectivityConfig, trial: Trial) -> TrialOutput:
    """Two networks from different initialisations and data orders, the children's budget."""
    seed = trial.seed
    data = _data(cfg)
    nets = [_network(cfg, derive_seed(seed, "init", j)) for j in range(2)]
    stack = _stack(cfg, data, nets, [derive_seed(seed, "init-order", j) for j in range(2)])
    stack.train(steps=cfg.steps)
    records = pair_records(cfg, data, stack.export(0), stack.export(1),
                           sorted(cfg.spawn_steps))
    return TrialOutput(records, "diverged" if any(stack.diverged) else "finished")
