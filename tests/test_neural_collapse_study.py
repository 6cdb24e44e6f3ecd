"""The neural-collapse study's pieces: the lr schedule, the MSE summed over outputs, the
features it measures and the records of a tiny run."""

import pytest
import torch
from torch import nn

from learnscope.config import build_config
from learnscope.errors import ConfigError
from learnscope.models import mlp
from learnscope.studies.base import Trial
from learnscope.studies.neural_collapse import (
    METRICS,
    NeuralCollapseConfig,
    _hidden_features,
    _lr_factor,
    train_stack,
)
from learnscope.train.stacked import make_stack


def test_lr_is_divided_by_ten_after_a_third_and_two_thirds():
    factor = _lr_factor(NeuralCollapseConfig(steps=3000))
    assert [factor(t) for t in (0, 999, 1000, 1999, 2000, 2999)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])


def test_weighted_stack_mse_is_the_sum_over_outputs():
    """The study trains MSE with loss weights C: the stack's loss is then the squared error
    summed over the C outputs and averaged over examples."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 6, generator=g), torch.arange(30) % 4
    targets = nn.functional.one_hot(y, 4).float()
    stack = make_stack(lambda s: mlp([6, 8, 4], seed=s), seeds=[0], loss="mse",
                       optimizer="sgd", lr=0.1, x_train=x, y_train=targets,
                       loss_weights=torch.full((1, 4), 4.0), batch_size=None)
    net = mlp([6, 8, 4], seed=0)
    with torch.no_grad():
        expected = ((net(x) - targets) ** 2).sum(1).mean()
    assert stack.evaluate()[0].train_loss == pytest.approx(float(expected), rel=1e-6)


def test_hidden_features_are_post_relu_and_end_in_the_logits():
    net = mlp([5, 7, 7, 3], seed=1)
    x = torch.randn(9, 5, generator=torch.Generator().manual_seed(1))
    feats, logits = _hidden_features(net, x)
    assert [tuple(f.shape) for f in feats] == [(9, 7), (9, 7)]
    assert all(bool((f >= 0).all()) for f in feats)
    assert torch.equal(logits, net(x))
    assert torch.allclose(net[-1](feats[-1]), logits)


def test_tiny_stack_records_every_metric_at_every_checkpoint():
    cfg = build_config(NeuralCollapseConfig,
                       {"hidden": 16, "n_train": 200, "steps": 30, "checkpoints": [0, 10, 40],
                        "seeds": 2})
    trials = [Trial({"part": "train", "loss": "mse", "seed": s}) for s in (0, 1)]
    outputs = train_stack(cfg, trials)
    again = train_stack(cfg, trials)
    for out, out_again in zip(outputs, again, strict=True):
        keys = {r.key for r in out.records}
        assert set(METRICS) | {"layer_nc1", "train_acc", "test_acc"} <= keys
        assert sorted({r.step for r in out.records if r.key == "nc1"}) == [0, 10, 30]
        assert sorted({r.meta["layer"] for r in out.records if r.key == "layer_nc1"}) == [1, 2, 3]
        assert [r.value for r in out.records] == [r.value for r in out_again.records]
    first = [r.value for r in outputs[0].records if r.key == "nc1"]
    second = [r.value for r in outputs[1].records if r.key == "nc1"]
    assert first[0] != second[0]  # two seeds, two initialisations


def test_config_needs_mse_and_the_initial_checkpoint():
    with pytest.raises(ConfigError, match="mse"):
        build_config(NeuralCollapseConfig, {"losses": ["ce"]})
    with pytest.raises(ConfigError, match="checkpoints"):
        build_config(NeuralCollapseConfig, {"checkpoints": [10, 20]})
