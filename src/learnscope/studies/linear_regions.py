"""ReLU networks carve their input into linear regions (Montufar et al. 2014, "On the number of
linear regions of deep neural networks"; Hanin & Rolnick 2019, "Deep ReLU networks have
surprisingly few activation patterns"; Zhang et al. 2017, "Understanding deep learning requires
rethinking generalization").

Every ReLU unit switches on one side of a bent hyperplane; inputs that share the on/off pattern
of all units lie in one convex region where the network is linear. A network that memorises
random labels is sometimes pictured as a lookup table that gives every training point its own
region, like an unpruned decision tree gives it its own leaf. Hanin & Rolnick found instead that
the number of regions a network has stays close to its number at initialisation during training.
This study counts the regions of small ReLU networks on 2-D data trained on clean and on random
labels, and sets them beside decision trees fitting the same labels.

Setup: two interleaved half-moons in 2-D (Gaussian jitter), clean labels (which moon) or
labels drawn uniformly at random (independent of the input); an MLP 2-h-h-2 (ReLU) trained full
batch by Adam; the clean and random networks of a seed start from the same weights and all of
them train as one stack of models. At log-spaced steps (step 0 included: the count at
initialisation is the baseline) the distinct activation patterns are counted on a dense grid
over the data (regions in view) and on the training points (regions per training point: 1 when
every point sits alone in its own region). The classical counterpart: scikit-learn decision
trees on the same points and labels, unpruned (grown until every leaf is pure) and limited in
depth. Sizes: 100 training points, h = 48, 1000 test points, a 200 x 200 counting grid; 3 seeds
and 3000 steps at the quick size, 5 seeds and 6000 steps by default.

Claims (gating): the networks fit (nearly) every random label while their test accuracy stays at
chance, and clean labels generalise; an unpruned tree fits random labels exactly, is at chance on
test and needs many more leaves per training point than on clean labels (every random-label seed
above every clean one); training changes a network's region count on the grid by less than a
factor of two from initialisation, on clean and on random labels alike (Hanin & Rolnick).
Reported, not gating: random labels end with more regions per training point, and more regions
on the grid, than clean labels. Not reproduced: at this width each training point already sits
almost alone in its own region at initialisation (0.8-0.9 regions per point at 100 points), and
memorising random labels adds few regions or none: the median paired ratio random / clean of
regions per training point is 0.95-1.13 at the quick size and its neighbours (single seeds
0.8-1.3), of regions on the grid 0.92-1.13, not the 1.5 or more a lookup-table picture
suggests; training leaves the grid count at 0.8-1.0 times its initial value either way. The
networks memorise by moving the linear pieces they already have; the unpruned tree grows 3-4.4
times as many leaves per point on random labels as on clean ones.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
from sklearn.tree import DecisionTreeClassifier

from learnscope.analysis import Claim, Heatmap, LinePlot, Lines, Results, Scatter, Table
from learnscope.analysis.claims import Test, above, all_of, at_least, at_most, between, claim
from learnscope.config import StudyConfig, param
from learnscope.errors import ConfigError
from learnscope.measures.linear_regions import activation_patterns
from learnscope.measures.region_counts import count_regions, region_colour, region_ids
from learnscope.models import mlp
from learnscope.seeding import derive_seed, numpy_rng, torch_generator
from learnscope.store.records import Record
from learnscope.studies import register
from learnscope.studies.base import Part, Study, Trial, TrialOutput, part
from learnscope.train.stacked import make_stack

LABELS = ("clean", "random")
TREES = ("unpruned", "depth-limited")
CHANCE = 0.5
BOX = ((-2.0, 2.0), (-1.5, 1.5))
"""The input window (x1, x2) in which regions are counted and drawn: the moons (centred at the
origin, about 3 x 1.5 wide) plus a margin."""


@dataclasses.dataclass(frozen=True)
class LinearRegionsConfig(StudyConfig):
    seeds: int = param(5, "seeds (data, labels, initial weights); claims use medians over seeds",
                       ge=1)
    n_train: int = param(100, "training points (half on each moon)", ge=10, le=5000)
    n_test: int = param(1000, "test points (clean labels)", ge=10, le=20000)
    moon_noise: float = param(0.15, "standard deviation of the Gaussian jitter of the moons",
                              ge=0, le=1)
    hidden: int = param(48, "width of each of the two hidden ReLU layers", ge=2, le=1024)
    steps: int = param(6000, "full-batch Adam steps", ge=1)
    lr: float = param(0.01, "Adam learning rate", gt=0)
    checkpoints_per_decade: int = param(2, "log-spaced steps at which regions are counted "
                                        "(step 0 and the last step always)", ge=1, le=10)
    grid: int = param(200, "the counting grid has grid x grid points over the input window",
                      ge=4, le=1000)
    image: int = param(100, "the region maps have image x image pixels (first seed only)",
                       ge=4, le=200)
    tree_depth: int = param(3, "max depth of the depth-limited tree", ge=1, le=30)

    def check(self) -> None:
        if self.n_train % 2:
            raise ConfigError("field 'n_train' must be even (half the points on each moon)")


def two_moons(n: int, noise: float, *, seed: int, stream: str = "train"
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaved half-moons, centred at the origin: points ``(n, 2)`` float32, labels
    ``(n,)`` (alternating 0, 1: exactly half per moon). Moon 0 is the upper half circle of
    radius 1 around (-0.5, -0.25), moon 1 the lower one around (0.5, 0.25); ``noise`` is the
    standard deviation of the Gaussian jitter added to both coordinates."""
    rng = numpy_rng(seed, "two-moons", stream)
    labels = np.arange(n) % 2
    angle = rng.uniform(0.0, math.pi, n)
    upper = np.stack([np.cos(angle) - 0.5, np.sin(angle) - 0.25], 1)
    lower = np.stack([0.5 - np.cos(angle), 0.25 - np.sin(angle)], 1)
    points = np.where(labels[:, None] == 0, upper, lower) + rng.normal(0.0, noise, (n, 2))
    return torch.tensor(points, dtype=torch.float32), torch.tensor(labels, dtype=torch.long)


def uniform_labels(n: int, *, seed: int) -> torch.Tensor:
    """Labels drawn uniformly from {0, 1}, independent of the inputs."""
    return torch.randint(0, 2, (n,), generator=torch_generator(seed, "random-labels"))


def window_grid(side: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x1 values, x2 values, points ``(side * side, 2)`` row-major over x2 then x1)."""
    (x_lo, x_hi), (y_lo, y_hi) = BOX
    xs, ys = torch.linspace(x_lo, x_hi, side), torch.linspace(y_lo, y_hi, side)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return xs, ys, torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)


def log_checkpoints(steps: int, per_decade: int) -> list[int]:
    """0, the rounded powers 10**(k / per_decade) below ``steps``, and ``steps``."""
    out = {0, steps}
    k = 0
    while (s := round(10 ** (k / per_decade))) < steps:
        out.add(s)
        k += 1
    return sorted(out)


@register
class LinearRegions(Study[LinearRegionsConfig]):
    name = "linear-regions"
    title = "Linear regions of ReLU networks on clean and random labels"
    summary = ("A ReLU net memorises random 2-D labels with about as many linear regions as it "
               "had at initialisation; an unpruned tree needs a leaf per few points.")
    source = ("Montufar et al. 2014; Hanin & Rolnick 2019, Deep ReLU networks have surprisingly "
              "few activation patterns; Zhang et al. 2017")
    Config = LinearRegionsConfig
    quick = {"seeds": 3, "steps": 3000}
    tiny = {"seeds": 1, "n_train": 30, "n_test": 100, "hidden": 8, "steps": 30, "grid": 30,
            "image": 12}

    def parts(self, cfg: LinearRegionsConfig) -> list[Part]:
        seeds = cfg.seed_list()
        return [part("net", train_nets, batch_by=[], labels=list(LABELS), seed=seeds),
                part("tree", fit_trees, batch_by=[], labels=list(LABELS), tree=list(TREES),
                     seed=seeds)]

    def neighbours(self, cfg: LinearRegionsConfig) -> dict[str, dict[str, Any]]:
        return super().neighbours(cfg) | {
            "fewer points": {"n_train": max(10, cfg.n_train // 4 * 2), "seed": cfg.seed + 5},
            "more points": {"n_train": int(cfg.n_train * 1.5) // 2 * 2, "seed": cfg.seed + 9},
            "wider": {"hidden": int(cfg.hidden * 1.5)},
            "noisier moons": {"moon_noise": round(cfg.moon_noise * 1.5, 4), "seed": cfg.seed + 13},
        }

    def memory_bytes(self, cfg: LinearRegionsConfig) -> float:
        """The stack (weights, gradients, Adam state of every model) plus the counting grid's
        activations and codes for one model."""
        k = 2 * cfg.seeds
        h = cfg.hidden
        params = 3 * h + h * h + 3 * h + 2
        return 4.0 * k * (4 * params + cfg.n_train * (2 * h + 4)) + \
            cfg.grid ** 2 * (8.0 * h + 24.0)

    def claims(self, cfg: LinearRegionsConfig, results: Results) -> list[Claim]:
        net = results.where(part="net")
        clean, rand = net.where(labels="clean"), net.where(labels="random")
        trees = results.where(part="tree", tree="unpruned")
        tree_clean, tree_rand = trees.where(labels="clean"), trees.where(labels="random")
        chance = _chance(cfg)
        claims = [
            claim("net-fits-random-labels", "the networks fit (nearly) every random label: "
                  "median final training accuracy on random labels at least 0.95 (measured "
                  "0.97-1; clean labels: 1)",
                  "train_acc_random", rand.median("train_acc"), at_least(0.95),
                  extra={"lowest_seed": float(np.min(rand.values("train_acc")))}),
            claim("net-random-labels-test-at-chance", "with random labels the networks' test "
                  "accuracy on the clean test labels is no better than chance (1/2 plus 4 "
                  "standard errors of a random labelling's luck on the training and test sets)",
                  "test_acc_random", rand.median("test_acc"), chance),
            claim("net-clean-labels-generalise", "the baseline: with clean labels the same "
                  "networks generalise (median test accuracy at least 0.9)",
                  "test_acc_clean", clean.median("test_acc"), at_least(0.9)),
            all_of("tree-fits-random-labels", "an unpruned decision tree fits the same random "
                   "labels exactly (every seed) and is at chance on test",
                   {"seeds_fitted": (float((tree_rand.values("train_acc") == 1.0).sum()),
                                     at_least(len(tree_rand))),
                    "test_acc": (tree_rand.median("test_acc"), chance)}),
            _beyond_spread(
                "tree-leaves-per-point", "an unpruned tree needs many more leaves per training "
                "point on random labels than on clean ones: every random-label seed above every "
                "clean one", "leaves_per_train_point", tree_rand, tree_clean),
            _near_init(
                "regions-stay-near-init", "training changes a network's number of regions on "
                "the grid by less than a factor of two from its initialisation, on clean and "
                "on random labels (median over seeds of final / initial; Hanin & Rolnick 2019)",
                clean, rand),
            _beyond_spread(
                "random-more-regions-per-point", "random labels end with more regions per "
                "training point than clean labels: every seed's paired ratio random / clean "
                "above 1 (not gating: not reproduced at this size, where each point already "
                "has nearly its own region at initialisation)",
                "regions_per_train_point", rand, clean, paired=True, gating=False),
            _beyond_spread(
                "random-more-grid-regions", "random labels end with more regions on the grid "
                "than clean labels: every seed's paired ratio above 1 (not gating: not "
                "reproduced)", "grid_regions", rand, clean, paired=True, gating=False),
        ]
        return claims

    def figures(self, cfg: LinearRegionsConfig) -> list[LinePlot | Heatmap]:
        first = cfg.seed
        by_labels = (Lines({"part": "net"}, group="labels", label="{labels} labels"),)
        maps = [Heatmap(f"Linear regions {when}, {labels} labels (seed {first})",
                        "region_colour", rows="x2", cols="x1",
                        where={"part": "net", "labels": labels, "seed": first, "phase": phase},
                        x_title="input x1", y_title="input x2", colorbar="region (colour index)",
                        points=Scatter("", "point_x2", "x1",
                                       where={"part": "net", "labels": labels, "seed": first},
                                       group="point_label", label="class {point_label}"),
                        caption="Each patch of one colour is one linear region (one ReLU on/off "
                                "pattern); the markers are the points the network was trained "
                                f"on, by their {labels} training label: compare the size of the "
                                "patches with the spacing of the points.")
                for when, labels, phase in (("at initialisation", "clean", "init"),
                                            ("after training", "clean", "final"),
                                            ("after training", "random", "final"))]
        return maps + [
            LinePlot("Linear regions met by the grid during training (median, IQR over seeds)",
                     "step", by_labels, key="grid_regions", x_title="Adam step",
                     y_title="distinct activation patterns on the grid", log_x=True,
                     caption="Flat curves: training barely changes how many regions the "
                             "network has in view, whatever the labels."),
            LinePlot("Regions per training point during training (median, IQR over seeds)",
                     "step", by_labels, key="regions_per_train_point", x_title="Adam step",
                     y_title="distinct patterns / training points", log_x=True,
                     hlines=((1.0, "one region per point"),),
                     caption="1 means every training point sits alone in its own region."),
            LinePlot("Training accuracy on the assigned labels (median, IQR over seeds)", "step",
                     by_labels, key="train_acc", x_title="Adam step", y_title="train accuracy",
                     log_x=True, caption="Random labels are fitted too, only later."),
            LinePlot("Test accuracy on clean labels (median, IQR over seeds)", "step", by_labels,
                     key="test_acc", x_title="Adam step", y_title="test accuracy", log_x=True,
                     hlines=((CHANCE, "chance"),),
                     caption="Clean labels generalise; random labels stay at chance."),
        ]

    def tables(self, cfg: LinearRegionsConfig, results: Results) -> list[Table]:
        rows: list[list[Any]] = []
        for labels in LABELS:
            sub = results.where(part="net", labels=labels)
            if len(sub):
                rows.append([f"ReLU net 2-{cfg.hidden}-{cfg.hidden}-2", labels,
                             sub.median("train_acc"), sub.median("test_acc"),
                             sub.median("regions_per_train_point", "first"),
                             sub.median("regions_per_train_point"),
                             sub.median("grid_regions", "first"), sub.median("grid_regions")])
        for tree in TREES:
            for labels in LABELS:
                sub = results.where(part="tree", tree=tree, labels=labels)
                if len(sub):
                    name = "unpruned tree" if tree == "unpruned" else \
                        f"tree of depth <= {cfg.tree_depth}"
                    rows.append([name, labels, sub.median("train_acc"), sub.median("test_acc"),
                                 math.nan, sub.median("leaves_per_train_point"), math.nan,
                                 sub.median("leaves")])
        return [Table("Networks and trees on the same points (medians over seeds): regions of "
                      "a network, leaves of a tree",
                      ["model", "labels", "train acc", "test acc", "regions / point at init",
                       "regions (leaves) / point", "grid regions at init",
                       "grid regions (leaves)"], rows)]


def _chance(cfg: LinearRegionsConfig) -> Test:
    """No better than chance: at most 1/2 plus 4 standard errors of the agreement of a random
    labelling with the true classes. Both samples count: a model that copies its n_train random
    training labels to their neighbourhoods agrees with the clean labels on 1/2 +- 1/(2
    sqrt(n_train)) of the input space by luck (measured: unpruned trees 0.45-0.56 at 100
    points), and the test set adds its own binomial error."""
    var = CHANCE * (1 - CHANCE) * (1 / cfg.n_train + 1 / cfg.n_test)
    return at_most(CHANCE + 4 * math.sqrt(var))


def _beyond_spread(id: str, statement: str, key: str, high: Results, low: Results, *,
                   paired: bool = False, gating: bool = True) -> Claim:
    """``high`` exceeds ``low`` beyond the spread over seeds: every seed's paired ratio is
    above 1 (``paired``, seeds matched by their seed value), else the lowest seed of ``high``
    lies above the highest of ``low``. Records the ratio of the medians too."""
    hi_vals, lo_vals = _by_seed(high, key), _by_seed(low, key)
    ratio_of_medians = (float(np.median(list(hi_vals.values())))
                        / float(np.median(list(lo_vals.values())))
                        if hi_vals and lo_vals else math.nan)
    if paired:
        ratios = [hi_vals[s] / lo_vals[s] for s in hi_vals if s in lo_vals and lo_vals[s] > 0]
        value = min(ratios) if ratios else math.nan
        return claim(id, statement, f"lowest_paired_ratio_{key}", value, above(1.0),
                     gating=gating, extra={"median_ratio": ratio_of_medians,
                                           "highest_paired_ratio": max(ratios, default=math.nan)})
    lowest_high = min(hi_vals.values(), default=math.nan)
    highest_low = max(lo_vals.values(), default=math.nan)
    value = lowest_high / highest_low if highest_low > 0 else math.nan
    return claim(id, statement, f"lowest_random_over_highest_clean_{key}", value, above(1.0),
                 gating=gating, extra={"median_ratio": ratio_of_medians,
                                       "lowest_random": lowest_high, "highest_clean": highest_low})


def _by_seed(results: Results, key: str) -> dict[int, float]:
    values = results.per_trial(key)
    return {int(s): float(v) for s, v in zip(results.trials["seed"], values, strict=True)
            if math.isfinite(float(v))}


def _near_init(id: str, statement: str, clean: Results, rand: Results) -> Claim:
    """Final / initial grid regions (median over seeds) within a factor of two, per labels."""
    checks = {}
    for name, sub in (("clean", clean), ("random", rand)):
        ratios = sub.values("grid_regions") / sub.values("grid_regions", "first")
        checks[f"final_over_init_{name}"] = (float(np.median(ratios)) if len(ratios)
                                             else math.nan, between(0.5, 2.0))
    return all_of(id, statement, checks,
                  extra={"grid_regions_init": clean.median("grid_regions", "first")})


def train_nets(cfg: LinearRegionsConfig, trials: list[Trial]) -> list[TrialOutput]:
    """Every (labels, seed) network as one stack: each seed's points are one block of a shared
    training set (``subsets``), its clean and random nets start from the same weights."""
    seeds = sorted({t.seed for t in trials})
    block = {s: i for i, s in enumerate(seeds)}
    data = {s: two_moons(cfg.n_train, cfg.moon_noise, seed=s) for s in seeds}
    tests = {s: two_moons(cfg.n_test, cfg.moon_noise, seed=s, stream="test") for s in seeds}
    assigned = {(s, "clean"): data[s][1] for s in seeds} | {
        (s, "random"): uniform_labels(cfg.n_train, seed=s) for s in seeds}
    n = cfg.n_train
    x_all = torch.cat([data[s][0] for s in seeds])
    y_by_model = torch.zeros(len(trials), len(x_all), dtype=torch.long)
    subsets = torch.zeros(len(trials), n, dtype=torch.long)
    for k, t in enumerate(trials):
        rows = torch.arange(block[t.seed] * n, (block[t.seed] + 1) * n)
        subsets[k] = rows
        y_by_model[k, rows] = assigned[(t.seed, t.labels)]
    sizes = [2, cfg.hidden, cfg.hidden, 2]
    stack = make_stack([mlp(sizes, seed=t.seed) for t in trials], seeds=[t.seed for t in trials],
                       optimizer="adam", lr=cfg.lr, batch_size=None, x_train=x_all,
                       y_train_by_model=y_by_model, subsets=subsets, device=cfg.device)
    _, _, grid = window_grid(cfg.grid)
    xs, ys, image = window_grid(cfg.image)
    records: list[list[Record]] = [[] for _ in trials]
    done = 0
    checkpoints = log_checkpoints(cfg.steps, cfg.checkpoints_per_decade)
    for step in checkpoints:
        stack.run_steps(step - done)
        done = step
        for k, t in enumerate(trials):
            model = stack.export(k).cpu()
            x, _ = data[t.seed]
            y = assigned[(t.seed, t.labels)]
            x_test, y_test = tests[t.seed]
            with torch.no_grad():
                train_acc = float((model(x).argmax(1) == y).float().mean())
                test_acc = float((model(x_test).argmax(1) == y_test).float().mean())
            on_points, _ = region_ids(activation_patterns(model, x))
            records[k] += [
                Record("grid_regions", count_regions(model, grid), step, "regions",
                       {"grid": cfg.grid}),
                Record("train_point_regions", on_points, step, "regions"),
                Record("regions_per_train_point", on_points / n, step, "regions"),
                Record("train_acc", train_acc, step, "train"),
                Record("test_acc", test_acc, step, "train")]
            if t.seed == seeds[0] and step in (0, cfg.steps):
                records[k] += _region_map(model, image, xs, ys, step,
                                          "init" if step == 0 else "final")
    outputs = []
    for k, t in enumerate(trials):
        x, _ = data[t.seed]
        y = assigned[(t.seed, t.labels)]
        if t.seed == seeds[0]:
            records[k] += [Record("point_x2", float(p[1]), 0, "data",
                                  {"x1": float(p[0]), "point_label": int(c)})
                           for p, c in zip(x, y, strict=True)]
        diverged = stack.histories[k].diverged or stack.diverged[k]
        outputs.append(TrialOutput(records[k], "diverged" if diverged else "finished"))
    return outputs


def _region_map(model: torch.nn.Module, image: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor,
                step: int, phase: str) -> list[Record]:
    """One record per pixel: the colour index of the pixel's region (see ``region_colour``)."""
    _, ids = region_ids(activation_patterns(model, image))
    colours = region_colour(ids).view(len(ys), len(xs))
    return [Record("region_colour", float(colours[i, j]), step, "regions",
                   {"x1": round(float(xs[j]), 2), "x2": round(float(ys[i]), 2), "phase": phase})
            for i in range(len(ys)) for j in range(len(xs))]


def fit_trees(cfg: LinearRegionsConfig, trials: list[Trial]) -> list[TrialOutput]:
    """scikit-learn decision trees on the networks' points and labels, unpruned (grown until
    every leaf is pure) or limited to ``tree_depth``."""
    outputs = []
    for t in trials:
        x, y_clean = two_moons(cfg.n_train, cfg.moon_noise, seed=t.seed)
        y = y_clean if t.labels == "clean" else uniform_labels(cfg.n_train, seed=t.seed)
        x_test, y_test = two_moons(cfg.n_test, cfg.moon_noise, seed=t.seed, stream="test")
        tree = DecisionTreeClassifier(
            max_depth=None if t.tree == "unpruned" else cfg.tree_depth,
            random_state=derive_seed(t.seed, "tree") % 2**31)
        tree.fit(x.numpy(), y.numpy())
        leaves = int(tree.get_n_leaves())
        outputs.append(TrialOutput([
            Record("train_acc", float(tree.score(x.numpy(), y.numpy())), 0, "tree"),
            Record("test_acc", float(tree.score(x_test.numpy(), y_test.numpy())), 0, "tree"),
            Record("leaves", leaves, 0, "tree"),
            Record("leaves_per_train_point", leaves / cfg.n_train, 0, "tree")]))
    return outputs
