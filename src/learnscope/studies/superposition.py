"""Toy models of superposition (Elhage et al. 2022, "Toy models of superposition") and their
finite-data twin (Henighan et al. 2023, "Superposition, memorization, and double descent").

A network can represent more features than it has dimensions when the features are sparse: it
stores them in *superposition*, as nearly orthogonal directions that interfere a little, and
uses a ReLU to filter the interference out. The toy model maps n features through m < n hidden
dimensions and back, x' = ReLU(W^T W x + b), trained to reconstruct inputs whose features are
present with probability 1 - S (then uniform on [0, 1]) under an importance-weighted squared
error (importance r^i). Dense inputs (S = 0) give PCA: exactly the m most important features,
orthogonal, each with a dimension of its own. As the sparsity S grows, more features are
packed in, in geometric arrangements whose *feature dimensionality*
D_i = ||W_i||^2 / sum_j (W_i_hat . W_j)^2 sticks at simple fractions: 1 (a dimension of its
own), 1/2 (an antipodal pair), 2/5 (a pentagon), ...

With a finite training set of T points (Henighan et al.), small T stores the *data points*
themselves in superposition (the hidden vectors of the T points form a polygon: dimensionality
m / T each), large T stores the *features*; in between, test loss peaks: data double descent.

Setup: every sparsity and seed trains as ONE stack of toy models (AdamW); a feature counts as
represented when ||W_i|| > 0.5. The finite-data part trains one stack per T (all seeds) on
unit-norm points with equal importance, full batch, AdamW with warm-up and cosine decay, and
keeps the mean number of active features per point near 10 as in the paper (with about one
active feature per point there is no bump).

Claims: dense inputs give exactly m orthogonal features; a feature the model does not represent
outputs its mean, (1 - S) / 2 (closed form); more than m features are represented at every
sparsity from 0.7 on, the count never falls as S grows to 0.99 and reaches 1.5 m there; antipodal
pairs (D = 1/2) appear at intermediate sparsity; the dimensions per feature m / ||W||_F^2 fall
from 1. Finite data: the smallest training set is memorised as a polygon of data points, the
largest is stored as features and generalises, and test loss peaks in between. The densest
point S = 0.999 needs far more steps and is reported, not gated.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from learnscope.analysis import Claim, Heatmap, LinePlot, Lines, Results, Scatter
from learnscope.analysis.claims import (
    above,
    all_of,
    at_least,
    at_most,
    below,
    between,
    claim,
    monotone,
)
from learnscope.config import StudyConfig, param
from learnscope.data.sparse_features import (
    feature_importance,
    sparse_feature_batch,
    sparse_feature_set,
)
from learnscope.errors import ConfigError
from learnscope.measures.superposition import feature_dimensionality, superposition_summary
from learnscope.models import ToyReLUAutoencoder
from learnscope.seeding import torch_generator
from learnscope.store.records import Record
from learnscope.studies import register
from learnscope.studies.base import Part, Study, Trial, TrialOutput, part
from learnscope.train.stacked import make_stack

THRESHOLD = 0.5  # a feature (or data point) with a hidden norm above this is represented
DENSITY = "feature density 1 - S (sparser to the left)"


@dataclasses.dataclass(frozen=True)
class SuperpositionConfig(StudyConfig):
    seeds: int = param(5, "seeds of every sparsity (all train as one stack)", ge=1)
    n_features: int = param(20, "features n", ge=2)
    m_hidden: int = param(5, "hidden dimensions m (< n)", ge=1)
    sparsities: tuple[float, ...] = param((0.0, 0.7, 0.9, 0.97, 0.99, 0.999),
                                          "feature sparsities S (0 must be one)", ge=0, lt=1,
                                          min_len=3)
    importance_decays: tuple[float, ...] = param((0.7,), "importance ratios r (I_i = r^i)",
                                                 gt=0, le=1, min_len=1)
    batch_size: int = param(1024, "fresh sparse inputs per step", ge=1)
    lr: float = param(1e-3, "AdamW learning rate", gt=0)
    weight_decay: float = param(1e-2, "AdamW weight decay", ge=0)
    steps: int = param(10000, "training steps", ge=1)
    fin_seeds: int = param(5, "seeds of the finite-data part (0: skip it)", ge=0)
    fin_n_features: int = param(200, "features of the finite-data part", ge=2)
    fin_m_hidden: int = param(2, "hidden dimensions of the finite-data part", ge=1)
    fin_sparsity: float = param(0.95, "sparsity of the finite-data part", ge=0, lt=1)
    fin_train_sizes: tuple[int, ...] = param((5, 10, 20, 30, 50, 70, 100, 150, 200, 400),
                                             "training-set sizes T", ge=1, min_len=3)
    fin_lr: float = param(3e-3, "peak AdamW learning rate (5% warm-up, cosine decay)", gt=0)
    fin_steps: int = param(4000, "full-batch steps per T", ge=1)
    fin_n_test: int = param(2000, "test points", ge=10)

    def check(self) -> None:
        if self.m_hidden >= self.n_features or self.fin_m_hidden >= self.fin_n_features:
            raise ConfigError("fields 'm_hidden' and 'fin_m_hidden' must be below the numbers "
                              "of features")
        if 0.0 not in self.sparsities:
            raise ConfigError("field 'sparsities' must contain 0 (dense inputs)")


@register
class Superposition(Study[SuperpositionConfig]):
    name = "superposition"
    title = "Toy models of superposition"
    summary = "Sparse features are packed into fewer dimensions as antipodal pairs, pentagons..."
    source = "Elhage et al. 2022 (Toy models of superposition); Henighan et al. 2023"
    Config = SuperpositionConfig
    quick = {"seeds": 3, "batch_size": 256, "lr": 3e-3, "steps": 3000, "fin_seeds": 3,
             "fin_n_features": 100, "fin_sparsity": 0.9,
             "fin_train_sizes": [5, 15, 25, 35, 50, 100, 200], "fin_steps": 5000}
    tiny = {"seeds": 1, "steps": 50, "fin_seeds": 1, "fin_steps": 30, "fin_n_test": 50,
            "fin_train_sizes": [5, 20, 50]}

    def parts(self, cfg: SuperpositionConfig) -> list[Part]:
        seeds = cfg.seed_list()
        parts = [part("sparsity", train_sparsities, batch_by=[], decay=cfg.importance_decays,
                      density=[_density(s) for s in sorted(cfg.sparsities)], seed=seeds)]
        if cfg.fin_seeds:
            parts.append(part("finite", train_finite, batch_by=["T"], T=sorted(cfg.fin_train_sizes),
                              seed=[cfg.seed + s for s in range(cfg.fin_seeds)]))
        return parts

    def neighbours(self, cfg: SuperpositionConfig) -> dict[str, dict[str, Any]]:
        return super().neighbours(cfg) | {
            "twice the size": {"n_features": 2 * cfg.n_features, "m_hidden": 2 * cfg.m_hidden},
            "half the size": {"n_features": cfg.n_features // 2,
                              "m_hidden": max(1, (cfg.m_hidden + 1) // 2)},
            "slower importance decay": {"importance_decays": [0.8], "seed": cfg.seed + 3},
            "faster importance decay": {"importance_decays": [0.6]},
            "finite data: n x2, sparser": {
                "fin_n_features": 2 * cfg.fin_n_features,
                "fin_sparsity": 1 - (1 - cfg.fin_sparsity) / 2,  # as many active features
                "fin_train_sizes": sorted({min(cfg.fin_train_sizes)}
                                          | {2 * t for t in cfg.fin_train_sizes})},
        }

    def claims(self, cfg: SuperpositionConfig, results: Results) -> list[Claim]:
        m = cfg.m_hidden
        sp = results.where(part="sparsity", decay=cfg.importance_decays[0])
        dense = sp.where(density=1.0)
        count = sp.curve("n_represented", "density")  # x = 1 - S ascending: S descending
        up_to = count.between(lo=0.01)  # S <= 0.99
        mid = [d for d in count.x if 0.02 <= d <= 0.5]  # S in [0.5, 0.98]
        pairs = sp.curve("antipodal_pairs", "density")
        dpf = sp.curve("dims_per_feature", "density")
        claims = [
            all_of("dense-is-pca", f"dense inputs (S=0): exactly m={m} features are represented, "
                   "each with a dimension of its own, without interference (every seed)",
                   {"seeds_with_m_features": (int(np.sum(dense.values("n_represented") == m)),
                                              at_least(len(dense))),
                    "min_dimensionality": (np.min(dense.values("min_dimensionality")),
                                           above(0.9)),
                    "max_interference": (np.max(dense.values("max_interference")),
                                         at_most(0.05))}),
            claim("unrepresented-output-their-mean", "a feature the model does not represent "
                  "outputs its mean: bias = (1 - S) / 2 (largest deviation over models with "
                  "S <= 0.9)", "max_bias_deviation",
                  np.nanmax(sp.where(density=[d for d in count.x if d >= 0.1])
                            .values("unrepresented_bias_deviation")), at_most(0.02)),
            claim("superposition-beyond-m", f"more than m={m} features are represented at "
                  "every sparsity from 0.7 on (median over seeds)", "fewest_represented",
                  min(count.between(hi=0.3).y), above(m)),
            monotone("count-grows-with-sparsity", "the number of represented features never "
                     "falls as the sparsity grows (up to S=0.99; median over seeds; x is the "
                     "density 1 - S)", up_to, increasing=False, strict=False),
            claim("many-features-at-high-sparsity", "at the highest sparsity up to 0.99 the "
                  "model represents at least 1.5 m features", "represented_over_m",
                  up_to.first / m, at_least(1.5), extra={"sparsity": 1 - up_to.x[0]}),
            claim("antipodal-pairs", "at intermediate sparsity, features pair up antipodally: "
                  "at least 2 represented features with |D_i - 1/2| < 0.05 (median over seeds, "
                  "best sparsity in [0.5, 0.98])", "pairs",
                  max((pairs[s] for s in mid), default=math.nan), at_least(2)),
            all_of("dims-per-feature-fall", "dimensions per feature m / ||W||_F^2: 1 for dense "
                   "inputs, well below 1 at high sparsity",
                   {"at_dense": (dpf.last, between(0.95, 1.05)),
                    "at_highest_up_to_0_99": (dpf.between(lo=0.01).first,
                                              at_most(0.75))}),
        ]
        if count.x[0] < 0.01:
            claims.append(claim(
                "count-at-extreme-sparsity", f"at S={1 - count.x[0]:g} still more than 1.5 m "
                "features (not gating: this point needs far more steps)", "represented_over_m",
                count.first / m, at_least(1.5), gating=False))
        return claims + finite_claims(cfg, results.where(part="finite"))

    def figures(self, cfg: SuperpositionConfig) -> list[LinePlot | Heatmap | Scatter]:
        m = cfg.m_hidden
        first = {"part": "sparsity", "seed": cfg.seed, "decay": cfg.importance_decays[0]}
        figures: list[LinePlot | Heatmap | Scatter] = [
            LinePlot(f"Represented features (||W_i|| > {THRESHOLD}) vs feature density, n="
                     f"{cfg.n_features}, m={m}", "density",
                     (Lines({"part": "sparsity"}, group="decay", label="importance {decay}^i"),),
                     key="n_represented", x_title=DENSITY, y_title="features represented",
                     hlines=((m, f"m = {m}"),), log_x=True,
                     caption="Above the line, the model holds more features than dimensions."),
            Scatter("Feature dimensionality D_i of each represented feature", "dimensionality",
                    "density", where=first | {"represented": True}, log_x=True,
                    x_title=DENSITY, y_title="D_i",
                    hlines=((1, "1"), (0.5, "1/2"), (0.4, "2/5"), (1 / 3, "1/3")),
                    caption="Dimensionalities stick at simple fractions: a dimension of its own, "
                            "an antipodal pair, a pentagon... (first seed)."),
            LinePlot("Dimensions per feature m / ||W||_F^2", "density",
                     (Lines({"part": "sparsity"}, group="decay", label="importance {decay}^i"),),
                     key="dims_per_feature", x_title=DENSITY, y_title="m / ||W||_F^2",
                     log_x=True),
        ]
        for s in sorted(cfg.sparsities)[::2]:
            figures.append(Heatmap(f"W^T W at S={s:g} (first seed): diagonal = ||W_i||^2, "
                                   "off-diagonal = interference", "wtw", rows="i", cols="j",
                                   where=first | {"density": _density(s)}, x_title="feature j",
                                   y_title="feature i", colorbar="W^T W"))
        return figures + finite_figures(cfg)


# -- infinite data: every sparsity and seed as one stack ----------------------------------------

def _density(sparsity: float) -> float:
    """The fraction 1 - S of inputs in which a feature is present (the figures' log axis)."""
    return round(1.0 - sparsity, 12)


def train_sparsities(cfg: SuperpositionConfig, trials: list[Trial]) -> list[TrialOutput]:
    n, m = cfg.n_features, cfg.m_hidden
    sparsity = torch.tensor([1.0 - t.density for t in trials], dtype=torch.float64)
    importance = feature_importance(n, torch.tensor([t.decay for t in trials]))
    by_seed: dict[int, list[int]] = {}
    for k, t in enumerate(trials):
        by_seed.setdefault(t.seed, []).append(k)
    order = torch.tensor([k for ks in by_seed.values() for k in ks]).argsort()
    gens = {s: torch_generator(s, "superposition-data") for s in by_seed}

    def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        # common random numbers across the sparsities of one seed: K times fewer draws, and
        # each model's inputs are still exactly distributed as its sparsity says
        x = torch.cat([sparse_feature_batch(cfg.batch_size, n, sparsity[ks], generator=gens[s],
                                            coupled=True) for s, ks in by_seed.items()])[order]
        return x, x

    stack = make_stack([ToyReLUAutoencoder(n, m, seed=t.seed) for t in trials],
                       seeds=[t.seed for t in trials], loss="mse", optimizer="adamw", lr=cfg.lr,
                       weight_decay=cfg.weight_decay, batch_fn=batch, loss_weights=importance,
                       device=cfg.device)
    stack.train(steps=cfg.steps)
    return [_summarise(cfg, t, stack.export(k), stack.histories[k].diverged)
            for k, t in enumerate(trials)]


def _summarise(cfg: SuperpositionConfig, trial: Trial, model: ToyReLUAutoencoder,
               diverged: bool) -> TrialOutput:
    W = model.W.detach().double().cpu()
    b = model.b.detach().double().cpu().numpy()
    s = superposition_summary(W)
    rep = s.norms > THRESHOLD
    D = s.dimensionality
    recs = [Record("n_represented", s.n_represented), Record("dims_per_feature",
                                                             s.dims_per_feature),
            Record("min_dimensionality", float(D[rep].min()) if rep.any() else math.nan),
            Record("max_interference", float(s.interference[rep].max()) if rep.any() else 0.0),
            Record("antipodal_pairs", float(np.sum(np.abs(D[rep] - 0.5) < 0.05))),
            Record("unrepresented_bias_deviation", abs(float(b[~rep].mean()) - trial.density / 2)
                   if (~rep).any() else math.nan)]
    recs += [Record(key, float(v), meta={"feature": i, "represented": bool(rep[i])})
             for i in range(len(rep)) for key, v in (("norm", s.norms[i]),
                                                     ("dimensionality", D[i]), ("bias", b[i]))]
    if trial.seed == cfg.seed:  # the interference matrix of the first seed, for the heat maps
        wtw = (W.T @ W).numpy()
        recs += [Record("wtw", float(wtw[i, j]), meta={"i": i, "j": j})
                 for i in range(len(wtw)) for j in range(len(wtw))]
    return TrialOutput(recs, "diverged" if diverged else "finished")


# -- finite data: one stack per training-set size ------------------------------------------------

def train_finite(cfg: SuperpositionConfig, trials: list[Trial]) -> list[TrialOutput]:
    n, m, S, T = cfg.fin_n_features, cfg.fin_m_hidden, cfg.fin_sparsity, trials[0].T
    x = torch.stack([sparse_feature_set(T, n, S, seed=t.seed, unit_norm=True) for t in trials])
    x_test = torch.stack([sparse_feature_set(cfg.fin_n_test, n, S, seed=t.seed, split="test",
                                             unit_norm=True) for t in trials])
    warm = max(1, cfg.fin_steps // 20)

    def schedule(step: int) -> float:  # 5% linear warm-up, then cosine decay to 0
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, cfg.fin_steps - warm)))

    stack = make_stack([ToyReLUAutoencoder(n, m, seed=t.seed) for t in trials],
                       seeds=[t.seed for t in trials], loss="mse", optimizer="adamw",
                       lr=cfg.fin_lr, weight_decay=cfg.weight_decay,
                       batch_fn=lambda step: (x, x), lr_schedule=schedule, device=cfg.device)
    stack.train(steps=cfg.fin_steps)
    outputs = []
    for k in range(len(trials)):
        model = stack.export(k).double().cpu()
        with torch.no_grad():
            xk, tk = x[k].double(), x_test[k].double()
            hidden = model.hidden(xk)
            recs = [Record("train_loss", float(((model(xk) - xk) ** 2).sum(-1).mean())),
                    Record("test_loss", float(((model(tk) - tk) ** 2).sum(-1).mean())),
                    Record("zero_loss", float((tk ** 2).sum(-1).mean())),
                    Record("points_stored", float((hidden.norm(dim=1) > THRESHOLD)
                                                  .double().mean())),
                    Record("features_represented", float((model.W.norm(dim=0) > THRESHOLD)
                                                         .sum())),
                    Record("point_dimensionality", float(np.median(
                        feature_dimensionality(hidden.T)))),
                    Record("m_over_T", m / T)]
        outputs.append(TrialOutput(recs, "diverged" if stack.histories[k].diverged
                                   else "finished"))
    return outputs


def finite_claims(cfg: SuperpositionConfig, results: Results) -> list[Claim]:
    if not len(results):
        return []
    m = cfg.fin_m_hidden
    t_min, t_max = results.axis("T")[0], results.axis("T")[-1]
    small, large = results.where(T=t_min), results.where(T=t_max)
    test = results.curve("test_loss", "T")
    interior = max(test.y[1:-1])
    return [
        all_of("finite-small-T-memorises", f"with T={t_min:g} training points every point gets "
               "a hidden vector of its own (norm > 0.5) and the training loss is far below the "
               "test loss (median over seeds)",
               {"points_stored": (small.median("points_stored"), at_least(1.0)),
                "train_over_test": (small.median("train_loss") / small.median("test_loss"),
                                    below(0.3))}),
        claim("finite-data-polygon", f"at T={t_min:g} the data points form a polygon: their "
              f"median dimensionality is m/T = {m / t_min:.2g} (within 0.1)",
              "point_dimensionality_minus_m_over_T",
              abs(small.median("point_dimensionality") - m / t_min), at_most(0.1),
              extra={"point_dimensionality": small.median("point_dimensionality")}),
        all_of("finite-large-T-stores-features", f"with T={t_max:g} training points the model "
               "stores features, not points, and generalises (median over seeds)",
               {"test_over_zero_loss": (large.median("test_loss") / large.median("zero_loss"),
                                        below(0.98)),
                "features_over_m": (large.median("features_represented") / m,
                                    above(1) & at_most(4)),
                "points_stored": (large.median("points_stored"), below(0.3))}),
        all_of("data-double-descent", "test loss peaks at an intermediate number of training "
               "points: above both ends by more than 0.05 and above the loss of predicting zero "
               "(median over seeds)",
               {"peak_minus_ends": (interior - max(test.first, test.last), above(0.05)),
                "peak_over_zero_loss": (interior / results.median("zero_loss"), above(1.0))},
               extra={"peak_T": test.argmax()}),
    ]


def finite_figures(cfg: SuperpositionConfig) -> list[LinePlot]:
    if not cfg.fin_seeds:
        return []
    where = {"part": "finite"}
    return [
        LinePlot(f"Data double descent: test loss vs training-set size (n={cfg.fin_n_features},"
                 f" m={cfg.fin_m_hidden}, S={cfg.fin_sparsity:g})", "T",
                 (Lines(where, key="test_loss", label="test loss"),
                  Lines(where, key="train_loss", label="train loss", dash="dot"),
                  Lines(where, key="zero_loss", label="predicting zero", dash="dash",
                        band=False)),
                 x_title="training points T", y_title="squared error per point", log_x=True,
                 caption="Few points are memorised, many teach the features; in between the "
                         "model does neither well."),
        LinePlot("What is stored: data points or features", "T",
                 (Lines(where, key="points_stored", label="fraction of training points with a "
                        "hidden vector (norm > 0.5)"),
                  Lines(where, key="point_dimensionality", label="median dimensionality of a "
                        "data point", dash="dot")),
                 x_title="training points T", y_title="fraction", log_x=True),
    ]
