"""Gradient descent at the edge of stability (Cohen, Kaur, Li, Kolter & Talwalkar 2021,
"Gradient descent on neural networks typically occurs at the edge of stability").

Classical optimisation says gradient descent with step size eta is stable on a quadratic only
while its curvature stays below 2/eta. On neural networks trained by full-batch gradient descent
the sharpness (the top eigenvalue of the training-loss Hessian) behaves otherwise: it first
rises during training (progressive sharpening) until it reaches 2/eta, and then, instead of
diverging, gradient descent keeps it hovering at or just above 2/eta for the rest of training
(the edge of stability). There the training loss goes up on many individual steps yet keeps
falling over longer stretches. The value the sharpness settles at is set by the step size: it
tracks 2/eta across step sizes, and a run with a smaller step size stays below its own, higher
threshold while its sharpness climbs past the plateau of the larger step sizes.

Setup: the first 500 training examples of MNIST-1D, an MLP 40-100-100-10 with tanh (PyTorch's
default initialisation, one seed per network), the square loss 0.5 * sum over the 10 outputs of
(output - one-hot target)^2, averaged over the examples (this normalisation defines the Hessian:
a mean over the outputs would divide every eigenvalue by 10). Plain full-batch gradient descent
(no momentum) with step sizes 0.1, 0.2 and 0.4, and 0.05 as the control, each for the same
gradient-flow time eta x steps = 250 (at least 1000 steps): 5000, 2500, 1250 and 1000 steps. The
sharpness is measured every 50 steps by power iteration on exact Hessian-vector products: 30
iterations from a random vector at step 0, then 10 iterations started from the previous check's
eigenvector. At the end of each run it is checked against Lanczos. A run reaches the edge at the
first check where the sharpness is at least 0.9 x 2/eta; an up-step is a step whose training
loss is higher than the step before.

Claims (medians over seeds, for every step size of the run; the control only where it is run):
- progressive sharpening: every run that starts well below the edge (2/eta at least twice the
  initial sharpness; with eta = 0.4 some seeds start above 2/eta and have no such phase) sees its
  sharpness rise to 0.9 x 2/eta;
- hovering at 2/eta: from the first check at the edge to the end, the mean of sharpness /
  (2/eta) lies within [0.9, 1.2];
- the plateau tracks 2/eta: sharpness x eta at the end of the run (Lanczos) lies within
  [1.8, 2.4] for every step size;
- non-monotone loss only at the edge: no up-steps at all before the edge, at least 15% of the
  steps after it;
- yet the loss keeps falling: the training loss at the end is below the loss at the step the
  edge was reached (that it falls to at most half is reported, not gating: how far it falls
  depends on how long the run goes on after the edge);
- the control (eta = 0.05, only at the default size: it needs 5000 steps) stays below
  0.9 x 2/eta while its sharpness climbs above 2/eta of the smallest other step size: the
  plateau is set by the step size, not by a ceiling of the network;
- the warm-started power iteration that tracks the sharpness is within 5% of Lanczos at the end
  of every run (reported, not gating: power iteration undershoots when the top two eigenvalues
  are close, as they are at the edge, and the worst run of a configuration misses by 1.5-5%).

Sources: Cohen et al. 2021 (ICLR); the cheap sharpness tracking by warm-started power iteration
follows their appendix; the Hessian-vector products are Pearlmutter 1994.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Any

import numpy as np
import torch
from torch import Tensor

from learnscope.analysis import Claim, LinePlot, Lines, Results, Table
from learnscope.analysis.claims import all_of, at_least, at_most, below, claim
from learnscope.config import StudyConfig, param
from learnscope.data import mnist1d
from learnscope.measures.curvature import top_hessian_eigenvalue
from learnscope.measures.sharpness import SharpnessTracker
from learnscope.models import mlp
from learnscope.store.records import Record
from learnscope.studies import register
from learnscope.studies.base import Part, Study, Trial, TrialOutput, part

__all__ = ["gd_steps", "square_loss", "up_step_fraction"]


@dataclasses.dataclass(frozen=True)
class EdgeOfStabilityConfig(StudyConfig):
    seeds: int = param(3, "seeds (initialisations); claims use medians over seeds", ge=1)
    step_sizes: tuple[float, ...] = param(
        (0.1, 0.2, 0.4), "step sizes eta of full-batch gradient descent expected to reach the "
                         "edge 2/eta", gt=0, min_len=1)
    control_step_size: float = param(
        0.05, "a smaller step size whose sharpness should stay below 2/eta (0: no control)",
        ge=0)
    n_train: int = param(500, "training examples (the first ones of MNIST-1D's training set)",
                         ge=20, le=4000)
    hidden: int = param(100, "width of both hidden layers (tanh)", ge=2)
    flow_time: float = param(250.0, "eta x steps: every step size trains for the same "
                                    "gradient-flow time", gt=0)
    min_steps: int = param(1000, "fewest steps of any run", ge=1)
    check_every: int = param(50, "steps between sharpness measurements", ge=1)
    power_iters: int = param(10, "power iterations per check, warm-started from the previous "
                                 "check's eigenvector", ge=1)
    first_power_iters: int = param(30, "power iterations of the first check (random start)",
                                   ge=1)
    reach: float = param(0.9, "fraction of 2/eta the sharpness must reach to be at the edge",
                         gt=0, le=1)


def gd_steps(cfg: EdgeOfStabilityConfig, step_size: float) -> int:
    """Steps of a run: the same gradient-flow time ``eta x steps`` for every step size."""
    return max(cfg.min_steps, math.ceil(cfg.flow_time / step_size - 1e-9))


def square_loss(out: Tensor, target: Tensor) -> Tensor:
    """0.5 * sum over outputs of the squared error, mean over examples (Cohen et al.'s MSE)."""
    return 0.5 * ((out - target) ** 2).sum(dim=1).mean()


def up_step_fraction(losses: list[float], start: int, stop: int) -> float:
    """Fraction of the steps t in ``(start, stop]`` whose loss exceeds that of step t - 1
    (NaN when the range holds no step)."""
    stop = min(stop, len(losses) - 1)
    if stop <= start:
        return math.nan
    ups = sum(losses[t] > losses[t - 1] for t in range(start + 1, stop + 1))
    return ups / (stop - start)


@register
class EdgeOfStability(Study[EdgeOfStabilityConfig]):
    name = "edge-of-stability"
    title = "Gradient descent at the edge of stability"
    summary = ("Under full-batch GD the sharpness rises to 2/eta and hovers there while the loss "
               "falls non-monotonically; a smaller step size stays below its threshold.")
    source = ("Cohen, Kaur, Li, Kolter & Talwalkar 2021, Gradient descent on neural networks "
              "typically occurs at the edge of stability")
    Config = EdgeOfStabilityConfig
    quick = {"seeds": 2, "step_sizes": [0.1, 0.2], "control_step_size": 0.0}
    tiny = {"seeds": 1, "step_sizes": [0.2], "control_step_size": 0.1, "n_train": 100,
            "hidden": 16, "flow_time": 10.0, "min_steps": 20, "check_every": 10,
            "power_iters": 3, "first_power_iters": 5}

    def memory_bytes(self, cfg: EdgeOfStabilityConfig) -> float:
        """One network, its gradient graph (activations of the training set, twice for the
        Hessian-vector products) and the recorded losses."""
        h = cfg.hidden
        params = 40 * h + h * h + 11 * h + 10
        steps = gd_steps(cfg, min([*cfg.step_sizes, cfg.control_step_size or math.inf]))
        return 4.0 * (8 * params + 6 * cfg.n_train * (40 + 2 * h + 10)) + 100.0 * steps + 1e6

    def parts(self, cfg: EdgeOfStabilityConfig) -> list[Part]:
        work = _work
        parts = [part("eos", train_step_size, work=work, step_size=sorted(cfg.step_sizes),
                      seed=cfg.seed_list())]
        if cfg.control_step_size > 0:
            parts.append(part("control", train_step_size, work=work,
                              step_size=cfg.control_step_size, seed=cfg.seed_list()))
        return parts

    def neighbours(self, cfg: EdgeOfStabilityConfig) -> dict[str, dict[str, Any]]:
        return super().neighbours(cfg) | {
            "fewer examples": {"n_train": cfg.n_train // 2, "seed": cfg.seed + 3},
            "more examples": {"n_train": int(cfg.n_train * 1.5), "seed": cfg.seed + 7},
            "wider": {"hidden": int(cfg.hidden * 1.5)},
            "larger step sizes": {"step_sizes": [2 * s for s in cfg.step_sizes],
                                  "seed": cfg.seed + 5},
        }

    def claims(self, cfg: EdgeOfStabilityConfig, results: Results) -> list[Claim]:
        eos = results.where(part="eos")
        etas = [float(e) for e in eos.axis("step_size")]
        per_eta = {eta: eos.where(step_size=eta) for eta in etas}

        eligible = eos.values("eligible") > 0.5
        reached = np.isfinite(eos.values("reach_step"))
        claims = [all_of(
            "progressive-sharpening", "below the edge the sharpness keeps rising: every run that "
            "starts well below it (2/eta at least twice the initial sharpness) reaches "
            f"{cfg.reach:g} x 2/eta", {
                "runs_well_below_at_start": (int(eligible.sum()), at_least(1)),
                "of_them_reaching_the_edge": (int((eligible & reached).sum()),
                                              at_least(int(eligible.sum())))},
            extra={f"initial_sharpness_over_threshold_eta_{eta:g}":
                   sub.median("initial_sharpness") * eta / 2 for eta, sub in per_eta.items()}
            | {f"reach_step_eta_{eta:g}": sub.median("reach_step")
               for eta, sub in per_eta.items()})]

        hover = {eta: sub.median("mean_ratio_after_reach") for eta, sub in per_eta.items()}
        claims.append(all_of(
            "hovers-at-2-over-eta", "after reaching the edge the sharpness hovers at 2/eta: the "
            "mean of sharpness / (2/eta) from the first check at the edge to the end lies within "
            "[0.9, 1.2] for every step size", {
                "lowest_mean_ratio": (_worst(hover, min), at_least(0.9)),
                "highest_mean_ratio": (_worst(hover, max), at_most(1.2))},
            extra={f"mean_ratio_eta_{eta:g}": v for eta, v in hover.items()}
            | {f"max_ratio_eta_{eta:g}": sub.median("max_ratio_after_reach")
               for eta, sub in per_eta.items()}))

        tracks = {eta: sub.median("end_lanczos_times_eta") for eta, sub in per_eta.items()}
        claims.append(all_of(
            "plateau-tracks-2-over-eta", "the value the sharpness settles at is set by the step "
            "size: sharpness x eta at the end of the run (Lanczos) lies within [1.8, 2.4] for "
            "every step size (2 at the edge)", {
                "lowest_sharpness_times_eta": (_worst(tracks, min), at_least(1.8)),
                "highest_sharpness_times_eta": (_worst(tracks, max), at_most(2.4))},
            extra={f"end_sharpness_eta_{eta:g}": sub.median("end_sharpness_lanczos")
                   for eta, sub in per_eta.items()}))

        before = eos.values("up_steps_before_reach")
        before = before[np.isfinite(before)]
        after = {eta: sub.median("up_steps_after_reach") for eta, sub in per_eta.items()}
        claims.append(all_of(
            "loss-non-monotone-only-at-the-edge", "the training loss never goes up before the "
            "edge and goes up on at least 15% of the steps after it (median over seeds, every "
            "step size)", {
                "most_up_steps_before_reach": (float(before.max()) if before.size else math.nan,
                                               at_most(0.0)),
                "fewest_up_steps_after_reach": (_worst(after, min), at_least(0.15))},
            extra={f"up_steps_after_eta_{eta:g}": v for eta, v in after.items()}))

        falls = {eta: sub.median("loss_end_over_reach") for eta, sub in per_eta.items()}
        by_eta = {f"end_over_reach_eta_{eta:g}": v for eta, v in falls.items()}
        claims.append(claim(
            "loss-falls-at-the-edge", "over longer stretches the loss keeps falling at the edge, "
            "despite its up-steps: the training loss at the end is below the loss at the step "
            "the edge was reached (median over seeds, every step size)",
            "highest_end_over_reach_loss", _worst(falls, max), below(1.0), extra=by_eta))
        claims.append(claim(
            "loss-halves-at-the-edge", "the training loss at the end is at most half the loss at "
            "the step the edge was reached (median over seeds, every step size; not gating: "
            "how far it falls depends on how long the run goes on after the edge, e.g. with "
            "750 examples the edge comes later and the loss falls to 0.5-0.6)",
            "highest_end_over_reach_loss", _worst(falls, max), at_most(0.5), extra=by_eta,
            gating=False))

        control = results.where(part="control")
        if len(control):
            eta_c = cfg.control_step_size
            ceiling = 2 / min(etas) if etas else math.nan
            claims.append(all_of(
                "control-stays-below", f"the control with the smaller step size {eta_c:g} stays "
                f"below {cfg.reach:g} x 2/eta = {cfg.reach * 2 / eta_c:g} for its whole run, "
                "while its sharpness climbs above the plateau 2/eta of the smallest other step "
                "size: the plateau is set by the step size", {
                    "max_sharpness_over_threshold": (control.median("max_ratio"),
                                                     below(cfg.reach)),
                    "max_sharpness_over_smallest_other_plateau": (
                        control.median("max_sharpness") / ceiling, at_least(1.0))},
                extra={"max_sharpness": control.median("max_sharpness"),
                       "threshold_2_over_eta": 2 / eta_c}))

        gaps = results.values("power_lanczos_gap")
        claims.append(claim(
            "power-iteration-matches-lanczos", "the warm-started power iteration that tracks the "
            "sharpness is within 5% of Lanczos at the end of every run (not gating: at the edge "
            "the top two eigenvalues are close and 10 power steps undershoot by up to about 5% "
            "in the worst run)", "largest_relative_gap",
            float(np.max(gaps)) if gaps.size and not np.isnan(gaps).any() else math.nan,
            at_most(0.05), extra={"median_relative_gap": float(np.median(gaps))
                                  if gaps.size else math.nan}, gating=False))
        return claims

    def figures(self, cfg: EdgeOfStabilityConfig) -> list[LinePlot]:
        eos = Lines({"part": "eos"}, group="step_size", label="eta = {step_size:g}")
        ctrl = Lines({"part": "control"}, group="step_size", label="control eta = {step_size:g}",
                     dash="dash")
        etas = sorted({*cfg.step_sizes} | ({cfg.control_step_size} - {0.0}))
        return [
            LinePlot("Sharpness during full-batch gradient descent, with 2/eta for each step "
                     "size", "step", (eos, ctrl), key="sharpness", x_title="gradient step",
                     y_title="top Hessian eigenvalue (median over seeds)",
                     hlines=tuple((2 / e, f"2/eta = {2 / e:g}") for e in etas),
                     caption="Each curve rises until it meets its own line 2/eta and then stays "
                             "on it; the control (dashed, where run) stays below its own line."),
            LinePlot("Sharpness relative to the stability threshold 2/eta", "step", (eos, ctrl),
                     key="sharpness_over_threshold", x_title="gradient step",
                     y_title="sharpness x eta / 2 (median over seeds)",
                     hlines=((1.0, "2/eta"), (cfg.reach, "edge reached")),
                     caption="All step sizes meet the same line 1 and hover on it; the time to "
                             "get there grows as eta shrinks."),
            LinePlot("Training loss under full-batch gradient descent (first seed)", "step",
                     (eos, ctrl), key="train_loss", x_title="gradient step",
                     y_title="training loss 0.5 * sum of squared errors", log_y=True,
                     seeds="first",
                     caption="Smooth descent until the edge, then jagged: the loss rises on many "
                             "steps yet keeps falling over hundreds."),
        ]

    def tables(self, cfg: EdgeOfStabilityConfig, results: Results) -> list[Table]:
        rows = []
        for role in ("eos", "control"):
            sub = results.where(part=role)
            for eta in sub.axis("step_size"):
                r = sub.where(step_size=eta)
                rows.append([
                    f"{eta:g}" + (" (control)" if role == "control" else ""), 2 / eta,
                    gd_steps(cfg, eta), r.median("initial_sharpness"), r.median("reach_step"),
                    r.median("mean_ratio_after_reach"), r.median("max_ratio_after_reach"),
                    r.median("up_steps_before_reach"), r.median("up_steps_after_reach"),
                    r.median("loss_at_reach"), r.median("loss_end"),
                    r.median("end_sharpness_power"), r.median("end_sharpness_lanczos")])
        return [Table(
            "Edge of stability per step size (medians over seeds; NaN where a seed never "
            "reached the edge or started above it)",
            ["eta", "2/eta", "steps", "initial sharpness", "reach step",
             "mean sharpness/(2/eta) after reach", "max after reach", "up-steps before reach",
             "up-steps after reach", "loss at reach", "loss at end", "end sharpness (power)",
             "end sharpness (Lanczos)"], rows)]

    def metrics(self, cfg: EdgeOfStabilityConfig, results: Results) -> dict[str, Any]:
        return {f"end_sharpness_times_eta_{eta:g}":
                results.where(step_size=eta).median("end_lanczos_times_eta")
                for eta in results.axis("step_size")}


def _work(cfg: EdgeOfStabilityConfig, trial: Trial) -> float:
    return float(gd_steps(cfg, trial.step_size))


def _worst(values: dict[float, float], pick: Any) -> float:
    """``pick`` (min or max) over the step sizes; NaN if any is NaN or there are none."""
    vs = list(values.values())
    if not vs or any(math.isnan(v) for v in vs):
        return math.nan
    return float(pick(vs))


def train_step_size(cfg: EdgeOfStabilityConfig, trial: Trial) -> TrialOutput:
    """One network trained by full-batch GD with one step size; sharpness every few steps."""
    eta, seed, steps = float(trial.step_size), int(trial.seed), gd_steps(cfg, trial.step_size)
    data = mnist1d(5000, n_train=cfg.n_train)
    device = torch.device(cfg.device)
    x = data.x_train.float().to(device)
    y = torch.nn.functional.one_hot(data.y_train.long(), data.n_classes).float().to(device)
    model = mlp([data.n_features, cfg.hidden, cfg.hidden, data.n_classes], activation="tanh",
                seed=seed).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    tracker = SharpnessTracker(square_loss, x, y, iters=cfg.power_iters,
                               first_iters=cfg.first_power_iters, generator=seed)
    threshold = 2.0 / eta
    losses: list[float] = []
    checks: list[tuple[int, float]] = []
    recs: list[Record] = []
    status = "finished"
    for step in range(steps + 1):
        loss = square_loss(model(x), y)
        value = float(loss.detach())
        if not math.isfinite(value):
            status = "diverged"
            break
        losses.append(value)
        recs.append(Record("train_loss", value, step, "train"))
        if step % cfg.check_every == 0 or step == steps:
            sharp = tracker(model).value
            checks.append((step, sharp))
            recs += [Record("sharpness", sharp, step, "sharpness"),
                     Record("sharpness_over_threshold", sharp / threshold, step, "sharpness")]
        if step == steps:
            break
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p.sub_(g, alpha=eta)
    end = len(losses) - 1
    recs += _summary(cfg, eta, losses, checks, end)
    if status == "finished":
        lanczos = top_hessian_eigenvalue(model, square_loss, x, y, iters=100, tol=1e-4,
                                         generator=seed).value
        power = checks[-1][1]
        recs += [Record("end_sharpness_power", power, end, "sharpness"),
                 Record("end_sharpness_lanczos", lanczos, end, "sharpness"),
                 Record("end_lanczos_times_eta", lanczos * eta, end, "sharpness"),
                 Record("power_lanczos_gap", abs(power - lanczos) / abs(lanczos), end,
                        "sharpness")]
    return TrialOutput(recs, status, {"steps": end})


def _summary(cfg: EdgeOfStabilityConfig, eta: float, losses: list[float],
             checks: list[tuple[int, float]], end: int) -> list[Record]:
    """The per-run numbers the claims use: initial sharpness, reach step, hovering ratio,
    up-steps before and after the edge, loss at reach and at the end."""
    threshold = 2.0 / eta
    initial = checks[0][1] if checks else math.nan
    reach = next((s for s, v in checks if v >= cfg.reach * threshold), None)
    ratios = [v / threshold for s, v in checks if reach is not None and s >= reach]
    nan = math.nan
    values = {
        "initial_sharpness": initial,
        "eligible": float(threshold >= 2 * initial),
        "max_sharpness": max((v for _, v in checks), default=nan),
        "max_ratio": max((v for _, v in checks), default=nan) / threshold,
        "reach_step": float(reach) if reach is not None else nan,
        "mean_ratio_after_reach": statistics.fmean(ratios) if ratios else nan,
        "max_ratio_after_reach": max(ratios) if ratios else nan,
        "up_steps_before_reach": up_step_fraction(losses, 0, reach) if reach else nan,
        "up_steps_after_reach": up_step_fraction(losses, reach, end) if reach is not None
        else nan,
        "loss_at_reach": losses[reach] if reach is not None else nan,
        "loss_end": losses[end] if losses else nan,
        "loss_end_over_reach": losses[end] / losses[reach] if reach is not None else nan,
    }
    return [Record(key, float(v), end, "summary") for key, v in values.items()]
