"""Ensembles, knowledge distillation and self-distillation (Allen-Zhu & Li 2020, "Towards
understanding ensemble, knowledge distillation and self-distillation in deep learning").

Averaging the outputs of a few networks trained the same way from different random
initialisations beats each of them. Allen-Zhu & Li add three findings: training the average of
K networks jointly (one model whose output is the mean of K networks' logits) does not give
that gain; distilling the ensemble's soft outputs into one network (knowledge distillation,
KD) keeps much of it; distilling one network into a fresh one of the same size
(self-distillation) beats a single network too. Their explanation needs "multi-view" data:
each class can be recognised by several views (feature patterns), most examples show all
views of their class, a few only one. Which views a network learns is decided by its random
initialisation; it fits the multi-view examples with the views it has and memorises the
single-view examples of the others. Independently trained networks hold different views, so
their ensemble covers more, and its soft outputs pass that knowledge to a student.

Setup, on two data sets, per seed. MNIST-1D: 4000 training and 1000 test sequences of 40
values, 10 classes; MLPs 40-h-h-10 (ReLU; h = 128 at the default size, 64 at the quick size)
trained by Adam (lr 1e-3, batch 100, 3000 steps; 1500 at the quick size). Multi-view data
(learnscope.data.multiview): 10 classes with 2 orthonormal views each in a 24-dimensional patch
space, inputs of 4 patches; 90% of the examples show both views of their class (one patch
each), 10% only one; the other patches carry a view of another class at 0.1; Gaussian noise
0.1 on every number; 500 training and 2000 test examples. Its network is the one of the
theory: 2 neurons per class, each applied to every patch through a smoothed cubic ReLU
(cubic below 0.1, linear above) and summed, from small random weights (standard deviation
0.01), trained by plain SGD (lr 0.2, batch 100, 500 steps). For each seed and data set: K
independent networks (K = 5, 4 at the quick size; one stack of models) and their ensemble (the
mean of their logits) for every size 1..K; a jointly trained average (K networks from the same
initial weights, one cross-entropy on the mean of their logits); a KD student trained on the
ensemble's soft labels at temperature T = 4 (loss 0.1 x cross-entropy on the labels + 0.9 x
T^2 x KL between the softened teacher and student outputs); a self-distilled student trained
the same way on the soft labels of the first independent network. Students read the soft
labels on the training inputs and on as many held-out unlabeled inputs: a teacher that fits
its training set gives almost one-hot soft labels there, so KD on the training inputs alone
transfers little. The single-network baseline is the mean test accuracy of the seed's K
independent networks; every comparison is paired within a seed.

Claims, per data set: a paired gain per seed, which holds when the lower end of the
distribution-free confidence interval of its median lies above 0 (with 3 seeds: every seed
gains). Gating: the ensemble beats the mean single network on MNIST-1D (median gain +1.9 to +4
points at the quick size and its neighbours) and on the multi-view data (+1.4 to +9.6 points;
the smallest seed's gain was only 0.03 to 0.08 points at two neighbours). Reported, not gating
(measured at the quick size and its five neighbours): the KD student beats a single network
(MNIST-1D: at none; multi-view: at two of six), the jointly trained average falls below the
ensemble (MNIST-1D: two of six; multi-view: four of six, by 0.1 to 4 points), the
self-distilled student beats a single network (MNIST-1D: none; multi-view: one of six). With
a larger MLP on MNIST-1D (40-256-256-10, 4000 steps) the same was measured: single 0.642,
ensemble of 5 0.664, jointly trained average 0.663, KD on the training inputs only 0.639.

What the multi-view networks miss at this size is mostly a whole class, not one view: a class
whose two neurons both start unaligned with its views (probability about 1/16 per class) is
never learned (single networks fit 0.90-0.97 of the training set), and the ensemble covers it
(gains of 2.5 to 10 points). When no member misses a class the ensemble's gain is small (0.1
point), and a KD or self-distilled student with such a dead class cannot learn it from soft
labels either, so the views story of the theory is only partly reproduced here; with 3 neurons
per class the networks learn every view and the gains vanish.

Sources: Allen-Zhu & Li 2020 (arXiv 2012.09816); Hinton, Vinyals & Dean 2015 (knowledge
distillation); Furlanello et al. 2018 (born-again networks, self-distillation);
Lakshminarayanan et al. 2017 (deep ensembles); Greydanus 2020 (MNIST-1D).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from learnscope.analysis import Claim, LinePlot, Lines, Results, Scatter, Table
from learnscope.analysis.claims import above, claim
from learnscope.analysis.curves import median_ci
from learnscope.config import StudyConfig, param
from learnscope.data import mnist1d
from learnscope.data.classification import ClassificationData
from learnscope.data.multiview import multiview
from learnscope.models import mlp
from learnscope.seeding import torch_generator
from learnscope.store.records import Record
from learnscope.studies import register
from learnscope.studies.base import Part, Study, Trial, TrialOutput, part
from learnscope.train.stacked import make_stack

DATASETS = ("mnist1d", "multiview")
MV_PATCHES, MV_PATCH_DIM = 4, 24
METHODS = ("single", "ensemble", "joint", "kd", "self_distill")
METHOD_NAMES = {"single": "single network (mean of K)", "ensemble": "ensemble of K",
                "joint": "jointly trained average of K", "kd": "KD student of the ensemble",
                "self_distill": "self-distilled student"}


@dataclasses.dataclass(frozen=True)
class EnsemblesConfig(StudyConfig):
    seeds: int = param(3, "seeds (each its own K networks, students and data draw); claims "
                          "use the paired gains of every seed", ge=1)
    members: int = param(5, "K: independent networks per ensemble (and in the jointly "
                            "trained average)", ge=2)
    hidden: int = param(128, "MNIST-1D MLP: width of each of the two hidden layers", ge=2)
    steps: int = param(3000, "MNIST-1D: Adam steps of every network and student", ge=1)
    lr: float = param(1e-3, "MNIST-1D: Adam learning rate", gt=0)
    batch_size: int = param(100, "minibatch size (students: this many labeled and this many "
                                 "transfer inputs per step)", ge=1)
    temperature: float = param(4.0, "KD temperature T", gt=0)
    kd_weight: float = param(0.9, "weight of the T^2 KL term in the student loss (the rest: "
                                  "cross-entropy on the labels)", ge=0, le=1)
    mnist_train: int = param(4000, "MNIST-1D training sequences (test: 1000)", ge=100, le=4000)
    mv_train: int = param(500, "multi-view training examples (test: 2000)", ge=20)
    mv_multi_fraction: float = param(0.9, "fraction of multi-view examples (all views shown)",
                                     ge=0, le=1)
    mv_noise: float = param(0.1, "Gaussian noise per number of the multi-view data", ge=0)
    mv_neurons: int = param(2, "multi-view network: neurons per class", ge=1)
    mv_init: float = param(0.01, "multi-view network: standard deviation of the initial "
                                 "weights", gt=0)
    mv_lr: float = param(0.2, "multi-view network: SGD learning rate (no momentum)", gt=0)
    mv_steps: int = param(500, "multi-view network: SGD steps of every network and student",
                          ge=1)
    unlabeled: float = param(1.0, "held-out unlabeled inputs the students also see, as a "
                                  "multiple of the training set", ge=0, le=1)


@register
class Ensembles(Study[EnsemblesConfig]):
    name = "ensembles"
    title = "Ensembles, knowledge distillation and self-distillation"
    summary = ("K independently trained MLPs vs their ensemble, a jointly trained average, a KD "
               "student and a self-distilled student, on MNIST-1D and on multi-view data.")
    source = ("Allen-Zhu & Li 2020, Towards understanding ensemble, knowledge distillation and "
              "self-distillation in deep learning; Hinton et al. 2015")
    Config = EnsemblesConfig
    quick = {"members": 4, "hidden": 64, "steps": 1500}
    tiny = {"seeds": 1, "members": 2, "hidden": 8, "steps": 20, "mnist_train": 200,
            "mv_train": 100, "mv_steps": 20}

    def parts(self, cfg: EnsemblesConfig) -> list[Part]:
        return [part("train", train_methods, batch_by=["dataset"], dataset=DATASETS,
                     seed=cfg.seed_list())]

    def neighbours(self, cfg: EnsemblesConfig) -> dict[str, dict[str, Any]]:
        return super().neighbours(cfg) | {
            "narrower": {"hidden": max(2, cfg.hidden // 2), "seed": cfg.seed + 7},
            "wider, more multi-view data": {"hidden": int(cfg.hidden * 1.5),
                                            "mv_train": int(cfg.mv_train * 1.5),
                                            "seed": cfg.seed + 11},
            "fewer steps": {"steps": cfg.steps // 2, "mv_steps": cfg.mv_steps // 2,
                            "seed": cfg.seed + 13},
            "noisier views": {"mv_noise": round(cfg.mv_noise * 1.5, 4),
                              "mv_multi_fraction": 0.7, "seed": cfg.seed + 17},
        }

    def memory_bytes(self, cfg: EnsemblesConfig) -> float:
        k = cfg.seeds * cfg.members
        params = 100 * cfg.hidden + cfg.hidden ** 2 + 10 * cfg.hidden
        return 4.0 * k * (4 * params + 8 * cfg.batch_size * cfg.hidden)

    def claims(self, cfg: EnsemblesConfig, results: Results) -> list[Claim]:
        claims = []
        for dataset in DATASETS:
            sub = results.where(part="train", dataset=dataset)
            claims.append(_gain_claim(
                sub, dataset, "ensemble-beats-single", "ensemble_acc", "single_acc", 1,
                "the ensemble of K independently trained networks (mean of logits) beats the "
                "mean single network", gating=True))
            claims.append(_gain_claim(
                sub, dataset, "kd-beats-single", "kd_acc", "single_acc", 1,
                "a student distilled from the ensemble's soft labels beats the mean single "
                "network", gating=False))
            claims.append(_gain_claim(
                sub, dataset, "joint-below-ensemble", "joint_acc", "ensemble_acc", -1,
                "the jointly trained average of K networks falls below the ensemble of K "
                "independently trained ones", gating=False))
            claims.append(_gain_claim(
                sub, dataset, "self-distillation-beats-single", "self_distill_acc",
                "single_acc", 1, "a student distilled from one network beats the mean single "
                "network", gating=False))
        return claims

    def figures(self, cfg: EnsemblesConfig) -> list[LinePlot | Scatter]:
        index = ", ".join(f"{i} {METHOD_NAMES[m]}" for i, m in enumerate(METHODS))
        return [
            LinePlot("Test accuracy of the ensemble against its size", "step",
                     tuple(Lines({"part": "train", "dataset": d}, label=d) for d in DATASETS),
                     key="ensemble_acc_by_size",
                     x_title="ensemble size k (networks averaged)",
                     y_title="test accuracy (median over seeds)",
                     caption="Each point averages the K ensembles of k consecutive networks "
                             "(k = 1: the mean single network); a curve that rises with k shows "
                             "the ensemble gain, the band is the spread over seeds."),
            Scatter("Test accuracy of each method on each data set", "method_acc", "method",
                    where={"part": "train"}, group="dataset", label="{dataset}",
                    x_title=f"method ({index})", y_title="test accuracy (one point per seed)",
                    caption="Each point is one seed's network or student; compare each "
                            "method's points with the single networks' (method 0) of the same "
                            "data set."),
        ]

    def tables(self, cfg: EnsemblesConfig, results: Results) -> list[Table]:
        rows = []
        for method in METHODS:
            row: list[Any] = [METHOD_NAMES[method]]
            for dataset in DATASETS:
                sub = results.where(part="train", dataset=dataset)
                row.append(sub.median(f"{method}_acc") if len(sub) else math.nan)
            sub = results.where(part="train", dataset="multiview")
            row.append(sub.median(f"{method}_single_view_acc") if len(sub) else math.nan)
            rows.append(row)
        return [Table("Test accuracy of each method (medians over seeds)",
                      ["method", "MNIST-1D", "multi-view", "multi-view, single-view examples"],
                      rows)]

    def metrics(self, cfg: EnsemblesConfig, results: Results) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for dataset in DATASETS:
            sub = results.where(part="train", dataset=dataset)
            if len(sub):
                out[dataset] = {"teacher_train_acc": sub.median("ensemble_train_acc"),
                                "single_train_acc": sub.median("single_train_acc")}
        return out


def _gain_claim(sub: Results, dataset: str, slug: str, key: str, base: str, sign: int,
                statement: str, *, gating: bool) -> Claim:
    """A paired gain ``sign * (key - base)`` per seed: holds when the lower end of the
    distribution-free CI of its median lies above 0."""
    label = {"mnist1d": "MNIST-1D", "multiview": "multi-view data"}[dataset]
    if len(sub):
        gains = sign * (sub.values(key) - sub.values(base))
        lo, hi, coverage = median_ci(gains.tolist())
        median = float(torch.tensor(gains).median()) if len(gains) else math.nan
    else:
        lo = hi = coverage = median = math.nan
    return claim(f"{slug}-{dataset}", f"On {label}: {statement}", "gain_ci_low", lo, above(0.0),
                 extra={"median_gain": median, "gain_ci_high": hi, "ci_coverage": coverage,
                        key: sub.median(key) if len(sub) else math.nan,
                        base: sub.median(base) if len(sub) else math.nan},
                 gating=gating)


# ------------------------------------------------------------------------------------------
# data


def _data(cfg: EnsemblesConfig, dataset: str
          ) -> tuple[ClassificationData, torch.Tensor, torch.Tensor | None]:
    """(data, unlabeled inputs, mask of the single-view test examples or None)."""
    if dataset == "mnist1d":
        data = mnist1d(5000, n_train=cfg.mnist_train)
        n_unl = round(cfg.unlabeled * cfg.mnist_train)
        extra = mnist1d(5000, seed=43).x_train[:n_unl]  # same generator, other draws
        return data, extra, None
    data, _, test, unl = multiview(cfg.mv_train, 2000, n_patches=MV_PATCHES,
                                   patch_dim=MV_PATCH_DIM, multi_fraction=cfg.mv_multi_fraction,
                                   noise=cfg.mv_noise, seed=cfg.seed,
                                   n_unlabeled=round(cfg.unlabeled * cfg.mv_train))
    return data, unl, ~test.multi


# ------------------------------------------------------------------------------------------
# the networks


class SmoothedCubicReLU(nn.Module):
    """Allen-Zhu & Li's activation: 0 below 0, ``z^3 / (3 rho^2)`` on ``[0, rho]``, then
    linear ``z - 2 rho / 3`` (continuous with a continuous slope at ``rho``)."""

    def __init__(self, rho: float) -> None:
        super().__init__()
        self.rho = rho

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = torch.relu(z)
        return torch.where(z <= self.rho, z ** 3 / (3 * self.rho ** 2), z - 2 * self.rho / 3)


class ViewNet(nn.Module):
    """The network of Allen-Zhu & Li's theory: ``f_c(x) = sum_r sum_p act(<w_{c,r}, x_p>)``,
    ``neurons`` weight vectors per class applied to every patch, summed (no output layer)."""

    def __init__(self, n_patches: int, patch_dim: int, n_classes: int, neurons: int, *,
                 rho: float, init_scale: float, seed: int) -> None:
        super().__init__()
        self.shape = (n_patches, patch_dim, n_classes, neurons)
        g = torch_generator(seed, "viewnet-init")
        self.weight = nn.Parameter(
            torch.randn(patch_dim, n_classes * neurons, generator=g) * init_scale)
        self.act = SmoothedCubicReLU(rho)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        P, p, C, m = self.shape
        h = self.act(x.reshape(-1, P, p) @ self.weight)  # (b, P, C m)
        return h.sum(1).reshape(-1, C, m).sum(-1)


def _factory(cfg: EnsemblesConfig, dataset: str, data: ClassificationData
             ) -> Callable[[int], nn.Module]:
    if dataset == "mnist1d":
        sizes = [data.n_features, cfg.hidden, cfg.hidden, data.n_classes]
        return lambda s: mlp(sizes, seed=s)
    return lambda s: ViewNet(MV_PATCHES, MV_PATCH_DIM, data.n_classes, cfg.mv_neurons,
                             rho=0.1, init_scale=cfg.mv_init, seed=s)


@dataclasses.dataclass(frozen=True)
class _Recipe:
    """How the networks of one data set train."""

    optimizer: str
    lr: float
    steps: int
    batch_size: int

    def optim(self, params: list[torch.Tensor]) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr)
        return torch.optim.SGD(params, lr=self.lr)


def _recipe(cfg: EnsemblesConfig, dataset: str) -> _Recipe:
    if dataset == "mnist1d":
        return _Recipe("adam", cfg.lr, cfg.steps, cfg.batch_size)
    return _Recipe("sgd", cfg.mv_lr, cfg.mv_steps, cfg.batch_size)


# ------------------------------------------------------------------------------------------
# stacks trained on any loss (the kit's stacks train on hard labels only)


class _FunctionalStack:
    """M modules of one architecture as stacked parameters, run with vmap; the loss is a sum
    of per-model losses and Adam / SGD act element-wise, so each model trains as alone."""

    def __init__(self, modules: list[nn.Module]) -> None:
        params, self.buffers = stack_module_state(modules)
        self.params = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
        base = copy.deepcopy(modules[0]).to("meta")
        self.M = len(modules)
        self._f = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)), in_dims=(0, 0, 0))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs (M, b, C) on per-model inputs x (M, b, ...)."""
        return self._f(self.params, self.buffers, x)

    def train(self, recipe: _Recipe, loss_of: Callable[[int], torch.Tensor]) -> None:
        opt = recipe.optim(list(self.params.values()))
        for step in range(recipe.steps):
            opt.zero_grad(set_to_none=True)
            loss_of(step).backward()
            opt.step()

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self(x.expand(self.M, *x.shape))


def _rows(gens: list[torch.Generator], n: int, b: int) -> torch.Tensor:
    """One minibatch of row indices per model (M, b), each from its own stream."""
    return torch.stack([torch.randint(n, (b,), generator=g) for g in gens])


def train_joint(recipe: _Recipe, data: ClassificationData, make: Callable[[int], nn.Module],
                member_seeds: list[list[int]], batch_seeds: list[int]) -> torch.Tensor:
    """One jointly trained average per group of member seeds: cross-entropy on the mean of
    the K members' logits. Returns the averages' test logits (G, n_test, C)."""
    G, K = len(member_seeds), len(member_seeds[0])
    stack = _FunctionalStack([make(s) for group in member_seeds for s in group])
    gens = [torch_generator(s, "ensembles-joint-batches") for s in batch_seeds]
    b, n = recipe.batch_size, len(data.x_train)

    def loss_of(step: int) -> torch.Tensor:
        rows = _rows(gens, n, b)
        mean = stack(data.x_train[rows].repeat_interleave(K, 0)).view(G, K, b, -1).mean(1)
        return nn.functional.cross_entropy(mean.reshape(G * b, -1),
                                           data.y_train[rows].reshape(-1), reduction="sum") / b

    stack.train(recipe, loss_of)
    return stack.logits(data.x_test).view(G, K, len(data.x_test), -1).mean(1)


def distillation_loss(labeled: torch.Tensor, labels: torch.Tensor, transfer: torch.Tensor,
                      teacher_probs: torch.Tensor, temperature: float, kd_weight: float
                      ) -> torch.Tensor:
    """Hinton et al.'s loss, summed over models of a stack and averaged over a batch:
    ``(1 - w) CE(labels) + w T^2 KL(teacher_T || student_T)`` with logits (M, b, C) on the
    labeled and on the transfer inputs, ``teacher_probs`` the teacher's softmax at T."""
    T = temperature
    ce = nn.functional.cross_entropy(labeled.reshape(-1, labeled.shape[-1]), labels.reshape(-1),
                                     reduction="sum") / labeled.shape[1]
    log_p = torch.log_softmax(transfer / T, -1)
    kl = (teacher_probs * (torch.log(teacher_probs.clamp_min(1e-12)) - log_p)).sum()
    return (1 - kd_weight) * ce + kd_weight * T * T * kl / transfer.shape[1]


def train_students(cfg: EnsemblesConfig, recipe: _Recipe, data: ClassificationData,
                   make: Callable[[int], nn.Module], seeds: list[int], x_transfer: torch.Tensor,
                   teacher: torch.Tensor) -> torch.Tensor:
    """Students distilled from ``teacher`` logits (S, n_transfer, C) on the transfer inputs
    (the training inputs first, then unlabeled ones), plus cross-entropy on a labeled batch.
    Returns the students' test logits (S, n_test, C)."""
    S, T, w = len(seeds), cfg.temperature, cfg.kd_weight
    stack = _FunctionalStack([make(s) for s in seeds])
    gens = [torch_generator(s, "ensembles-student-batches") for s in seeds]
    b, n, n_t = recipe.batch_size, len(data.x_train), len(x_transfer)
    soft = torch.softmax(teacher / T, -1)
    model = torch.arange(S)[:, None]

    def loss_of(step: int) -> torch.Tensor:
        rows, t_rows = _rows(gens, n, b), _rows(gens, n_t, b)
        out = stack(torch.cat([data.x_train[rows], x_transfer[t_rows]], 1))
        return distillation_loss(out[:, :b], data.y_train[rows], out[:, b:],
                                 soft[model, t_rows], T, w)

    stack.train(recipe, loss_of)
    return stack.logits(data.x_test)


def _accuracy(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None
              ) -> torch.Tensor:
    """Accuracy of each model's logits (..., n, C) on labels y (optionally on a mask)."""
    hits = (logits.argmax(-1) == y).float()
    return (hits if mask is None else hits[..., mask]).mean(-1)


def _mean_subset_accuracy(logits: torch.Tensor, y: torch.Tensor, k: int) -> float:
    """Mean test accuracy of the K ensembles of k consecutive members (cyclically) of the K
    networks' logits (K, n, C): k = 1 is the mean single network, k = K the full ensemble."""
    K = logits.shape[0]
    return float(torch.stack([
        _accuracy(logits[[(i + j) % K for j in range(k)]].mean(0), y) for i in range(K)]).mean())


def train_methods(cfg: EnsemblesConfig, trials: list[Trial]) -> list[TrialOutput]:
    """Every seed of one data set: K independent networks per seed as one stack, then the
    jointly trained averages and the students (KD and self-distillation) as stacks."""
    dataset = trials[0].dataset
    data, unlabeled, single_view = _data(cfg, dataset)
    make, recipe = _factory(cfg, dataset, data), _recipe(cfg, dataset)
    seeds, K = [t.seed for t in trials], cfg.members
    member_seeds = [[1000 * s + k for k in range(K)] for s in seeds]
    stack = make_stack(make, seeds=sum(member_seeds, []), x_train=data.x_train,
                       y_train=data.y_train, x_test=data.x_test, y_test=data.y_test,
                       optimizer=recipe.optimizer, lr=recipe.lr, momentum=0.0,
                       batch_size=recipe.batch_size, device=cfg.device)
    stack.train(steps=recipe.steps)
    x_transfer = torch.cat([data.x_train, unlabeled])
    test = stack.predict(data.x_test).cpu().view(len(seeds), K, len(data.x_test), -1)
    transfer = stack.predict(x_transfer).cpu().view(len(seeds), K, len(x_transfer), -1)
    joint = train_joint(recipe, data, make, member_seeds, [1000 * s + 900 for s in seeds])
    teachers = torch.stack([transfer.mean(1), transfer[:, 0]], 1).flatten(0, 1)
    students = train_students(cfg, recipe, data, make,
                              [1000 * s + k for s in seeds for k in (901, 902)], x_transfer,
                              teachers).view(len(seeds), 2, len(data.x_test), -1)
    n_train = len(data.x_train)
    outputs = []
    for i in range(len(trials)):
        logits = {"ensemble": test[i].mean(0), "joint": joint[i], "kd": students[i, 0],
                  "self_distill": students[i, 1]}
        member_acc = _accuracy(test[i], data.y_test)
        acc = {"single": float(member_acc.mean())} | {
            m: float(_accuracy(v, data.y_test)) for m, v in logits.items()}
        records = [Record(f"{m}_acc", a) for m, a in acc.items()]
        records += [Record("method_acc", acc[m], meta={"method": j})
                    for j, m in enumerate(METHODS)]
        records += [Record("member_acc", float(a), step=k) for k, a in enumerate(member_acc)]
        records += [Record("ensemble_acc_by_size", _mean_subset_accuracy(test[i], data.y_test, k),
                           step=k) for k in range(1, K + 1)]
        train_logits = transfer[i, :, :n_train]
        records += [Record("single_train_acc",
                           float(_accuracy(train_logits, data.y_train).mean())),
                    Record("ensemble_train_acc",
                           float(_accuracy(train_logits.mean(0), data.y_train)))]
        if single_view is not None:
            sv = {"single": float(_accuracy(test[i], data.y_test, single_view).mean())} | {
                m: float(_accuracy(v, data.y_test, single_view)) for m, v in logits.items()}
            records += [Record(f"{m}_single_view_acc", a) for m, a in sv.items()]
        outputs.append(TrialOutput(records))
    return outputs
