"""Oracle tests for learnscope.measures.linear_regions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from learnscope.measures.linear_regions import activation_patterns, count_linear_regions

torch.set_num_threads(1)


def _net(weight: list[list[float]], bias: list[float], d_out: int = 1) -> nn.Sequential:
    w = torch.tensor(weight, dtype=torch.float64)
    with torch.random.fork_rng():  # construction draws from the RNG: keep the global one untouched
        torch.manual_seed(0)
        net = nn.Sequential(
            nn.Linear(w.shape[1], w.shape[0]), nn.ReLU(), nn.Linear(w.shape[0], d_out)
        )
    net = net.double()
    with torch.no_grad():
        net[0].weight.copy_(w)
        net[0].bias.copy_(torch.tensor(bias, dtype=torch.float64))
    return net


def _no_hooks(model: nn.Module) -> bool:
    return all(
        len(m._forward_hooks) == 0 and len(m._forward_pre_hooks) == 0 for m in model.modules()
    )


@pytest.mark.parametrize("k", [1, 3, 6])
def test_one_d_input_gives_k_plus_one_regions(k):
    # unit i: relu(s_i (x - b_i)) with distinct breakpoints b_i and mixed slopes
    breaks = [-2.0 + 4.0 * i / max(k - 1, 1) for i in range(k)] if k > 1 else [0.3]
    slopes = [1.0 if i % 2 == 0 else -0.5 for i in range(k)]
    net = _net([[s] for s in slopes], [-s * b for s, b in zip(slopes, breaks, strict=True)])
    grid = torch.linspace(-5.0, 5.0, 2001, dtype=torch.float64)[:, None]
    pats = activation_patterns(net, grid)
    assert pats.dtype == torch.bool and pats.shape == (2001, k)
    assert count_linear_regions(net, grid) == k + 1
    assert _no_hooks(net)


def test_patterns_by_hand():
    net = _net([[1.0], [-1.0]], [0.0, 1.0])  # units: relu(x), relu(1 - x)
    x = torch.tensor([[-1.0], [0.5], [2.0]], dtype=torch.float64)
    assert activation_patterns(net, x).tolist() == [[False, True], [True, True], [True, False]]


def test_two_d_three_lines_in_general_position_give_seven_regions():
    # lines x = 0, y = 0, x + y = 1 (a triangle): 7 regions in the plane
    net = _net([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [0.0, 0.0, -1.0])
    g = torch.linspace(-3.0, 3.0, 121, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)
    assert count_linear_regions(net, grid) == 7
    # three concurrent lines (not in general position) give only 6
    net_c = _net([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [0.0, 0.0, 0.0])
    assert count_linear_regions(net_c, grid) == 6


def test_deep_net_units_concatenated_and_model_untouched():
    with torch.random.fork_rng():
        torch.manual_seed(1)
        net = nn.Sequential(
            nn.Linear(2, 4),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(4, 3),
            nn.ReLU(inplace=True),
            nn.Linear(3, 1),
        )
    net.train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(2))
    p1 = activation_patterns(net, x)
    p2 = activation_patterns(net, x)
    assert p1.shape == (50, 7)
    assert torch.equal(p1, p2)  # eval mode: dropout off, deterministic
    # the first 4 columns are the first layer's pre-activations > 0
    with torch.no_grad():
        assert torch.equal(p1[:, :4], net[0](x) > 0)
    assert torch.equal(torch.get_rng_state(), rng)
    assert net.training and all(m.training for m in net.modules())
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k])
    assert _no_hooks(net)


class _Boom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 3)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.act(self.lin(x))
        raise RuntimeError("boom")


def test_hooks_removed_when_forward_raises():
    with torch.random.fork_rng():
        model = _Boom()
    model.train()
    with pytest.raises(RuntimeError, match="boom"):
        activation_patterns(model, torch.zeros(4, 2))
    assert _no_hooks(model)
    assert model.training and model.act.training


def test_errors():
    with torch.random.fork_rng():
        no_relu = nn.Sequential(nn.Linear(2, 2), nn.Tanh())
    with pytest.raises(ValueError, match="no ReLU"):
        count_linear_regions(no_relu, torch.zeros(3, 2))
    net = _net([[1.0]], [0.0])
    with pytest.raises(ValueError, match="non-empty"):
        activation_patterns(net, torch.zeros(0, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="torch.Tensor"):
        activation_patterns(net, [[0.0]])
    assert _no_hooks(net)
