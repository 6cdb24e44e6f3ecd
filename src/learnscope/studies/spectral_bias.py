"""Spectral bias: networks fit the low frequencies of a target first (Rahaman et al. 2019, "On
the spectral bias of neural networks"; Xu et al. 2019, "Frequency principle: Fourier analysis
sheds light on deep neural networks").

Trained on a sum of sinusoids, a ReLU network's output picks up the slowest component within a
few steps, the next ones after longer and longer delays, and the fastest one last, long after
the others are fitted. Rahaman et al. showed it with the Fourier magnitude of the output per
frequency over training; Xu et al. called it the frequency principle and saw it with tanh
networks too. It is not an effect of amplitude: when the highest frequency carries the most
energy, it is still learned last. The known explanation is the spectrum of the neural tangent
kernel, whose eigenvalues fall with frequency, so gradient descent moves along the smooth
directions fastest.

Setup: 128 equispaced points x = 0, 1/128, ..., 127/128 of one period (the network's input is
2x - 1), target f(x) = sum_k A_k sin(2 pi k x + phi_k) for k = 1, 3, 7, 15 with phases drawn per
seed. Every component completes whole periods on the grid, so each is exactly one bin of the
discrete Fourier transform and nothing leaks between frequencies. An MLP 1-128-128-128-1 is
trained full batch by Adam (lr 3e-3) on the mean squared error. Every 10 steps the residual
r = net - f on the grid gives the relative error per frequency e_k = |FFT(r)[k]| / |FFT(f)[k]|
(1: the component is untouched, 0: fitted exactly); normalising by the target's coefficient keeps
amplitude out of the comparison. The learning time t_k(thr) is the first logged step with
e_k < thr. Three variants share each seed's phases: equal amplitudes with ReLU, amplitudes
increasing with frequency (0.25, 0.5, 0.75, 1: the highest frequency has the most energy) with
ReLU, and equal amplitudes with tanh. Variants with one activation train as one stack of models.
Quick: one seed, 2500 steps; default: three seeds, 6000 steps.

Claims (every run, i.e. every seed and variant; first-passage times only, never e_k at a fixed
step, because Adam at this learning rate briefly un-learns components it had fitted):
- low frequencies first, in every variant and at every threshold (0.5 and 0.2):
  t_1 <= t_3 < t_7 < t_15. A threshold not reached within the budget is censored: that
  component's time is only known to be later than the budget, which still orders it after every
  reached one; two censored components are not ordered against each other, and a run needs at
  least two reached components to count;
- the delays grow geometrically: at threshold 0.5, t_7 / t_3 >= 2 and t_15 / t_7 >= 2 in every
  ReLU run (a censored t_15 counts as the budget, a lower bound of the ratio). The same ratios
  with tanh are reported, not gating: tanh fits the high frequencies sooner, and t_7 / t_3 sits
  near 2 (1.7-3.4 measured over the quick size and its neighbours);
- when e_3 first drops below 0.5, the highest frequency is still almost untouched: e_15 >= 0.8;
- reported, not gating: t_1 < t_3 strictly at threshold 0.5 (at a resolution of 10 steps the two
  lowest frequencies can tie).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from learnscope.analysis import Claim, Heatmap, LinePlot, Lines, Results, Table
from learnscope.analysis.claims import at_least, claim
from learnscope.analysis.curves import median_iqr
from learnscope.config import StudyConfig, param
from learnscope.errors import ConfigError
from learnscope.measures.frequency import first_passage, frequency_errors, sine_sum
from learnscope.models import mlp
from learnscope.seeding import torch_generator
from learnscope.store.records import Record
from learnscope.studies import register
from learnscope.studies.base import Part, Study, Trial, TrialOutput, part
from learnscope.train.stacked import make_stack

__all__ = ["VARIANTS", "passage_times", "phases_of", "target_of"]

VARIANTS = {
    "equal": ("equal amplitudes, ReLU", "relu"),
    "increasing": ("amplitudes increasing with frequency, ReLU", "relu"),
    "tanh": ("equal amplitudes, tanh", "tanh"),
}
"""Variant -> (label, activation)."""

DELAY_FACTOR = 2.0
"""Each learning time beyond the second lowest frequency is at least this multiple of the one
before (at the first threshold)."""

UNTOUCHED = 0.8
"""The highest frequency counts as still untouched while its relative error is at least this."""


@dataclasses.dataclass(frozen=True)
class SpectralBiasConfig(StudyConfig):
    seeds: int = param(3, "seeds (phases of the target, initial weights); every claim is "
                          "checked on every seed", ge=1)
    n_points: int = param(128, "equispaced training points on one period of the target", ge=16)
    frequencies: tuple[int, ...] = param(
        (1, 3, 7, 15), "frequencies k of the target's sinusoids (increasing, below n_points / 2)",
        ge=1, min_len=3)
    variants: tuple[str, ...] = param(
        ("equal", "increasing", "tanh"), "equal: equal amplitudes, ReLU; increasing: amplitudes "
        "(1..F) / F rising with frequency, ReLU; tanh: equal amplitudes, tanh",
        choices=tuple(VARIANTS), min_len=1)
    hidden: int = param(128, "width of every hidden layer", ge=1)
    depth: int = param(3, "hidden layers", ge=1)
    lr: float = param(3e-3, "learning rate of full-batch Adam", gt=0)
    steps: int = param(6000, "full-batch Adam steps (the budget of the first-passage times)",
                       ge=10)
    eval_every: int = param(10, "steps between measurements of the per-frequency error", ge=1)
    thresholds: tuple[float, ...] = param(
        (0.5, 0.2), "relative errors whose first passage is a component's learning time "
        "(decreasing; the first one also decides the delay ratios)", gt=0, lt=1, min_len=1)
    snapshots: tuple[int, ...] = param(
        (50, 250, 1500), "steps (multiples of eval_every) at which the network's output on the "
        "grid is stored for the figure, besides the last step", ge=1, min_len=1)

    def check(self) -> None:
        ks = list(self.frequencies)
        if sorted(set(ks)) != ks:
            raise ConfigError("field 'frequencies' must be distinct and increasing")
        if ks[-1] >= self.n_points // 2:
            raise ConfigError(f"field 'frequencies' must stay below n_points / 2 "
                              f"({self.n_points // 2}): a higher one is not one FFT bin")
        if sorted(set(self.thresholds), reverse=True) != list(self.thresholds):
            raise ConfigError("field 'thresholds' must be distinct and decreasing")
        if len(set(self.variants)) != len(self.variants):
            raise ConfigError("field 'variants' lists a variant twice")
        if self.steps % self.eval_every:
            raise ConfigError("field 'steps' must be a multiple of eval_every")
        if any(t % self.eval_every for t in self.snapshots):
            raise ConfigError("field 'snapshots' must hold multiples of eval_every")


def phases_of(seed: int, n: int) -> list[float]:
    """The target's phases for a seed, uniform in [0, 2 pi): shared by every variant."""
    g = torch_generator(seed, "spectral-bias-phases")
    return (torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi).tolist()


def amplitudes_of(variant: str, n: int) -> list[float]:
    """Equal amplitudes, or (1, 2, ..., n) / n rising with frequency for ``increasing``."""
    return [(i + 1) / n for i in range(n)] if variant == "increasing" else [1.0] * n


def target_of(cfg: SpectralBiasConfig, variant: str, seed: int) -> torch.Tensor:
    """The target on the grid, float64 ``(n_points,)``."""
    ks = list(cfg.frequencies)
    return sine_sum(cfg.n_points, ks, amplitudes_of(variant, len(ks)), phases_of(seed, len(ks)))


@register
class SpectralBias(Study[SpectralBiasConfig]):
    name = "spectral-bias"
    title = "Spectral bias: low frequencies are learned first"
    summary = ("An MLP fitting a sum of sinusoids learns them from the lowest frequency to the "
               "highest, with delays growing by several times per step in frequency; also when "
               "the highest frequency has the largest amplitude, and with tanh.")
    source = ("Rahaman et al. 2019 (on the spectral bias of neural networks); Xu et al. 2019 "
              "(frequency principle)")
    Config = SpectralBiasConfig
    quick = {"seeds": 1, "steps": 2500}
    tiny = {"steps": 100, "hidden": 16, "n_points": 64}

    def memory_bytes(self, cfg: SpectralBiasConfig) -> float:
        """The largest stack: weights, gradients and Adam state, activations of the full
        batch, the logged errors."""
        k = len(cfg.variants)
        h = cfg.hidden
        params = 2 * h + (cfg.depth - 1) * (h * h + h) + 2 * h + 1
        acts = cfg.n_points * h * cfg.depth * 4
        logs = (cfg.steps // cfg.eval_every + 1) * len(cfg.frequencies)
        return 4.0 * k * (4 * params + acts) + 8.0 * k * logs + 1e6

    def parts(self, cfg: SpectralBiasConfig) -> list[Part]:
        return [part("fit", train_seed, batch_by=["seed"], variant=list(cfg.variants),
                     seed=cfg.seed_list(),
                     work=lambda c, t: 1.0 if VARIANTS[t.variant][1] == "relu" else 0.8)]

    def neighbours(self, cfg: SpectralBiasConfig) -> dict[str, dict[str, Any]]:
        return super().neighbours(cfg) | {
            # half the width fits the top frequency more slowly: a longer budget (at half the
            # cost per step) keeps its censored time a useful lower bound of the delay ratio
            "narrower": {"hidden": max(1, cfg.hidden // 2), "seed": cfg.seed + 3,
                         "steps": cfg.steps * 8 // 5 // cfg.eval_every * cfg.eval_every},
            "more points": {"n_points": cfg.n_points * 3 // 2, "seed": cfg.seed + 5},
            "lower learning rate": {"lr": cfg.lr * 2 / 3, "seed": cfg.seed + 7},
            "other frequencies": {"frequencies": (1, 4, 9, 19), "seed": cfg.seed + 9},
        }

    # -- analysis ---------------------------------------------------------------------------

    def claims(self, cfg: SpectralBiasConfig, results: Results) -> list[Claim]:
        ks = list(cfg.frequencies)
        runs = passage_times(cfg, results)
        claims = []
        for variant in cfg.variants:
            label = VARIANTS[variant][0]
            mine = [r for r in runs if r["variant"] == variant]
            for thr in cfg.thresholds:
                in_order = sum(ordered([r["times"][thr][k] for k in ks]) for r in mine)
                claims.append(claim(
                    f"low-first-{variant}-below-{thr:g}",
                    f"{label}: every seed learns the frequencies in order, lowest first: "
                    f"t_{ks[0]} <= t_{ks[1]} < " + " < ".join(f"t_{k}" for k in ks[2:])
                    + f", t_k the first step with relative error below {thr:g} (censored times "
                    "are later than the budget)", "runs_in_order", in_order,
                    at_least(len(mine)) if mine else at_least(1),
                    extra={"runs": len(mine), **_median_times(mine, thr, ks)}))
        thr = cfg.thresholds[0]
        activations = [a for a in ("relu", "tanh")
                       if any(VARIANTS[v][1] == a for v in cfg.variants)]
        for activation in activations:
            mine = [r for r in runs if VARIANTS[r["variant"]][1] == activation]
            for lo, hi in zip(ks[1:], ks[2:], strict=False):
                ratios = [_delay_ratio(r["times"][thr], lo, hi, cfg.steps) for r in mine]
                claims.append(claim(
                    f"delay-ratio-{hi}-over-{lo}-{activation}",
                    f"{activation} networks: the delays grow by a factor, t_{hi} / t_{lo} >= "
                    f"{DELAY_FACTOR:g} at threshold {thr:g} in every run (every seed and "
                    f"variant; a censored t_{hi} counts as the budget, a lower bound)"
                    + ("" if activation == "relu" else "; not gating: with tanh the delays "
                       "are shorter and the ratio of the middle frequencies sits near 2"),
                    "smallest_ratio", _smallest(ratios), at_least(DELAY_FACTOR),
                    gating=activation == "relu",
                    extra={"median_ratio": median_iqr(ratios)[0], "runs": len(ratios)}))
        top, second = ks[-1], ks[1]
        at_second = [r["top_error_when_second_learned"] for r in runs]
        claims.append(claim(
            "top-untouched-when-second-learned",
            f"when e_{second} first drops below {thr:g}, the highest frequency is still almost "
            f"untouched: e_{top} >= {UNTOUCHED:g} then, in every run", f"smallest_e_{top}",
            _smallest(at_second), at_least(UNTOUCHED),
            extra={f"median_e_{top}": median_iqr(at_second)[0], "runs": len(at_second)}))
        strict = sum(r["times"][thr][ks[0]] < r["times"][thr][ks[1]] for r in runs)
        claims.append(claim(
            "lowest-strictly-first",
            f"t_{ks[0]} < t_{ks[1]} strictly at threshold {thr:g} in every run (not gating: at a "
            f"resolution of {cfg.eval_every} steps the two lowest frequencies can tie)",
            "runs_strictly_first", strict, at_least(max(1, len(runs))), gating=False,
            extra={"runs": len(runs)}))
        return claims

    def figures(self, cfg: SpectralBiasConfig) -> list[LinePlot | Heatmap]:
        hlines = tuple((t, f"threshold {t:g}") for t in cfg.thresholds)
        figures: list[LinePlot | Heatmap] = [
            LinePlot(
                f"Relative error per frequency over training: {VARIANTS[v][0]}", "step",
                (Lines({"part": "fit", "variant": v}, group="frequency",
                       label="k = {frequency}"),),
                key="freq_error", x_title="Adam step", log_x=True,
                y_title="relative error |FFT(r)[k]| / |FFT(f)[k]| (median over seeds)",
                hlines=hlines,
                caption="Each curve is one frequency of the target: lower frequencies fall "
                        "below the thresholds first, the highest one last (spikes: Adam "
                        "briefly un-learns a fitted component; the first passage counts).")
            for v in cfg.variants]
        first = cfg.variants[0]
        where = {"part": "fit", "variant": first}
        figures.insert(0, LinePlot(
            f"The network's output during training: {VARIANTS[first][0]} (first seed)", "x",
            (Lines(where, key="target", label="target f", dash="dash"),
             Lines(where, group="snapshot", label="step {snapshot}")),
            key="output", seeds="first", x_title="x (one period)",
            y_title="target and network output",
            caption="Early outputs follow only the slow components of the target; the fast "
                    "wiggles appear last."))
        figures.append(Heatmap(
            f"Relative error by frequency and training time: {VARIANTS[first][0]} (median over "
            "seeds)", "freq_error", rows="frequency", cols="log10_step",
            where={"part": "fit", "variant": first}, x_title="log10 of the Adam step (bins of "
            "0.1)", y_title="frequency k of the target", colorbar="relative error",
            caption="Read each row left to right: the boundary between high error (bright) and "
                    "low error (dark) moves right as the frequency rises."))
        return figures

    def tables(self, cfg: SpectralBiasConfig, results: Results) -> list[Table]:
        ks = list(cfg.frequencies)
        runs = passage_times(cfg, results)
        rows = []
        for variant in cfg.variants:
            mine = [r for r in runs if r["variant"] == variant]
            for thr in cfg.thresholds:
                medians = _median_times(mine, thr, ks)
                in_order = sum(ordered([r["times"][thr][k] for k in ks]) for r in mine)
                rows.append([VARIANTS[variant][0], thr,
                             *[_shown(medians[f"median_t_{k}"], cfg.steps) for k in ks],
                             f"{in_order} / {len(mine)}"])
        return [Table("First-passage times: the first step with relative error below the "
                      "threshold (median over seeds; '> budget' where a median seed never got "
                      "there)", ["variant", "threshold", *[f"t_{k}" for k in ks],
                                 "seeds in order"], rows)]


# -- training ------------------------------------------------------------------------------------


def train_seed(cfg: SpectralBiasConfig, trials: list[Trial]) -> list[TrialOutput]:
    """Every variant of one seed: one stack of models per activation, the per-frequency error
    of each model's residual every ``eval_every`` steps."""
    seed = trials[0].seed
    outputs: dict[int, TrialOutput] = {}
    for activation in ("relu", "tanh"):
        members = [i for i, t in enumerate(trials) if VARIANTS[t.variant][1] == activation]
        if members:
            outs = _train_stack(cfg, [trials[i].variant for i in members], seed, activation)
            outputs.update(zip(members, outs, strict=True))
    return [outputs[i] for i in range(len(trials))]


def _train_stack(cfg: SpectralBiasConfig, variants: list[str], seed: int,
                 activation: str) -> list[TrialOutput]:
    ks = list(cfg.frequencies)
    grid = torch.arange(cfg.n_points, dtype=torch.float64) / cfg.n_points
    x = (2 * grid - 1).unsqueeze(1)
    targets = torch.stack([target_of(cfg, v, seed) for v in variants])  # (K, n), float64
    sizes = [1, *[cfg.hidden] * cfg.depth, 1]
    stack = make_stack([mlp(sizes, activation=activation, seed=seed) for _ in variants],
                       seeds=[seed] * len(variants), loss="mse", optimizer="adam", lr=cfg.lr,
                       batch_size=None, x_train=x.float(),
                       y_train_by_model=targets.unsqueeze(2).float(), device=cfg.device)
    records: list[list[Record]] = [[] for _ in variants]
    grid_points = grid.tolist()
    for m, recs in enumerate(records):
        recs += [Record("target", float(v), 0, "data", {"x": xi})
                 for xi, v in zip(grid_points, targets[m].tolist(), strict=True)]
    snapshots = {*cfg.snapshots, cfg.steps}

    def measure(step: int) -> None:
        out = stack.predict(x.float())[..., 0].double().cpu()
        residual = out - targets
        if step in snapshots:
            for m, recs in enumerate(records):
                recs += [Record("output", float(v), step, "output", {"x": xi, "snapshot": step})
                         for xi, v in zip(grid_points, out[m].tolist(), strict=True)]
        errors = frequency_errors(residual, targets, ks)  # (K, F)
        mse = (residual ** 2).mean(1)
        for m, recs in enumerate(records):
            recs.append(Record("train_loss", float(mse[m]), step, "train"))
            for j, k in enumerate(ks):
                meta: dict[str, Any] = {"frequency": k}
                if step > 0:
                    meta["log10_step"] = round(math.log10(step), 1)
                recs.append(Record("freq_error", float(errors[m, j]), step, "frequency", meta))

    measure(0)
    for step in range(cfg.eval_every, cfg.steps + 1, cfg.eval_every):
        stack.run_steps(cfg.eval_every)
        measure(step)
    diverged = stack.diverged
    return [TrialOutput(recs, "diverged" if diverged[m] else "finished",
                        {"activation": activation})
            for m, recs in enumerate(records)]


# -- first passages --------------------------------------------------------------------------


def passage_times(cfg: SpectralBiasConfig, results: Results) -> list[dict[str, Any]]:
    """Per run (seed and variant): first-passage times ``times[thr][k]`` (inf: censored) and
    the highest frequency's error when the second lowest first drops below the first
    threshold (NaN if it never does)."""
    ks = list(cfg.frequencies)
    records = results.where(part="fit").records
    records = records[records["key"] == "freq_error"]
    runs = []
    for (variant, seed), rows in records.groupby(["variant", "seed"], sort=True):
        curves = {}
        for k in ks:
            sel = rows[rows["frequency"] == k].sort_values("step", kind="stable")
            curves[k] = ([float(s) for s in sel["step"]], [float(v) for v in sel["value"]])
        times = {thr: {k: first_passage(*curves[k], thr) for k in ks} for thr in cfg.thresholds}
        at = times[cfg.thresholds[0]][ks[1]]
        steps_top, values_top = curves[ks[-1]]
        top = values_top[steps_top.index(at)] if at in steps_top else math.nan
        runs.append({"variant": variant, "seed": int(seed), "times": times,
                     "top_error_when_second_learned": top})
    return runs


def ordered(times: list[float]) -> bool:
    """Whether first-passage times ``t_1 <= t_2 < t_3 < ...`` (by increasing frequency) are in
    order, censored times (inf) counting as later than every reached one and unordered among
    themselves; at least two must be reached.

    >>> ordered([10, 10, 50, math.inf]), ordered([10, 50, math.inf, math.inf])
    (True, True)
    >>> ordered([10, math.inf, 50, 90]), ordered([10, 60, 50, 90]), ordered([10] + [math.inf] * 3)
    (False, False, False)
    """
    reached = [t for t in times if math.isfinite(t)]
    if len(reached) < 2 or any(not math.isfinite(t) for t in times[:len(reached)]):
        return False
    return reached[0] <= reached[1] and all(a < b for a, b in zip(reached[1:], reached[2:],
                                                                   strict=False))


def _delay_ratio(times: dict[int, float], lo: int, hi: int, budget: int) -> float:
    """``t_hi / t_lo``; a censored ``t_hi`` counts as the budget (a lower bound), a censored
    or zero ``t_lo`` leaves the ratio undefined (NaN)."""
    t_lo, t_hi = times[lo], times[hi]
    if not math.isfinite(t_lo) or t_lo <= 0:
        return math.nan
    return (t_hi if math.isfinite(t_hi) else float(budget)) / t_lo


def _smallest(values: list[float]) -> float:
    """The smallest value; NaN if there is none or any is NaN (a run without the number fails
    the claim)."""
    return min(values) if values and not any(math.isnan(v) for v in values) else math.nan


def _median_times(runs: list[dict[str, Any]], thr: float, ks: list[int]) -> dict[str, float]:
    """Median first-passage time per frequency over runs (inf when the median run is
    censored)."""
    out = {}
    for k in ks:
        values = sorted(r["times"][thr][k] for r in runs)
        mid = len(values) // 2
        out[f"median_t_{k}"] = (math.nan if not values else values[mid] if len(values) % 2
                                else (values[mid - 1] + values[mid]) / 2)
    return out


def _shown(t: float, budget: int) -> str:
    return f"> {budget}" if math.isinf(t) else ("-" if math.isnan(t) else f"{t:g}")
