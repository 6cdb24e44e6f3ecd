"""Layer-wise convergence (Raghu et al. 2017, "SVCCA: Singular Vector Canonical Correlation
Analysis for deep learning dynamics and interpretability"; Kornblith et al. 2019, "Similarity of
neural network representations revisited").

Networks converge to their final representations from the bottom up: the first hidden layer
settles early in training, deeper layers later (which is why freezing lower layers early saves
compute). Measured here by comparing each hidden layer's representation at a checkpoint with the
same layer's representation at the end of training, with linear CKA (no free choices) and SVCCA
(keeps the singular directions that explain 99% of the variance).

Setup: an MLP 40-256-256-256-256-10 (ReLU) on MNIST-1D, SGD with momentum, trained for a fixed
number of steps; the layer-similarity probe runs inside the training of each seed (all seeds
train as one stack of models) and compares activations on held-out test inputs at log-spaced
checkpoints. Linear CKA of the first layer is already high at initialisation (random ReLU
features preserve the input geometry), so the claims use the *time to reach* a similarity of
0.9, not the similarity at a fixed step.

Claims: the first hidden layer reaches CKA >= 0.9 to its final state before the last hidden
layer does, and before every other layer; SVCCA shows the same first-before-last order (not
gating: SVCCA depends on its truncation). That the time to settle grows with depth through every
middle layer is reported but not gating: middle layers are often out of order (e.g. the second
layer settling after the third).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from learnscope.analysis import Claim, Heatmap, LinePlot, Lines, Results
from learnscope.analysis.claims import above, claim, monotone
from learnscope.config import StudyConfig, param
from learnscope.data import mnist1d
from learnscope.errors import ConfigError
from learnscope.models import mlp
from learnscope.probes import LayerSimilarityProbe, at_steps, default_layers
from learnscope.probes.session import ProbeSession
from learnscope.store.records import Record
from learnscope.studies import register
from learnscope.studies.base import Part, Study, Trial, TrialOutput, part
from learnscope.train.monitored import train_monitored
from learnscope.train.stacked import make_stack

METHODS = ("cka", "svcca")


@dataclasses.dataclass(frozen=True)
class LayerConvergenceConfig(StudyConfig):
    seeds: int = param(3, "seeds (independent networks), trained as one stack", ge=1)
    hidden: int = param(256, "width of every hidden layer", ge=2)
    depth: int = param(4, "number of hidden layers", ge=2)
    steps: int = param(6000, "SGD steps", ge=10)
    lr: float = param(0.05, "SGD learning rate (momentum 0.9)", gt=0)
    batch_size: int = param(100, "minibatch size", ge=1)
    n_probe: int = param(1000, "held-out test inputs the representations are compared on",
                         ge=10, le=1000)
    checkpoints: tuple[int, ...] = param(
        (0, 25, 50, 100, 200, 400, 800, 1600, 3200),
        "steps at which each layer is compared with its final state (the final step is always "
        "one)", ge=0, min_len=3)
    threshold: float = param(0.9, "similarity to the final state that counts as settled",
                             gt=0, lt=1)

    def check(self) -> None:
        if max(self.checkpoints) >= self.steps:
            raise ConfigError(f"field 'checkpoints' must lie below steps={self.steps}")


@register
class LayerConvergence(Study[LayerConvergenceConfig]):
    name = "layer-convergence"
    title = "Layers converge bottom up"
    summary = "Lower layers reach their final representation (CKA/SVCCA) before deeper ones."
    source = "Raghu et al. 2017 (SVCCA); Kornblith et al. 2019 (CKA)"
    Config = LayerConvergenceConfig
    quick = {"seeds": 2, "hidden": 128, "steps": 2000, "n_probe": 500,
             "checkpoints": [0, 25, 50, 100, 200, 400, 800, 1600]}

    tiny = {"seeds": 2, "hidden": 16, "depth": 2, "steps": 60, "n_probe": 100,
            "checkpoints": [0, 10, 30]}

    def parts(self, cfg: LayerConvergenceConfig) -> list[Part]:
        return [part("train", train_seeds, batch_by=[], seed=cfg.seed_list())]

    def neighbours(self, cfg: LayerConvergenceConfig) -> dict[str, dict[str, Any]]:
        return super().neighbours(cfg) | {
            "narrower": {"hidden": cfg.hidden // 2, "seed": cfg.seed + 3},
            "deeper, narrower": {"depth": cfg.depth + 2, "hidden": cfg.hidden // 2},
            "larger step": {"lr": cfg.lr * 2},
            "four seeds": {"seeds": 4, "seed": cfg.seed + 11},
        }

    def claims(self, cfg: LayerConvergenceConfig, results: Results) -> list[Claim]:
        claims = []
        for method in METHODS:
            t = results.where(method=method).curve("steps_to_threshold", "depth",
                                                   name="steps_to_threshold")
            per_seed = [a < b for a, b in zip(t.values[0], t.values[-1], strict=True)]
            first_before_last = claim(
                f"{method}-first-before-last", f"the first hidden layer reaches {method.upper()} "
                f">= {cfg.threshold:g} to its final state before the last hidden layer (median "
                "over seeds; steps at checkpoint resolution)" + (
                    "" if method == "cka" else "; not gating: SVCCA depends on its truncation"),
                "steps_last_minus_first", t.last - t.first, above(0),
                extra={"steps_first": t.first, "steps_last": t.last,
                       "seeds_first_before_last": sum(per_seed), "seeds": len(per_seed)},
                gating=method == "cka")
            claims.append(first_before_last)
            if method == "cka":
                claims.append(claim(
                    "cka-first-layer-settles-first", f"the first hidden layer is the earliest to "
                    f"reach CKA >= {cfg.threshold:g} (median over seeds)",
                    "earliest_deeper_minus_first", min(t.y[1:]) - t.first, above(0),
                    extra={"steps_first": t.first, "earliest_deeper": min(t.y[1:])}))
                claims.append(monotone(
                    "cka-settling-order", f"steps to CKA >= {cfg.threshold:g} do not decrease "
                    "with depth (median over seeds; not gating: middle layers are often out of "
                    "order)", t, increasing=True, strict=False, gating=False))
        return claims

    def figures(self, cfg: LayerConvergenceConfig) -> list[LinePlot | Heatmap]:
        return [
            LinePlot("Similarity of each hidden layer to its final representation (linear CKA)",
                     "step", (Lines({"method": "cka"}, group="depth",
                                    label="hidden layer {depth}"),),
                     key="similarity_to_final", x_title="training step",
                     y_title="CKA to final (median over seeds)", log_x=True,
                     hlines=((cfg.threshold, "settled"),),
                     caption="Each curve reaches 1 at the end by construction; lower layers "
                             "get there sooner."),
            Heatmap("CKA to final state: hidden layer x checkpoint (median over seeds)",
                    "similarity_to_final", rows="depth", where={"method": "cka"},
                    x_title="training step", y_title="hidden layer", colorbar="CKA"),
            LinePlot("Steps until each layer is settled (median, IQR over seeds)", "depth",
                     (Lines(group="method", label="{method}"),), key="steps_to_threshold",
                     x_title="hidden layer (1 = closest to the input)",
                     y_title=f"steps to similarity >= {cfg.threshold:g}", log_y=True),
        ]


def train_seeds(cfg: LayerConvergenceConfig, trials: list[Trial]) -> list[TrialOutput]:
    """Every seed as one stack of models, each measured by its own probe session."""
    data = mnist1d(5000)
    sizes = [data.n_features] + [cfg.hidden] * cfg.depth + [data.n_classes]
    stack = make_stack(lambda seed: mlp(sizes, seed=seed), seeds=[t.seed for t in trials],
                       loss="ce", optimizer="sgd", lr=cfg.lr, momentum=0.9,
                       batch_size=cfg.batch_size, x_train=data.x_train, y_train=data.y_train,
                       x_test=data.x_test, y_test=data.y_test, device=cfg.device)
    schedule = at_steps(*cfg.checkpoints)
    twins = [stack.export(k) for k in range(stack.K)]
    sessions = [ProbeSession(twin, [LayerSimilarityProbe(method=m, schedule=schedule,
                                                         pairs=False, threshold=cfg.threshold)
                                    for m in METHODS], data=(data.x_test[:cfg.n_probe], None))
                for twin in twins]
    records = train_monitored(stack, sessions, steps=cfg.steps)
    depth_of = {name: i + 1 for i, name in enumerate(default_layers(twins[0]))}
    outputs = []
    for recs, history in zip(records, stack.histories, strict=True):
        recs = [Record(r.key, r.value, r.step, r.probe, r.meta | (
            {"depth": depth_of[r.meta["layer"]]} if "layer" in r.meta else {})) for r in recs]
        log = history.logs[-1]
        recs += [Record("test_acc", log.test_acc, log.step, "train"),
                 Record("train_acc", log.train_acc, log.step, "train")]
        outputs.append(TrialOutput(recs, "diverged" if history.diverged else "finished"))
    return outputs
