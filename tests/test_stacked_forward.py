"""The batched forwards written out for the stacked trainer equal vmap over functional_call,
and every other module kind is left to vmap."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from learnscope.models import ToyReLUAutoencoder, cnn1d, deep_linear, mlp
from learnscope.train.stacked import make_stack
from learnscope.train.stacked_forward import stacked_forward


def _vmap_forward(models: list[nn.Module], x: torch.Tensor, shared: bool) -> torch.Tensor:
    params, buffers = stack_module_state(models)
    base = models[0]

    def one(p, b, xx):
        return functional_call(base, (p, b), (xx,))

    return vmap(one, in_dims=(0, 0, None if shared else 0))(params, buffers, x)


CASES = {
    "mlp relu": lambda s: mlp([6, 5, 4, 3], seed=s),
    "mlp tanh no bias": lambda s: mlp([6, 5, 3], activation="tanh", bias=False, seed=s),
    "mlp sigmoid": lambda s: mlp([6, 4, 3], activation="sigmoid", seed=s),
    "mlp gelu": lambda s: mlp([6, 4, 3], activation="gelu", seed=s),
    "one linear": lambda s: mlp([6, 3], seed=s),
    "deep linear": lambda s: deep_linear([6, 5, 5, 3], seed=s),
    "toy autoencoder": lambda s: ToyReLUAutoencoder(6, 2, seed=s),
    "dropout 0": lambda s: mlp([6, 5, 3], dropout=0.0, seed=s),
}


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_written_out_forward_equals_vmap(case: str, shared: bool) -> None:
    models = [CASES[case](s).double() for s in range(3)]
    forward = stacked_forward(models[0])
    assert forward is not None
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 6, generator=g, dtype=torch.float64) if shared else \
        torch.randn(3, 7, 6, generator=g, dtype=torch.float64)
    params = {k: v for k, v in stack_module_state(models)[0].items()}
    out = forward(params, x, shared)
    torch.testing.assert_close(out, _vmap_forward(models, x, shared), rtol=0, atol=1e-14)
    assert out.shape[0] == 3


def test_linear_layers_on_inputs_with_more_axes() -> None:
    models = [nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).double()
              for _ in range(2)]
    forward = stacked_forward(models[0])
    assert forward is not None
    params = stack_module_state(models)[0]
    for shared, x in ((False, torch.randn(2, 5, 6, 4, dtype=torch.float64)),
                      (True, torch.randn(5, 6, 4, dtype=torch.float64))):
        torch.testing.assert_close(forward(params, x, shared), _vmap_forward(models, x, shared),
                                   rtol=0, atol=1e-14)


@pytest.mark.parametrize("module", [
    cnn1d(seed=0), mlp([6, 5, 3], dropout=0.5, seed=0),
    nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)), nn.Sequential(nn.Linear(4, 3), nn.ELU()),
    nn.Linear(4, 3)])
def test_other_modules_are_left_to_vmap(module: nn.Module) -> None:
    assert stacked_forward(module) is None


def test_tied_layers_and_hooks_are_left_to_vmap() -> None:
    shared = nn.Linear(3, 3)
    assert stacked_forward(nn.Sequential(shared, nn.ReLU(), shared)) is None
    net = mlp([4, 3, 2], seed=0)
    handle = net[0].register_forward_hook(lambda m, i, o: o * 2)
    assert stacked_forward(net) is None
    handle.remove()
    assert stacked_forward(net) is not None


def test_the_stacked_trainer_takes_the_written_out_forward_with_the_same_numbers() -> None:
    """A toy-autoencoder stack trains to the same weights on the written-out forward as on
    vmap (float64)."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 16, 6, generator=g, dtype=torch.float64)

    def train(direct: bool):
        stack = make_stack([ToyReLUAutoencoder(6, 2, seed=s) for s in range(3)], seeds=[0, 1, 2],
                           loss="mse", optimizer="adam", lr=1e-2, batch_fn=lambda step: (x, x),
                           dtype=torch.float64)
        assert stack._direct is not None
        if not direct:
            stack._direct = None
        stack.train(steps=50)
        return [stack.export(k) for k in range(3)]

    for a, b in zip(train(True), train(False), strict=True):
        torch.testing.assert_close(a.W, b.W, rtol=0, atol=1e-13)
        torch.testing.assert_close(a.b, b.b, rtol=0, atol=1e-13)
