"""Lazy (kernel) vs rich (feature-learning) training, set by a scale (Chizat, Oyallon & Bach 2019,
"On lazy training in differentiable programming"; Woodworth et al. 2020, "Kernel and rich regimes
in overparametrized models").

Whether a network learns features or behaves like a kernel method is not only a matter of width:
it is set by a choice of scale. Chizat et al. multiply the centred output of a model by a factor
alpha, F(x) = alpha (f(x; w) - f(x; w0)), and divide the loss by alpha^2. For large alpha the
output moves a lot while the weights barely move (by ~1/alpha): training follows the model's
linearisation around its initialisation, which is kernel regression with the initial neural
tangent kernel (NTK), and the features (first-layer weights, the kernel itself) stay as they
were. For small alpha the weights must travel far to change the output: the network learns
features, and on a task that needs them it generalises better than its kernel. Woodworth et al.
make the same transition exact for a two-layer diagonal linear network beta = u*u - v*v started
at u = v = s: on an under-determined least-squares problem, gradient descent from a large init
scale s ends at the minimum-l2-norm interpolant (the kernel solution), from a small one at the
minimum-l1-norm interpolant (which recovers a sparse truth).

Setup (part A, the output scale): inputs x ~ N(0, I_20), target y = x1 x2 (only 2 of the 20
coordinates matter; a rotation-invariant kernel needs of the order of d^2 samples for such a
degree-2 target), 300 training and 2000 test points; predicting 0 gives test MSE 1. The network
f(x) = a . relu(W x / sqrt(20)) / sqrt(m), m = 500 hidden units, W and a standard normal; the
model alpha (f(x; w) - f(x; w0)) with loss 0.5 mean (F - y)^2 / alpha^2; full-batch gradient
descent, step 0.5, 2000 steps, float32, for alpha in {0.03, 0.1, 0.3, 1, 10, 100} from the same
initialisation (all alphas of a seed train as one batch of tensors). Measured: train and test
MSE, the relative weight change dW = ||W - W0|| / ||W0||, the relative change of the NTK Gram
matrix on 200 training points dK = ||K - K0||_F / ||K0||_F, and w12, the fraction of ||W||^2 in
the two relevant input coordinates (2/20 = 0.1 at init). The lazy reference, in closed form from
the initial NTK: gradient descent on the linearised model with the same step and step count,
and its limit, the kernel interpolant.

Setup (part B, the init scale): X ~ N(0, 1) with 40 rows and 100 columns, a 5-sparse truth
beta* (first 5 coordinates 1), y = X beta*; the diagonal net from u = v = s, full-batch GD on
0.5 mean (X beta - y)^2 with step 0.01 (0.01 / s^2 for s > 1) until the train MSE is below 1e-6,
for s in {0.001, 0.01, 0.1, 1, 10}, all scales of a seed at once. Compared with the minimum-l2
interpolant (pseudo-inverse) and the minimum-l1 interpolant (a linear program, which here
recovers beta* exactly).

Claims (medians over seeds):
- the lazy limit is kernel gradient descent: at the largest alpha the test predictions differ
  from those of GD on the linearised model by at most 5% (relative norm), and the kernel moves
  by at most 1%;
- weights move as 1/alpha: dW at the second-largest alpha over dW at the largest, divided by
  the ratio of the alphas, lies in [0.8, 1.2], and dW at the largest alpha is at most 1% of dW
  at the smallest;
- the rich regime learns features: at the smallest alpha the first-layer weights move by at
  least their own initial norm (dW >= 1), the kernel by at least 5x its norm (dK >= 5), and w12
  is at least 3x its value at the largest alpha (the weights turn towards x1 and x2);
- the rich regime generalises better: test MSE at the smallest alpha is at most half the test
  MSE at the largest alpha and at most 0.7x the kernel interpolant's (the fully converged lazy
  limit: in 1000-2000 steps the lazy nets do not fit their slow kernel modes, train MSE
  0.05-0.15);
- test MSE increases with alpha from 0.3 through 1 to 10 (the crossover), and is flat at the
  lazy end: the two largest alphas differ by at most 3% (alpha 0.03 vs 0.1 is a tie, not
  claimed);
- part B: from the smallest scale s the diagonal net ends near the minimum-l1 interpolant
  (distance at most 0.2x the distance between the l1 and l2 interpolants), from the largest
  scale at the minimum-l2 interpolant (at most 0.01x), and its distance to the sparse truth
  grows with s (by at least half the l1-l2 distance from the smallest to the largest s; a fall
  of at most 1% of that distance between neighbouring scales counts as a tie: from s ~ 1 on
  every run sits at the min-l2 solution up to the stopping tolerance).

The --quick size: 2 seeds, alpha in {0.03, 0.3, 1, 10, 100} with 1000 steps, s in {0.01, 0.1,
10}. Caveats: the lazy nets have not converged at 1000-2000 steps (their slow kernel modes), so
the fair lazy reference for generalisation is the kernel interpolant, which the rich net still
beats by 2-3x. The NTK change of the ReLU net falls more slowly than 1/alpha at the largest
alpha (units whose activation flips), so only the weight change is claimed to scale as 1/alpha.
The smallest init scale of part B needs 1e5-2e5 GD steps (the rich regime is slow).

Sources: Chizat, Oyallon & Bach 2019 (NeurIPS); Jacot, Gabriel & Hongler 2018 (the NTK);
Woodworth, Gunasekar, Lee, Moroshko, Savarese, Golan, Soudry & Srebro 2020 (COLT).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from learnscope.analysis import Claim, LinePlot, Lines, Results, Table
from learnscope.analysis.claims import all_of, at_least, at_most, between, claim, monotone, ratio
from learnscope.config import StudyConfig, param
from learnscope.errors import ConfigError
from learnscope.measures.lazy import (
    diagonal_net_gd,
    linearised_gd,
    min_l1_interpolant,
    min_l2_interpolant,
    two_layer_relu_ntk,
)
from learnscope.seeding import numpy_rng, torch_generator
from learnscope.store.records import Record
from learnscope.studies import register
from learnscope.studies.base import Part, Study, Trial, TrialOutput, part


@dataclasses.dataclass(frozen=True)
class LazyRichConfig(StudyConfig):
    alphas: tuple[float, ...] = param(
        (0.03, 0.1, 0.3, 1.0, 10.0, 100.0), "output scales alpha of the model alpha (f(w) - "
        "f(w0)) (part A); must contain 0.3, 1 and 10", gt=0, le=1000, min_len=3)
    dim: int = param(20, "input dimension d (the target x1 x2 uses 2 of them)", ge=2)
    n_train: int = param(300, "training points of part A", ge=10)
    n_test: int = param(2000, "test points of part A", ge=10)
    width: int = param(500, "hidden units m of the two-layer ReLU net", ge=2)
    lr: float = param(0.5, "full-batch GD step size (part A)", gt=0)
    steps: int = param(2000, "full-batch GD steps (part A)", ge=1)
    label_noise: float = param(0.0, "std of Gaussian noise added to the training targets (A)",
                               ge=0)
    kernel_points: int = param(200, "training points on which the NTK Gram change dK is "
                                    "measured", ge=2)
    log_points: int = param(20, "test-MSE evaluations during training (part A)", ge=1)
    scales: tuple[float, ...] = param(
        (0.001, 0.01, 0.1, 1.0, 10.0), "init scales s of the diagonal linear net (part B)",
        gt=0, le=100, min_len=2)
    b_samples: int = param(40, "rows of X in part B (equations)", ge=2)
    b_dim: int = param(100, "columns of X in part B (unknowns; more than the rows)", ge=3)
    b_sparsity: int = param(5, "non-zero coordinates of the truth beta* (part B)", ge=1)
    b_lr: float = param(0.01, "GD step size of the diagonal net (divided by s^2 for s > 1)",
                        gt=0, le=0.05)
    b_tol: float = param(1e-6, "stop the diagonal net at this train MSE", gt=0)
    b_max_steps: int = param(400_000, "give up on the diagonal net after this many steps",
                             ge=1)

    def check(self) -> None:
        if not {0.3, 1.0, 10.0} <= set(self.alphas):
            raise ConfigError("field 'alphas' must contain 0.3, 1 and 10 (the crossover)")
        if self.kernel_points > self.n_train:
            raise ConfigError("field 'kernel_points' must be at most n_train")
        if self.b_dim <= self.b_samples:
            raise ConfigError("field 'b_dim' must exceed b_samples (an under-determined "
                              "problem has many interpolants)")
        if self.b_sparsity >= self.b_samples:
            raise ConfigError("field 'b_sparsity' must be below b_samples")


@register
class LazyRich(Study[LazyRichConfig]):
    name = "lazy-vs-rich"
    title = "Lazy (kernel) vs rich (feature-learning) training"
    summary = ("A large output scale trains a net like its initial tangent kernel (weights move "
               "~1/alpha, features stay); a small one learns features and generalises better "
               "on y = x1 x2; a diagonal linear net goes from the min-l1 to the min-l2 "
               "solution as its init scale grows.")
    source = ("Chizat, Oyallon & Bach 2019 (lazy training); Woodworth et al. 2020 (kernel and "
              "rich regimes)")
    Config = LazyRichConfig
    quick = {"seeds": 2, "alphas": [0.03, 0.3, 1.0, 10.0, 100.0], "steps": 1000,
             "scales": [0.01, 0.1, 10.0]}
    tiny = {"seeds": 1, "steps": 60, "n_test": 200, "width": 64, "n_train": 60,
            "kernel_points": 40, "log_points": 3, "b_max_steps": 2000}

    def memory_bytes(self, cfg: LazyRichConfig) -> float:
        """One seed's batch of alphas: pre-activations and their gradients on the train set,
        the test forward pass, the weights; the NTK on train + test points (float64)."""
        k = len(cfg.alphas)
        acts = 4.0 * k * cfg.width * (4 * cfg.n_train + cfg.n_test)
        kernel = 8.0 * (cfg.n_train + cfg.n_test) * (cfg.n_train + 2 * cfg.width)
        return acts + kernel + 4.0 * k * cfg.width * cfg.dim * 4 + 1e6

    def parts(self, cfg: LazyRichConfig) -> list[Part]:
        return [part("scale", train_scales, batch_by=["seed"], alpha=sorted(cfg.alphas),
                     seed=cfg.seed_list()),
                part("diagonal", train_diagonal, batch_by=["seed"], s=sorted(cfg.scales),
                     seed=cfg.seed_list())]

    def neighbours(self, cfg: LazyRichConfig) -> dict[str, dict[str, Any]]:
        return super().neighbours(cfg) | {
            "narrower": {"width": cfg.width // 2, "seed": cfg.seed + 11},
            "wider, fewer samples": {"width": int(cfg.width * 1.5),
                                     "n_train": int(cfg.n_train * 0.67)},
            "more samples, more equations": {"n_train": int(cfg.n_train * 1.5),
                                             "b_samples": int(cfg.b_samples * 1.25),
                                             "seed": cfg.seed + 5},
            "noisy targets": {"label_noise": 0.1, "seed": cfg.seed + 7},
        }

    def claims(self, cfg: LazyRichConfig, results: Results) -> list[Claim]:
        scale = results.where(part="scale")
        alphas = sorted(cfg.alphas)
        lo, hi, hi2 = alphas[0], alphas[-1], alphas[-2]

        def med(key: str, alpha: float) -> float:
            return scale.where(alpha=alpha).median(key)

        test = scale.curve("test_mse", "alpha")
        claims = [
            all_of("lazy-is-kernel-gd", f"at the largest output scale (alpha = {hi:g}) the net "
                   "trains like its linearisation: its test predictions differ from GD on the "
                   "linearised model (initial NTK, same step and steps) by at most 5%, and its "
                   "NTK moves by at most 1%",
                   {"relative_difference_to_linearised": (med("diff_to_linearised", hi),
                                                           at_most(0.05)),
                    "dK_lazy": (med("dK", hi), at_most(0.01))},
                   extra={"test_mse_net": med("test_mse", hi),
                          "test_mse_linearised": med("linearised_test_mse", hi)}),
            all_of("weights-move-as-inverse-alpha", f"in the lazy regime the weights move as "
                   f"1/alpha: dW({hi2:g}) / dW({hi:g}) over {hi:g}/{hi2:g} lies in [0.8, 1.2], "
                   f"and dW({hi:g}) is at most 1% of dW({lo:g})",
                   {"dW_ratio_over_alpha_ratio": (med("dW", hi2) / med("dW", hi) / (hi / hi2),
                                                  between(0.8, 1.2)),
                    "dW_lazy_over_rich": (med("dW", hi) / med("dW", lo), at_most(0.01))},
                   extra={f"dW_{lo:g}": med("dW", lo), f"dW_{hi2:g}": med("dW", hi2),
                          f"dW_{hi:g}": med("dW", hi)}),
            all_of("rich-learns-features", f"at the smallest scale (alpha = {lo:g}) the net "
                   "learns features: the first-layer weights move by at least their initial "
                   "norm, the NTK by at least 5x its norm, and the share of ||W||^2 on the two "
                   f"relevant inputs is at least 3x its value at alpha = {hi:g}",
                   {"dW_rich": (med("dW", lo), at_least(1.0)),
                    "dK_rich": (med("dK", lo), at_least(5.0)),
                    "w12_rich_over_lazy": (med("w12", lo) / med("w12", hi), at_least(3.0))},
                   extra={f"w12_{lo:g}": med("w12", lo), f"w12_{hi:g}": med("w12", hi),
                          "w12_init": 2 / cfg.dim}),
            all_of("rich-generalises-better", f"on y = x1 x2 the rich net (alpha = {lo:g}) "
                   f"has at most half the test MSE of the lazy net (alpha = {hi:g}) and at most "
                   "0.7x that of the kernel interpolant (the fully trained lazy limit)",
                   {"test_rich_over_lazy": (med("test_mse", lo) / med("test_mse", hi),
                                            at_most(0.5)),
                    "test_rich_over_kernel_interpolant": (
                        med("test_mse", lo) / med("kernel_interpolant_test_mse", lo),
                        at_most(0.7))},
                   extra={f"test_mse_{lo:g}": med("test_mse", lo),
                          f"test_mse_{hi:g}": med("test_mse", hi),
                          "test_mse_kernel_interpolant": med("kernel_interpolant_test_mse", lo)}),
            monotone("test-mse-rises-through-crossover", "test MSE increases with alpha across "
                     "the crossover, alpha = 0.3 < 1 < 10", test.between(0.3, 10.0),
                     increasing=True),
            ratio("lazy-end-is-flat", f"the lazy end is flat: test MSE at alpha = {hi2:g} and "
                  f"{hi:g} differ by at most 3%", "relative_gap",
                  abs(med("test_mse", hi2) - med("test_mse", hi)), med("test_mse", hi),
                  at_most(0.03), names=("abs_difference", f"test_mse_{hi:g}")),
        ]
        diag = results.where(part="diagonal")
        s_lo, s_hi = min(cfg.scales), max(cfg.scales)
        claims += [
            claim("small-init-finds-min-l1", f"from the smallest init scale (s = {s_lo:g}) the "
                  "diagonal net ends near the minimum-l1 interpolant: its distance to it is at "
                  "most 0.2x the distance between the l1 and l2 interpolants",
                  "distance_to_l1_over_l1_l2", diag.where(s=s_lo).median("rel_dist_l1"),
                  at_most(0.2), extra={"steps": diag.where(s=s_lo).median("steps")}),
            claim("large-init-finds-min-l2", f"from the largest init scale (s = {s_hi:g}) the "
                  "diagonal net ends at the minimum-l2 interpolant: distance at most 0.01x the "
                  "distance between the l1 and l2 interpolants",
                  "distance_to_l2_over_l1_l2", diag.where(s=s_hi).median("rel_dist_l2"),
                  at_most(0.01)),
            _error_grows(diag),
        ]
        return claims

    def figures(self, cfg: LazyRichConfig) -> list[LinePlot]:
        scale = {"part": "scale"}
        return [
            LinePlot("Test MSE vs output scale alpha (median, IQR)", "alpha",
                     (Lines(scale, label="network"),
                      Lines(scale, key="linearised_test_mse", dash="dash",
                            label="linearised model, same steps"),
                      Lines(scale, key="kernel_interpolant_test_mse", dash="dot",
                            label="kernel interpolant")),
                     key="test_mse", x_title="output scale alpha", y_title="test MSE",
                     log_x=True, hlines=((1.0, "predict 0"),),
                     caption="Small alpha (rich) generalises best; at large alpha the network "
                             "meets the dashed line of its linearised model."),
            LinePlot("Weight and kernel change vs alpha (median, IQR)", "alpha",
                     (Lines(scale, key="dW", label="dW = ||W - W0|| / ||W0||"),
                      Lines(scale, key="dK", label="dK = ||K - K0|| / ||K0|| (NTK)")),
                     x_title="output scale alpha", y_title="relative change", log_x=True,
                     log_y=True, caption="dW falls on a line of slope -1 at large alpha (the "
                                         "weights move ~1/alpha); dK falls too, to below 1%, "
                                         "more slowly at the largest alpha (ReLU units that "
                                         "flip)."),
            LinePlot("Share of first-layer weight norm on the two relevant inputs", "alpha",
                     (Lines(scale, label="w12"),), key="w12", x_title="output scale alpha",
                     y_title="fraction of ||W||^2 on x1, x2", log_x=True,
                     hlines=((2 / cfg.dim, "at init (2/d)"),),
                     caption="Rich nets turn their weights towards x1 and x2; lazy nets keep "
                             "their random features."),
            LinePlot("Test MSE during training (first seed)", "step",
                     (Lines(scale, group="alpha", label="alpha = {alpha:g}"),),
                     key="test_mse", x_title="GD step", y_title="test MSE", seeds="first",
                     log_y=True, caption="Each curve is one alpha: small alphas fall lowest "
                                         "and fastest; alpha 10 and 100 lie on top of each "
                                         "other."),
            LinePlot("Diagonal linear net: distance to the l1 and l2 interpolants vs init scale",
                     "s", (Lines({"part": "diagonal"}, key="rel_dist_l1",
                                 label="to min-l1 (LP)"),
                           Lines({"part": "diagonal"}, key="rel_dist_l2", dash="dash",
                                 label="to min-l2 (pseudo-inverse)")),
                     x_title="init scale s", y_title="distance / ||beta_l2 - beta_l1||",
                     log_x=True, caption="Small init ends at the sparse min-l1 solution, large "
                                         "init at the min-l2 one; in between it moves across."),
        ]

    def tables(self, cfg: LazyRichConfig, results: Results) -> list[Table]:
        scale = results.where(part="scale")
        rows_a = []
        for alpha in scale.axis("alpha"):
            sub = scale.where(alpha=alpha)
            rows_a.append([alpha] + [sub.median(k) for k in (
                "train_mse", "test_mse", "sign_acc", "dW", "dK", "w12", "diff_to_linearised")])
        if len(scale):
            rows_a.append(["kernel GD (same steps)", scale.median("linearised_train_mse"),
                           scale.median("linearised_test_mse")] + [""] * 5)
            rows_a.append(["kernel interpolant", 0.0,
                           scale.median("kernel_interpolant_test_mse")] + [""] * 5)
        diag = results.where(part="diagonal")
        rows_b = [[s] + [diag.where(s=s).median(k) for k in (
            "steps", "train_mse", "error_to_truth", "rel_dist_l1", "rel_dist_l2")]
            for s in diag.axis("s")]
        if len(diag):
            rows_b.append(["min-l2 (pseudo-inverse)", "", 0.0,
                           diag.median("l2_error_to_truth"), 1.0, 0.0])
            rows_b.append(["min-l1 (linear program)", "", 0.0,
                           diag.median("l1_error_to_truth"), 0.0, 1.0])
        return [Table("Output scale (medians over seeds): MSEs, sign accuracy on the test set, "
                      "weight and kernel change, w12, relative difference to kernel GD",
                      ["alpha", "train MSE", "test MSE", "sign acc", "dW", "dK", "w12",
                       "diff to linearised"], rows_a),
                Table("Diagonal linear net (medians over seeds): distances relative to "
                      "||beta_l2 - beta_l1||",
                      ["init scale s", "GD steps", "train MSE", "||beta - beta*||",
                       "to min-l1", "to min-l2"], rows_b)]


def _error_grows(diag: Results) -> Claim:
    """The distance to the truth does not fall as s grows: the largest fall between neighbouring
    scales is at most 1% of ||beta_l2 - beta_l1|| (beyond s ~ 1 every run sits at the min-l2
    solution up to the stopping tolerance, so those steps are ties), and it rises overall."""
    curve = diag.curve("error_to_truth", "s")
    ys = list(curve.y)
    gap = diag.median("l1_l2_distance")
    fall = max((a - b for a, b in zip(ys, ys[1:], strict=False)), default=math.nan)
    return all_of("error-grows-with-init-scale", "the distance to the sparse truth grows with "
                  "the init scale s, from the l1-like to the l2-like solution (a fall of at "
                  "most 1% of the l1-l2 distance between neighbouring scales counts as a tie)",
                  {"largest_fall_over_l1_l2": (fall / gap, at_most(0.01)),
                   "rise_over_l1_l2": ((ys[-1] - ys[0]) / gap if ys else math.nan,
                                       at_least(0.5))},
                  extra={"s": list(curve.x), "error_to_truth": ys})


def part_a_data(cfg: LazyRichConfig, seed: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train, y_train, x_test, y_test)``: x ~ N(0, I_d), y = x1 x2 (plus training noise of
    std ``label_noise``), float32."""
    g = torch_generator(seed, "lazy-rich-data")
    x = torch.randn(cfg.n_train + cfg.n_test, cfg.dim, generator=g)
    y = x[:, 0] * x[:, 1]
    noise = cfg.label_noise * torch.randn(cfg.n_train, generator=g)
    return x[:cfg.n_train], y[:cfg.n_train] + noise, x[cfg.n_train:], y[cfg.n_train:]


def two_layer(w: torch.Tensor, a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``a . relu(W x / sqrt(d)) / sqrt(m)`` for a batch of nets: ``w (K, m, d)``, ``a (K, m)``,
    ``x (n, d)`` -> ``(K, n)``."""
    m, d = w.shape[-2:]
    return (torch.matmul(x, w.transpose(-1, -2)).clamp_min(0) / math.sqrt(d)
            @ a.unsqueeze(-1)).squeeze(-1) / math.sqrt(m)


def scaled_gd_step(w: torch.Tensor, a: torch.Tensor, alpha: torch.Tensor, x: torch.Tensor,
                   y: torch.Tensor, f0: torch.Tensor, lr: float) -> torch.Tensor:
    """One full-batch GD step, in place, of every net ``k`` on ``0.5 mean (F - y)^2 /
    alpha_k^2`` with ``F = alpha_k (f(x; w_k) - f0)``; returns ``F`` before the step ``(K, n)``.
    Gradients by hand (two matrix products each): ``dL/df = (F - y) / (n alpha)``."""
    n = x.shape[0]
    m, d = w.shape[-2:]
    h = torch.matmul(x, w.transpose(-1, -2)) / math.sqrt(d)  # (K, n, m)
    r = h.clamp_min(0)
    f = (r @ a.unsqueeze(-1)).squeeze(-1) / math.sqrt(m)
    big_f = alpha[:, None] * (f - f0)
    g = (big_f - y) / (n * alpha[:, None])
    grad_a = (r.transpose(-1, -2) @ g.unsqueeze(-1)).squeeze(-1) / math.sqrt(m)
    gh = g.unsqueeze(-1) * a.unsqueeze(1) * (h > 0) / math.sqrt(m)
    grad_w = gh.transpose(-1, -2) @ x / math.sqrt(d)
    w.sub_(lr * grad_w)
    a.sub_(lr * grad_a)
    return big_f


def train_scales(cfg: LazyRichConfig, trials: list[Trial]) -> list[TrialOutput]:
    """Every alpha of one seed from the same initialisation, as one batch of tensors; then the
    weight and kernel changes and the closed-form lazy references."""
    seed = trials[0].seed
    x, y, x_test, y_test = part_a_data(cfg, seed)
    g = torch_generator(seed, "lazy-rich-init")
    w0 = torch.randn(cfg.width, cfg.dim, generator=g)
    a0 = torch.randn(cfg.width, generator=g)
    alpha = torch.tensor([float(t.alpha) for t in trials])
    k = len(trials)
    w = w0.expand(k, -1, -1).clone()
    a = a0.expand(k, -1).clone()
    f0 = two_layer(w0, a0, x)
    f0_test = two_layer(w0, a0, x_test)
    log_at = set(np.unique(np.linspace(0, cfg.steps, cfg.log_points + 1).round()).astype(int))
    curves: list[tuple[int, torch.Tensor, torch.Tensor]] = []

    def test_mse(wk: torch.Tensor, ak: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pred = alpha[:, None] * (two_layer(wk, ak, x_test) - f0_test)
        return pred, ((pred - y_test) ** 2).mean(-1)

    for step in range(cfg.steps + 1):
        if step in log_at:
            curves.append((step, test_mse(w, a)[1], torch.empty(0)))
        if step < cfg.steps:
            big_f = scaled_gd_step(w, a, alpha, x, y, f0, cfg.lr)
            if step % 100 == 0 and not bool(torch.isfinite(big_f).all()):
                break
    pred_train = alpha[:, None] * (two_layer(w, a, x) - f0)
    pred_test, final_test = test_mse(w, a)

    # The lazy references (float64, the initial NTK on train and test points).
    w0d, a0d, xd, xtd = w0.double(), a0.double(), x.double(), x_test.double()
    k_train = two_layer_relu_ntk(w0d, a0d, xd)
    k_cross = two_layer_relu_ntk(w0d, a0d, xtd, xd)
    lin_train, lin_test = linearised_gd(k_train, y.double(), lr=cfg.lr, steps=cfg.steps,
                                        k_cross=k_cross)
    _, interp_test = linearised_gd(k_train, y.double(), lr=cfg.lr, steps=None, k_cross=k_cross)
    lin_mse = float(((lin_test - y_test.double()) ** 2).mean())
    interp_mse = float(((interp_test - y_test.double()) ** 2).mean())
    xk = xd[:cfg.kernel_points]
    k0 = two_layer_relu_ntk(w0d, a0d, xk)

    outputs = []
    for i in range(k):
        wi, ai = w[i].double(), a[i].double()
        diverged = not bool(torch.isfinite(pred_test[i]).all())
        kernel = two_layer_relu_ntk(wi, ai, xk)
        recs = [Record("test_mse", float(mse[i]), step, "train") for step, mse, _ in curves]
        recs += [
            Record("train_mse", float(((pred_train[i] - y) ** 2).mean()), probe="final"),
            Record("test_mse", float(final_test[i]), cfg.steps, "train"),
            Record("sign_acc", float((torch.sign(pred_test[i]) == torch.sign(y_test))
                                     .float().mean()), probe="final"),
            Record("dW", float((wi - w0d).norm() / w0d.norm()), probe="features"),
            Record("dK", float((kernel - k0).norm() / k0.norm()), probe="features"),
            Record("w12", float((wi[:, :2] ** 2).sum() / (wi ** 2).sum()), probe="features"),
            Record("diff_to_linearised", float((pred_test[i].double() - lin_test).norm()
                                               / lin_test.norm()), probe="lazy"),
            Record("linearised_test_mse", lin_mse, probe="lazy"),
            Record("linearised_train_mse", float(((lin_train - y.double()) ** 2).mean()),
                   probe="lazy"),
            Record("kernel_interpolant_test_mse", interp_mse, probe="lazy"),
        ]
        outputs.append(TrialOutput(recs, "diverged" if diverged else "finished"))
    return outputs


def part_b_problem(cfg: LazyRichConfig, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X, y, beta*)``: X ~ N(0, 1) (b_samples x b_dim), beta* = 1 on the first b_sparsity
    coordinates, y = X beta*."""
    rng = numpy_rng(seed, "lazy-rich-diagonal")
    x = rng.standard_normal((cfg.b_samples, cfg.b_dim))
    beta = np.zeros(cfg.b_dim)
    beta[:cfg.b_sparsity] = 1.0
    return x, x @ beta, beta


def train_diagonal(cfg: LazyRichConfig, trials: list[Trial]) -> list[TrialOutput]:
    """Every init scale of one seed at once; distances to the l1 and l2 interpolants."""
    x, y, truth = part_b_problem(cfg, trials[0].seed)
    l1, l2 = min_l1_interpolant(x, y), min_l2_interpolant(x, y)
    between_them = float(np.linalg.norm(l2 - l1))
    res = diagonal_net_gd(x, y, [float(t.s) for t in trials], lr=cfg.b_lr, tol=cfg.b_tol,
                          max_steps=cfg.b_max_steps)
    outputs = []
    for i in range(len(trials)):
        beta = res.beta[i]
        recs = [Record(key, float(v), probe="diagonal") for key, v in (
            ("steps", res.steps[i]), ("train_mse", res.train_mse[i]),
            ("converged", res.converged[i]),
            ("error_to_truth", np.linalg.norm(beta - truth)),
            ("rel_dist_l1", np.linalg.norm(beta - l1) / between_them),
            ("rel_dist_l2", np.linalg.norm(beta - l2) / between_them),
            ("l1_error_to_truth", np.linalg.norm(l1 - truth)),
            ("l2_error_to_truth", np.linalg.norm(l2 - truth)),
            ("l1_l2_distance", between_them))]
        outputs.append(TrialOutput(recs, "finished" if np.isfinite(beta).all() else "diverged"))
    return outputs
