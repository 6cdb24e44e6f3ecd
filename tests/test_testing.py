import pytest
import torch
from torch import nn

from learnscope.testing import assert_model_unchanged, snapshot_model


def _net():
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    net(torch.randn(5, 3, generator=torch.Generator().manual_seed(0))).sum().backward()
    return net


@pytest.mark.parametrize("change", [
    lambda n: n[0].weight.data.add_(1e-6),
    lambda n: n.eval(),
    lambda n: n[0].bias.requires_grad_(False),
    lambda n: setattr(n[3].weight, "grad", None),
    lambda n: n[2].register_forward_hook(lambda *a: None),
    lambda n: n(torch.randn(5, 3)),  # a train-mode forward updates BatchNorm statistics
    lambda n: setattr(n[1], "momentum", 0.5),
])
def test_every_kind_of_change_is_caught(change):
    net = _net()
    snap = snapshot_model(net)
    assert_model_unchanged(net, snap)
    change(net)
    with pytest.raises(AssertionError):
        assert_model_unchanged(net, snap)
