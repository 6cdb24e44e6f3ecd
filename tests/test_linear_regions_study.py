"""The linear-regions study's pieces: packed pattern codes against brute force and the
reference counter, regions of nets whose regions are known in closed form, the two-moons
generator's stated statistics, and the stacked networks' shared initialisation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from learnscope.measures.linear_regions import activation_patterns, count_linear_regions
from learnscope.measures.region_counts import (
    count_regions,
    pack_patterns,
    region_colour,
    region_ids,
)
from learnscope.models import mlp
from learnscope.runner import resolve_config
from learnscope.studies import get_study
from learnscope.studies.base import Trial
from learnscope.studies.linear_regions import (
    fit_trees,
    log_checkpoints,
    train_nets,
    two_moons,
    uniform_labels,
    window_grid,
)

torch.set_num_threads(1)


@pytest.mark.parametrize("units", [1, 5, 62, 63, 64, 130])
def test_packed_codes_are_equal_exactly_when_patterns_are(units):
    g = torch.Generator().manual_seed(units)
    base = torch.rand(12, units, generator=g) > 0.5
    rows = base[torch.randint(0, 12, (60,), generator=g)]  # many duplicates
    codes = pack_patterns(rows)
    assert codes.shape == (60, math.ceil(units / 63)) and bool((codes >= 0).all())
    for i in range(60):
        for j in range(60):
            assert torch.equal(codes[i], codes[j]) == torch.equal(rows[i], rows[j])
    count, ids = region_ids(rows)
    assert count == len({tuple(r.tolist()) for r in rows})
    for i in range(60):
        for j in range(60):
            assert (ids[i] == ids[j]) == torch.equal(rows[i], rows[j])


def test_pack_rejects_non_bool_patterns():
    with pytest.raises(ValueError, match="bool"):
        pack_patterns(torch.zeros(3, 4))


def test_count_matches_the_reference_counter_in_chunks():
    x = torch.randn(3000, 2, generator=torch.Generator().manual_seed(0)) * 2
    for seed, width in ((0, 8), (1, 40)):
        net = mlp([2, width, width, 2], seed=seed)
        expected = count_linear_regions(net, x)
        assert count_regions(net, x) == expected
        assert count_regions(net, x, chunk=7) == expected


def test_regions_known_in_closed_form():
    # 1-D: units switching at -1, 0 and 1 cut the line into 4 intervals
    line = nn.Sequential(nn.Linear(1, 3), nn.ReLU())
    with torch.no_grad():
        line[0].weight.copy_(torch.ones(3, 1))
        line[0].bias.copy_(torch.tensor([1.0, 0.0, -1.0]))
    assert count_regions(line, torch.linspace(-2, 2, 401)[:, None]) == 4
    assert count_regions(line, torch.linspace(0.1, 0.9, 50)[:, None]) == 1
    # 2-D: the two coordinate axes cut the window into its 4 quadrants
    axes = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    with torch.no_grad():
        axes[0].weight.copy_(torch.eye(2))
        axes[0].bias.zero_()
    xs, ys, grid = window_grid(51)
    count, ids = region_ids(activation_patterns(axes, grid))
    assert count == 4
    quadrant = (grid[:, 0] > 0).long() * 2 + (grid[:, 1] > 0).long()
    for q in range(4):  # every quadrant is one region and no two quadrants share one
        assert len(set(ids[quadrant == q].tolist())) == 1
    assert len({int(ids[quadrant == q][0]) for q in range(4)}) == 4


def test_region_colours_differ_for_different_ids():
    colours = region_colour(torch.arange(2000))
    assert bool(((colours >= 0) & (colours < 1)).all())
    assert len(set(colours.tolist())) == 2000


def test_window_grid_is_row_major_over_x2_then_x1():
    xs, ys, grid = window_grid(7)
    assert grid.shape == (49, 2)
    for i in range(7):
        for j in range(7):
            assert grid[i * 7 + j].tolist() == [float(xs[j]), float(ys[i])]


def test_two_moons_has_the_stated_shape_and_statistics():
    x, y = two_moons(20000, 0.1, seed=0)
    assert x.shape == (20000, 2) and x.dtype == torch.float32
    assert int(y.sum()) == 10000
    # centre of the upper half circle around (-0.5, -0.25): (-0.5, -0.25 + 2 / pi)
    torch.testing.assert_close(x[y == 0].mean(0), torch.tensor([-0.5, -0.25 + 2 / math.pi]),
                               atol=0.02, rtol=0)
    torch.testing.assert_close(x[y == 1].mean(0), torch.tensor([0.5, 0.25 - 2 / math.pi]),
                               atol=0.02, rtol=0)
    assert torch.equal(x, two_moons(20000, 0.1, seed=0)[0])
    assert not torch.equal(x, two_moons(20000, 0.1, seed=1)[0])
    assert not torch.equal(x[:10], two_moons(10, 0.1, seed=0, stream="test")[0])
    exact, labels = two_moons(200, 0.0, seed=3)  # no jitter: on the unit circles
    centres = torch.where(labels[:, None] == 0, torch.tensor([-0.5, -0.25]),
                          torch.tensor([0.5, 0.25]))
    torch.testing.assert_close((exact - centres).norm(dim=1), torch.ones(200))


def test_uniform_labels_are_seeded_and_balanced():
    y = uniform_labels(20000, seed=0)
    assert torch.equal(y, uniform_labels(20000, seed=0))
    assert set(y.unique().tolist()) == {0, 1}
    assert abs(float(y.float().mean()) - 0.5) < 0.02


def test_log_checkpoints():
    assert log_checkpoints(3000, 2) == [0, 1, 3, 10, 32, 100, 316, 1000, 3000]
    assert log_checkpoints(1, 2) == [0, 1]
    assert log_checkpoints(100, 1) == [0, 1, 10, 100]


def _tiny_cfg(**overrides):
    study = get_study("linear-regions")
    return resolve_config(study, quick=True, overrides=study.tiny | overrides)


def test_clean_and_random_nets_start_from_the_same_weights():
    cfg = _tiny_cfg(seeds=2)
    trials = [Trial({"part": "net", "labels": lab, "seed": s}) for s in (0, 1)
              for lab in ("clean", "random")]
    outputs = train_nets(cfg, trials)
    _, _, grid = window_grid(cfg.grid)

    def at_init(k: int, key: str) -> float:
        return next(r.value for r in outputs[k].records if r.key == key and r.step == 0)

    for s, (k_clean, k_random) in zip((0, 1), ((0, 1), (2, 3)), strict=True):
        expected = count_regions(mlp([2, cfg.hidden, cfg.hidden, 2], seed=s), grid)
        assert at_init(k_clean, "grid_regions") == at_init(k_random, "grid_regions") == expected
    assert at_init(0, "grid_regions") != at_init(2, "grid_regions")
    maps = [r for r in outputs[0].records if r.key == "region_colour"]
    assert len(maps) == 2 * cfg.image ** 2  # the first seed: at init and at the end
    assert not any(r.key == "region_colour" for r in outputs[2].records)


def test_unpruned_tree_fits_random_labels_and_limited_tree_does_not():
    cfg = _tiny_cfg(n_train=100)
    trials = [Trial({"part": "tree", "labels": "random", "tree": t, "seed": 0})
              for t in ("unpruned", "depth-limited")]
    unpruned, limited = ({r.key: r.value for r in o.records} for o in fit_trees(cfg, trials))
    assert unpruned["train_acc"] == 1.0
    assert limited["train_acc"] < 1.0 and limited["leaves"] <= 2 ** cfg.tree_depth
    assert unpruned["leaves_per_train_point"] == unpruned["leaves"] / 100
