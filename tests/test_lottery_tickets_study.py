"""Lottery tickets: masked training in a stack equals a masked single-model reference, the
weight views are writable in both engines, the paired standard error, the IMP round records."""

import math

import pytest
import torch

from learnscope.errors import ConfigError
from learnscope.measures.pruning import magnitude_masks, random_masks
from learnscope.models import mlp
from learnscope.runner import resolve_config
from learnscope.seeding import torch_generator
from learnscope.studies import get_study
from learnscope.studies.base import Trial
from learnscope.studies.lottery_tickets import (
    LotteryTicketsConfig,
    paired_se,
    stacked_weight_views,
    train_imp,
    train_round,
)
from learnscope.train.stacked import FastMLPStack, StackedTrainer, make_stack

SIZES = [6, 8, 8, 3]


def _data(n=40):
    g = torch_generator(0, "test-data")
    x = torch.randn(n, SIZES[0], generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def _masks(seed):
    net = mlp(SIZES, seed=seed)
    weights = [m.weight for m in net if isinstance(m, torch.nn.Linear)]
    return [magnitude_masks(weights, [20, 30, 10])[i] for i in range(3)]


def _reference(seed, masks, x, y, steps, lr=0.01, batch=10):
    """One model, torch.optim.Adam, the mask re-applied after every step, the stack's batches."""
    net = mlp(SIZES, seed=seed)
    weights = [m.weight for m in net if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for w, m in zip(weights, masks, strict=True):
            w.mul_(m)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch_generator(seed, "batch-order")
    order = []
    while len(order) < steps * batch:
        order += torch.randperm(len(x), generator=gen).tolist()
    for t in range(steps):
        rows = order[t * batch:(t + 1) * batch]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x[rows]), y[rows]).backward()
        opt.step()
        with torch.no_grad():
            for w, m in zip(weights, masks, strict=True):
                w.mul_(m)
    return net


@pytest.mark.parametrize("fast_path", [True, False])
def test_masked_stack_equals_masked_reference(fast_path):
    x, y = _data()
    seeds = [0, 1]
    masks = [_masks(s) for s in seeds]
    stack = make_stack([mlp(SIZES, seed=s) for s in seeds], seeds=seeds, fast_path=fast_path,
                       loss="ce", optimizer="adam", lr=0.01, batch_size=10, x_train=x,
                       y_train=y)
    assert isinstance(stack, FastMLPStack if fast_path else StackedTrainer)
    stacked = [torch.stack([m[li] for m in masks]) for li in range(3)]

    def mask_step(_step, s):
        for v, m in zip(stacked_weight_views(s), stacked, strict=True):
            v.mul_(m)

    mask_step(0, stack)
    stack.train(steps=12, on_step=mask_step)
    for k, seed in enumerate(seeds):
        ref = _reference(seed, masks[k], x, y, steps=12)
        got = stack.export(k)
        for p, q in zip(got.parameters(), ref.parameters(), strict=True):
            assert torch.allclose(p, q, atol=2e-5), (fast_path, k)
        lin = [m for m in got if isinstance(m, torch.nn.Linear)]
        for layer, m in zip(lin, masks[k], strict=True):
            assert (layer.weight[~m] == 0).all() and (layer.weight[m] != 0).all()


@pytest.mark.parametrize("fast_path", [True, False])
def test_weight_views_are_writable_model_weights(fast_path):
    x, y = _data()
    stack = make_stack([mlp(SIZES, seed=s) for s in (3, 4)], seeds=[3, 4], fast_path=fast_path,
                       x_train=x, y_train=y)
    views = stacked_weight_views(stack)
    assert [tuple(v.shape) for v in views] == [(2, 8, 6), (2, 8, 8), (2, 3, 8)]
    for li, v in enumerate(views):
        expected = torch.stack([[m for m in stack.export(k) if isinstance(m, torch.nn.Linear)][
            li].weight for k in range(2)])
        assert torch.equal(v, expected)
    views[1][1, 2, 5] = 7.0
    assert stack.export(1)[2].weight[2, 5] == 7.0 and stack.export(0)[2].weight[2, 5] != 7.0


def test_paired_se_closed_form():
    g = torch_generator(0, "se")
    a, b = torch.rand(500, generator=g) < 0.6, torch.rand(500, generator=g) < 0.5
    n, d = 500, a.double() - b.double()
    # closed form from the discordant counts: var of d in {-1, 0, 1}
    up, down = int((a & ~b).sum()), int((~a & b).sum())
    mean = (up - down) / n
    var = ((up + down) - n * mean**2) / (n - 1)
    assert paired_se(a, b) == pytest.approx(math.sqrt(var / n), rel=1e-12)
    assert paired_se(a, a) == 0.0
    assert paired_se(a, b) == pytest.approx(float(d.std()) / math.sqrt(n))


def test_config_checks():
    study = get_study("lottery-tickets")
    with pytest.raises(ConfigError):
        resolve_config(study, quick=True, overrides={"control_fractions": [0.15]})
    with pytest.raises(ConfigError):
        resolve_config(study, quick=True, overrides={"fractions": [0.5, 0.5, 0.2]})


def test_round_masks_hold_after_training_and_random_masks_differ():
    from learnscope.data import mnist1d

    cfg = LotteryTicketsConfig(seeds=1, hidden=8, steps=10, evals=1)
    data = mnist1d(5000)
    sizes = [40, 8, 8, 10]
    theta0 = mlp(sizes, seed=0)
    weights = [m.weight for m in theta0 if isinstance(m, torch.nn.Linear)]
    ticket = magnitude_masks(weights, [100, 20, 60])
    rand = random_masks([w.shape for w in weights], [100, 20, 60], torch_generator(0, "r"))
    _, trained = train_round(cfg, data, [theta0, theta0], [ticket, rand], [0, 0])
    for net, masks in zip(trained, (ticket, rand), strict=True):
        lin = [m for m in net if isinstance(m, torch.nn.Linear)]
        for layer, m in zip(lin, masks, strict=True):
            assert (layer.weight[~m] == 0).all()
    assert any(not torch.equal(a, b) for a, b in zip(ticket, rand, strict=True))


def test_imp_records_conditions_and_kept_fractions():
    cfg = LotteryTicketsConfig(seeds=1, hidden=20, steps=10, evals=1, fractions=(0.5, 0.2),
                               control_fractions=(0.2,))
    (out,) = train_imp(cfg, [Trial({"part": "imp", "seed": 0})])
    kept = {(r.meta["condition"], r.meta["fraction"]): r.value for r in out.records
            if r.key == "weights_kept"}
    assert set(kept) == {("dense", 1.0), ("ticket", 0.5), ("ticket", 0.2), ("reinit", 0.2),
                         ("randmask", 0.2)}
    n = [40 * 20, 20 * 20, 20 * 10]
    # hidden layers at 50% / 20%, output layer at 75% / 52.5%
    assert kept["ticket", 0.5] == pytest.approx((400 + 200 + 150) / sum(n))
    assert kept["ticket", 0.2] == pytest.approx((160 + 80 + 105) / sum(n))
    assert kept["randmask", 0.2] == kept["reinit", 0.2] == kept["ticket", 0.2]
    se = [r.value for r in out.records if r.key in ("se_vs_ticket", "se_vs_dense")]
    assert len(se) == 4 and all(0 <= v < 0.05 for v in se)
