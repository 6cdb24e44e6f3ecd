"""assert_same_model: two runs that trained alike pass; any difference is named."""

import pytest
import torch
from torch import nn

from learnscope.testing import assert_same_model


def _net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    net(torch.randn(5, 3, generator=torch.Generator().manual_seed(0))).sum().backward()
    return net


@pytest.mark.parametrize("change,named", [
    (lambda n: n[0].weight.data.add_(1e-7), "0.weight"),
    (lambda n: n[1].running_mean.add_(1.0), "1.running_mean"),
    (lambda n: n[3].bias.grad.mul_(2.0), "3.bias"),
    (lambda n: n.eval(), "training"),
    (lambda n: n[0].bias.requires_grad_(False), "requires_grad"),
    (lambda n: n[2].register_forward_hook(lambda *a: None), "hooks"),
])
def test_differences_are_named(change, named):
    a, b = _net(), _net()
    assert_same_model(a, b)  # separate storage, same values: the same
    change(b)
    with pytest.raises(AssertionError, match=named):
        assert_same_model(a, b)
