"""Deep linear networks learn a teacher's modes one at a time (Saxe, McClelland & Ganguli 2014,
"Exact solutions to the nonlinear dynamics of learning in deep linear neural networks"; Arora,
Cohen, Hu & Luo 2019, "Implicit regularization in deep matrix factorization").

A deep linear network computes a linear map, yet gradient descent on its factors is nonlinear.
Trained on a linear teacher y = S x with whitened inputs, it learns the teacher's singular
modes in order of their strength: the mode with singular value s waits on a plateau, then
rises along a sigmoid in a time that scales as 1/s (for depth 2 and a small balanced
initialisation exactly u(t) = s e^{2st} / (e^{2st} - 1 + s/u0), Saxe et al.). The plateaus
lengthen with depth, and the end-to-end map climbs through matrices of rank 0, 1, 2, ... (the
saddle-to-saddle, low-rank path of Arora et al.). From a large initialisation (weights of unit
scale: the lazy end) the plateaus vanish: every mode starts moving at once.

Setup: a rank-4 teacher S = U diag(s) V^T on 8 inputs and 8 outputs (singular values
8, 4, 2, 1; random orthogonal U, V per seed), 64 exactly whitened inputs (X^T X / n =
I), optionally Gaussian noise on the targets. Bias-free linear networks 8-16-...-16-8 of each
depth, initialised N(0, init_scale^2 / fan_in) per layer at a small and a large scale, trained
full-batch by plain gradient descent on the mean squared error. All init scales and seeds of one
depth train as one stack of models. The strength of mode i is the projection
u_i = U_i^T W V_i of the end-to-end matrix W, measured at every step; its learning time
is the (interpolated) step at which u_i first reaches s_i / 2.

Claims (medians over seeds):
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
  (not gating: at this width "large" is only moderately lazy).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Any

import torch

from learnscope.analysis import Claim, LinePlot, Lines, Results, Table
from learnscope.analysis.claims import above, below, between, claim, monotone, ratio
from learnscope.config import StudyConfig, param
from learnscope.errors import ConfigError
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

    def check(self) -> None:
        s = list(self.singular_values)
        if sorted(set(s), reverse=True) != s:
            raise ConfigError("field 'singular_values' must be distinct and decreasing")
        if len(s) > min(self.dim, self.n_samples):
            raise ConfigError("field 'singular_values' has more values than dim or n_samples")
        if self.n_samples < self.dim:
            raise ConfigError("field 'n_samples' must be at least dim (whitened inputs)")


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
    title = "Deep linear networks learn one mode at a time"
    summary = ("From small init a deep linear net learns the teacher's singular modes in order, "
               "each after a plateau, in time ~1/s; large init is lazy.")
    source = ("Saxe, McClelland & Ganguli 2014 (exact solutions of deep linear learning); "
              "Arora et al. 2019 (implicit regularization in deep matrix factorization)")
    Config = DeepLinearConfig
    quick = {"seeds": 3}
    tiny = {"seeds": 1, "steps": 200, "log_every": 20, "width": 8}

    def memory_bytes(self, cfg: DeepLinearConfig) -> float:
        """The deepest stack: weights, gradients, momentum and the recorded trajectory."""
        k = cfg.seeds * len(cfg.init_scales)
        params = 2 * cfg.dim * cfg.width + (max(cfg.depths) - 2) * cfg.width ** 2
        return 4.0 * k * (3 * params + (cfg.steps + 1) * len(cfg.singular_values)) + 1e6

    def parts(self, cfg: DeepLinearConfig) -> list[Part]:
        return [part("train", train_depth, batch_by=["depth"], depth=list(cfg.depths),
                     init=sorted(cfg.init_scales), seed=cfg.seed_list())]

    def neighbours(self, cfg: DeepLinearConfig) -> dict[str, dict[str, Any]]:
        return super().neighbours(cfg) | {
            "narrower": {"width": max(4, cfg.width // 2), "seed": cfg.seed + 5},
            "wider": {"width": int(cfg.width * 1.5)},
            "noisy targets": {"noise": 0.1, "seed": cfg.seed + 9},
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
        return claims

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
        return figs

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
                      + ["learning / rise time", "relative weight change"], rows)]


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
