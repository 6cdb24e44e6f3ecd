"""The ensembles study's pieces: the theory's activation and network, the distillation loss,
and stacks of models trained on any loss equal to the models trained alone."""

from __future__ import annotations

import torch
from torch import nn

from learnscope.models import mlp
from learnscope.studies.ensembles import (
    SmoothedCubicReLU,
    ViewNet,
    _FunctionalStack,
    _mean_subset_accuracy,
    _Recipe,
    distillation_loss,
)


def test_smoothed_cubic_relu_closed_form_and_smooth_at_rho():
    act = SmoothedCubicReLU(0.5)
    z = torch.tensor([-1.0, 0.0, 0.25, 0.5, 2.0], dtype=torch.float64)
    expected = [0.0, 0.0, 0.25**3 / (3 * 0.25), 0.5 / 3, 2.0 - 1.0 / 3]
    torch.testing.assert_close(act(z), torch.tensor(expected, dtype=torch.float64))
    at = torch.tensor([0.5 - 1e-7, 0.5 + 1e-7], dtype=torch.float64, requires_grad=True)
    act(at).sum().backward()
    assert at.grad is not None
    torch.testing.assert_close(at.grad, torch.ones(2, dtype=torch.float64), atol=1e-6, rtol=0)


def test_viewnet_sums_the_activation_over_patches_and_neurons():
    net = ViewNet(3, 5, 4, 2, rho=0.1, init_scale=0.5, seed=0)
    x = torch.randn(7, 15, generator=torch.Generator().manual_seed(1))
    W = net.weight.detach().view(5, 4, 2)  # (patch_dim, class, neuron)
    act = SmoothedCubicReLU(0.1)
    brute = torch.zeros(7, 4)
    for i in range(7):
        for c in range(4):
            for r in range(2):
                for p in range(3):
                    brute[i, c] += act(x[i, 5 * p:5 * p + 5] @ W[:, c, r])
    torch.testing.assert_close(net(x), brute, atol=1e-5, rtol=1e-5)
    assert torch.equal(ViewNet(3, 5, 4, 2, rho=0.1, init_scale=0.5, seed=0).weight,
                       net.weight)


def test_distillation_loss_matches_torch_kl_div_and_cross_entropy():
    g = torch.Generator().manual_seed(0)
    labeled, transfer = torch.randn(2, 6, 3, generator=g), torch.randn(2, 4, 3, generator=g)
    labels = torch.randint(3, (2, 6), generator=g)
    teacher = torch.softmax(torch.randn(2, 4, 3, generator=g) / 2.0, -1)
    got = distillation_loss(labeled, labels, transfer, teacher, 2.0, 0.7)
    expected = 0.0
    for m in range(2):
        ce = nn.functional.cross_entropy(labeled[m], labels[m])
        kl = nn.functional.kl_div(torch.log_softmax(transfer[m] / 2.0, -1), teacher[m],
                                  reduction="batchmean")
        expected += 0.3 * ce + 0.7 * 4.0 * kl
    torch.testing.assert_close(got, torch.as_tensor(expected))
    # a student equal to its teacher pays no KL
    same = distillation_loss(labeled, labels, transfer, torch.softmax(transfer / 2.0, -1),
                             2.0, 1.0)
    assert abs(float(same)) < 1e-6


def test_functional_stack_trains_each_model_as_alone():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 6, generator=g), torch.randint(3, (20,), generator=g)
    make = [lambda s: mlp([6, 5, 3], seed=s),
            lambda s: ViewNet(2, 3, 3, 2, rho=0.1, init_scale=0.3, seed=s)]
    for factory in make:
        for optimizer in ("adam", "sgd"):
            recipe = _Recipe(optimizer, 0.05, 15, 20)
            stack = _FunctionalStack([factory(s) for s in (1, 2)])

            def stacked_loss(step: int, stack: _FunctionalStack = stack) -> torch.Tensor:
                out = stack(x.expand(2, *x.shape))
                return sum(nn.functional.cross_entropy(out[m], y) for m in range(2))

            stack.train(recipe, stacked_loss)
            for m, seed in enumerate((1, 2)):
                alone = factory(seed)
                opt = recipe.optim(list(alone.parameters()))
                for _ in range(recipe.steps):
                    opt.zero_grad()
                    nn.functional.cross_entropy(alone(x), y).backward()
                    opt.step()
                for name, p in alone.named_parameters():
                    torch.testing.assert_close(stack.params[name][m], p.detach(), atol=1e-5,
                                               rtol=1e-4)


def test_mean_subset_accuracy_spans_single_networks_to_the_full_ensemble():
    g = torch.Generator().manual_seed(3)
    logits, y = torch.randn(4, 50, 3, generator=g), torch.randint(3, (50,), generator=g)
    single = (logits.argmax(-1) == y).float().mean(1)
    assert abs(_mean_subset_accuracy(logits, y, 1) - float(single.mean())) < 1e-6
    full = float((logits.mean(0).argmax(-1) == y).float().mean())
    assert abs(_mean_subset_accuracy(logits, y, 4) - full) < 1e-6
    pairs = [float((logits[[i, (i + 1) % 4]].mean(0).argmax(-1) == y).float().mean())
             for i in range(4)]
    assert abs(_mean_subset_accuracy(logits, y, 2) - sum(pairs) / 4) < 1e-6
