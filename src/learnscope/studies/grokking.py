"""Grokking: generalisation long after memorisation on modular addition (Power, Burda, Edwards,
Babuschkin & Misra 2022, "Grokking: generalization beyond overfitting on small algorithmic
datasets"; Nanda, Chan, Lieberum, Smith & Steinhardt 2023, "Progress measures for grokking via
mechanistic interpretability"; Liu, Michaud & Tegmark 2022, "Omnigrok"; Gromov 2023,
"Grokking modular arithmetic").

A network trained on half of the table of (a + b) mod p fits its training pairs within a few
dozen steps while its accuracy on the other half stays at (even below) chance; hundreds of steps
later, with nothing changed in the training, test accuracy climbs to 100%. Weight decay decides
whether and when this happens: stronger decay (within limits) generalises sooner, none never
does. The jump is not sudden inside the network: the first layer's weights become sinusoids of
the tokens (the Fourier algorithm of Nanda et al., found in MLPs by Gromov) gradually, starting
at memorisation, while test accuracy still reads chance: a hidden progress measure.

Setup: p = 59, all 3481 pairs (a, b) once, a random half (1740 pairs) for training and the
rest (1741) for testing, label (a + b) mod p. MLP one-hot(a) ++ one-hot(b) (2p inputs) ->
Linear 256 -> ReLU -> Linear p, PyTorch's default initialisation. Cross-entropy, full batch,
AdamW with learning rate 1e-2, betas (0.9, 0.98), weight decay 1, 0.3 and 0, 1500 steps,
evaluated every 5 steps up to step 100 and every 25 after; 3 seeds (--quick: one seed, 1000
steps). The weight decays of one seed share initial weights and data split and train as one
stack of models.
Denormal floats are flushed to zero during training (once the training loss is ~1e-7 they slow
every CPU matmul several times); the previous setting is restored afterwards. The Fourier
concentration of the first layer: for each hidden unit, the fraction of the mean-removed
energy of its weights over token a in its single largest frequency (k and p - k together),
energy-weighted over the units (white noise ~0.14 at p = 59, a pure sinusoid 1, a square wave
8 / pi^2 = 0.81; the units of this MLP end near square waves, so values near 0.8-0.9 are the
ceiling in practice). Weight norm: the L2 norm of all parameters.

Claims (every seed unless said; steps are the first evaluation reaching the level):
- memorisation first: every network reaches 99% training accuracy, and test accuracy at that
  step is at most 0.05 (chance is 1/p = 0.017);
- delayed generalisation at weight decay 1: test accuracy reaches 95%, at least 5 times later
  than training accuracy reached 99%;
- weight decay controls the delay: with weight decay 0.3 test accuracy reaches 50% at least 1.5
  times later than with weight decay 1 (median over seeds; a run that never gets there counts
  at the run's length, a lower bound);
- without weight decay it never generalises: best test accuracy at most 0.05 while weight decay
  1 ends at 95% or more;
- hidden progress (Nanda et al.): at weight decay 1 the Fourier concentration when test
  accuracy first reaches 10% is at least twice its value at memorisation, and while test
  accuracy is still at most 0.05 it has already risen by half;
- the final Fourier concentration at weight decay 1 is at least twice that without decay (the
  smallest over seeds against the largest).

Not gating: "the weight norm falls at the jump" (Nanda et al., Omnigrok). With AdamW the norm is
held by the balance of update size and decay: at weight decay 1 it levels off after
memorisation, dips a few percent as test accuracy starts to rise and then mostly grows through
the jump (measured -2% to +30% from test accuracy 10% to 95%), so the claim does not reproduce
here; the final norm with decay is well below the norm without (also reported, not gating: it
is what decay does by definition).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from learnscope.analysis import Claim, LinePlot, Lines, Results, Table
from learnscope.analysis.claims import all_of, at_least, at_most, below, claim
from learnscope.config import StudyConfig, param
from learnscope.data.modular import modular_addition
from learnscope.errors import ConfigError
from learnscope.measures.fourier import fourier_concentration
from learnscope.models import mlp
from learnscope.store.records import Record
from learnscope.studies import register
from learnscope.studies.base import Part, Study, Trial, TrialOutput, part
from learnscope.train.stacked import make_stack

__all__ = ["denormals_flushed", "eval_steps", "first_step", "flushing_denormals"]

MEMORISED = 0.99
"""Training accuracy that counts as memorised."""
GENERALISED = 0.95
"""Test accuracy that counts as generalised."""
AT_CHANCE = 0.05
"""Test accuracy at most this counts as no generalisation (chance is 1/p; test accuracy while
memorising is often below it)."""
SQUARE_WAVE = 8 / math.pi**2


@dataclasses.dataclass(frozen=True)
class GrokkingConfig(StudyConfig):
    seeds: int = param(3, "seeds (initial weights and train/test split); claims hold for every "
                       "seed or use medians", ge=1)
    p: int = param(59, "the modulus: tokens and classes", ge=5, le=200)
    train_fraction: float = param(0.5, "fraction of the p^2 pairs used for training", gt=0,
                                  lt=1)
    hidden: int = param(256, "hidden ReLU units", ge=1)
    weight_decays: tuple[float, ...] = param(
        (1.0, 0.3, 0.0), "AdamW weight decays (must contain 1 and 0)", ge=0, min_len=2)
    lr: float = param(1e-2, "AdamW learning rate", gt=0)
    beta2: float = param(0.98, "AdamW second-moment decay (beta1 is 0.9)", gt=0, lt=1)
    steps: int = param(1500, "full-batch AdamW steps", ge=10)
    eval_every: int = param(25, "steps between evaluations after step 100 (every 5 before)",
                            ge=1)

    def check(self) -> None:
        if 1.0 not in self.weight_decays or 0.0 not in self.weight_decays:
            raise ConfigError("field 'weight_decays' must contain 1 and 0 (the claims compare "
                              "them)")


@register
class Grokking(Study[GrokkingConfig]):
    name = "grokking"
    title = "Grokking: modular addition generalises long after it is memorised"
    summary = ("An MLP memorises half of (a + b) mod 59 at once and generalises hundreds of steps "
               "later, only with weight decay; Fourier features grow while test accuracy is at "
               "chance.")
    source = ("Power et al. 2022, Grokking: generalization beyond overfitting on small "
              "algorithmic datasets; Nanda et al. 2023, Progress measures for grokking via "
              "mechanistic interpretability; Liu et al. 2022, Omnigrok; Gromov 2023, Grokking "
              "modular arithmetic")
    Config = GrokkingConfig
    quick = {"seeds": 1, "steps": 1000}
    tiny = {"p": 11, "hidden": 16, "steps": 30, "eval_every": 10, "weight_decays": [1.0, 0.0]}

    def memory_bytes(self, cfg: GrokkingConfig) -> float:
        """One seed's stack: parameters, gradients and AdamW state of every weight decay, the
        saved activations of a full-batch step, and the one-hot inputs."""
        k, p, h = len(cfg.weight_decays), cfg.p, cfg.hidden
        params = 2 * p * h + h + h * p + p
        n = p * p
        return 4.0 * (k * params * 4 + k * n * (2 * h + 3 * p) + n * 2 * p) * 2

    def parts(self, cfg: GrokkingConfig) -> list[Part]:
        return [part("train", train_seed, batch_by=["seed"],
                     wd=sorted(cfg.weight_decays, reverse=True), seed=cfg.seed_list())]

    def neighbours(self, cfg: GrokkingConfig) -> dict[str, dict[str, Any]]:
        return super().neighbours(cfg) | {
            # a narrower net groks later (hidden 128: test 95% at ~1175 steps, not ~600): it
            # gets the default run length, or the event it is tested on would not happen yet
            "narrower, longer run": {"hidden": cfg.hidden // 2,
                                     "steps": max(cfg.steps, 1500)},
            "wider": {"hidden": int(cfg.hidden * 1.5), "seed": cfg.seed + 7},
            "more training pairs": {"train_fraction": 0.6, "seed": cfg.seed + 11},
            "larger modulus": {"p": 71, "seed": cfg.seed + 13},
        }

    def claims(self, cfg: GrokkingConfig, results: Results) -> list[Claim]:
        runs = results.where(part="train")
        strong, none = runs.where(wd=1.0), runs.where(wd=0.0)
        mid = [w for w in runs.axis("wd") if 0 < w < 1]
        claims = [
            all_of("memorisation-first", f"every network reaches {MEMORISED:.0%} training "
                   f"accuracy, and its test accuracy at that step is at most {AT_CHANCE} "
                   f"(chance 1/p = {1 / cfg.p:.3f}): it memorises, it does not generalise",
                   {"networks_memorised": (runs.count_finite("step_memorised"),
                                           at_least(len(runs))),
                    "worst_test_acc_at_memorisation": (_worst(runs, "test_at_memorised"),
                                                       at_most(AT_CHANCE))},
                   extra={"median_step_memorised": runs.median("step_memorised")}),
            claim("delayed-generalisation", f"with weight decay 1 test accuracy reaches "
                  f"{GENERALISED:.0%}, at least 5 times later than training accuracy reached "
                  f"{MEMORISED:.0%} (smallest ratio over seeds)",
                  "smallest_delay_ratio", _worst(strong, "delay_ratio", smallest=True),
                  at_least(5.0),
                  extra={"median_step_memorised": strong.median("step_memorised"),
                         "median_step_generalised": strong.median("step_test95")}),
            all_of("no-decay-never-generalises", f"without weight decay the best test accuracy "
                   f"over all {cfg.steps} steps stays at most {AT_CHANCE}, while weight decay 1 "
                   f"ends at {GENERALISED:.0%} or more (every seed)",
                   {"best_test_acc_wd0": (_worst(none, "test_max"), at_most(AT_CHANCE)),
                    "final_test_acc_wd1": (_worst(strong, "test_acc", smallest=True),
                                           at_least(GENERALISED))}),
        ]
        if mid:
            w = max(mid)
            slow = runs.where(wd=w).median("step_test50_censored")
            fast = strong.median("step_test50")
            claims.append(claim(
                "weight-decay-sets-the-delay", f"with weight decay {w:g} test accuracy reaches "
                "50% at least 1.5 times later than with weight decay 1 (medians over seeds; a "
                "run that never gets there counts at the run's length)",
                "step_ratio", slow / fast if fast > 0 else math.nan, at_least(1.5),
                extra={f"step_test50_wd{w:g}": slow, "step_test50_wd1": fast,
                       f"reached_wd{w:g}": runs.where(wd=w).count_finite("step_test50")}))
        claims += [
            all_of("hidden-progress", "at weight decay 1 the Fourier concentration of the "
                   "first layer when test accuracy first reaches 10% is at least twice its "
                   f"value at memorisation, and at the last evaluation with test accuracy <= "
                   f"{AT_CHANCE} it is already 1.5 times that value (smallest over seeds)",
                   {"fourier_gain_by_test_10pct": (_worst(strong, "fourier_gain_test10",
                                                          smallest=True), at_least(2.0)),
                    "fourier_gain_at_chance": (_worst(strong, "fourier_gain_at_chance",
                                                      smallest=True), at_least(1.5))},
                   extra={"fourier_at_init": strong.median("fourier_init"),
                          "fourier_at_memorisation": strong.median("fourier_at_memorised"),
                          "fourier_at_test_10pct": strong.median("fourier_at_test10"),
                          "test_acc_at_last_chance_eval": strong.median("test_at_chance_end")}),
            claim("fourier-features-need-decay", "the final Fourier concentration with weight "
                  "decay 1 is at least twice that without decay (smallest over seeds against the "
                  "largest)", "fourier_ratio",
                  _ratio(_worst(strong, "fourier", smallest=True), _worst(none, "fourier")),
                  at_least(2.0), extra={"fourier_wd1": strong.median("fourier"),
                                        "fourier_wd0": none.median("fourier")}),
            claim("norm-falls-at-the-jump", "the weight norm falls through the jump (Nanda et "
                  "al., Omnigrok): at weight decay 1 the norm when test accuracy reaches "
                  f"{GENERALISED:.0%} is below the norm when it first reached 10% (median over "
                  "seeds; not gating: with AdamW the norm is held by the lr / decay balance)",
                  "norm_ratio", _ratio(strong.median("norm_at_test95"),
                                       strong.median("norm_at_test10")),
                  below(1.0), gating=False,
                  extra={"norm_at_memorisation": strong.median("norm_at_memorised"),
                         "norm_at_test_10pct": strong.median("norm_at_test10"),
                         "norm_at_test_95pct": strong.median("norm_at_test95"),
                         "norm_peak_step": strong.median("norm_peak_step")}),
            claim("decay-shrinks-the-norm", "the final weight norm with weight decay 1 is at "
                  "most 0.7 times that without decay (medians; not gating: decay shrinks weights "
                  "by definition)", "norm_ratio",
                  _ratio(strong.median("weight_norm"), none.median("weight_norm")),
                  at_most(0.7), gating=False),
        ]
        return claims

    def figures(self, cfg: GrokkingConfig) -> list[LinePlot]:
        by_wd = {"part": "train"}
        return [
            LinePlot("Train and test accuracy over training", "step",
                     (Lines(by_wd, key="test_acc", group="wd", label="test, weight decay {wd}"),
                      Lines(by_wd, key="train_acc", group="wd", label="train, weight decay {wd}",
                            dash="dot")),
                     x_title="AdamW step (log scale)", y_title="accuracy", log_x=True,
                     hlines=((1 / cfg.p, "chance 1/p"),),
                     caption="Training accuracy (dotted) reaches 100% within ~50 steps; test "
                             "accuracy (solid) follows hundreds of steps later with weight decay, "
                             "never without."),
            LinePlot("Fourier concentration of the first layer over training", "step",
                     (Lines(by_wd, key="fourier", group="wd", label="weight decay {wd}"),),
                     x_title="AdamW step (log scale)",
                     y_title="energy fraction in each unit's top frequency", log_x=True,
                     hlines=((SQUARE_WAVE, "square wave 8/pi^2"),),
                     caption="With weight decay the units' weights turn into sinusoids of the "
                             "token from memorisation on, while test accuracy is still at "
                             "chance; without decay they stay noise-like."),
            LinePlot("Weight norm over training", "step",
                     (Lines(by_wd, key="weight_norm", group="wd", label="weight decay {wd}"),),
                     x_title="AdamW step (log scale)", y_title="L2 norm of all parameters",
                     log_x=True,
                     caption="With decay the norm levels off after memorisation and changes "
                             "little through the jump; without decay it keeps growing."),
        ]

    def tables(self, cfg: GrokkingConfig, results: Results) -> list[Table]:
        runs = results.where(part="train")
        rows = []
        for w in sorted(runs.axis("wd"), reverse=True):
            sub = runs.where(wd=w)
            row = [w, sub.median("step_memorised"), sub.median("test_at_memorised"),
                   sub.median("step_test10"), sub.median("step_test50"),
                   sub.median("step_test95"), sub.median("test_max"),
                   sub.median("fourier_at_memorised"), sub.median("fourier_at_test10"),
                   sub.median("fourier"), sub.median("norm_at_memorised"),
                   sub.median("norm_at_test10"), sub.median("norm_at_test95"),
                   sub.median("weight_norm")]
            rows.append(["never" if isinstance(v, float) and math.isnan(v) else v
                         for v in row])
        return [Table("Grokking by weight decay (medians over seeds; steps are the first "
                      "evaluation reaching the level)",
                      ["weight decay", "step train 99%", "test acc then", "step test 10%",
                       "step test 50%", "step test 95%", "best test acc", "Fourier at train 99%",
                       "Fourier at test 10%", "Fourier at end", "norm at train 99%",
                       "norm at test 10%", "norm at test 95%", "norm at end"], rows)]


def _worst(results: Results, key: str, *, smallest: bool = False) -> float:
    """The largest (or smallest) value over the selected trials; NaN if any trial lacks it."""
    values = results.values(key)
    if not len(values) or np.isnan(values).any():
        return math.nan
    return float(values.min() if smallest else values.max())


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


# -- training ---------------------------------------------------------------------------------

def denormals_flushed() -> bool:
    """Whether the CPU currently flushes denormal floats to zero (torch has a setter only):
    a denormal times one reads zero exactly when denormals are flushed."""
    tiny = torch.full((64,), 1e-39, dtype=torch.float32)
    return bool((tiny * torch.ones(64)).eq(0).all())


@contextlib.contextmanager
def flushing_denormals() -> Iterator[None]:
    """Flush denormals to zero inside the block, restore the previous setting after."""
    before = denormals_flushed()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def eval_steps(steps: int, eval_every: int) -> list[int]:
    """Every 5 steps up to step 100 (memorisation is fast), then every ``eval_every``, and the
    last step."""
    early = range(5, min(100, steps) + 1, 5)
    late = range(eval_every, steps + 1, eval_every)
    return sorted({*early, *late, steps})


def first_step(steps: list[int], values: list[float], level: float) -> float:
    """The first step whose value reaches ``level`` (NaN if none)."""
    return next((float(s) for s, v in zip(steps, values, strict=True) if v >= level), math.nan)


def train_seed(cfg: GrokkingConfig, trials: list[Trial]) -> list[TrialOutput]:
    """Every weight decay of one seed as one stack (same initial weights, same split)."""
    torch.set_num_threads(1)
    seed, p = trials[0].seed, cfg.p
    data = modular_addition(p, cfg.train_fraction, seed=seed).classification()
    wds = [float(t.wd) for t in trials]
    stack = make_stack(lambda s: mlp([2 * p, cfg.hidden, p], seed=s), seeds=[seed] * len(wds),
                       optimizer="adamw", lr=cfg.lr, betas=(0.9, cfg.beta2), weight_decay=wds,
                       batch_size=None, x_train=data.x_train, y_train=data.y_train,
                       x_test=data.x_test, y_test=data.y_test)
    probe = mlp([2 * p, cfg.hidden, p], seed=seed)
    curves: list[dict[str, list[float]]] = [
        {k: [] for k in ("train_acc", "test_acc", "train_loss", "fourier", "weight_norm")}
        for _ in trials]
    steps = [0, *eval_steps(cfg.steps, cfg.eval_every)]
    with flushing_denormals():
        for target in steps:
            stack.run_steps(target - stack.step)
            for k, log in enumerate(stack.evaluate()):
                stack.load_into(k, probe)
                weights = [prm.detach().double() for prm in probe.parameters()]
                c = curves[k]
                c["train_acc"].append(log.train_acc)
                c["test_acc"].append(log.test_acc)
                c["train_loss"].append(log.train_loss)
                c["fourier"].append(fourier_concentration(probe[0].weight[:, :p]))
                c["weight_norm"].append(math.sqrt(sum(float((w**2).sum()) for w in weights)))
    outputs = []
    for k, _ in enumerate(trials):
        c = curves[k]
        records = [Record(key, v, step=s, probe="grokking") for key, vs in c.items()
                   for s, v in zip(steps, vs, strict=True) if s > 0]
        records.append(Record("fourier_init", c["fourier"][0], probe="grokking"))
        records += [Record(key, v, probe="summary")
                    for key, v in _summary(steps, c, cfg.steps).items()]
        status = "diverged" if stack.diverged[k] else "finished"
        outputs.append(TrialOutput(records, status, {"eval_steps": len(steps)}))
    return outputs


def _summary(steps: list[int], c: dict[str, list[float]], n_steps: int) -> dict[str, float]:
    """Milestones of one run: when it memorised and generalised, Fourier concentration and norm
    there."""
    train, test, fourier, norm = c["train_acc"], c["test_acc"], c["fourier"], c["weight_norm"]
    at = {s: i for i, s in enumerate(steps)}

    def value_at(series: list[float], step: float) -> float:
        return series[at[int(step)]] if math.isfinite(step) else math.nan

    memorised = first_step(steps, train, MEMORISED)
    test10, test50, test95 = (first_step(steps, test, lv) for lv in (0.1, 0.5, GENERALISED))
    chance = first_step(steps, test, AT_CHANCE + 1e-12)
    last_chance = steps[at[int(chance)] - 1] if math.isfinite(chance) else steps[-1]
    fourier_mem = value_at(fourier, memorised)
    return {
        "step_memorised": memorised, "test_at_memorised": value_at(test, memorised),
        "step_test10": test10, "step_test50": test50, "step_test95": test95,
        "step_test50_censored": test50 if math.isfinite(test50) else float(n_steps),
        "test_max": max(test[1:]),
        "delay_ratio": _ratio(test95, memorised),
        "fourier_at_memorised": fourier_mem, "fourier_at_test10": value_at(fourier, test10),
        "fourier_gain_test10": _ratio(value_at(fourier, test10), fourier_mem),
        "test_at_chance_end": value_at(test, last_chance),
        "fourier_gain_at_chance": (_ratio(value_at(fourier, last_chance), fourier_mem)
                                   if math.isfinite(memorised) and last_chance >= memorised
                                   else math.nan),
        "norm_at_memorised": value_at(norm, memorised), "norm_at_test95": value_at(norm, test95),
        "norm_at_test10": value_at(norm, test10),
        "norm_peak_step": float(steps[int(np.argmax(norm))]),
    }
