"""Deep linear networks learn a teacher's modes one at a time, and depth biases them towards low
rank (Saxe, McClelland & Ganguli 2014, "Exact solutions to the nonlinear dynamics of learning in
deep linear neural networks"; Arora, Cohen, Hu & Luo 2019, "Implicit regularization in deep
matrix factorization"; Gunasekar et al. 2017, "Implicit regularization in matrix
factorization").

A deep linear network computes a linear map, yet gradient descent on its factors is nonlinear.
Trained on a linear teacher y = S x with whitened inputs, it learns the teacher's singular
modes in order of their strength: the mode with singular value s waits on a plateau, then
rises along a sigmoid in a time that scales as 1/s (for depth 2 and a small balanced
initialisation exactly u(t) = s e^{2st} / (e^{2st} - 1 + s/u0), Saxe et al.). The plateaus
lengthen with depth, and the end-to-end map climbs through matrices of rank 0, 1, 2, ... (the
saddle-to-saddle, low-rank path of Arora et al.). From a large initialisation (weights of unit
scale: the lazy end) the plateaus vanish: every mode starts moving at once.

With whitened, fully determined data every depth ends at the same teacher, so depth cannot
show a bias there. An under-determined problem can: matrix completion. A rank-r matrix M*
(n x n) is seen on m random entries only; infinitely many matrices fit them. Fitted as one
matrix W from zero (depth 1), gradient descent never touches an unobserved entry and returns
the zero-filled, minimum Frobenius norm completion: no recovery at all. Fitted as a product W =
W_N ... W_1 of N square factors from a small initialisation, it climbs rank by rank and ends at
a low-rank completion that recovers M* from few observations; the deeper the product, the
stronger the pull to low rank and the fewer observations it needs (Arora et al.: depth 2 behaves
like nuclear-norm minimisation, depth 3 goes beyond it).

Setup (teacher): a rank-4 teacher S = U diag(s) V^T on 8 inputs and 8 outputs (singular values
8, 4, 2, 1; random orthogonal U, V per seed), 64 exactly whitened inputs (X^T X / n =
I), optionally Gaussian noise on the targets. Bias-free linear networks 8-16-...-16-8 of each
depth, initialised N(0, init_scale^2 / fan_in) per layer at a small and a large scale, trained
full-batch by plain gradient descent on the mean squared error. All init scales and seeds of one
depth train as one stack of models. The strength of mode i is the projection
u_i = U_i^T W V_i of the end-to-end matrix W, measured at every step; its learning time
is the (interpolated) step at which u_i first reaches s_i / 2.

Setup (completion): M* = A B^T with Gaussian A, B (20 x 2), scaled to Frobenius norm n (entries
of size ~1), a new M* and new observed positions per seed; m = k r (2n - r) observed entries
for k = 1.5, 2, 2.5, 3 observations per degree of freedom of a rank-r matrix (r (2n - r) is the
fewest from which it can be determined at all). Depths 1, 2, 3 of n x n factors, i.i.d. Gaussian
at a size that makes the end-to-end product start at 1e-4 ||M*|| at every depth (only the
parameterisation differs), full-batch gradient descent on 0.5 ||P_obs(W - M*)||^2 with step
eta / (N s_1^(2-2/N)) (s_1 the largest singular value of M*: the curvature scale of a depth-N
product near M*), 8000 steps, float64; all observation counts and seeds of one depth train in
lockstep. Measured at 120 steps spaced geometrically (the depth-2 rises take tens of steps,
the depth-3 ones hundreds): the relative error on the unobserved entries ||P_unobs(W - M*)|| /
||P_unobs(M*)|| (1 for the zero fill, 0 for exact recovery), Roy & Vetterli's effective rank
exp(H(s / sum s)) of W (a rank-r matrix with unequal singular values sits a little below r) and
W's leading singular values.

Claims (medians over seeds unless said):
- modes are learned in order: at small init the learning time grows as s falls, at every
  depth;
- time ~ 1/s: at small init and the smallest depth, the slope of log learning time against
  log s lies within [-1.5, -0.5] (Saxe: -1 up to the logarithm of the initial strength);
- plateaus lengthen with depth: at small init the strongest mode is learned later by the
  deepest network than by the shallowest;
- saddle to saddle at small init, lazy at large init: a mode's learning time measured in units
  of its rise time (10% to 90% of s) is larger at small init than at large init (a plateau
  before a sharp sigmoid vs an immediate exponential approach), at every depth;
- lazy at large init: the weights move less, relative to their initial size, than at small init
  (not gating: at this width "large" is only moderately lazy);
- completion, depth lowers the rank: at every observation count, every seed's depth-N
  completion (N >= 2) has a lower effective rank than every seed's depth-1 completion, and at
  the fewest observations every seed of the deepest product ends below every seed of the
  next depth;
- completion, depth recovers what the minimum Frobenius norm cannot: over the sweep the median
  of a depth-N completion's error on the unobserved entries is below half of depth 1's;
- completion, depth needs fewer observations (Arora et al.'s headline): at the fewest
  observations at which the deepest product recovers M* (median error at most 0.1), the next
  depth's median error is at least twice as large (measured: 6 to 170 times). Reported, not
  gating: that the deepest product first recovers at a smaller point of the sweep than the next
  depth (on this coarse grid both sometimes first recover at the same point), and that its
  error at the fewest observations is lower for every seed (one seed of depth 3 often stalls
  or overshoots there, and with 3 seeds even the median sometimes is not lower);
- completion, rank by rank: at the most observations the singular values of the deepest
  product reach half of M*'s in order, the largest first (at depth 2 reported, not gating:
  there they can rise almost together).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Any

import torch

from learnscope.analysis import Claim, LinePlot, Lines, Results, Table
from learnscope.analysis.claims import above, at_least, below, between, claim, monotone, ratio
from learnscope.analysis.curves import median_iqr
from learnscope.config import StudyConfig, param
from learnscope.errors import ConfigError
from learnscope.measures.matrix_completion import (
    degrees_of_freedom,
    entropy_effective_rank,
    low_rank_matrix,
    observation_mask,
    train_factorization,
    unobserved_error,
)
from learnscope.models import deep_linear
from learnscope.seeding import torch_generator
from learnscope.store.records import Record
from learnscope.studies import register
from learnscope.studies.base import Part, Study, Trial, TrialOutput, part
from learnscope.train.stacked import make_stack

__all__ = ["crossing_step", "linear_teacher", "saxe_mode_strength", "whitened_inputs"]


@dataclasses.dataclass(frozen=True)
class DeepLinearConfig(StudyConfig):
    seeds: int = param(5, "seeds (teacher, initialisation); claims use medians over seeds", ge=1)
    dim: int = param(8, "inputs = outputs of the teacher and the networks", ge=2)
    singular_values: tuple[float, ...] = param(
        (8.0, 4.0, 2.0, 1.0), "the teacher's nonzero singular values (distinct, decreasing)",
        gt=0, min_len=2)
    n_samples: int = param(64, "whitened training inputs", ge=2)
    width: int = param(16, "width of every hidden layer", ge=1)
    depths: tuple[int, ...] = param((2, 3), "numbers of weight layers", ge=2, min_len=2)
    init_scales: tuple[float, ...] = param(
        (0.1, 1.0), "per-layer init scales (std = scale / sqrt(fan_in)); the smallest is the "
        "saddle-to-saddle end, the largest the lazy end", gt=0, min_len=2)
    noise: float = param(0.0, "std of Gaussian noise added to the training targets", ge=0)
    lr: float = param(0.05, "learning rate of full-batch gradient descent", gt=0)
    steps: int = param(2500, "gradient steps", ge=10)
    log_every: int = param(10, "steps between stored points of the curves", ge=1)
    completion_n: int = param(20, "matrix completion: size n of the n x n matrix M*", ge=2)
    completion_rank: int = param(2, "matrix completion: rank r of M*", ge=1)
    obs_per_dof: tuple[float, ...] = param(
        (1.5, 2.0, 2.5, 3.0), "matrix completion: observed entries per degree of freedom "
        "r (2n - r) of a rank-r matrix (increasing)", gt=0, min_len=2)
    completion_depths: tuple[int, ...] = param(
        (1, 2, 3), "matrix completion: numbers of factors (1 = the min-Frobenius baseline; at "
        "least two depths >= 2)", ge=1, min_len=3)
    completion_init: float = param(
        1e-4, "matrix completion: initial Frobenius norm of the end-to-end product relative "
        "to ||M*|| (the same at every depth)", gt=0)
    completion_eta: float = param(
        1.0, "matrix completion: step size in units of the curvature scale; the step of "
        "depth N is eta / (N s_1^(2-2/N))", gt=0, le=1.9)
    completion_steps: int = param(8000, "matrix completion: gradient steps", ge=10)
    completion_log_points: int = param(
        120, "matrix completion: stored points per curve, spaced geometrically in the step "
        "(the fast early rises and the slow late ones both resolved)", ge=2)

    def check(self) -> None:
        s = list(self.singular_values)
        if sorted(set(s), reverse=True) != s:
            raise ConfigError("field 'singular_values' must be distinct and decreasing")
        if len(s) > min(self.dim, self.n_samples):
            raise ConfigError("field 'singular_values' has more values than dim or n_samples")
        if self.n_samples < self.dim:
            raise ConfigError("field 'n_samples' must be at least dim (whitened inputs)")
        if self.completion_rank >= self.completion_n:
            raise ConfigError("field 'completion_rank' must be below completion_n (a matrix "
                              "of full rank has nothing to complete)")
        if sorted(set(self.obs_per_dof)) != list(self.obs_per_dof):
            raise ConfigError("field 'obs_per_dof' must be distinct and increasing")
        if self.observed_entries(max(self.obs_per_dof)) >= self.completion_n ** 2:
            raise ConfigError("field 'obs_per_dof' asks for every entry of M* (or more): "
                              "lower it or raise completion_n")
        depths = self.completion_depths
        if 1 not in depths or sum(d >= 2 for d in set(depths)) < 2:
            raise ConfigError("field 'completion_depths' must contain 1 and two depths >= 2")

    def observed_entries(self, per_dof: float) -> int:
        """Observed entries of M* at ``per_dof`` observations per degree of freedom."""
        return round(per_dof * degrees_of_freedom(self.completion_n, self.completion_rank))


def whitened_inputs(n_samples: int, dim: int, *, seed: int) -> torch.Tensor:
    """``x (n, dim)`` float64 with ``x^T x / n = I`` exactly, so gradient descent sees a
    teacher's modes uncoupled (Saxe et al.'s whitened setting)."""
    g = torch_generator(seed, "deep-linear-inputs")
    q, _ = torch.linalg.qr(torch.randn(n_samples, dim, generator=g, dtype=torch.float64))
    return q * math.sqrt(n_samples)


def linear_teacher(x: torch.Tensor, singular_values: tuple[float, ...], *, seed: int,
                   noise: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(y, U (dim, r), V (dim, r))``: targets ``y = x S^T`` (+ Gaussian noise of std
    ``noise``) of the teacher ``S = U diag(s) V^T`` with random orthonormal ``U``, ``V``
    (square teacher: outputs = inputs). float64; drawn from the seed alone."""
    g = torch_generator(seed, "deep-linear-teacher")
    dim, r = x.shape[1], len(singular_values)
    u, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    u, v = u[:, :r], v[:, :r]
    s = torch.tensor(singular_values, dtype=torch.float64)
    y = x.double() @ (u @ torch.diag(s) @ v.T).T
    if noise > 0:
        y = y + noise * torch.randn(y.shape, generator=g, dtype=torch.float64)
    return y, u, v


def saxe_mode_strength(s: float, u0: float, t: float) -> float:
    """Saxe et al.'s exact strength of a mode of a depth-2 linear net from a balanced, aligned
    start ``u0`` (0 < u0 < s) under gradient flow ``du/dt = 2u(s - u)`` (loss
    ``0.5 ||y - Wx||^2`` per example, whitened inputs)."""
    e = math.exp(2.0 * s * t)
    return s * e / (e - 1.0 + s / u0)


def crossing_step(curve: torch.Tensor, level: float) -> float:
    """The first step at which ``curve`` (one value per step, from step 0) reaches ``level``,
    linearly interpolated between steps; 0 if it starts there, NaN if it never does."""
    hit = (curve >= level).nonzero()
    if len(hit) == 0:
        return math.nan
    i = int(hit[0])
    if i == 0:
        return 0.0
    a, b = float(curve[i - 1]), float(curve[i])
    return i - 1 + (level - a) / (b - a)


@register
class DeepLinear(Study[DeepLinearConfig]):
    name = "deep-linear"
    title = "Deep linear networks learn one mode at a time, and depth lowers the rank"
    summary = ("From small init a deep linear net learns the teacher's singular modes in order, "
               "each after a plateau, in time ~1/s; large init is lazy. On matrix completion "
               "deeper factorizations end at lower rank and recover from fewer entries.")
    source = ("Saxe, McClelland & Ganguli 2014 (exact solutions of deep linear learning); "
              "Gunasekar et al. 2017 (implicit regularization in matrix factorization); "
              "Arora et al. 2019 (implicit regularization in deep matrix factorization)")
    Config = DeepLinearConfig
    quick = {"seeds": 3}
    tiny = {"seeds": 1, "steps": 200, "log_every": 20, "width": 8, "completion_n": 12,
            "completion_steps": 200, "completion_log_points": 20}

    def memory_bytes(self, cfg: DeepLinearConfig) -> float:
        """The deepest stack (weights, gradients, momentum and the recorded trajectory) or the
        deepest completion batch (factors, gradients, prefix products), whichever is larger."""
        k = cfg.seeds * len(cfg.init_scales)
        params = 2 * cfg.dim * cfg.width + (max(cfg.depths) - 2) * cfg.width ** 2
        teacher = 4.0 * k * (3 * params + (cfg.steps + 1) * len(cfg.singular_values)) + 1e6
        problems = cfg.seeds * len(cfg.obs_per_dof)
        completion = 8.0 * problems * (4 * max(cfg.completion_depths) + 4) \
            * cfg.completion_n ** 2 + 1e6
        return max(teacher, completion)

    def parts(self, cfg: DeepLinearConfig) -> list[Part]:
        return [part("train", train_depth, batch_by=["depth"], depth=list(cfg.depths),
                     init=sorted(cfg.init_scales), seed=cfg.seed_list()),
                part("completion", train_completion, batch_by=["depth"],
                     depth=sorted(cfg.completion_depths), obs_per_dof=list(cfg.obs_per_dof),
                     seed=cfg.seed_list())]

    def neighbours(self, cfg: DeepLinearConfig) -> dict[str, dict[str, Any]]:
        n = cfg.completion_n
        return super().neighbours(cfg) | {
            "narrower, smaller matrix": {"width": max(4, cfg.width // 2), "seed": cfg.seed + 5,
                                         "completion_n": max(cfg.completion_rank + 8,
                                                             round(n * 0.7))},
            "wider, larger matrix": {"width": int(cfg.width * 1.5),
                                     "completion_n": round(n * 1.3)},
            "noisy targets, higher rank": {"noise": 0.1, "seed": cfg.seed + 9,
                                           "completion_rank": cfg.completion_rank + 1},
        }

    def claims(self, cfg: DeepLinearConfig, results: Results) -> list[Claim]:
        small, large = min(cfg.init_scales), max(cfg.init_scales)
        d_lo, d_hi = min(cfg.depths), max(cfg.depths)
        claims = []
        for depth in sorted(cfg.depths):
            t = results.where(init=small, depth=depth).curve("learn_step", "s",
                                                             name="learn_step")
            claims.append(monotone(
                f"modes-in-order-depth-{depth}", f"at small init (scale {small:g}) the depth-"
                f"{depth} network learns the modes in order of strength: the learning time "
                "grows as the singular value s falls", t))
        t = results.where(init=small, depth=d_lo).curve("learn_step", "s")
        slope = _log_slope(list(t.x), list(t.y))
        claims.append(claim(
            "time-scales-as-inverse-s", f"at small init and depth {d_lo} the learning time scales "
            "as 1/s: the slope of log time against log s lies within [-1.5, -0.5] (Saxe et al.: "
            "-1 up to the logarithm of the initial strength)", "log_slope", slope,
            between(-1.5, -0.5)))
        first = max(cfg.singular_values)
        deep = results.where(init=small, depth=d_hi, s=first).median("learn_step")
        shallow = results.where(init=small, depth=d_lo, s=first).median("learn_step")
        claims.append(ratio(
            "plateaus-lengthen-with-depth", f"at small init the strongest mode (s={first:g}) is "
            f"learned later at depth {d_hi} than at depth {d_lo}: the plateau lengthens with "
            "depth", "time_ratio", deep, shallow, above(1.0),
            names=(f"steps_depth_{d_hi}", f"steps_depth_{d_lo}")))
        for depth in sorted(cfg.depths):
            sharp_small = results.where(init=small, depth=depth).median("plateau_ratio")
            sharp_large = results.where(init=large, depth=depth).median("plateau_ratio")
            claims.append(ratio(
                f"saddle-to-saddle-depth-{depth}", f"at depth {depth} a mode's learning time in "
                f"units of its rise time (10% to 90% of s) is larger at small init ({small:g}: "
                f"plateau, then sharp sigmoid) than at large init ({large:g}: immediate "
                "approach); median over modes and seeds", "plateau_ratio_small_over_large",
                sharp_small, sharp_large, above(1.5), names=("small_init", "large_init")))
        move_small = results.where(init=small).median("relative_weight_change")
        move_large = results.where(init=large).median("relative_weight_change")
        claims.append(ratio(
            "large-init-is-lazy", "the weights move less relative to their initial size at "
            f"large init ({large:g}) than at small init ({small:g}) (not gating: at this width "
            "the large init is only moderately lazy)", "movement_ratio_large_over_small",
            move_large, move_small, below(1.0), names=("large_init", "small_init"),
            gating=False))
        return claims + completion_claims(cfg, results.where(part="completion"))

    def figures(self, cfg: DeepLinearConfig) -> list[LinePlot]:
        small, large = min(cfg.init_scales), max(cfg.init_scales)
        figs = []
        regimes = ((small, "small init: saddle to saddle", "Each curve is one singular mode: "
                    "they rise one after another after plateaus, strongest first, later in the "
                    "deeper net (dashed)."),
                   (large, "large init: lazy", "Each curve is one singular mode: all start "
                    "moving at the first step, with no plateau."))
        for init, regime, caption in regimes:
            lines = tuple(Lines({"init": init, "depth": d}, group="s",
                                label=f"depth {d}, s={{s:g}}", dash=None if i == 0 else "dash")
                          for i, d in enumerate(sorted(cfg.depths)))
            figs.append(LinePlot(
                f"Strength of each teacher mode over training ({regime}, init {init:g})", "step",
                lines, key="mode_fraction", x_title="gradient step",
                y_title="mode strength u / s (median over seeds)", hlines=((0.5, "learned"),),
                caption=caption))
        figs.append(LinePlot(
            "Training loss (mean squared error) over training", "step",
            tuple(Lines({"depth": d}, group="init", label=f"depth {d}, init {{init:g}}",
                        dash=None if i == 0 else "dash")
                  for i, d in enumerate(sorted(cfg.depths))),
            key="train_loss", x_title="gradient step", y_title="train MSE (median over seeds)",
            log_y=True, caption="Small init: a staircase, one drop per mode; large init: a "
                                "smooth descent from the first step."))
        figs.append(LinePlot(
            "Learning time of each mode vs its singular value (median, IQR)", "s",
            tuple(Lines({"init": small, "depth": d}, label=f"depth {d}, init {small:g}")
                  for d in sorted(cfg.depths)),
            key="learn_step", x_title="singular value s of the teacher mode",
            y_title="steps until u reaches s/2", log_x=True, log_y=True,
            caption="On log axes a slope of -1 is time ~ 1/s; deeper nets sit higher."))
        return figs + completion_figures(cfg)

    def tables(self, cfg: DeepLinearConfig, results: Results) -> list[Table]:
        rows = []
        for depth in sorted(cfg.depths):
            for init in sorted(cfg.init_scales):
                sub = results.where(depth=depth, init=init)
                row: list[Any] = [depth, init]
                row += [sub.where(s=s).median("learn_step") for s in cfg.singular_values]
                row += [sub.median("plateau_ratio"), sub.median("relative_weight_change")]
                rows.append(row)
        return [Table("Steps until each mode reaches half its strength (medians over seeds)",
                      ["depth", "init scale"] + [f"s={s:g}" for s in cfg.singular_values]
                      + ["learning / rise time", "relative weight change"], rows),
                completion_table(cfg, results.where(part="completion"))]


def _log_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y against log x (NaN if any value is not positive)."""
    if len(xs) < 2 or any(not (v > 0) for v in xs + ys):
        return math.nan
    lx, ly = [math.log(v) for v in xs], [math.log(v) for v in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    den = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / den


def train_depth(cfg: DeepLinearConfig, trials: list[Trial]) -> list[TrialOutput]:
    """Every init scale and seed of one depth as one stack; mode strengths at every step."""
    depth = trials[0].depth
    sizes = [cfg.dim] + [cfg.width] * (depth - 1) + [cfg.dim]
    x = whitened_inputs(cfg.n_samples, cfg.dim, seed=cfg.seed)
    tasks = {t.seed: linear_teacher(x, cfg.singular_values, seed=t.seed, noise=cfg.noise)
             for t in trials}
    models = [deep_linear(sizes, init_scale=t.init, seed=t.seed) for t in trials]
    initial = [[p.detach().clone() for p in m.parameters()] for m in models]
    stack = make_stack(models, seeds=[t.seed for t in trials], loss="mse", optimizer="sgd",
                       lr=cfg.lr, momentum=0.0, batch_size=None, x_train=x.float(),
                       y_train_by_model=torch.stack([tasks[t.seed][0] for t in trials]).float(),
                       device=cfg.device)
    probe_in = torch.stack([tasks[t.seed][2].T for t in trials]).float()  # (K, r, dim)
    probe_out = torch.stack([tasks[t.seed][1].T for t in trials]).float()
    trajectory = []

    def measure(step: int, st: Any) -> None:
        trajectory.append((st.predict(probe_in, per_model=True) * probe_out).sum(-1).cpu())

    measure(0, stack)
    stack.train(steps=cfg.steps, eval_every=cfg.log_every, on_step=measure)
    strengths = torch.stack(trajectory).double()  # (steps + 1, K, r)
    s = torch.tensor(cfg.singular_values, dtype=torch.float64)
    outputs = []
    for k in range(len(trials)):
        fraction = strengths[:, k] / s
        recs = [Record("train_loss", log.train_loss, log.step, "train")
                for log in stack.histories[k].logs]
        ratios = []
        for i, s_i in enumerate(cfg.singular_values):
            meta = {"mode": i + 1, "s": s_i}
            recs += [Record("mode_fraction", float(fraction[step, i]), step, "modes", meta)
                     for step in range(0, cfg.steps + 1, cfg.log_every)]
            half = crossing_step(fraction[:, i], 0.5)
            rise = crossing_step(fraction[:, i], 0.9) - crossing_step(fraction[:, i], 0.1)
            recs.append(Record("learn_step", half, cfg.steps, "modes", meta))
            if rise > 0:
                ratios.append(half / rise)
        plateau = statistics.median(ratios) if ratios else math.nan
        final = [p.detach().cpu() for p in stack.export(k).parameters()]
        moved = [float((a.double() - b.double()).norm() / b.double().norm())
                 for a, b in zip(final, initial[k], strict=True)]
        recs += [Record("plateau_ratio", plateau, cfg.steps, "modes"),
                 Record("relative_weight_change", sum(moved) / len(moved), cfg.steps, "weights")]
        outputs.append(TrialOutput(
            recs, "diverged" if stack.histories[k].diverged else "finished"))
    return outputs


# -- matrix completion: depth as an implicit bias towards low rank ------------------------------

RECOVERED = 0.1
"""A completion "recovers" M* when its relative error on the unobserved entries is at most
this (the zero fill scores 1)."""


def train_completion(cfg: DeepLinearConfig, trials: list[Trial]) -> list[TrialOutput]:
    """Every (observation count, seed) problem of one depth in lockstep; error, effective rank
    and leading singular values of the end-to-end matrix at ``completion_log_points`` steps."""
    depth, n, r = trials[0].depth, cfg.completion_n, cfg.completion_rank
    targets = torch.stack([low_rank_matrix(n, r, seed=t.seed) for t in trials])
    counts = [cfg.observed_entries(t.obs_per_dof) for t in trials]
    masks = torch.stack([observation_mask(n, c, seed=t.seed)
                         for t, c in zip(trials, counts, strict=True)])
    truth_sv = torch.linalg.svdvals(targets)  # (K, n)
    lr = cfg.completion_eta / (depth * truth_sv[:, 0] ** (2 - 2 / depth))
    shown = min(n, r + 2)
    log: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    observed_norm = (masks * targets).norm(dim=(1, 2))

    schedule = log_schedule(cfg.completion_steps, cfg.completion_log_points)

    def measure(step: int, product: torch.Tensor) -> None:
        if step not in schedule:
            return
        sv = torch.linalg.svdvals(product)
        residual = (masks * (product - targets)).norm(dim=(1, 2)) / observed_norm
        log.append((step, unobserved_error(product, targets, masks),
                    entropy_effective_rank(sv), residual, sv[:, :shown]))

    train_factorization(targets, masks, depth=depth, init_scale=cfg.completion_init * n,
                        lr=lr, steps=cfg.completion_steps, seed=cfg.seed, on_log=measure)
    steps = torch.tensor([float(entry[0]) for entry in log], dtype=torch.float64)
    outputs = []
    for k in range(len(trials)):
        recs = [Record("observed_entries", float(counts[k]), 0, "completion"),
                Record("truth_effective_rank", float(entropy_effective_rank(truth_sv[k])), 0,
                       "completion")]
        for step, err, erank, residual, sv in log:
            recs += [Record("unobserved_error", float(err[k]), step, "completion"),
                     Record("effective_rank", float(erank[k]), step, "completion"),
                     Record("observed_residual", float(residual[k]), step, "completion")]
            recs += [Record("singular_value", float(sv[k, i]), step, "completion",
                            {"index": i + 1}) for i in range(shown)]
        trajectory = torch.stack([entry[4][k] for entry in log])  # (logs, shown)
        for i in range(r):
            at = crossing_step(trajectory[:, i] / truth_sv[k, i], 0.5)
            recs.append(Record("sv_learn_step", _interpolate(steps, at), cfg.completion_steps,
                               "completion", {"index": i + 1}))
        finite = all(math.isfinite(float(entry[1][k])) for entry in log)
        outputs.append(TrialOutput(recs, "finished" if finite else "diverged",
                                   {"lr": float(lr[k]), "observed_entries": counts[k]}))
    return outputs


def log_schedule(steps: int, points: int) -> set[int]:
    """About ``points`` steps from 0 to ``steps``, spaced geometrically (every step at first),
    always with 0 and ``steps``."""
    ratio_ = steps ** (1.0 / max(1, points - 1)) if steps > 1 else 1.0
    out = {0, steps}
    out.update(min(steps, round(ratio_ ** i)) for i in range(points))
    return out


def _interpolate(steps: torch.Tensor, index: float) -> float:
    """The step at a fractional index into the logged steps (NaN stays NaN)."""
    if math.isnan(index):
        return math.nan
    i = min(int(index), len(steps) - 1)
    if i == len(steps) - 1:
        return float(steps[i])
    return float(steps[i] + (index - i) * (steps[i + 1] - steps[i]))


def _paired(results: Results, key: str, depth: int, base: int, obs_per_dof: float | None = None
            ) -> list[float]:
    """``key`` of depth ``depth`` over ``key`` of depth ``base`` on the same problem (same M*,
    same observed entries): one ratio per (observation count, seed), or per seed at
    ``obs_per_dof``. NaN where a ratio is undefined."""
    sub = results if obs_per_dof is None else results.where(obs_per_dof=obs_per_dof)

    def by_problem(d: int) -> dict[tuple[float, int], float]:
        part_ = sub.where(depth=d)
        values = part_.per_trial(key)
        return {(float(row.obs_per_dof), int(row.seed)): float(values[k])
                for k, row in part_.trials.iterrows()}

    top, bottom = by_problem(depth), by_problem(base)
    return [top[p] / bottom[p] if p in bottom and bottom[p] > 0 else math.nan
            for p in sorted(top)]


def _recovery_point(results: Results, depth: int, grid: list[float]) -> float:
    """The fewest observations per degree of freedom at which the depth's median error on the
    unobserved entries is at most RECOVERED; inf when no point of the sweep gets there."""
    for k in grid:
        err = results.where(depth=depth, obs_per_dof=k).median("unobserved_error")
        if err <= RECOVERED:
            return k
    return math.inf


def _largest(values: list[float]) -> float:
    """The largest value, NaN if there is none or any is NaN (a missing trial decides)."""
    return max(values) if values and not any(math.isnan(v) for v in values) else math.nan


def completion_claims(cfg: DeepLinearConfig, results: Results) -> list[Claim]:
    grid = sorted(cfg.obs_per_dof)
    fewest, most = grid[0], grid[-1]
    deep = sorted(d for d in set(cfg.completion_depths) if d >= 2)
    d_max, d_next = deep[-1], deep[-2]
    claims = []
    for depth in deep:
        ratios = _paired(results, "effective_rank", depth, 1)
        claims.append(claim(
            f"completion-lower-rank-depth-{depth}", f"matrix completion: on every problem (each "
            f"observation count and seed: same M*, same observed entries) the depth-{depth} "
            "completion has a lower effective rank than the depth-1 (minimum Frobenius norm) "
            "one: the largest ratio of the two", "erank_ratio_largest", _largest(ratios),
            below(1.0), extra={"median_ratio": median_iqr(ratios)[0], "problems": len(ratios)}))
    ratios = _paired(results, "effective_rank", d_max, d_next, fewest)
    claims.append(claim(
        "completion-deeper-lower-rank", f"matrix completion at the fewest observations "
        f"({fewest:g} per degree of freedom): for every seed the depth-{d_max} completion has a "
        f"lower effective rank than the depth-{d_next} one of the same problem: the largest "
        "ratio of the two", "erank_ratio_largest", _largest(ratios), below(1.0),
        extra={f"median_erank_depth_{d_max}":
               results.where(depth=d_max, obs_per_dof=fewest).median("effective_rank"),
               f"median_erank_depth_{d_next}":
               results.where(depth=d_next, obs_per_dof=fewest).median("effective_rank")}))
    for depth in deep:
        ratios = _paired(results, "unobserved_error", depth, 1)
        claims.append(claim(
            f"completion-beats-min-frobenius-depth-{depth}", f"matrix completion: over the "
            f"sweep of observation counts and seeds, the median of depth {depth}'s error on the "
            "unobserved entries relative to the depth-1 (zero-filled, minimum Frobenius norm) "
            "completion's on the same problem is below 1/2", "median_error_ratio",
            median_iqr(ratios)[0], below(0.5), extra={"problems": len(ratios)}))
    rec_max, rec_next = _recovery_point(results, d_max, grid), _recovery_point(results, d_next,
                                                                               grid)
    at = results.where(obs_per_dof=rec_max) if math.isfinite(rec_max) else None
    claims.append(ratio(
        "completion-deeper-recovers-where-shallower-lags", f"matrix completion: at the fewest "
        f"observations at which depth {d_max} recovers M* (median relative error on the "
        f"unobserved entries <= {RECOVERED:g}), depth {d_next}'s median error is at least twice "
        f"depth {d_max}'s", "error_ratio", at.where(depth=d_next).median("unobserved_error")
        if at else math.nan, at.where(depth=d_max).median("unobserved_error") if at
        else math.nan, at_least(2.0),
        names=(f"median_error_depth_{d_next}", f"median_error_depth_{d_max}"),
        extra={f"recovery_per_dof_depth_{d_max}": rec_max}))
    claims.append(ratio(
        "completion-deeper-needs-fewer-observations", f"matrix completion: depth {d_max} "
        f"recovers M* (median relative error on the unobserved entries <= {RECOVERED:g}) at "
        f"fewer observations per degree of freedom than depth {d_next} (inf: not within the "
        "sweep; not gating: on this coarse grid both can first recover at the same point)",
        "recovery_point_ratio", rec_next, rec_max, above(1.0), gating=False,
        names=(f"recovery_per_dof_depth_{d_next}", f"recovery_per_dof_depth_{d_max}")))
    ratios = _paired(results, "unobserved_error", d_max, d_next, fewest)
    claims.append(claim(
        "completion-deeper-better-at-fewest", f"matrix completion at the fewest observations "
        f"({fewest:g} per degree of freedom): for every seed depth {d_max} has a lower error on "
        f"the unobserved entries than depth {d_next} on the same problem (not gating: a seed of "
        "the deepest product can stall or overshoot there)", "error_ratio_largest",
        _largest(ratios), below(1.0), gating=False,
        extra={f"median_error_depth_{d_max}":
               results.where(depth=d_max, obs_per_dof=fewest).median("unobserved_error"),
               f"median_error_depth_{d_next}":
               results.where(depth=d_next, obs_per_dof=fewest).median("unobserved_error")}))
    for depth in deep:
        t = results.where(depth=depth, obs_per_dof=most).curve("sv_learn_step", "index",
                                                               name="sv_learn_step")
        claims.append(monotone(
            f"completion-rank-by-rank-depth-{depth}", f"matrix completion at {most:g} "
            f"observations per degree of freedom: the depth-{depth} product learns M*'s "
            "singular values one after another, the largest first (steps until each reaches "
            "half of M*'s, medians over seeds)" + ("" if depth == d_max else "; not gating: "
            "at this depth they can rise almost together"), t, increasing=True,
            gating=depth == d_max))
    return claims


def completion_figures(cfg: DeepLinearConfig) -> list[LinePlot]:
    grid = sorted(cfg.obs_per_dof)
    depths = sorted(set(cfg.completion_depths))
    deep = [d for d in depths if d >= 2]
    r = cfg.completion_rank

    def by_depth(extra: dict[str, Any] | None = None) -> tuple[Lines, ...]:
        return tuple(Lines({"part": "completion", "depth": d, **(extra or {})},
                           label=f"depth {d}" + (" (min Frobenius norm)" if d == 1 else ""))
                     for d in depths)

    dof = degrees_of_freedom(cfg.completion_n, r)
    per_dof = f"observed entries per degree of freedom r(2n - r) = {dof}"
    return [
        LinePlot(
            f"Matrix completion ({cfg.completion_n} x {cfg.completion_n}, rank {r}): error on "
            "the unobserved entries vs observations", "obs_per_dof", by_depth(),
            key="unobserved_error", x_title=per_dof,
            y_title="relative error on unobserved entries (median, IQR)", log_y=True,
            hlines=((RECOVERED, "recovered"),),
            caption="Depth 1 stays at 1 (the zero fill); deeper products recover M* (error "
                    "near 0) from fewer observations."),
        LinePlot(
            "Matrix completion: effective rank of the completion vs observations",
            "obs_per_dof", by_depth(), key="effective_rank", x_title=per_dof,
            y_title="effective rank of W (median, IQR)", log_y=True,
            hlines=((float(r), f"rank of M* ({r})"),),
            caption="Depth 1 keeps the high rank of the zero-filled matrix; deeper products "
                    "end near M*'s rank, closer the deeper."),
        LinePlot(
            f"Matrix completion: effective rank over training ({grid[0]:g} observations per "
            "degree of freedom)", "step", by_depth({"obs_per_dof": grid[0]}),
            key="effective_rank", x_title="gradient step", log_x=True,
            y_title="effective rank of W (median over seeds)", log_y=True,
            hlines=((float(r), f"rank of M* ({r})"),),
            caption="From a small random start the rank falls towards 1 while the largest "
                    "singular value grows, then climbs one step per further singular value."),
        LinePlot(
            f"Matrix completion: singular values of W over training (first seed, {grid[0]:g} "
            "observations per degree of freedom)", "step",
            tuple(Lines({"part": "completion", "depth": d, "obs_per_dof": grid[0]},
                        group="index", label=f"depth {d}: s{{index}}",
                        dash=None if d == deep[-1] else "dash")
                  for d in deep),
            key="singular_value", x_title="gradient step", log_x=True,
            y_title="singular value of W = W_N ... W_1", log_y=True, seeds="first",
            caption=f"Each curve is one singular value: in the deepest product (solid) they "
                    f"rise one after another and only M*'s {r} grow large; in the shallower "
                    "one (dashed) they rise together and further ones settle at sizeable "
                    "values (a completion of higher rank)."),
    ]


def completion_table(cfg: DeepLinearConfig, results: Results) -> Table:
    rows = []
    for depth in sorted(set(cfg.completion_depths)):
        for k in sorted(cfg.obs_per_dof):
            sub = results.where(depth=depth, obs_per_dof=k)
            rows.append([depth, k, cfg.observed_entries(k), sub.median("unobserved_error"),
                         sub.median("effective_rank"), sub.median("observed_residual")])
    return Table("Matrix completion: final medians over seeds",
                 ["depth", "observations per dof", "observed entries",
                  "error on unobserved entries", "effective rank",
                  "relative residual on observed entries"], rows)
