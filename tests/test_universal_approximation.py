"""The universal-approximation study's trial functions on tiny inputs."""

import math

import numpy as np
import torch

from learnscope.measures.approximation import random_trig_target
from learnscope.studies.base import Trial
from learnscope.studies.universal_approximation import (
    UniversalApproximationConfig,
    construct,
    train_net,
)

torch.set_num_threads(1)


def _values(output):
    return {r.key: r.value for r in output.records}


def test_construction_records_match_a_direct_computation():
    cfg = UniversalApproximationConfig(eval_points=501)
    out = _values(construct(cfg, Trial({"part": "construction", "seed": 2, "width": 10})))
    assert out["bound"] == math.pi / 10
    target = random_trig_target(2, cfg.degree, cfg.lipschitz)
    x = np.linspace(0, 1, 501)
    knots = target(np.arange(11) / 10)
    centers = (np.arange(10) + 0.5) / 10
    stair = knots[0] + (1 / (1 + np.exp(-500 * (x[:, None] - centers)))) @ np.diff(knots)
    assert out["sup_err_steep"] == np.abs(stair - target(x)).max()
    assert out["bound_ratio_steep"] <= 1.0


def test_trained_net_is_deterministic_and_fits_better_with_more_iterations():
    trial = Trial({"part": "trained", "seed": 0, "width": 8})
    short = UniversalApproximationConfig(train_steps=5, train_points=64, eval_points=200)
    longer = UniversalApproximationConfig(train_steps=200, train_points=64, eval_points=200)
    a, b = _values(train_net(short, trial)), _values(train_net(short, trial))
    assert a == b
    assert _values(train_net(longer, trial))["train_mse"] < a["train_mse"]
