"""Simplicity bias and its pitfalls (Shah, Tamuly, Raghunathan, Jain & Netrapalli 2020, "The
pitfalls of simplicity bias in neural networks").

When several features each predict the label perfectly, a network trained by SGD may rely on the
simplest one alone. On "LMS-5" data (one linear coordinate and many 5-slab coordinates, each
fully predictive on its own) an MLP relies exclusively on the linear coordinate: shuffling that
coordinate across the test examples drops its accuracy to chance, while shuffling every slab
coordinate changes (almost) nothing. The slabs are not unlearnable: the same network trained
with the linear coordinate removed learns them. So a network that generalises perfectly can be
fragile to a change of a single input coordinate, and a small margin on the simple feature
decides what it learns.

Data: labels 0/1; coordinate 0 is ``(2y - 1) * U(margin, 1)`` (margin 0.1 by default);
coordinates 1..d-1 (d = 50) are k-slab: ``[-1, 1]`` cut into k = 5 equal slabs of alternating
class, a value drawn inside a slab of its class at least half the slab gap (0.1) away from its
edges (no threshold on one slab coordinate separates the classes). Model: an MLP d-100-100-2
(ReLU), SGD with momentum 0.9, learning rate 0.1, minibatches of 100, a fixed number of epochs,
one model per seed (each seed draws its own data). Condition "lms" trains on the data as is,
"slab-only" on the same data with coordinate 0 set to 0.

Measurements go through the simplicity probe during training, on three versions of the held-out
test set: as is, with the linear coordinate shuffled across examples ("linear shuffled", Shah et
al.'s S-randomised set) and with every slab coordinate shuffled ("slabs shuffled",
S^c-randomised). Besides accuracy, the probe reports the agreement P(F = L) of the network's
prediction F with the *linear rule* L = [x0 > 0] read off the (possibly shuffled) linear
coordinate: on the linear-shuffled set a network that follows x0 agrees with L although L is
then right only half of the time.

Stripes (the 2-D picture): the same experiment with one linear and one 5-slab coordinate and a
small MLP 2-32-32-2. The report shows the training points (vertical split for the linear
coordinate, horizontal stripes for the slabs), the first-layer units' weight vectors before and
after training (each unit's direction in the input plane) and the trained network's probability
of class 1 over a grid of the input square: the decision boundary is the line x0 = 0, the stripes
are ignored.

Claims (medians over seeds): the LMS network reaches at least 99% test accuracy; with the linear
coordinate shuffled its accuracy is at chance (within 4 binomial standard errors of 1/2 on the
test set) and it still agrees with the linear rule on at least 95% of the examples; shuffling
the slabs costs less than a tenth of what shuffling the linear coordinate costs; the slab-only
control reaches at least 95% (the slabs are learnable) and falls to chance when its slabs are
shuffled; in 2-D, shuffling the linear coordinate also drops accuracy to chance. Not gating:
the 2-D decision boundary agrees with the linear rule on at least 90% of the input square, and
training concentrates the first layer's weights on the linear coordinate (its share of the
squared weight norm grows from its share at initialisation).

Where it stops: the claims are about slabs that are harder than a threshold. With 3-slab
coordinates instead of 5 (quick size, one seed, measured) the network uses both kinds of
feature: shuffling the linear coordinate leaves 73% accuracy and shuffling the slabs leaves 77%,
so the linear-shuffled and slabs-shuffled claims fail there. What is "simplest" is relative to
the other features (Shah et al. vary the slab count for the same reason); a 3-slab run is a
different regime, not a neighbour of this one.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

from learnscope.analysis import Claim, Heatmap, LinePlot, Lines, Results, Scatter, Table
from learnscope.analysis.claims import above, all_of, at_least, below, between, claim, ratio
from learnscope.config import StudyConfig, param
from learnscope.data.classification import ClassificationData
from learnscope.data.slabs import lms_data, shuffle_columns
from learnscope.errors import ConfigError
from learnscope.models import mlp
from learnscope.probes import SimplicityProbe, log_spaced
from learnscope.probes.session import ProbeSession
from learnscope.store.records import Record
from learnscope.studies import register
from learnscope.studies.base import Part, Study, Trial, TrialOutput, part
from learnscope.train.monitored import train_monitored
from learnscope.train.stacked import make_stack

CHANCE = 0.5
TEST_SETS = ("original", "linear shuffled", "slabs shuffled")
STRIPES_HIDDEN = 32


@dataclasses.dataclass(frozen=True)
class SimplicityBiasConfig(StudyConfig):
    seeds: int = param(3, "seeds (each draws its own data and initialisation)", ge=1)
    dim: int = param(50, "input coordinates: one linear, the rest k-slab", ge=2)
    n_slabs: int = param(5, "slabs per slab coordinate (labels alternate across slabs)", ge=2,
                         le=19)
    linear_margin: float = param(0.1, "smallest |x0| of the linear coordinate", ge=0, lt=1)
    slab_gap: float = param(0.1, "gap between adjacent slabs of a slab coordinate", ge=0, lt=1)
    n_train: int = param(20000, "training examples", ge=10)
    n_test: int = param(4000, "held-out test examples the probes measure on", ge=10)
    hidden: int = param(100, "width of both hidden layers of the LMS network", ge=2)
    epochs: int = param(20, "training epochs", ge=1)
    lr: float = param(0.1, "SGD learning rate (momentum 0.9)", gt=0)
    batch_size: int = param(100, "minibatch size", ge=1)
    stripes: bool = param(True, "also run the 2-D stripes experiment (one linear, one slab "
                                "coordinate)")
    grid: int = param(41, "grid points per axis of the 2-D decision-boundary map", ge=3, le=201)

    def check(self) -> None:
        if self.slab_gap >= 2.0 / self.n_slabs:
            raise ConfigError(f"field 'slab_gap' must be below the slab width "
                              f"2/n_slabs = {2.0 / self.n_slabs:g}")


@register
class SimplicityBias(Study[SimplicityBiasConfig]):
    name = "simplicity-bias"
    title = "Simplicity bias: nets rely on the linear feature alone"
    summary = ("With a linear and many slab coordinates all fully predictive, an MLP uses only "
               "the linear one: shuffling it gives chance, shuffling the slabs changes nothing.")
    source = "Shah et al. 2020, The pitfalls of simplicity bias in neural networks"
    Config = SimplicityBiasConfig
    quick = {"n_train": 10000, "epochs": 10}
    tiny = {"seeds": 1, "dim": 8, "n_train": 400, "n_test": 200, "hidden": 16, "epochs": 2,
            "grid": 9}

    def parts(self, cfg: SimplicityBiasConfig) -> list[Part]:
        seeds = cfg.seed_list()
        parts = [part("lms", train_lms, condition=["lms", "slab-only"], seed=seeds)]
        if cfg.stripes:
            parts.append(part("stripes", train_stripes, seed=seeds))
        return parts

    def neighbours(self, cfg: SimplicityBiasConfig) -> dict[str, dict[str, Any]]:
        return super().neighbours(cfg) | {
            "fewer examples": {"n_train": cfg.n_train // 2, "seed": cfg.seed + 5},
            "more examples": {"n_train": cfg.n_train * 3 // 2},
            "narrower": {"hidden": cfg.hidden // 2},
            "7-slab": {"n_slabs": 7, "seed": cfg.seed + 9},
            "fewer slab coordinates": {"dim": cfg.dim // 2 + 1},
            "half the margin": {"linear_margin": cfg.linear_margin / 2},
        }

    def memory_bytes(self, cfg: SimplicityBiasConfig) -> float:
        """The data (train plus three test versions), one MLP with SGD state, a batch."""
        h = cfg.hidden
        params = cfg.dim * h + h * h + 2 * h + 2 * h + 2
        return 4.0 * ((cfg.n_train + 4 * cfg.n_test) * (cfg.dim + 2) + 3 * params
                      + cfg.batch_size * (cfg.dim + 4 * h)) + 8.0 * cfg.grid ** 2

    def claims(self, cfg: SimplicityBiasConfig, results: Results) -> list[Claim]:
        lms = results.where(part="lms", condition="lms")
        slab = results.where(part="lms", condition="slab-only")
        acc = {t: lms.where(test_set=t).median("accuracy") for t in TEST_SETS}
        slab_acc = {t: slab.where(test_set=t).median("accuracy") for t in TEST_SETS}
        chance = _chance_band(cfg.n_test)
        claims = [
            claim("lms-learned", "on LMS data the network reaches at least 99% test accuracy "
                  "(every coordinate predicts the label perfectly)", "test_acc",
                  acc["original"], at_least(0.99)),
            all_of("linear-shuffled-at-chance", "shuffling the linear coordinate across test "
                   "examples drops accuracy to chance (within 4 binomial standard errors of "
                   "1/2), and the network still follows it: it agrees with the linear rule "
                   "[x0 > 0] on at least 95% of the shuffled examples",
                   {"acc_linear_shuffled": (acc["linear shuffled"], chance),
                    "agreement_with_linear_rule": (
                        lms.where(test_set="linear shuffled").median("agreement"),
                        at_least(0.95))}),
            ratio("slabs-shuffled-unchanged", "shuffling all slab coordinates costs less than "
                  "a tenth of the accuracy that shuffling the linear coordinate costs",
                  "drop_ratio", acc["original"] - acc["slabs shuffled"],
                  acc["original"] - acc["linear shuffled"], below(0.1),
                  names=("drop_slabs_shuffled", "drop_linear_shuffled"),
                  extra={"acc_slabs_shuffled": acc["slabs shuffled"]}),
            all_of("slabs-learnable", "the slab-only control (linear coordinate set to 0) "
                   "reaches at least 95% test accuracy, and falls to chance when its slabs are "
                   "shuffled: the slabs are learnable, the network above just does not use them",
                   {"slab_only_test_acc": (slab_acc["original"], at_least(0.95)),
                    "slab_only_acc_slabs_shuffled": (slab_acc["slabs shuffled"], chance)}),
        ]
        stripes = results.where(part="stripes")
        if len(stripes):
            claims.append(claim(
                "stripes-linear-shuffled-at-chance", "in 2-D (one linear, one slab coordinate) "
                "shuffling the linear coordinate also drops accuracy to chance (within 4 "
                "binomial standard errors of 1/2)", "acc_linear_shuffled",
                stripes.where(test_set="linear shuffled").median("accuracy"), chance,
                extra={"test_acc": stripes.where(test_set="original").median("accuracy")}))
            claims.append(claim(
                "stripes-boundary-linear", "in 2-D the trained network predicts the linear "
                "rule's class on at least 90% of the input square [-1, 1]^2 (its boundary is "
                "the line x0 = 0; not gating: a summary of the map)", "grid_agreement",
                stripes.median("grid_agreement"), at_least(0.9), gating=False))
            claims.append(ratio(
                "stripes-units-turn-linear", "training concentrates the first layer on the "
                "linear coordinate: its share of the squared first-layer weight norm grows "
                "over its share at initialisation (not gating: a weight readout, not a probe)",
                "share_ratio", stripes.median("linear_weight_share"),
                stripes.median("linear_weight_share_init"), above(1.0),
                names=("share_trained", "share_init"), gating=False))
        return claims

    def figures(self, cfg: SimplicityBiasConfig) -> list[LinePlot | Heatmap | Scatter]:
        first = {"part": "stripes", "seed": cfg.seed}
        return [
            LinePlot("LMS network: test accuracy during training on three versions of the test "
                     "set (median, IQR over seeds)", "step",
                     (Lines({"part": "lms", "condition": "lms"}, group="test_set",
                            label="{test_set}"),),
                     key="accuracy", x_title="SGD step", y_title="test accuracy", log_x=True,
                     hlines=((CHANCE, "chance"),),
                     caption="The slabs-shuffled curve follows the original one while the "
                             "linear-shuffled curve stays at chance: only the linear coordinate "
                             "is used."),
            LinePlot("Slab-only control (linear coordinate set to 0): test accuracy during "
                     "training (median, IQR over seeds)", "step",
                     tuple(Lines({"part": "lms", "condition": "slab-only", "test_set": t},
                                 label=t) for t in ("original", "slabs shuffled")),
                     key="accuracy", x_title="SGD step", y_title="test accuracy", log_x=True,
                     hlines=((CHANCE, "chance"),),
                     caption="Without the linear coordinate the same network learns the slabs; "
                             "shuffling them then drops it to chance."),
            LinePlot("Agreement of the LMS network with the linear rule [x0 > 0] (median, IQR "
                     "over seeds)", "step",
                     tuple(Lines({"part": "lms", "condition": "lms", "test_set": t},
                                 label=t, dash="dot" if t == "linear shuffled" else None)
                           for t in TEST_SETS),
                     key="agreement", x_title="SGD step", y_title="P(network = linear rule)",
                     log_x=True,
                     caption="Agreement near 1 on every test set, shuffled ones included: the "
                             "network's prediction is the sign of x0 (dotted: linear shuffled)."),
            Scatter("Stripes data in 2-D: training points (first seed)", "slab_coordinate",
                    "linear_coordinate", where=first, group="label", label="class {label}",
                    x_title="linear coordinate x0", y_title="slab coordinate x1",
                    caption="Each class lies on one side of x0 = 0 and in alternating "
                            "horizontal stripes of x1: either coordinate alone predicts it."),
            Scatter("Stripes: first-layer units' weight vectors (w0, w1) before and after "
                    "training (first seed)", "weight_slab", "weight_linear", where=first,
                    group="phase", label="{phase}",
                    x_title="weight on the linear coordinate x0",
                    y_title="weight on the slab coordinate x1",
                    caption="Each point is one unit's weight vector in the input plane: "
                            "training stretches the units along the linear axis."),
            Heatmap("Stripes: the trained network's probability of class 1 over the input "
                    "square (first seed)", "p_class1", rows="grid_slab", cols="grid_linear",
                    where=first, x_title="linear coordinate x0", y_title="slab coordinate x1",
                    colorbar="P(class 1)",
                    caption="A vertical boundary at x0 = 0 with no horizontal stripes: the "
                            "slab coordinate is ignored."),
        ]

    def tables(self, cfg: SimplicityBiasConfig, results: Results) -> list[Table]:
        rows = []
        for label, sub in (("LMS", results.where(part="lms", condition="lms")),
                           ("slab-only control", results.where(part="lms",
                                                              condition="slab-only")),
                           ("2-D stripes", results.where(part="stripes"))):
            if len(sub):
                rows.append([label] + [sub.where(test_set=t).median("accuracy")
                                       for t in TEST_SETS]
                            + [sub.where(test_set="linear shuffled").median("agreement")])
        return [Table("Test accuracy (median over seeds) on the test set as is and with the "
                      "linear or the slab coordinates shuffled across examples",
                      ["model", "test acc", "linear shuffled", "slabs shuffled",
                       "agreement with [x0 > 0], linear shuffled"], rows)]


def _chance_band(n_test: int) -> Any:
    """Chance for balanced binary labels: 1/2 within 4 binomial standard errors of the test
    set (the labels are drawn at random, so a test set is not exactly balanced)."""
    se = math.sqrt(CHANCE * (1 - CHANCE) / n_test)
    return between(CHANCE - 4 * se, CHANCE + 4 * se)


class _TestSets:
    """One probe session per version of the test set, on the same twin model, offered to
    ``train_monitored`` as one monitor; each record is tagged with its ``test_set``."""

    def __init__(self, model: nn.Module, sessions: dict[str, ProbeSession]) -> None:
        self.model = model
        self.sessions = sessions

    def due_at_step(self, step: int) -> bool:
        return any(s.due_at_step(step) for s in self.sessions.values())

    def due_at_epoch(self, epoch: int) -> bool:
        return any(s.due_at_epoch(epoch) for s in self.sessions.values())

    def step(self, loss: Any = None, **scalars: float) -> None:
        for s in self.sessions.values():
            s.step(loss, **scalars)

    def epoch(self) -> None:
        for s in self.sessions.values():
            s.epoch()

    def close(self) -> list[Record]:
        return [Record(r.key, r.value, r.step, r.probe, r.meta | {"test_set": name})
                for name, s in self.sessions.items() for r in s.close()]


def _test_versions(data: ClassificationData, seed: int) -> dict[str, torch.Tensor]:
    x = data.x_test
    return {"original": x,
            "linear shuffled": shuffle_columns(x, [0], seed=seed),
            "slabs shuffled": shuffle_columns(x, list(range(1, x.shape[1])), seed=seed)}


def _train(cfg: SimplicityBiasConfig, data: ClassificationData, sizes: list[int], seed: int,
           zero_linear: bool) -> tuple[nn.Module, nn.Module, list[Record], str]:
    """Train one MLP (a stack of one) with the simplicity probe on every test version; returns
    the initial and trained models, the records and the status."""
    def inputs(x: torch.Tensor) -> torch.Tensor:
        if not zero_linear:
            return x
        out = x.clone()
        out[:, 0] = 0.0
        return out

    stack = make_stack(lambda s: mlp(sizes, seed=s), seeds=[seed], loss="ce", optimizer="sgd",
                       lr=cfg.lr, momentum=0.9, batch_size=cfg.batch_size,
                       x_train=inputs(data.x_train), y_train=data.y_train, device=cfg.device)
    initial = stack.export(0)
    twin = stack.export(0)
    sessions = {}
    for name, x in _test_versions(data, seed).items():
        rule = (x[:, 0] > 0).to(torch.int64)  # the linear rule on this version's x0
        probe = SimplicityProbe(rule, schedule=log_spaced(4))
        sessions[name] = ProbeSession(twin, [probe], data=(inputs(x), data.y_test))
    (records,) = train_monitored(stack, [_TestSets(twin, sessions)], epochs=cfg.epochs)
    status = "diverged" if stack.histories[0].diverged else "finished"
    return initial, twin, records, status


def train_lms(cfg: SimplicityBiasConfig, trial: Trial) -> TrialOutput:
    """One seed's LMS network, or its slab-only control."""
    data = lms_data(cfg.n_train, cfg.n_test, dim=cfg.dim, n_slabs=cfg.n_slabs,
                    linear_margin=cfg.linear_margin, slab_gap=cfg.slab_gap, seed=trial.seed)
    sizes = [cfg.dim, cfg.hidden, cfg.hidden, 2]
    initial, trained, records, status = _train(cfg, data, sizes, trial.seed,
                                               zero_linear=trial.condition == "slab-only")
    if trial.condition == "lms":
        records += [Record("linear_weight_share", _linear_share(trained), probe="weights"),
                    Record("linear_weight_share_init", _linear_share(initial), probe="weights")]
    return TrialOutput(records, status)


def train_stripes(cfg: SimplicityBiasConfig, trial: Trial) -> TrialOutput:
    """The 2-D version: training points, unit directions and the decision map as records."""
    data = lms_data(cfg.n_train, cfg.n_test, dim=2, n_slabs=cfg.n_slabs,
                    linear_margin=cfg.linear_margin, slab_gap=cfg.slab_gap, seed=trial.seed)
    sizes = [2, STRIPES_HIDDEN, STRIPES_HIDDEN, 2]
    initial, trained, records, status = _train(cfg, data, sizes, trial.seed, zero_linear=False)
    records += [Record("linear_weight_share", _linear_share(trained), probe="weights"),
                Record("linear_weight_share_init", _linear_share(initial), probe="weights")]
    for phase, model in (("initial", initial), ("trained", trained)):
        w = _first_weight(model)
        records += [Record("weight_slab", float(w[u, 1]), probe="weights",
                           meta={"weight_linear": float(w[u, 0]), "unit": u, "phase": phase})
                    for u in range(w.shape[0])]
    shown = min(400, cfg.n_train)
    records += [Record("slab_coordinate", float(data.x_train[i, 1]), probe="data",
                       meta={"linear_coordinate": float(data.x_train[i, 0]),
                             "label": int(data.y_train[i])}) for i in range(shown)]
    axis = torch.linspace(-1.0, 1.0, cfg.grid)
    u, v = torch.meshgrid(axis, axis, indexing="ij")
    points = torch.stack([u.reshape(-1), v.reshape(-1)], dim=1)
    with torch.no_grad():
        p1 = torch.softmax(trained(points), dim=1)[:, 1]
    agree = ((p1 > 0.5) == (points[:, 0] > 0)).float().mean()
    records.append(Record("grid_agreement", float(agree), probe="decision_map",
                          meta={"grid": cfg.grid}))
    records += [Record("p_class1", float(p1[i]), probe="decision_map",
                       meta={"grid_linear": round(float(points[i, 0]), 6),
                             "grid_slab": round(float(points[i, 1]), 6)})
                for i in range(len(points))]
    return TrialOutput(records, status)


def _first_weight(model: nn.Module) -> torch.Tensor:
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    return first.weight.detach().cpu()


def _linear_share(model: nn.Module) -> float:
    """The linear coordinate's share of the first layer's squared weight norm."""
    w = _first_weight(model)
    return float((w[:, 0] ** 2).sum() / (w ** 2).sum())
