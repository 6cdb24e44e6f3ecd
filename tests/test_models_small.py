"""The small models: cnn1d (MNIST-1D paper), deep_linear, ToyReLUAutoencoder."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from learnscope.data import mnist1d
from learnscope.models import ToyReLUAutoencoder, cnn1d, deep_linear, product_matrix
from learnscope.models.cnn1d import conv_output_length
from learnscope.train import train_model


def _params(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


@pytest.mark.parametrize("make", [
    lambda s: cnn1d(seed=s),
    lambda s: deep_linear([5, 7, 3], init_scale=0.1, seed=s),
    lambda s: ToyReLUAutoencoder(6, 2, seed=s),
])
def test_seeded_initialisation_leaves_the_global_rng_alone(make):
    state = torch.get_rng_state().clone()
    a, b, c = make(0), make(0), make(1)
    assert torch.equal(torch.get_rng_state(), state)
    assert _same(_params(a), _params(b))
    assert not _same(_params(a), _params(c))


def test_cnn1d_is_the_papers_network():
    net = cnn1d(seed=0)
    assert sum(p.numel() for p in net.parameters()) == 5210  # the MNIST-1D paper's count
    # the count in closed form for any width c: conv 1*5*c + c, 2x (3*c*c + c), linear 5*c*10 + 10
    for c in (4, 25, 100):
        expected = 6 * c + 2 * (3 * c * c + c) + 50 * c + 10
        assert sum(p.numel() for p in cnn1d(channels=c).parameters()) == expected
    lengths = []
    hooks = [m.register_forward_hook(lambda m, i, o: lengths.append(tuple(o.shape[1:])))
             for m in net if isinstance(m, nn.Conv1d)]
    out = net(torch.zeros(3, 40))
    for h in hooks:
        h.remove()
    assert lengths == [(25, 19), (25, 10), (25, 5)] and out.shape == (3, 10)
    assert [conv_output_length(n, 3, 2, 1) for n in (19, 10)] == [10, 5]
    # PyTorch's default init: every weight within +-1/sqrt(fan_in), biases too
    for m in net:
        if isinstance(m, nn.Conv1d | nn.Linear):
            bound = 1 / math.sqrt(m.weight[0].numel())
            w, b = m.weight.detach().abs(), m.bias.detach().abs()
            assert float(w.max()) <= bound and float(b.max()) <= bound
            assert float(w.max()) > 0.8 * bound  # uniform over the whole range
    with pytest.raises(ValueError, match="too short"):
        cnn1d(n_in=2)


def test_cnn1d_learns_mnist1d_far_above_chance():
    torch.set_num_threads(1)
    data = mnist1d(num_samples=2500)  # 2000 train / 500 test
    net = cnn1d(seed=0)
    history = train_model(net, loss="ce", optimizer="adam", lr=1e-2, x_train=data.x_train,
                          y_train=data.y_train, x_test=data.x_test, y_test=data.y_test,
                          batch_size=100, steps=400, seed=0)
    assert history.logs[-1].test_acc > 0.6  # chance is 0.10; 0.78 measured (seed 0)


def test_deep_linear_init_scale_and_product():
    net = deep_linear([300, 200, 100], init_scale=0.5, seed=0)
    assert all(isinstance(m, nn.Linear) and m.bias is None for m in net)
    for layer, fan_in in zip(net, (300, 200), strict=True):
        std = float(layer.weight.detach().std())
        assert std == pytest.approx(0.5 / math.sqrt(fan_in), rel=0.03)  # N(0, s^2 / fan_in)
        assert abs(float(layer.weight.detach().mean())) < 0.01 / math.sqrt(fan_in)
    small = deep_linear([4, 6, 5, 3], init_scale=1e-2, seed=1)
    P = product_matrix(small)
    w = [m.weight.detach() for m in small]
    torch.testing.assert_close(P, w[2] @ w[1] @ w[0])
    x = torch.randn(7, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(small(x), x @ P.T)
    # a product of three layers at scale 1e-2 is ~1e-6 in size: the saddle at the origin
    assert float(P.abs().max()) < 1e-4
    assert not deep_linear([4, 4], init_scale=0.0)[0].weight.detach().any()
    with pytest.raises(ValueError, match="init_scale"):
        deep_linear([3, 3], init_scale=-1.0)
    with pytest.raises(ValueError, match="sizes"):
        deep_linear([3])


def test_toy_autoencoder_forward_and_init():
    model = ToyReLUAutoencoder(20, 5, seed=3)
    W, b = model.W.detach().numpy().astype(np.float64), np.linspace(-0.2, 0.2, 20)
    with torch.no_grad():
        model.b.copy_(torch.from_numpy(b))
    x = np.random.default_rng(0).uniform(0, 1, size=(9, 20)) * (
        np.random.default_rng(1).uniform(size=(9, 20)) > 0.7)
    expected = np.maximum(x @ W.T @ W + b, 0.0)  # ReLU(W^T W x + b), one example per row
    out = model(torch.from_numpy(x).float()).detach().numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.hidden(torch.from_numpy(x).float()).detach().numpy(),
                               x @ W.T, rtol=1e-5, atol=1e-6)
    big = ToyReLUAutoencoder(400, 100, seed=0)
    assert float(big.W.detach().std()) == pytest.approx(math.sqrt(2 / 500), rel=0.03)
    assert float(ToyReLUAutoencoder(20, 5).b.detach().abs().sum()) == 0.0
    with pytest.raises(ValueError):
        ToyReLUAutoencoder(0, 5)
