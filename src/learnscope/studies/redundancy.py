"""Redundancy: wide networks use far fewer dimensions than they have parameters.

A network with ten times the parameters does not use ten times the directions. After training,
three effective dimensions stay small as an MLP widens: the number of sharply curved directions
of the loss (Hessian eigenvalues above a fraction of the largest: a handful per class, Sagun et
al. 2017, Ghorbani et al. 2019; Maddox et al. 2020 call this the effective dimensionality that
parameter counting misses), the participation ratio of the hidden activations (how many equally
strong directions the representation spreads over; Gao et al. 2017, Recanatesi et al. 2019), while
the number of near-duplicate units (units whose centred activations correlate with another
unit's above 0.8 in absolute value) grows with width (Casper et al. 2021 call such units
redundant). Test accuracy meanwhile does not drop
with width: the unused capacity costs nothing.

Units also change how alike they are while training (symmetry breaking). Random initialisation
makes units different; what training then does is measured, not assumed: the mean |cosine|
between the centred activation vectors of the last hidden layer's units first rises well above
its value at initialisation (early in training the gradient has few directions, so all units
move the same way: early alignment, Maennel et al. 2018, Atanasov et al. 2021) and then falls
back from that peak as units specialise, ending above where it started.

Setup: MNIST-1D (4000 train / 1000 test), MLPs 40-h-h-10 (ReLU) over a range of widths h, Adam
(learning rate 1e-3, batch 100) for a fixed number of steps; each width's seeds train as one
stack of models. Unit similarity is measured at log-spaced steps on held-out inputs. After
training: the participation ratio (sum λ)^2 / sum λ^2 of each hidden layer's activation
covariance on the test inputs, near-duplicate units (centred activations, |cosine| above a
threshold, i.e. |correlation|), and the Hessian of the cross-entropy on a batch of training
examples: Lanczos (full reorthogonalisation) on Hessian-vector products gives its top
eigenvalues; the effective dimension counts those above hessian_fraction of the largest
(5% by default; at 1% the count is not resolved by a cheap Lanczos and approaches its step
count, so 1% is not used for claims).

Claims:

- the Hessian effective dimension grows much slower than the parameter count: its log-log slope
  against the parameter count is below 0.5 for every seed (and the counts are converged Ritz
  values, not the Lanczos step count);
- the participation ratio of each hidden layer grows much slower than the parameter count
  (log-log slope below 0.5 for every seed);
- test accuracy does not drop with width: the median at the widest width is at least the one
  at the narrowest;
- early alignment: the median over trials of (peak unit similarity during training) /
  (similarity at initialisation) exceeds 1.5;
- specialisation after the peak: the median over trials of (final similarity) / (peak) is
  below 0.9;
- training creates near-duplicate units: at every width the median count after training
  exceeds the count at initialisation (random units are almost never that correlated);
- wider networks hold more near-duplicate units: the median count at the widest width exceeds
  the one at the narrowest;
- not gating: the count grows at every step of width; test accuracy rises monotonically with
  width.

Sources: Sagun, Evci, Guney, Dauphin & Bottou 2017 (Empirical analysis of the Hessian of
over-parametrized neural networks); Ghorbani, Krishnan & Xiao 2019 (An investigation into neural
net optimization via Hessian eigenvalue density); Maddox, Benton & Wilson 2020 (Rethinking
parameter counting in deep models: effective dimensionality revisited); Gao et al. 2017 (A
theory of multineuronal dimensionality, dynamics and measurement); Recanatesi et al. 2019
(Dimensionality compression and expansion in deep neural networks); Maennel, Bousquet & Gelly
2018 (Gradient descent quantizes ReLU network features); Atanasov, Bordelon & Pehlevan 2021
(Neural networks as kernel learners: the silent alignment effect); Casper, Boix, D'Amario, Guo,
Schrimpf, Vinken & Kreiman 2021 (Frivolous units: wider networks are not really that wide).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

from learnscope.analysis import Claim, LinePlot, Lines, Results, Table
from learnscope.analysis.claims import above, all_of, at_least, at_most, below, claim, monotone
from learnscope.config import StudyConfig, param
from learnscope.data import mnist1d
from learnscope.errors import ConfigError
from learnscope.measures.effective_dimension import (
    hessian_effective_dimension,
    mean_abs_cosine,
    near_duplicate_units,
    participation_ratio,
    top_hessian_eigenvalues,
)
from learnscope.models import mlp
from learnscope.store.records import Record
from learnscope.studies import register
from learnscope.studies.base import Part, Study, Trial, TrialOutput, part
from learnscope.train.stacked import ModelStack, make_stack

SLOPE_LIMIT = 0.5


@dataclasses.dataclass(frozen=True)
class RedundancyConfig(StudyConfig):
    seeds: int = param(5, "seeds per width (trained as one stack); claims use every seed", ge=2)
    widths: tuple[int, ...] = param((16, 32, 64, 128, 256, 512),
                                    "widths h of the two hidden layers (MLP 40-h-h-10)", ge=2,
                                    min_len=3)
    steps: int = param(3000, "Adam steps (batch 100)", ge=10)
    lr: float = param(1e-3, "Adam learning rate", gt=0)
    n_samples: int = param(5000, "MNIST-1D examples (80% train, 20% test)", ge=200, le=20000)
    lanczos_steps: int = param(80, "Lanczos steps (Hessian-vector products) per model", ge=5)
    hessian_batch: int = param(500, "training examples the Hessian is taken on", ge=10)
    hessian_fraction: float = param(0.05, "count Hessian eigenvalues above this fraction of "
                                          "the largest", gt=0, lt=1)
    duplicate_threshold: float = param(0.8, "|correlation| above which two units count as "
                                            "near-duplicates", gt=0, lt=1)
    n_probe: int = param(1000, "held-out inputs the activations are measured on", ge=20)
    checkpoints: int = param(8, "log-spaced steps (plus step 0) at which unit similarity is "
                                "measured", ge=3)

    def check(self) -> None:
        if len(set(self.widths)) != len(self.widths):
            raise ConfigError("field 'widths' must not repeat a width")
        if self.hessian_batch > self.n_samples * 4 // 5:
            raise ConfigError(f"field 'hessian_batch' must be at most the {self.n_samples * 4 // 5} "
                              "training examples")


@register
class Redundancy(Study[RedundancyConfig]):
    name = "redundancy"
    title = "Redundancy: effective dimension grows much slower than parameter count"
    summary = ("Hessian effective dimension and activation participation ratio stay small as an "
               "MLP widens; units first align, then specialise.")
    source = ("Sagun et al. 2017; Ghorbani et al. 2019; Maddox et al. 2020; Gao et al. 2017; "
              "Recanatesi et al. 2019; Maennel et al. 2018; Atanasov et al. 2021")
    Config = RedundancyConfig
    quick = {"seeds": 3, "widths": [16, 32, 64, 128], "steps": 1500, "lanczos_steps": 60}
    tiny = {"seeds": 2, "widths": [8, 16, 32], "steps": 60, "lanczos_steps": 10,
            "hessian_batch": 100, "n_probe": 100, "checkpoints": 3}

    def memory_bytes(self, cfg: RedundancyConfig) -> float:
        """The widest stack (Adam: weights, gradients, two moments) with a batch's activations,
        plus the Lanczos basis of one model (float64) and the data."""
        h = max(cfg.widths)
        params = 40 * h + h * h + 12 * h + 10
        stack = 4.0 * cfg.seeds * (4 * params + 100 * (4 * h + 60))
        lanczos = 8.0 * (cfg.lanczos_steps + 4) * params + 4.0 * cfg.hessian_batch * 8 * h
        return stack + lanczos + 4.0 * cfg.n_samples * 41

    def parts(self, cfg: RedundancyConfig) -> list[Part]:
        return [part("widths", train_width, batch_by=["width"], width=sorted(cfg.widths),
                     seed=cfg.seed_list(), work=lambda c, t: float(t.width) ** 2 + 64 * t.width)]

    def neighbours(self, cfg: RedundancyConfig) -> dict[str, dict[str, Any]]:
        return super().neighbours(cfg) | {
            "fewer steps": {"steps": cfg.steps // 2, "seed": cfg.seed + 5},
            "more steps": {"steps": cfg.steps * 3 // 2},
            "larger step": {"lr": cfg.lr * 2, "seed": cfg.seed + 9},
            "fewer examples": {"n_samples": cfg.n_samples // 2, "seeds": 4},
        }

    def claims(self, cfg: RedundancyConfig, results: Results) -> list[Claim]:
        widths = results.axis("width")
        narrow, wide = results.where(width=widths[0]), results.where(width=widths[-1])
        hess = _slopes(results, "hessian_dim")
        converged = results.values("hessian_dim_converged")
        saturated = results.values("hessian_dim_saturated")
        claims = [all_of(
            "hessian-dim-sublinear", f"the number of Hessian eigenvalues above "
            f"{cfg.hessian_fraction:.0%} of the largest grows much slower than the parameter "
            f"count: log-log slope below {SLOPE_LIMIT:g} for every seed, every count made of "
            "converged Ritz values and below the Lanczos step count",
            {"max_slope_over_seeds": (max(hess), below(SLOPE_LIMIT)),
             "unconverged_counts": (float((converged < 1).sum()), at_most(0)),
             "saturated_counts": (float((saturated > 0).sum()), at_most(0))},
            extra={"slope_of_medians": _slope_of_medians(results, "hessian_dim"),
                   "median_at_narrowest": narrow.median("hessian_dim"),
                   "median_at_widest": wide.median("hessian_dim"),
                   "params_narrowest": narrow.median("params"),
                   "params_widest": wide.median("params")})]
        for layer in (1, 2):
            key = f"pr_layer{layer}"
            slopes = _slopes(results, key)
            claims.append(claim(
                f"participation-ratio-layer{layer}-sublinear", f"the participation ratio of "
                f"hidden layer {layer}'s activations grows much slower than the parameter count "
                f"(log-log slope below {SLOPE_LIMIT:g} for every seed)",
                "max_slope_over_seeds", max(slopes), below(SLOPE_LIMIT),
                extra={"slope_of_medians": _slope_of_medians(results, key),
                       "median_at_narrowest": narrow.median(key),
                       "median_at_widest": wide.median(key)}))
        claims.append(claim(
            "test-acc-does-not-drop", "test accuracy does not drop with width: the median at "
            "the widest width is at least the median at the narrowest",
            "widest_minus_narrowest", wide.median("test_acc") - narrow.median("test_acc"),
            at_least(0.0), extra={"test_acc_narrowest": narrow.median("test_acc"),
                                  "test_acc_widest": wide.median("test_acc")}))
        rise, fall = _similarity_ratios(results)
        claims.append(claim(
            "units-align-early", "early alignment: the units' mean |cosine| (centred "
            "activations of the last hidden layer) peaks during training well above its value "
            "at initialisation (median over trials of peak / initial above 1.5)",
            "median_peak_over_initial", float(torch.tensor(rise).median()), above(1.5),
            extra={"min_over_trials": min(rise), "trials": len(rise)}))
        claims.append(claim(
            "units-specialise-after-peak", "after the peak, units specialise: the final mean "
            "|cosine| is below the peak (median over trials of final / peak below 0.9)",
            "median_final_over_peak", float(torch.tensor(fall).median()), below(0.9),
            extra={"max_over_trials": max(fall), "trials": len(fall),
                   "median_final_over_initial": float(torch.tensor(
                       [r * f for r, f in zip(rise, fall, strict=True)]).median())}))
        dup, dup_init = results.curve("near_duplicates", "width"), \
            results.curve("near_duplicates_init", "width")
        claims.append(claim(
            "training-creates-duplicates", f"training creates near-duplicate units "
            f"(|correlation| > {cfg.duplicate_threshold:g}, both hidden layers): at every width "
            "the median count after training exceeds the one at initialisation",
            "min_over_widths_trained_minus_init",
            min(a - b for a, b in zip(dup.y, dup_init.y, strict=True)), above(0),
            extra={"trained": list(dup.y), "at_init": list(dup_init.y)}))
        claims.append(claim(
            "near-duplicates-grow-with-width", "wider networks hold more near-duplicate units: "
            "the median count at the widest width exceeds the one at the narrowest",
            "widest_minus_narrowest", dup.y[-1] - dup.y[0], above(0),
            extra={"narrowest": dup.y[0], "widest": dup.y[-1]}))
        claims.append(monotone(
            "near-duplicates-monotone", "the number of near-duplicate units grows at every step "
            "of width (median over seeds; not gating)", dup, increasing=True, strict=False,
            gating=False))
        claims.append(monotone(
            "test-acc-rises-with-width", "test accuracy rises with width (median over seeds; "
            "not gating)", results.curve("test_acc", "width"), increasing=True, strict=False,
            gating=False))
        return claims

    def figures(self, cfg: RedundancyConfig) -> list[LinePlot]:
        return [
            LinePlot("Parameters and effective dimensions vs width (median, IQR over seeds)",
                     "width", (Lines(key="params", label="parameter count", band=False),
                               Lines(key="hessian_dim", label=f"Hessian eigenvalues > "
                                     f"{cfg.hessian_fraction:.0%} of top"),
                               Lines(key="pr_layer1", label="participation ratio, layer 1"),
                               Lines(key="pr_layer2", label="participation ratio, layer 2"),
                               Lines(key="near_duplicates", label="near-duplicate units (trained)")),
                     x_title="hidden width h", y_title="count (log scale)", log_x=True,
                     log_y=True, caption="On log-log axes a slope is a power: the parameter "
                     "count climbs steeply (about h^2), the effective dimensions stay nearly "
                     "flat."),
            LinePlot("Test and train accuracy vs width (median, IQR over seeds)", "width",
                     (Lines(key="test_acc", label="test"), Lines(key="train_acc", label="train",
                                                                 dash="dash")),
                     x_title="hidden width h", y_title="accuracy", log_x=True,
                     caption="Wider networks are no worse on test data despite their unused "
                             "dimensions."),
            LinePlot("Unit similarity over training (mean |cosine| of centred activations, "
                     "last hidden layer)", "step",
                     (Lines(key="unit_similarity", group="width", label="h = {width}"),),
                     x_title="training step", y_title="mean |cosine| between units",
                     caption="Similarity rises early (units align) and then falls back as units "
                             "specialise; step 0 is the random initialisation."),
            LinePlot("First-layer incoming weights: mean |cosine| between units over training",
                     "step", (Lines(key="weight_similarity_layer1", group="width",
                                    label="h = {width}"),),
                     x_title="training step", y_title="mean |cosine| of weight vectors",
                     caption="Random 40-dimensional weight vectors start near sqrt(2/(40 pi)) = "
                             "0.13; narrow layers drift further from it."),
        ]

    def tables(self, cfg: RedundancyConfig, results: Results) -> list[Table]:
        rows = []
        for w in results.axis("width"):
            sub = results.where(width=w)
            rows.append([w, sub.median("params"), sub.median("hessian_dim"),
                         sub.median("hessian_top"), sub.median("pr_layer1"),
                         sub.median("pr_layer2"), sub.median("near_duplicates"),
                         sub.median("dead_units"), sub.median("train_acc"),
                         sub.median("test_acc")])
        return [Table("Medians over seeds per width", [
            "width", "parameters", f"Hessian eigenvalues > {cfg.hessian_fraction:.0%} of top",
            "top Hessian eigenvalue", "participation ratio L1", "participation ratio L2",
            "near-duplicate units", "dead units (L2)", "train acc", "test acc"], rows)]


def _log_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y against log x (NaN if any value is not positive)."""
    if len(xs) < 2 or any(not (v > 0) for v in xs + ys):
        return math.nan
    lx = torch.tensor(xs, dtype=torch.float64).log()
    ly = torch.tensor(ys, dtype=torch.float64).log()
    lx = lx - lx.mean()
    return float((lx * (ly - ly.mean())).sum() / (lx * lx).sum())


def _slopes(results: Results, key: str) -> list[float]:
    """One log-log slope of ``key`` against the parameter count per seed (NaN-safe max)."""
    out = []
    for s in results.axis("seed"):
        sub = results.where(seed=s)
        out.append(_log_slope(list(sub.values("params")), list(sub.values(key))))
    return [math.inf if math.isnan(v) else v for v in out] or [math.inf]


def _slope_of_medians(results: Results, key: str) -> float:
    widths = results.axis("width")
    return _log_slope([results.where(width=w).median("params") for w in widths],
                      [results.where(width=w).median(key) for w in widths])


def _similarity_ratios(results: Results) -> tuple[list[float], list[float]]:
    """Per trial: peak / initial and final / peak of the unit similarity over training."""
    rise, fall = [], []
    for _, _, values in results.series("unit_similarity"):
        peak = max(values)
        rise.append(peak / values[0] if values[0] > 0 else math.nan)
        fall.append(values[-1] / peak if peak > 0 else math.nan)
    return rise or [math.nan], fall or [math.nan]


def checkpoint_steps(steps: int, count: int) -> list[int]:
    """Step 0 plus ``count`` log-spaced steps from 10 (or 1) up to ``steps`` (distinct)."""
    first = min(10, steps)
    logs = torch.logspace(math.log10(first), math.log10(steps), count, dtype=torch.float64)
    return sorted({0, steps, *(int(round(float(v))) for v in logs)})


def _hidden(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both hidden layers' ReLU activations of an MLP 40-h-h-10 on ``x``."""
    with torch.no_grad():
        a1 = model[1](model[0](x))
        return a1, model[3](model[2](a1))


def _centred_units(a: torch.Tensor) -> torch.Tensor:
    """Each unit's centred activation vector over the inputs (rows: units)."""
    return (a - a.mean(0, keepdim=True)).T


def _duplicates(cfg: RedundancyConfig, model: nn.Module, x: torch.Tensor) -> int:
    """Near-duplicate units of both hidden layers (centred activations on ``x``)."""
    return sum(near_duplicate_units(_centred_units(a), cfg.duplicate_threshold)
               for a in _hidden(model, x))


def train_width(cfg: RedundancyConfig, trials: list[Trial]) -> list[TrialOutput]:
    """One width's seeds as one stack; similarity during training, dimensions after."""
    width = trials[0].width
    data = mnist1d(cfg.n_samples)
    probe_x = data.x_test[:cfg.n_probe]
    sizes = [data.n_features, width, width, data.n_classes]
    stack = make_stack(lambda seed: mlp(sizes, seed=seed), seeds=[t.seed for t in trials],
                       loss="ce", optimizer="adam", lr=cfg.lr, batch_size=100,
                       x_train=data.x_train, y_train=data.y_train, x_test=data.x_test,
                       y_test=data.y_test, device=cfg.device)
    twins = [stack.export(k) for k in range(stack.K)]
    records: list[list[Record]] = [[] for _ in trials]
    for k, twin in enumerate(twins):
        records[k].append(Record("near_duplicates_init", _duplicates(cfg, twin, data.x_test), 0,
                                 "activations", {"threshold": cfg.duplicate_threshold}))
    due = set(checkpoint_steps(cfg.steps, cfg.checkpoints))

    def similarity(step: int, st: ModelStack) -> None:
        if step not in due:
            return
        for k, twin in enumerate(twins):
            st.load_into(k, twin)
            _, a2 = _hidden(twin, probe_x)
            records[k] += [
                Record("unit_similarity", mean_abs_cosine(_centred_units(a2)), step, "units"),
                Record("weight_similarity_layer1", mean_abs_cosine(twin[0].weight), step,
                       "units"),
                Record("weight_similarity_layer2", mean_abs_cosine(twin[2].weight), step,
                       "units")]

    similarity(0, stack)
    stack.train(steps=cfg.steps, eval_every=cfg.steps, on_step=similarity)
    hx, hy = data.x_train[:cfg.hessian_batch], data.y_train[:cfg.hessian_batch]
    outputs = []
    for k, (trial, history) in enumerate(zip(trials, stack.histories, strict=True)):
        model = stack.export(k)
        params = sum(p.numel() for p in model.parameters())
        a1, a2 = _hidden(model, data.x_test)
        spectrum = top_hessian_eigenvalues(model, nn.functional.cross_entropy, hx, hy,
                                           steps=cfg.lanczos_steps, generator=trial.seed)
        eff = hessian_effective_dimension(spectrum, cfg.hessian_fraction)
        dups = _duplicates(cfg, model, data.x_test)
        log = history.logs[-1]
        step = stack.step
        meta = {"params": params}
        records[k] += [
            Record("params", params, step, "size"),
            Record("hessian_dim", eff["count"], step, "hessian", meta | {
                "fraction": cfg.hessian_fraction, "lanczos_steps": spectrum.steps}),
            Record("hessian_dim_converged", eff["converged"], step, "hessian"),
            Record("hessian_dim_saturated", eff["saturated"], step, "hessian"),
            Record("hessian_top", eff["top"], step, "hessian"),
            Record("pr_layer1", participation_ratio(a1), step, "activations", meta),
            Record("pr_layer2", participation_ratio(a2), step, "activations", meta),
            Record("near_duplicates", dups, step, "activations",
                   meta | {"threshold": cfg.duplicate_threshold}),
            Record("dead_units", float((a2.abs().sum(0) == 0).sum()), step, "activations"),
            Record("test_acc", log.test_acc, step, "train"),
            Record("train_acc", log.train_acc, step, "train")]
        outputs.append(TrialOutput(records[k], "diverged" if history.diverged else "finished"))
    return outputs
