"""Lottery tickets (Frankle & Carbin 2019, "The lottery ticket hypothesis: finding sparse,
trainable neural networks").

A dense network contains sparse subnetworks that, reset to their original initial weights and
trained alone, reach about the accuracy of the dense network. Iterative magnitude pruning (IMP)
finds them: train, keep the weights of largest magnitude in each layer, rewind the survivors to
their initial values, train again, prune again. The mask alone is not the whole story in
Frankle & Carbin: the same mask with fresh random weights ("reinit") trains worse, and a random
mask with the same number of weights per layer ("randmask") worse still. On MNIST-1D the
dataset's authors found the mask carries much of the benefit even under other initial weights
(Greydanus 2020), so the reinit control is expected to be weaker here than in the paper.

Setup: MNIST-1D (4000 training / 1000 test sequences), an MLP 40-200-200-10 with ReLU, Adam
(lr 2e-3, batch 100), a fixed number of steps per training (3000 at the default size; the dense
net reaches 100% training accuracy). IMP prunes the two hidden weight matrices to 50, 30, 20, 10
and 5% of their weights, always among the weights that survived the last round, and the output
layer at half the rate per round (75% ... 28% remaining); biases are never pruned; after every
round the survivors are rewound to the initial weights theta0. At 20, 10 and 5% two controls
train too: reinit (the ticket's mask, a fresh initialisation) and randmask (a uniformly random
mask with the ticket's per-layer counts, theta0). The mask is applied at initialisation and
again after every optimizer step (Adam's momentum would otherwise move pruned weights). The
networks of one round (every seed's ticket and controls) train as one stack of models; the
conditions of a seed see the same minibatches. Accuracies are those at the last step.

Test noise: 1000 test examples give each accuracy a standard error of about 1.5 points. A gap
between two networks of a seed is judged against the paired standard error of the difference
of their per-example correctness on the same test set (the std of the per-example differences
over sqrt(1000)); seed means against the combined standard error of the seeds.

Claims (gating):
- ticket beats randmask at 10% of the weights: ahead on every seed, and the seed-mean gap
  exceeds 2 standard errors (the random-mask control is the clearest, as in the paper; at the
  default size one seed of three is ahead by only 1.8 paired standard errors, so "beyond noise
  on every seed" is not claimed);
- ticket beats reinit at 10%: the seed-mean gap exceeds 2 standard errors;
- the ticket at 20% matches the dense network: its seed-mean accuracy is not below the dense
  accuracy by more than 2 paired standard errors (about 3 points with one seed).

Reported, not gating: the same gaps at 20% and at the sparsest fraction. At 20% the ticket beat
both controls in most configurations, but the random mask came within test noise of it in a
300-wide net (a wider net keeps more weights at the same fraction) and on one seed of the
default size (+0.6 points), and the re-initialised mask within noise on several seeds, in line
with the MNIST-1D observation above. Matching the dense net at the sparsest fraction is not
reproduced (at 5% the tickets are still under-trained: training accuracy ~0.78 after 3000
steps; at 10% they lag by up to 4 points after 1500 steps). The MNIST-1D notebook's "tickets
beat the dense net by ~8 points" (100 gradual rounds, a wider residual net, the best accuracy
over training) is not claimed: here tickets are at most ~3 points above dense.

Sources: Frankle & Carbin 2019 (ICLR); Greydanus 2020, "Scaling down deep learning"
(MNIST-1D, its lottery-ticket experiment).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from learnscope.analysis import Claim, LinePlot, Lines, Results, Table
from learnscope.analysis.claims import above, all_of, at_least, claim
from learnscope.config import StudyConfig, param
from learnscope.data import mnist1d
from learnscope.errors import ConfigError
from learnscope.measures.pruning import (
    apply_masks,
    imp_keep_fractions,
    keep_count,
    magnitude_masks,
    random_masks,
)
from learnscope.models import mlp
from learnscope.seeding import derive_seed, torch_generator
from learnscope.store.records import Record
from learnscope.studies import register
from learnscope.studies.base import Part, Study, Trial, TrialOutput, part
from learnscope.train.stacked import ModelStack, make_stack

__all__ = ["paired_se", "stacked_weight_views", "train_imp", "train_round"]

Z = 2.0
"""Standard errors a gap must exceed to count as beyond test noise."""
GATED_AT = 0.1
"""The fraction of weights at which the gaps to both controls are gating: at 20% they fell
within test noise in some configurations (wider nets, longer training), at 5% on some seeds."""


@dataclasses.dataclass(frozen=True)
class LotteryTicketsConfig(StudyConfig):
    seeds: int = param(3, "seeds (initialisations theta0 and batch orders)", ge=1)
    hidden: int = param(200, "width of both hidden layers", ge=4)
    steps: int = param(3000, "Adam steps of every training (dense, tickets, controls)", ge=10)
    lr: float = param(2e-3, "Adam learning rate", gt=0)
    batch_size: int = param(100, "minibatch size", ge=1)
    fractions: tuple[float, ...] = param(
        (0.5, 0.3, 0.2, 0.1, 0.05), "fraction of the hidden-layer weights remaining after each "
        "IMP round (decreasing); the output layer is pruned at half the rate", gt=0, lt=1,
        min_len=1)
    control_fractions: tuple[float, ...] = param(
        (0.2, 0.1, 0.05), "rounds at which the reinit and randmask controls train too",
        gt=0, lt=1, min_len=1)
    output_rate: float = param(0.5, "output layer pruning rate relative to the hidden layers",
                               ge=0, le=1)
    evals: int = param(10, "evaluations per training (test/train accuracy curves)", ge=1)

    def check(self) -> None:
        if any(b >= a for a, b in zip(self.fractions, self.fractions[1:], strict=False)):
            raise ConfigError("field 'fractions' must decrease strictly")
        missing = sorted(set(self.control_fractions) - set(self.fractions))
        if missing:
            raise ConfigError(f"field 'control_fractions' has {missing}, not among the IMP "
                              f"rounds {list(self.fractions)}")


@register
class LotteryTickets(Study[LotteryTicketsConfig]):
    name = "lottery-tickets"
    title = "Lottery tickets: sparse subnetworks that train from their original init"
    summary = ("Iterative magnitude pruning with rewinding finds 20% subnetworks that match the "
               "dense net; at 10% they beat random masks and the same mask re-initialised.")
    source = ("Frankle & Carbin 2019, The lottery ticket hypothesis; Greydanus 2020 "
              "(MNIST-1D)")
    Config = LotteryTicketsConfig
    quick = {"seeds": 1, "steps": 1500, "fractions": [0.5, 0.3, 0.2, 0.1],
             "control_fractions": [0.2, 0.1]}
    tiny = {"seeds": 1, "hidden": 16, "steps": 30, "evals": 2, "fractions": [0.5, 0.2],
            "control_fractions": [0.2]}

    def memory_bytes(self, cfg: LotteryTicketsConfig) -> float:
        """The largest round's stack (3 networks per seed: weights, gradients, Adam state,
        masks, activations of a batch and of evaluation chunks) plus MNIST-1D."""
        h = cfg.hidden
        params = 41 * h + (h + 1) * h + (h + 1) * 10
        k = 3 * cfg.seeds
        return 4.0 * k * (5 * params + cfg.batch_size * (2 * h + 10) * 3) + 4.0e7

    def parts(self, cfg: LotteryTicketsConfig) -> list[Part]:
        return [part("imp", train_imp, batch_by=[], seed=cfg.seed_list())]

    def neighbours(self, cfg: LotteryTicketsConfig) -> dict[str, dict[str, Any]]:
        return super().neighbours(cfg) | {
            "two seeds": {"seeds": 2, "seed": cfg.seed + 1},
            "longer training": {"steps": int(cfg.steps * 1.5), "seed": cfg.seed + 2},
            "wider": {"hidden": int(cfg.hidden * 1.5), "seed": cfg.seed + 3},
            "smaller step": {"lr": cfg.lr * 0.5, "steps": int(cfg.steps * 1.5),
                             "seed": cfg.seed + 4},
        }

    # -- claims -----------------------------------------------------------------------------
    def claims(self, cfg: LotteryTicketsConfig, results: Results) -> list[Claim]:
        imp = results.where(part="imp")
        dense = _acc(imp, "dense", 1.0)
        controls = sorted(cfg.control_fractions, reverse=True)
        sparsest = controls[-1]
        claims = []
        for f in controls:
            gap, se = _gap(imp, "randmask", f)
            mean, se_mean = _mean_and_se(gap, se)
            claims.append(all_of(
                f"ticket-beats-random-mask-{_pct(f)}",
                f"at {_pct(f)} of the weights the ticket beats a random mask with the same "
                f"per-layer counts: ahead on every seed, and the seed-mean gap exceeds {Z:g} "
                "standard errors of the test-accuracy difference" + (
                    "" if _gated(f) else " (reported, not gating at this fraction)"),
                {"min_gap": (float(np.min(gap)) if len(gap) else math.nan, above(0.0)),
                 "mean_gap_over_se": (mean / se_mean if se_mean > 0 else math.nan,
                                      at_least(Z))},
                gating=_gated(f),
                extra={"mean_gap": mean, "se_of_mean": se_mean, "gap_per_seed": gap.tolist(),
                       "gap_over_se_per_seed": (gap / se).tolist(),
                       "ticket_acc": _acc(imp, "ticket", f).tolist(),
                       "randmask_acc": _acc(imp, "randmask", f).tolist()}))
        for f in controls:
            gap, se = _gap(imp, "reinit", f)
            mean, se_mean = _mean_and_se(gap, se)
            gating = _gated(f)
            claims.append(claim(
                f"ticket-beats-reinit-{_pct(f)}",
                f"at {_pct(f)} of the weights the ticket (theta0) beats the same mask with a "
                f"fresh initialisation: the seed-mean gap exceeds {Z:g} standard errors"
                + ("" if gating else " (reported, not gating: within test noise on some "
                   "seeds, the mask carries much of the benefit on MNIST-1D)"),
                "mean_gap_over_se", mean / se_mean if se_mean > 0 else math.nan, at_least(Z),
                gating=gating,
                extra={"mean_gap": mean, "se_of_mean": se_mean, "gap_per_seed": gap.tolist(),
                       "ticket_acc": _acc(imp, "ticket", f).tolist(),
                       "reinit_acc": _acc(imp, "reinit", f).tolist()}))
        match_at = controls[0]
        for f in dict.fromkeys((match_at, sparsest)):
            gating = f == match_at
            ticket = _acc(imp, "ticket", f)
            diff, se_mean = _mean_and_se(ticket - dense, _acc(imp, "ticket", f, "se_vs_dense"))
            claims.append(claim(
                f"ticket-matches-dense-{_pct(f)}",
                f"the ticket at {_pct(f)} of the weights matches the dense network: its "
                f"accuracy (seed mean) is not below the dense accuracy by more than {Z:g} "
                "paired standard errors"
                + ("" if gating else " (sparsest fraction: reported, not gating; not "
                   "reproduced at 5%, where the tickets are still under-trained)"),
                "ticket_minus_dense_over_se", diff / se_mean if se_mean > 0 else math.nan,
                at_least(-Z), gating=gating,
                extra={"ticket_minus_dense": diff, "se_of_mean": se_mean,
                       "ticket_acc": ticket.tolist(), "dense_acc": dense.tolist(),
                       "ticket_train_acc": _acc(imp, "ticket", f, "train_acc").tolist()}))
        ticket, reinit, randmask = (float(np.mean(_acc(imp, c, sparsest)))
                                    for c in ("ticket", "reinit", "randmask"))
        claims.append(all_of(
            "controls-ordered", f"at {_pct(sparsest)} the order is ticket > reinit > randmask "
            "(seed means; reported, not gating)",
            {"ticket_minus_reinit": (ticket - reinit, above(0.0)),
             "reinit_minus_randmask": (reinit - randmask, above(0.0))}, gating=False))
        return claims

    # -- figures and tables -----------------------------------------------------------------
    def figures(self, cfg: LotteryTicketsConfig) -> list[LinePlot]:
        lines = (Lines({"condition": ["dense", "ticket"]}, label="ticket (IMP, rewound to "
                       "theta0); 100% = dense"),
                 Lines({"condition": "reinit"}, label="reinit (ticket mask, fresh init)",
                       dash="dash"),
                 Lines({"condition": "randmask"}, label="randmask (random mask, theta0)",
                       dash="dot"))
        sparsest = min(cfg.control_fractions)
        return [
            LinePlot("Test accuracy vs fraction of weights remaining (median, IQR over seeds)",
                     "fraction", lines, key="test_acc", x_title="fraction of hidden-layer "
                     "weights remaining (log scale)", y_title="test accuracy at the last step",
                     log_x=True, caption="The ticket line starts at the dense net (the point at 1); "
                     "where it stays above the dashed (re-initialised) and dotted (random mask) "
                     "lines, the initial weights and the mask matter."),
            LinePlot("Training accuracy vs fraction of weights remaining (median, IQR over "
                     "seeds)", "fraction", lines, key="train_acc",
                     x_title="fraction of hidden-layer weights remaining (log scale)",
                     y_title="training accuracy at the last step", log_x=True,
                     caption="Below ~20% of the weights no condition fits the training set "
                             "within the step budget: the sparse nets are under-trained."),
            LinePlot(f"Test accuracy during training at {_pct(sparsest)} of the weights "
                     "(first seed)", "step",
                     (Lines({"condition": "ticket", "fraction": sparsest}, label="ticket"),
                      Lines({"condition": "reinit", "fraction": sparsest}, label="reinit",
                            dash="dash"),
                      Lines({"condition": "randmask", "fraction": sparsest},
                            label="randmask", dash="dot"),
                      Lines({"condition": "dense"}, label="dense (100% of the weights)")),
                     key="test_acc", x_title="Adam step", y_title="test accuracy",
                     seeds="first", caption="One network per condition (first seed); a "
                     "ticket that learns faster than its controls sits above them from the "
                     "first evaluations on."),
        ]

    def tables(self, cfg: LotteryTicketsConfig, results: Results) -> list[Table]:
        imp = results.where(part="imp")
        rows = []
        keep = {f: layers for f, layers in zip(
            cfg.fractions, imp_keep_fractions(cfg.fractions, 3, output_rate=cfg.output_rate),
            strict=True)}
        for cond, f in [("dense", 1.0)] + [(c, f) for f in cfg.fractions
                                           for c in ("ticket", "reinit", "randmask")]:
            test = _acc(imp, cond, f)
            if not len(test) or np.isnan(test).all():
                continue
            train = _acc(imp, cond, f, "train_acc")
            out = keep[f][-1] if f in keep else 1.0
            rows.append([cond, f"{f:.0%}", f"{out:.1%}", float(np.mean(test)),
                         float(np.min(test)), float(np.max(test)), float(np.mean(train))])
        return [Table("Final accuracies (seed mean, min and max over seeds); hidden layers at "
                      "the listed fraction, output layer at half the pruning rate",
                      ["condition", "hidden weights kept", "output weights kept",
                       "test acc", "min", "max", "train acc"], rows)]


# -- analysis helpers ---------------------------------------------------------------------------

def _pct(f: float) -> str:
    return f"{f * 100:g}%"


def _gated(fraction: float) -> bool:
    return math.isclose(fraction, GATED_AT)


def _acc(results: Results, condition: str, fraction: float, key: str = "test_acc"
         ) -> np.ndarray:
    """Per seed (trial order), the final ``key`` of one condition at one fraction."""
    return results.where(condition=condition, fraction=fraction).values(key)


def _gap(results: Results, control: str, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Per seed: ticket accuracy minus the control's, and its paired standard error."""
    gap = _acc(results, "ticket", fraction) - _acc(results, control, fraction)
    se = _acc(results, control, fraction, "se_vs_ticket")
    return gap, se


def _mean_and_se(gap: np.ndarray, se: np.ndarray) -> tuple[float, float]:
    """Seed mean of independent gaps and its standard error from the per-seed test noise."""
    if not len(gap):
        return math.nan, math.nan
    return float(np.mean(gap)), float(math.sqrt(float(np.sum(se**2))) / len(gap))


def paired_se(correct_a: Tensor, correct_b: Tensor) -> float:
    """Standard error of ``mean(correct_a) - mean(correct_b)`` on one test set: the sample
    standard deviation of the per-example differences over sqrt(n).

    >>> a, b = torch.tensor([1, 1, 0, 1]), torch.tensor([1, 0, 0, 0])
    >>> round(paired_se(a, b), 4)  # differences 0, 1, 0, 1: std 0.5774 / 2
    0.2887
    """
    d = correct_a.double() - correct_b.double()
    n = d.numel()
    return float(d.std(correction=1) / math.sqrt(n)) if n > 1 else math.nan


# -- training ------------------------------------------------------------------------------------

def stacked_weight_views(stack: ModelStack) -> list[Tensor]:
    """Writable views ``(K, out, in)`` of every Linear weight of an MLP stack, input layer first.

    Multiplying them in place changes the models being trained (that is how masks are applied
    after each step); :meth:`ModelStack.parameter_views` gives them for either engine.
    """
    return [v for name, v in stack.parameter_views().items() if name.endswith("weight")]


def _weights(net: torch.nn.Module) -> list[Tensor]:
    return [m.weight for m in net if isinstance(m, torch.nn.Linear)]


def train_round(cfg: LotteryTicketsConfig, data: Any, inits: list[torch.nn.Module],
                 masks: list[list[Tensor] | None], batch_seeds: list[int]
                 ) -> tuple[ModelStack, list[torch.nn.Module]]:
    """Train the masked networks of one round as one stack; their trained copies."""
    stack = make_stack(inits, seeds=batch_seeds, loss="ce", optimizer="adam", lr=cfg.lr,
                       batch_size=cfg.batch_size, x_train=data.x_train, y_train=data.y_train,
                       x_test=data.x_test, y_test=data.y_test, device=cfg.device)
    stacked_masks: list[Tensor] | None = None
    if any(m is not None for m in masks):
        layers = [[m[li] if m is not None else torch.ones_like(w, dtype=torch.bool)
                   for m, w in zip(masks, [_weights(n)[li] for n in inits], strict=True)]
                  for li in range(len(_weights(inits[0])))]
        stacked_masks = [torch.stack(ms).to(stack.device) for ms in layers]

    def mask_step(_step: int, s: ModelStack) -> None:
        if stacked_masks is not None:
            apply_masks(stacked_weight_views(s), stacked_masks)

    mask_step(0, stack)
    stack.train(steps=cfg.steps, eval_every=max(1, cfg.steps // cfg.evals),
                on_step=mask_step if stacked_masks is not None else None)
    return stack, [stack.export(k) for k in range(stack.K)]


def train_imp(cfg: LotteryTicketsConfig, trials: list[Trial]) -> list[TrialOutput]:
    """IMP with rewinding for every seed; each round's networks of all seeds as one stack."""
    data = mnist1d(5000)
    sizes = [data.n_features, cfg.hidden, cfg.hidden, data.n_classes]
    seeds = [int(t.seed) for t in trials]
    theta0 = {s: mlp(sizes, seed=s) for s in seeds}
    records: dict[int, list[Record]] = {s: [] for s in seeds}
    status = {s: "finished" for s in seeds}
    x_test, y_test = data.x_test, data.y_test.long()

    def correct(net: torch.nn.Module) -> Tensor:
        with torch.no_grad():
            return net.to(x_test.device)(x_test.to(torch.float32)).argmax(-1).cpu() == y_test

    def log(seed: int, condition: str, fraction: float, stack: ModelStack, k: int,
            extra: dict[str, float]) -> None:
        meta = {"condition": condition, "fraction": fraction}
        hist = stack.histories[k]
        if hist.diverged:
            status[seed] = "diverged"
        for entry in hist.logs:
            records[seed] += [Record("test_acc", entry.test_acc, entry.step, "imp", meta),
                              Record("train_acc", entry.train_acc, entry.step, "imp", meta)]
        records[seed] += [Record(k_, v, cfg.steps, "imp", meta) for k_, v in extra.items()]

    # round 0: the dense networks
    stack, trained = train_round(cfg, data, [theta0[s] for s in seeds], [None] * len(seeds),
                                  seeds)
    dense_correct = {s: correct(net) for s, net in zip(seeds, trained, strict=True)}
    for k, s in enumerate(seeds):
        log(s, "dense", 1.0, stack, k, {"weights_kept": 1.0})
    previous_net = dict(zip(seeds, trained, strict=True))
    previous_masks: dict[int, list[Tensor] | None] = {s: None for s in seeds}
    schedule = imp_keep_fractions(cfg.fractions, len(sizes) - 1, output_rate=cfg.output_rate)
    for r, (fraction, layer_keep) in enumerate(zip(cfg.fractions, schedule, strict=True)):
        controls = fraction in cfg.control_fractions
        inits, masks, labels, owners = [], [], [], []
        for s in seeds:
            shapes = [w.shape for w in _weights(theta0[s])]
            counts = [keep_count(int(torch.Size(sh).numel()), f)
                      for sh, f in zip(shapes, layer_keep, strict=True)]
            ticket_mask = magnitude_masks(_weights(previous_net[s]), counts, previous_masks[s])
            previous_masks[s] = ticket_mask
            inits.append(theta0[s])
            masks.append(ticket_mask)
            labels.append("ticket")
            owners.append(s)
            if controls:
                inits.append(mlp(sizes, seed=derive_seed(s, "lottery-reinit", r)))
                masks.append(ticket_mask)
                labels.append("reinit")
                owners.append(s)
                inits.append(theta0[s])
                masks.append(random_masks(shapes, counts,
                                          torch_generator(s, "lottery-random-mask", r)))
                labels.append("randmask")
                owners.append(s)
        stack, trained = train_round(cfg, data, inits, masks, owners)
        ticket_correct = {}
        for k, (s, label) in enumerate(zip(owners, labels, strict=True)):
            if label == "ticket":
                previous_net[s] = trained[k]
                ticket_correct[s] = correct(trained[k])
        for k, (s, label) in enumerate(zip(owners, labels, strict=True)):
            kept = sum(int(m.sum()) for m in masks[k]) / sum(m.numel() for m in masks[k])
            extra = {"weights_kept": kept}
            if label == "ticket":
                extra["se_vs_dense"] = paired_se(ticket_correct[s], dense_correct[s])
            else:
                extra["se_vs_ticket"] = paired_se(ticket_correct[s], correct(trained[k]))
            log(s, label, fraction, stack, k, extra)
    return [TrialOutput(records[s], status[s]) for s in seeds]
