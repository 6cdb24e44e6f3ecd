"""Learning parities: why gradients carry exponentially little information about the target,
how linear algebra learns a parity from about n samples, and how SGD learns a sparse parity
after a long plateau (Shalev-Shwartz, Shamir & Shammah 2017, "Failures of gradient-based deep
learning"; Barak, Edelman, Goel, Kakade, Malach & Zhang 2022, "Hidden progress in deep learning:
SGD learns parities near the computational limit").

Inputs are uniform on {-1, +1}^n; the target is a parity chi_S(x) = prod_{i in S} x_i of an
unknown subset S. Three experiments:

1. Gradient information (exact, no sampling). For a scalar network f and the square loss
   L_S = E_x (f - chi_S)^2 / 2, the gradient depends on the target only through
   c_S = E_x[chi_S(x) grad f(x)]. These are the Walsh-Hadamard coefficients of the per-input
   gradients, so Parseval gives the identity mean_S ||c_S||^2 = E_x ||grad f||^2 / 2^n, and the
   variance of the gradient over all 2^n targets is at most that: a gradient method can hardly
   tell the parities apart. Computed over the full hypercube with a fast Walsh-Hadamard
   transform for a random-initialised MLP n-16-1, n = 4..12.

2. Gaussian elimination over GF(2). A parity is a linear function over GF(2): labels of m
   random samples give m linear equations, and elimination recovers S as soon as the samples
   span GF(2)^n, about n + 2 samples, far below what SGD needs.

3. SGD on k-sparse parities: a 1-hidden-layer ReLU MLP (width 256) trained by plain SGD
   (lr 0.1, cross-entropy on two logits) on a fresh batch of 32 samples each step, for
   n in {20, 30, 40} and k in {2, 3}; every (k, seed) of one n trains as one stack of models.
   Test accuracy (2000 fresh samples) is measured every 50 steps; "solved" is 99%.

Every part runs 5 seeds by default and 3 with --quick.

Claims: the Parseval identity holds to 1e-6 for every n and seed; the gradient variance over
targets decays like 2^-n (fitted log2 slope per extra bit between -1.25 and -0.75, the
gradient norm of this network grows slowly with n); elimination recovers the planted 3-sparse
parity exactly in every trial with a median of at most n + 3 samples; every SGD run solves its
parity; 3-sparse parities take longer as n grows; 2-sparse parities are solved at least 3 times
faster than 3-sparse ones at the smallest n; for k = 3 at the largest n, test accuracy at half
the solve time is still near chance (at most 0.75): a plateau, then an abrupt jump (Barak et
al.'s hidden progress). Not claimed: the n^k growth of SGD's time (at these sizes it grows
roughly linearly in n) or that k = 4 is slower than k = 3.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from learnscope.analysis import Claim, LinePlot, Lines, Results, Table
from learnscope.analysis.claims import all_of, at_least, at_most, between, claim, monotone
from learnscope.config import StudyConfig, param
from learnscope.errors import ConfigError
from learnscope.measures.parity import gradient_information, samples_to_recover
from learnscope.models import mlp
from learnscope.seeding import numpy_rng, torch_generator
from learnscope.store.records import Record
from learnscope.studies import register
from learnscope.studies.base import Part, Study, Trial, TrialOutput, part
from learnscope.train.stacked import make_stack

SOLVED = 0.99


@dataclasses.dataclass(frozen=True)
class ParityConfig(StudyConfig):
    seeds: int = param(5, "seeds; claims use medians over seeds", ge=1)
    grad_ns: tuple[int, ...] = param((4, 6, 8, 10, 12), "input bits for the exact gradient "
                                     "identity over all parities", ge=2, le=16, min_len=2)
    grad_width: int = param(16, "hidden width of the MLP whose gradients are measured", ge=1)
    gf2_ns: tuple[int, ...] = param((20, 50, 100), "input bits for GF(2) elimination",
                                    ge=4, le=400, min_len=1)
    gf2_trials: int = param(20, "planted parities per (n, seed) for elimination", ge=1)
    sgd_ns: tuple[int, ...] = param((20, 30, 40), "input bits for SGD", ge=4, le=100,
                                    min_len=2)
    sgd_ks: tuple[int, ...] = param((2, 3), "parity sizes k for SGD", ge=1, le=6, min_len=1)
    width: int = param(256, "hidden width of the SGD network", ge=2)
    lr: float = param(0.1, "SGD learning rate (no momentum)", gt=0)
    batch_size: int = param(32, "fresh samples per SGD step", ge=1)
    eval_every: int = param(50, "steps between test evaluations", ge=1)
    max_steps: int = param(10000, "give up after this many SGD steps", ge=1)
    n_test: int = param(2000, "fresh test samples", ge=100)

    def check(self) -> None:
        if 3 not in self.sgd_ks:
            raise ConfigError("field 'sgd_ks' must contain 3 (the claims are about k = 3)")


@register
class Parity(Study[ParityConfig]):
    name = "parity"
    title = "Learning parities: gradient information, GF(2) elimination and SGD's plateau"
    summary = ("Gradients carry ~2^-n information about a parity; elimination needs ~n samples; "
               "SGD learns sparse parities after a plateau.")
    source = ("Shalev-Shwartz, Shamir & Shammah 2017, Failures of gradient-based deep learning; "
              "Barak et al. 2022, Hidden progress in deep learning: SGD learns parities near the "
              "computational limit")
    Config = ParityConfig
    quick = {"seeds": 3}
    tiny = {"seeds": 1, "grad_ns": [3, 4], "gf2_ns": [8], "gf2_trials": 3, "sgd_ns": [6, 8],
            "width": 32, "max_steps": 100, "n_test": 200}

    def parts(self, cfg: ParityConfig) -> list[Part]:
        seeds = cfg.seed_list()
        return [
            part("gradient", run_gradient, n=sorted(cfg.grad_ns), seed=seeds),
            part("gf2", run_gf2, n=sorted(cfg.gf2_ns), seed=seeds),
            part("sgd", train_sgd, batch_by=["n"], n=sorted(cfg.sgd_ns), k=sorted(cfg.sgd_ks),
                 seed=seeds, work=lambda c, t: t.n ** 2),
        ]

    def neighbours(self, cfg: ParityConfig) -> dict[str, dict[str, Any]]:
        return super().neighbours(cfg) | {
            "narrower": {"width": cfg.width // 2, "grad_width": max(1, cfg.grad_width // 2)},
            "wider": {"width": int(cfg.width * 1.5), "grad_width": int(cfg.grad_width * 1.5)},
            "larger batches": {"batch_size": int(cfg.batch_size * 1.5), "seed": cfg.seed + 7},
        }

    def claims(self, cfg: ParityConfig, results: Results) -> list[Claim]:
        grad, gf2, sgd = (results.where(part=p) for p in ("gradient", "gf2", "sgd"))
        ns = grad.axis("n")
        variance = [grad.where(n=n).median("variance") for n in ns]
        slope = float(np.polyfit(ns, np.log2(variance), 1)[0])
        gf2_ns = gf2.axis("n")
        k3 = sgd.where(k=3)
        sgd_ns = sgd.axis("n")
        n_small, n_large = sgd_ns[0], sgd_ns[-1]
        claims = [
            claim("parseval-identity", "mean over all 2^n parities S of ||E[chi_S grad f]||^2 "
                  "equals E||grad f||^2 / 2^n (every n and seed; exact up to float64 rounding)",
                  "max_relative_error", float(np.max(np.abs(grad.values("parseval_ratio") - 1))),
                  at_most(1e-6)),
            claim("gradient-variance-decays-2^-n", "the variance of the loss gradient over all "
                  "parity targets shrinks like 2^-n: fitted slope of log2(variance) per extra "
                  "input bit (median over seeds) between -1.25 and -0.75",
                  "log2_slope_per_bit", slope, between(-1.25, -0.75),
                  extra={"n": ns, "variance": variance}),
            claim("gf2-recovers-exactly", "Gaussian elimination over GF(2) recovers the planted "
                  "3-sparse parity exactly in every trial", "fraction_recovered",
                  float(np.min(gf2.values("recovered_fraction"))), at_least(1.0)),
            claim("gf2-needs-about-n-samples", "elimination needs about n samples: median excess "
                  "over n (the minimum for a unique solution) at most 3 at every n", "worst_median_excess",
                  max(gf2.where(n=n).median("median_excess") for n in gf2_ns), at_most(3.0),
                  extra={"worst_max_excess": float(np.max(gf2.values("max_excess"))),
                         "n": gf2_ns}),
            claim("sgd-solves", f"every SGD run reaches {SOLVED:.0%} test accuracy within "
                  f"{cfg.max_steps} steps", "runs_solved", sgd.count_finite("steps_to_solve"),
                  at_least(len(sgd))),
            monotone("sgd-steps-grow-with-n", "SGD needs more steps for a 3-sparse parity as "
                     "the number of input bits grows (median over seeds)",
                     k3.curve("steps_to_solve", "n"), increasing=True),
            claim("plateau-then-jump", "for k = 3 at the largest n, test accuracy at half the "
                  "solve time is still near chance (at most 0.75): a long plateau, then an "
                  "abrupt jump", "acc_at_half_solve_time",
                  k3.where(n=n_large).median("acc_at_half"), at_most(0.75)),
        ]
        if 2 in sgd.axis("k"):
            s2 = sgd.where(k=2, n=n_small).median("steps_to_solve")
            s3 = k3.where(n=n_small).median("steps_to_solve")
            claims.append(all_of(
                "sparser-is-faster", f"at n = {n_small}, 2-sparse parities are solved at least "
                "3 times faster than 3-sparse ones (median over seeds)",
                {"steps_k3_over_k2": (s3 / s2 if s2 > 0 else math.nan, at_least(3.0))},
                extra={"steps_k2": s2, "steps_k3": s3}))
        return claims

    def figures(self, cfg: ParityConfig) -> list[LinePlot]:
        return [
            LinePlot("Gradient information about the target parity vs input bits", "n",
                     (Lines({"part": "gradient"}, key="variance",
                            label="variance of the gradient over targets"),
                      Lines({"part": "gradient"}, key="bound",
                            label="E||grad f||^2 / 2^n (Parseval)", dash="dash")),
                     x_title="input bits n", y_title="squared gradient norm", log_y=True,
                     caption="Both fall by about half per extra bit: the gradient barely "
                             "depends on which parity is the target."),
            LinePlot("Samples GF(2) elimination needs, minus n", "n",
                     (Lines({"part": "gf2"}, key="median_excess", label="median excess"),
                      Lines({"part": "gf2"}, key="max_excess", label="worst trial")),
                     x_title="input bits n", y_title="samples beyond n",
                     caption="A handful of samples beyond the n unknowns always suffice."),
            LinePlot("SGD on k-sparse parities: test accuracy over training", "step",
                     (Lines({"part": "sgd"}, key="test_acc", group=("n", "k"),
                            label="n={n}, k={k}"),),
                     x_title="SGD step", y_title="test accuracy", seeds="first",
                     hlines=((0.5, "chance"),),
                     caption="3-sparse parities sit at chance for most of training, then jump; "
                             "the plateau lengthens with n."),
            LinePlot("SGD steps to 99% test accuracy (median, IQR)", "n",
                     (Lines({"part": "sgd"}, key="steps_to_solve", group="k",
                            label="k={k}"),),
                     x_title="input bits n", y_title="SGD steps",
                     caption="Sparser parities are found much sooner; k = 3 slows with n."),
        ]

    def tables(self, cfg: ParityConfig, results: Results) -> list[Table]:
        sgd = results.where(part="sgd")
        rows = [[n, k, sub.median("steps_to_solve"), sub.median("acc_at_half")]
                for n in sgd.axis("n") for k in sgd.axis("k")
                if len(sub := sgd.where(n=n, k=k))]
        gf2 = results.where(part="gf2")
        gf2_rows = [[n, gf2.where(n=n).median("median_samples"),
                     float(np.max(gf2.where(n=n).values("max_excess"))) + n,
                     gf2.where(n=n).median("recovered_fraction")] for n in gf2.axis("n")]
        return [Table("SGD on k-sparse parities (medians over seeds)",
                      ["n", "k", "steps to 99% test acc", "test acc at half that time"], rows),
                Table("GF(2) elimination on planted 3-sparse parities",
                      ["n", "median samples", "most samples", "fraction recovered"], gf2_rows)]


def run_gradient(cfg: ParityConfig, trial: Trial) -> list[Record]:
    """Exact gradient statistics over all parities of a random-initialised MLP n-w-1."""
    info = gradient_information(mlp([trial.n, cfg.grad_width, 1], seed=trial.seed), trial.n)
    return [Record("mean_sq_correlation", info.mean_sq_correlation, probe="gradient"),
            Record("bound", info.bound, probe="gradient"),
            Record("parseval_ratio", info.mean_sq_correlation / info.bound, probe="gradient"),
            Record("variance", info.variance, probe="gradient"),
            Record("mean_sq_grad", info.mean_sq_grad, probe="gradient")]


def run_gf2(cfg: ParityConfig, trial: Trial) -> list[Record]:
    """Planted 3-sparse parities recovered by elimination from uniformly random samples."""
    n = trial.n
    rng = numpy_rng(trial.seed, "gf2", n)
    used, hits = [], 0
    for _ in range(cfg.gf2_trials):
        subset = sorted(rng.choice(n, size=min(3, n), replace=False).tolist())
        m, ok = samples_to_recover(n, subset, lambda k: rng.random((k, n)) < 0.5, 4 * n + 50)
        used.append(math.nan if m is None else m)
        hits += ok
    return [Record("median_samples", float(np.median(used)), probe="gf2"),
            Record("median_excess", float(np.median(used)) - n, probe="gf2"),
            Record("max_excess", float(np.max(used)) - n, probe="gf2"),
            Record("recovered_fraction", hits / cfg.gf2_trials, probe="gf2")]


def train_sgd(cfg: ParityConfig, trials: list[Trial]) -> list[TrialOutput]:
    """Every (k, seed) of one n as one stack, each model on its own fresh batches."""
    torch.set_num_threads(1)
    n, count = trials[0].n, len(trials)
    subsets = [sorted(numpy_rng(t.seed, "subset", n, t.k).choice(n, t.k, replace=False)
                      .tolist()) for t in trials]
    batches = torch_generator(trials[0].seed, "parity-batches", n)

    def labels(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([(x[i][..., s].prod(-1) < 0).long() for i, s in enumerate(subsets)])

    def batch_fn(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = (torch.randint(0, 2, (count, cfg.batch_size, n), generator=batches) * 2 - 1).float()
        return x, labels(x)

    x_test = (torch.randint(0, 2, (cfg.n_test, n), generator=torch_generator(0, "test", n))
              * 2 - 1).float()
    y_test = labels(x_test.expand(count, -1, -1))
    stack = make_stack(lambda s: mlp([n, cfg.width, 2], seed=s),
                       seeds=[t.seed * 100 + t.k for t in trials], optimizer="sgd", lr=cfg.lr,
                       momentum=0.0, batch_fn=batch_fn, batch_size=cfg.batch_size)
    steps, accs = [], []
    while stack.step < cfg.max_steps:
        stack.run_steps(min(cfg.eval_every, cfg.max_steps - stack.step))
        accs.append((stack.predict(x_test).argmax(-1) == y_test).double().mean(1))
        steps.append(stack.step)
        if bool((accs[-1] >= SOLVED).all()):
            break
    table = torch.stack(accs)
    outputs = []
    for i in range(count):
        hit = (table[:, i] >= SOLVED).nonzero()
        solve = steps[int(hit[0])] if len(hit) else math.nan
        half = (float(np.interp(solve / 2, steps, table[:, i].numpy()))
                if math.isfinite(solve) else math.nan)
        records = [Record("test_acc", float(a), step=s, probe="sgd")
                   for s, a in zip(steps, table[:, i], strict=True)]
        records += [Record("steps_to_solve", solve, probe="sgd"),
                    Record("acc_at_half", half, probe="sgd")]
        outputs.append(TrialOutput(records, info={"subset": subsets[i]}))
    return outputs
