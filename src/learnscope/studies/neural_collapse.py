"""Neural collapse in the terminal phase of training (Papyan, Han & Donoho 2020, "Prevalence of
neural collapse during the terminal phase of deep learning training"; with the MSE loss: Han,
Papyan & Donoho 2022, "Neural collapse under MSE loss").

Trained past zero training error, deep classifiers' last-layer features of the training set
collapse: (NC1) the within-class variability vanishes relative to the spread of the class
means; (NC2) the centred class means become equally long and equiangular, the vertices of a
simplex equiangular tight frame (ETF, every pairwise cosine -1/(C-1)); (NC3) the last layer's
weight rows align with the centred class means up to scale (self-duality); (NC4) the network
decides like the nearest class centre (NCC). Papyan et al. showed it for conv nets with batch
norm trained with cross-entropy; Han et al. showed the same under the MSE loss.

Setup: scikit-learn's 8x8 digits (1000 train / 797 test, pixels/16), an MLP 64-256-256-256-10
(ReLU), SGD (lr 0.05, momentum 0.9, batch 100, weight decay 5e-3), the learning rate divided by
10 after 1/3 and 2/3 of the 3000 steps (300 epochs). The same net is trained with the MSE loss
to one-hot targets (summed over the 10 outputs, averaged over the batch) and with cross-entropy;
the seeds of each loss train as one stack of models on the same split. The NC metrics are
computed in float64 on the penultimate (third hidden, post-ReLU) training features at
log-spaced checkpoints: NC1 = tr(S_W S_B^+)/C (pseudo-inverse with rtol 1e-10); NC2 as the
coefficient of variation of the centred mean norms, the std of the pairwise cosines and the
ratio of the smallest to the largest nonzero singular value of the centred class-mean matrix
(1 for an ETF, near 0 when the means are nearly low-rank); NC3 = ||W/||W|| - M/||M|| ||_F^2; NC4
= the fraction of training (and test) examples where the nearest class mean and the network
disagree. Class means are centred by their average.

Claims (medians over seeds, MSE run):
- NC1 falls at least 20x from initialisation and ends below 0.05 (within-class spread under 5%
  of the between-class spread along the class-mean directions), and it never rises between
  checkpoints;
- the class means approach an ETF: pairwise-cosine std at most 0.12 (about 0.25 at
  initialisation) and singular-value ratio at least 0.5 (about 0.27 at initialisation); their
  norms are more equal than under cross-entropy (CV at most 0.6x CE's);
- the classifier aligns with the class means: NC3 falls at least 10x;
- the network decides like the nearest class centre: NC4 at most 0.5% of the training and 1% of
  the test examples;
- collapse deepens with depth: the end NC1 of the three hidden layers strictly decreases.
Contrast (gating): with cross-entropy the same net does not collapse, its end NC1 is at least
5x the MSE one, and its class means are far from an ETF (singular-value ratio at most half the
MSE one): the class-mean matrix becomes nearly rank-deficient, consistent with the low-rank bias
of deep weight-decayed nets (Sukenik et al. 2024), not with an ETF.

Not reproduced: neural collapse with cross-entropy in this MLP. Its NC1 drops early and then
stays or rises during the terminal phase (the claim "cross-entropy NC1 falls 20x" is reported,
not gating). With MSE and weight decay 1-2 training digits may stay misclassified, so the formal
terminal phase (zero training error) need not start: the claims use the trajectory and the end
values, not "after the zero-error epoch".
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from learnscope.analysis import Claim, LinePlot, Lines, Results, Table
from learnscope.analysis.claims import all_of, at_least, at_most, monotone, ratio
from learnscope.config import StudyConfig, param
from learnscope.data import digits
from learnscope.errors import ConfigError
from learnscope.measures.neural_collapse import collapse_metrics, nc1
from learnscope.models import mlp
from learnscope.store.records import Record
from learnscope.studies import register
from learnscope.studies.base import Part, Study, Trial, TrialOutput, part
from learnscope.train.stacked import ModelStack, make_stack

LOSS_NAMES = {"mse": "MSE", "ce": "cross-entropy"}
METRICS = ("nc1", "equinorm", "cos_std", "cos_etf_gap", "sv_ratio", "self_duality",
           "ncc_train", "ncc_test")


@dataclasses.dataclass(frozen=True)
class NeuralCollapseConfig(StudyConfig):
    seeds: int = param(3, "seeds per loss, trained as one stack; claims use medians", ge=1)
    losses: tuple[str, ...] = param(("mse", "ce"), "losses compared (MSE to one-hot targets, "
                                    "cross-entropy)", choices=("mse", "ce"), min_len=1)
    n_train: int = param(1000, "training digits (the rest of the 1797 are the test set)",
                         ge=100, le=1700)
    hidden: int = param(256, "width of every hidden layer", ge=16)
    depth: int = param(3, "number of hidden layers", ge=2, le=6)
    steps: int = param(3000, "SGD steps", ge=20)
    lr: float = param(0.05, "initial SGD learning rate (momentum 0.9)", gt=0)
    weight_decay: float = param(5e-3, "L2 weight decay", ge=0)
    batch_size: int = param(100, "minibatch size", ge=1)
    lr_drops: tuple[float, ...] = param((1 / 3, 2 / 3), "fractions of the run after which the "
                                        "learning rate is divided by 10", gt=0, lt=1)
    checkpoints: tuple[int, ...] = param(
        (0, 50, 100, 200, 400, 800, 1600), "steps at which the NC metrics are measured (those "
        "at or beyond the last step are skipped; the last step is always measured)", ge=0,
        min_len=2)

    def check(self) -> None:
        if "mse" not in self.losses:
            raise ConfigError("field 'losses' must contain 'mse' (the gated run)")
        if 0 not in self.checkpoints:
            raise ConfigError("field 'checkpoints' must contain 0 (the initial state)")


@register
class NeuralCollapse(Study[NeuralCollapseConfig]):
    name = "neural-collapse"
    title = "Neural collapse in the terminal phase of training"
    summary = ("Under MSE, last-layer features collapse to their class means, which form a "
               "simplex ETF matched by the classifier; cross-entropy does not collapse here.")
    source = ("Papyan, Han & Donoho 2020, Prevalence of neural collapse during the terminal "
              "phase of deep learning training; Han, Papyan & Donoho 2022, Neural collapse "
              "under MSE loss")
    Config = NeuralCollapseConfig
    quick = {"seeds": 1}

    tiny = {"hidden": 32, "n_train": 200, "steps": 40, "checkpoints": [0, 10, 20]}

    def parts(self, cfg: NeuralCollapseConfig) -> list[Part]:
        return [part("train", train_stack, batch_by=["loss"], loss=list(cfg.losses),
                     seed=cfg.seed_list())]

    def neighbours(self, cfg: NeuralCollapseConfig) -> dict[str, dict[str, Any]]:
        return super().neighbours(cfg) | {
            "narrower": {"hidden": cfg.hidden // 2, "seed": cfg.seed + 3},
            "fewer images": {"n_train": int(cfg.n_train * 0.6), "seed": cfg.seed + 5},
            "shorter run": {"steps": cfg.steps * 2 // 3, "seed": cfg.seed + 7},
            "weaker decay": {"weight_decay": cfg.weight_decay / 2, "seed": cfg.seed + 9},
        }

    def claims(self, cfg: NeuralCollapseConfig, results: Results) -> list[Claim]:
        mse = results.where(part="train", loss="mse")
        ce = results.where(part="train", loss="ce")
        start = mse.median("nc1", "first")
        end = mse.median("nc1")
        claims = [
            all_of("mse-nc1-collapses", "with MSE, within-class variability of the penultimate "
                   "training features collapses: NC1 falls at least 20x from initialisation and "
                   "ends below 0.05", {
                       "nc1_end_over_start": (end / start, at_most(0.05)),
                       "nc1_end": (end, at_most(0.05))},
                   extra={"nc1_start": start}),
            monotone("mse-nc1-never-rises", "with MSE, NC1 does not rise between checkpoints "
                     "(median over seeds)", mse.over_time("nc1"), strict=False),
            all_of("mse-simplex-etf", "with MSE, the centred class means approach a simplex "
                   "ETF: pairwise-cosine std at most 0.12 and smallest/largest singular value "
                   "at least 0.5", {
                       "cos_std_end": (mse.median("cos_std"), at_most(0.12)),
                       "sv_ratio_end": (mse.median("sv_ratio"), at_least(0.5))},
                   extra={"cos_std_start": mse.median("cos_std", "first"),
                          "sv_ratio_start": mse.median("sv_ratio", "first"),
                          "cos_etf_gap_end": mse.median("cos_etf_gap")}),
            ratio("mse-self-duality", "with MSE, the classifier rows align with the centred "
                  "class means (NC3 falls at least 10x from initialisation)",
                  "nc3_end_over_start", mse.median("self_duality"),
                  mse.median("self_duality", "first"), at_most(0.1),
                  names=("nc3_end", "nc3_start")),
            all_of("mse-nearest-class-centre", "with MSE, the network decides like the nearest "
                   "training class mean (NC4): they disagree on at most 0.5% of the training "
                   "and 1% of the test examples", {
                       "ncc_disagreement_train": (mse.median("ncc_train"), at_most(0.005)),
                       "ncc_disagreement_test": (mse.median("ncc_test"), at_most(0.01))}),
            monotone("mse-collapse-deepens-with-depth", "with MSE, the end NC1 strictly "
                     "decreases from the first hidden layer to the last",
                     mse.curve("layer_nc1", "layer")),
        ]
        if len(ce):
            ce_end = ce.median("nc1")
            claims += [
                ratio("mse-equinorm-vs-ce", "with MSE the centred class means are more equally "
                      "long than with cross-entropy (CV of their norms at most 0.6x CE's)",
                      "equinorm_mse_over_ce", mse.median("equinorm"), ce.median("equinorm"),
                      at_most(0.6), names=("equinorm_mse", "equinorm_ce")),
                all_of("ce-contrast", "with cross-entropy the same net does not collapse: its "
                       "end NC1 is at least 5x the MSE one and its class means are far from an "
                       "ETF (singular-value ratio at most half the MSE one)", {
                           "nc1_ce_over_mse": (ce_end / end, at_least(5.0)),
                           "sv_ratio_ce_over_mse": (ce.median("sv_ratio") / mse.median(
                               "sv_ratio"), at_most(0.5))},
                       extra={"nc1_ce_end": ce_end, "nc1_ce_min": ce.median("nc1", "min"),
                              "sv_ratio_ce_end": ce.median("sv_ratio")}),
                ratio("ce-nc1-collapses", "with cross-entropy NC1 also falls at least 20x (not "
                      "reproduced in this MLP: NC1 drops early, then stays or rises while the "
                      "class means become nearly low-rank; reported, not gating)",
                      "nc1_end_over_start", ce_end, ce.median("nc1", "first"), at_most(0.05),
                      names=("nc1_end", "nc1_start"), gating=False,
                      extra={"nc1_min": ce.median("nc1", "min")}),
            ]
        return claims

    def figures(self, cfg: NeuralCollapseConfig) -> list[LinePlot]:
        by_loss = (Lines({"loss": "mse"}, label="MSE"),
                   Lines({"loss": "ce"}, label="cross-entropy", dash="dash"))

        def metric_lines(*keys: tuple[str, str]) -> tuple[Lines, ...]:
            return tuple(Lines({"loss": loss}, key=key, label=f"{name}, {LOSS_NAMES[loss]}",
                               dash=None if loss == "mse" else "dash")
                         for key, name in keys for loss in cfg.losses)

        return [
            LinePlot("NC1 of the penultimate training features over training", "step", by_loss,
                     key="nc1", x_title="training step", y_title="NC1 = tr(S_W S_B^+)/C",
                     log_x=True, log_y=True,
                     caption="Lower is more collapsed: under MSE NC1 keeps falling to a few "
                             "percent; under cross-entropy it stalls an order of magnitude "
                             "higher (step 0 lies off the log axis: see the table)."),
            LinePlot("How close the class means are to a simplex ETF (NC2)", "step",
                     metric_lines(("cos_std", "cosine std"), ("equinorm", "norm CV"),
                                  ("sv_ratio", "sv ratio")),
                     x_title="training step", y_title="metric value (ETF: 0, 0, 1)", log_x=True,
                     caption="An ETF has cosine std 0, norm CV 0 and singular-value ratio 1; "
                             "MSE moves towards it, cross-entropy's ratio falls towards 0 "
                             "(nearly low-rank class means)."),
            LinePlot("Classifier vs class means: self-duality (NC3) and nearest-centre "
                     "disagreement (NC4)", "step",
                     metric_lines(("self_duality", "NC3"), ("ncc_train", "NC4 train"),
                                  ("ncc_test", "NC4 test")),
                     x_title="training step", y_title="NC3 distance / fraction of examples",
                     log_x=True,
                     caption="Both fall towards 0 for both losses: they do not tell the losses "
                             "apart."),
            LinePlot("End NC1 of every hidden layer", "layer", by_loss, key="layer_nc1",
                     x_title="hidden layer (1 = closest to the input)", y_title="NC1 at the end",
                     log_y=True,
                     caption="Under MSE collapse deepens layer by layer; under cross-entropy "
                             "there is no such order."),
        ]

    def tables(self, cfg: NeuralCollapseConfig, results: Results) -> list[Table]:
        rows = []
        for loss in cfg.losses:
            sub = results.where(part="train", loss=loss)
            for stat, when in (("first", "start"), ("final", "end")):
                rows.append([LOSS_NAMES[loss], when, sub.median("train_acc", stat),
                             sub.median("test_acc", stat)]
                            + [sub.median(m, stat) for m in METRICS])
        return [Table("NC metrics of the penultimate training features at the start and the "
                      "end of training (medians over seeds)",
                      ["loss", "when", "train acc", "test acc", "NC1", "norm CV", "cos std",
                       "mean |cos + 1/(C-1)|", "sv ratio", "NC3", "NC4 train", "NC4 test"],
                      rows)]


def _lr_factor(cfg: NeuralCollapseConfig) -> Any:
    drops = sorted(round(f * cfg.steps) for f in cfg.lr_drops)

    def factor(step: int) -> float:
        return 0.1 ** sum(step >= d for d in drops)

    return factor


def _hidden_features(net: nn.Sequential, x: torch.Tensor) -> tuple[list[torch.Tensor],
                                                                   torch.Tensor]:
    """Every hidden layer's post-activation features and the logits."""
    feats = []
    h = x
    for module in net:
        h = module(h)
        if not isinstance(module, nn.Linear):
            feats.append(h)
    return feats, h


def train_stack(cfg: NeuralCollapseConfig, trials: list[Trial]) -> list[TrialOutput]:
    """One loss, every seed as one stack; NC metrics of every model at the checkpoints."""
    loss = trials[0].loss
    data = digits(cfg.n_train, seed=cfg.seed)
    c = data.n_classes
    sizes = [data.n_features] + [cfg.hidden] * cfg.depth + [c]
    if loss == "mse":
        targets = nn.functional.one_hot(data.y_train, c).float()
        # the stack's MSE averages over outputs too; weight c makes it a sum over the outputs
        extra: dict[str, Any] = {"y_train": targets,
                                 "loss_weights": torch.full((len(trials), c), float(c))}
    else:
        extra = {"y_train": data.y_train, "x_test": data.x_test, "y_test": data.y_test}
    stack = make_stack(lambda seed: mlp(sizes, seed=seed), seeds=[t.seed for t in trials],
                       loss=loss, optimizer="sgd", lr=cfg.lr, momentum=0.9,
                       weight_decay=cfg.weight_decay, batch_size=cfg.batch_size,
                       x_train=data.x_train, lr_schedule=_lr_factor(cfg), device=cfg.device,
                       **extra)
    twins = [stack.export(k).cpu().float() for k in range(stack.K)]
    records: list[list[Record]] = [[] for _ in trials]
    checkpoints = {s for s in cfg.checkpoints if s < cfg.steps} | {cfg.steps}

    @torch.no_grad()
    def measure(step: int, s: ModelStack) -> None:
        if step not in checkpoints:
            return
        for k, twin in enumerate(twins):
            s.load_into(k, twin)
            feats, logits = _hidden_features(twin, data.x_train)
            test_feats, test_logits = _hidden_features(twin, data.x_test)
            m = collapse_metrics(feats[-1], data.y_train, c, weight=twin[-1].weight,
                                 logits=logits, test_features=test_feats[-1],
                                 test_logits=test_logits)
            recs = [Record(key, value, step, "collapse") for key, value in m.as_dict().items()]
            recs += [Record("layer_nc1", nc1(f, data.y_train, c), step, "collapse",
                            {"layer": i + 1}) for i, f in enumerate(feats)]
            recs += [Record("train_acc", float((logits.argmax(1) == data.y_train).float()
                                               .mean()), step, "collapse"),
                     Record("test_acc", float((test_logits.argmax(1) == data.y_test).float()
                                              .mean()), step, "collapse")]
            records[k] += recs

    measure(0, stack)
    stack.train(steps=cfg.steps, eval_every=cfg.steps, on_step=measure)
    return [TrialOutput(recs, "diverged" if history.diverged else "finished")
            for recs, history in zip(records, stack.histories, strict=True)]
