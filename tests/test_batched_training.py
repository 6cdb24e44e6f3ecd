"""Batched training of K MLPs == K separate train_classifier runs (learnscope.train.batched)."""

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from learnscope.data.classification import ClassificationData
from learnscope.models.mlp import mlp
from learnscope.train.batched import (
    BatchedTrainer,
    ModelSpec,
    bucket_widths,
    spec_data,
    train_models,
)
from learnscope.train.loop import train_classifier

N, D, C, BATCH, EPOCHS = 410, 12, 5, 20, 3  # 21 steps per epoch, the last one a partial batch
# Float32: measured max |batched - separate| over trained weights (3 epochs, 4 models, SGD and
# Adam, several seeds) was 3.6e-7 (SGD) and 1.6e-6 (Adam); the tolerance leaves ~10x margin.
FLOAT32_ATOL = 2e-5
FLOAT64_ATOL = 1e-10


def _data(dtype=torch.float64) -> ClassificationData:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(D, C, generator=g)
    x = torch.randn(N + 100, D, generator=g, dtype=torch.float64)
    y = (x.float() @ w + 0.5 * torch.randn(N + 100, C, generator=g)).argmax(1)
    return ClassificationData("toy", x[:N].to(dtype), y[:N], x[N:].to(dtype), y[N:], C)


def _flipped_labels(data: ClassificationData, frac: float = 0.3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    y = data.y_train.clone()
    flip = torch.rand(len(y), generator=g) < frac
    y[flip] = (y[flip] + 1 + torch.randint(0, C - 1, (int(flip.sum()),), generator=g)) % C
    return y, flip


def _specs(data, lrs=(None, None, None, None), sizes=None):
    y_noisy, mask = _flipped_labels(data)
    sizes = sizes or [[D, 16, C], [D, 32, C], [D, 16, C], [D, 32, C]]
    return [
        ModelSpec(sizes[0], seed=3, lr=lrs[0]),
        ModelSpec(sizes[1], seed=7, lr=lrs[1], y_train=y_noisy, noisy_mask=mask),
        ModelSpec(sizes[2], seed=11, lr=lrs[2]),
        ModelSpec(sizes[3], seed=0, lr=lrs[3]),
    ]


def _separate(spec, data, dtype, activation="relu", **kw):
    """The reference: one mlp trained by train_classifier on the spec's data."""
    net = mlp(spec.sizes, activation=activation, seed=spec.seed).to(dtype)
    d = spec_data(data, spec)
    d = d.with_train(x_train=d.x_train.to(dtype), x_test=d.x_test.to(dtype))
    lr = kw.pop("lr")
    result = train_classifier(net, d, lr=spec.lr if spec.lr is not None else lr,
                              seed=spec.seed, stop_at_train_acc=spec.stop_at_train_acc, **kw)
    return net, result


def _max_weight_error(a: nn.Module, b: nn.Module) -> float:
    pa, pb = list(a.parameters()), list(b.parameters())
    assert [p.shape for p in pa] == [p.shape for p in pb]
    return max(float((p - q).detach().abs().max()) for p, q in zip(pa, pb, strict=True))


def _assert_same_history(batched, separate, loss_tol):
    assert len(batched) == len(separate) > 0
    for a, b in zip(batched, separate, strict=True):
        assert (a.epoch, a.step) == (b.epoch, b.step)
        for key in ("train_acc", "test_acc", "clean_fit", "noisy_fit"):
            va, vb = getattr(a, key), getattr(b, key)
            assert va == vb or (math.isnan(va) and math.isnan(vb)), (key, va, vb)
        assert a.train_loss == pytest.approx(b.train_loss, rel=loss_tol, abs=loss_tol)
        assert a.test_loss == pytest.approx(b.test_loss, rel=loss_tol, abs=loss_tol)


@pytest.mark.parametrize("optimizer,lr,weight_decay", [
    ("sgd", 0.05, 0.0), ("sgd", 0.05, 1e-3), ("adam", 5e-3, 0.0), ("adam", 5e-3, 1e-3),
])
def test_float64_equals_separate_runs(optimizer, lr, weight_decay):
    data = _data()
    specs = _specs(data, lrs=(None, None, 0.5 * lr, None))  # one per-model learning rate
    state = torch.get_rng_state().clone()
    trainer = BatchedTrainer(specs, data, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                             batch_size=BATCH, dtype=torch.float64)
    results = trainer.train(max_epochs=EPOCHS)
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    for k, spec in enumerate(specs):
        net, ref = _separate(spec, data, torch.float64, optimizer=optimizer, lr=lr,
                             weight_decay=weight_decay, batch_size=BATCH, max_epochs=EPOCHS)
        exported = trainer.export(k)
        assert str(exported) == str(net)  # the structure of mlp(sizes_k)
        assert _max_weight_error(exported, net) < FLOAT64_ATOL
        _assert_same_history(results[k].history, ref.history, loss_tol=1e-10)
        assert results[k].diverged is ref.diverged is False
        assert results[k].history[-1].step == EPOCHS * math.ceil(N / BATCH)
    # the flipped-label model really was trained on its own labels
    assert not math.isnan(results[1].history[-1].noisy_fit)
    assert math.isnan(results[0].history[-1].noisy_fit)


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.05), ("adam", 5e-3)])
def test_float32_within_tolerance(optimizer, lr):
    data = _data(torch.float32)
    specs = _specs(data)
    trainer = BatchedTrainer(specs, data, optimizer=optimizer, lr=lr, weight_decay=1e-3,
                             batch_size=BATCH, dtype=torch.float32)
    results = trainer.train(max_epochs=EPOCHS)
    for k, spec in enumerate(specs):
        net, ref = _separate(spec, data, torch.float32, optimizer=optimizer, lr=lr,
                             weight_decay=1e-3, batch_size=BATCH, max_epochs=EPOCHS)
        exported = trainer.export(k)
        assert exported[0].weight.dtype == torch.float32
        assert _max_weight_error(exported, net) < FLOAT32_ATOL
        for a, b in zip(results[k].history, ref.history, strict=True):
            assert a.train_loss == pytest.approx(b.train_loss, rel=1e-5)
            assert abs(a.train_acc - b.train_acc) <= 2 / N  # an argmax may flip at a near-tie


def test_deeper_tanh_nets_with_subsets_and_stopping():
    """Two hidden layers of different widths, tanh, equal-size data subsets, stop_at_train_acc."""
    data = _data()
    g = torch.Generator().manual_seed(5)
    subsets = [torch.randperm(N, generator=g)[:300] for _ in range(3)]
    y_noisy, _ = _flipped_labels(data, 0.2, seed=2)
    specs = [
        ModelSpec([D, 24, 8, C], seed=1, subset=subsets[0], stop_at_train_acc=0.6),
        ModelSpec([D, 10, 16, C], seed=2, subset=subsets[1], y_train=y_noisy),
        ModelSpec([D, 24, 16, C], seed=4, subset=subsets[2], stop_at_train_acc=0.5),
    ]
    trainer = BatchedTrainer(specs, data, activation="tanh", optimizer="adam", lr=1e-2,
                             batch_size=32, dtype=torch.float64)
    results = trainer.train(max_epochs=6)
    fit_epochs = []
    for k, spec in enumerate(specs):
        net, ref = _separate(spec, data, torch.float64, activation="tanh", optimizer="adam",
                             lr=1e-2, batch_size=32, max_epochs=6)
        assert _max_weight_error(trainer.export(k), net) < FLOAT64_ATOL
        _assert_same_history(results[k].history, ref.history, loss_tol=1e-10)
        assert results[k].fit_epoch == ref.fit_epoch
        fit_epochs.append(ref.fit_epoch)
    # the stopping rule really triggered, at different epochs, for the models that have one
    assert fit_epochs[1] is None and None not in (fit_epochs[0], fit_epochs[2])
    assert len(results[0].history) < 6 and len(results[1].history) == 6


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_no_hidden_layer(optimizer):
    """sizes [in, out]: batched multinomial logistic regressions."""
    data = _data()
    specs = [ModelSpec([D, C], seed=s, lr=0.02 * (s + 1)) for s in range(3)]
    trainer = BatchedTrainer(specs, data, optimizer=optimizer, batch_size=BATCH,
                             dtype=torch.float64, weight_decay=1e-3)
    results = trainer.train(max_epochs=2)
    for k, spec in enumerate(specs):
        net, ref = _separate(spec, data, torch.float64, optimizer=optimizer, lr=None,
                             batch_size=BATCH, max_epochs=2, weight_decay=1e-3)
        assert _max_weight_error(trainer.export(k), net) < FLOAT64_ATOL
        _assert_same_history(results[k].history, ref.history, loss_tol=1e-10)


def _padded_region(tensors, spec_sizes, padded_sizes):
    """Values of model k's storage-layout tensors outside its true sizes."""
    out = []
    L = len(padded_sizes) - 1
    for li in range(L):
        W, b = tensors[2 * li], tensors[2 * li + 1]
        fan_in, fan_out = spec_sizes[li], spec_sizes[li + 1]
        mask_w = torch.ones_like(W, dtype=torch.bool)
        mask_b = torch.ones_like(b, dtype=torch.bool)
        if li < L - 1:
            mask_w[:fan_in, :fan_out] = False
            mask_b[:, :fan_out] = False
        else:
            mask_w[:fan_out, :fan_in] = False
            mask_b[:fan_out, :] = False
        out += [W[mask_w], b[mask_b]]
    return torch.cat(out)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_padded_units_stay_exactly_zero(optimizer):
    data = _data(torch.float32)
    specs = [ModelSpec([D, 3, 20, C], seed=1), ModelSpec([D, 40, 5, C], seed=2),
             ModelSpec([D, 40, 20, C], seed=3)]
    trainer = BatchedTrainer(specs, data, optimizer=optimizer, lr=0.05, weight_decay=1e-2,
                             batch_size=BATCH, dtype=torch.float32)
    assert trainer.sizes == [D, 40, 20, C]
    trainer.train(max_epochs=2)
    for k, spec in enumerate(specs):
        params = trainer.padded_parameters(k)
        pad = _padded_region(params, spec.sizes, trainer.sizes)
        grads = [g[trainer.active.index(k)] for g in trainer.grads]  # last step's gradients
        if k < 2:
            assert pad.numel() > 0
        assert torch.equal(pad, torch.zeros_like(pad))
        assert not _padded_region(grads, spec.sizes, trainer.sizes).any()
        # and the real weights did train
        init = mlp(spec.sizes, seed=spec.seed)
        assert _max_weight_error(trainer.export(k), init) > 1e-3


@pytest.mark.parametrize("optimizer,lrs", [
    ("sgd", (0.05, 0.04, 1e4, 0.03)), ("adam", (5e-3, 4e-3, 1e200, 3e-3)),
])
def test_divergent_model_is_frozen_and_does_not_affect_others(optimizer, lrs):
    data = _data()
    specs = _specs(data, lrs=lrs)
    trainer = BatchedTrainer(specs, data, optimizer=optimizer, batch_size=BATCH,
                             dtype=torch.float64)
    results = trainer.train(max_epochs=EPOCHS)
    assert results[2].diverged and len(results[2].history) < EPOCHS
    assert not any(results[k].diverged for k in (0, 1, 3))
    frozen = trainer.padded_parameters(2)
    assert all(bool(torch.isfinite(p).all()) for p in frozen)  # weights before the bad step
    assert 2 not in trainer.active
    # same result as a separate run for the diverging model
    net, ref = _separate(specs[2], data, torch.float64, optimizer=optimizer, lr=lrs[2],
                         batch_size=BATCH, max_epochs=EPOCHS)
    assert ref.diverged and len(ref.history) == len(results[2].history)

    others = [specs[k] for k in (0, 1, 3)]
    clean = BatchedTrainer(others, data, optimizer=optimizer, batch_size=BATCH,
                           dtype=torch.float64)
    clean_results = clean.train(max_epochs=EPOCHS)
    for j, k in enumerate((0, 1, 3)):
        assert results[k].history == clean_results[j].history
        for p, q in zip(trainer.padded_parameters(k), clean.padded_parameters(j), strict=True):
            assert torch.equal(p, q)  # bit for bit: nothing leaked from the diverged model


def test_train_models_buckets_and_exports():
    data = _data()
    widths = [4, 5, 7, 60, 64, 9, 50]
    specs = [ModelSpec([D, w, C], seed=i) for i, w in enumerate(widths)]
    seen = []
    results = train_models(specs, data, max_epochs=2, max_buckets=2, optimizer="sgd", lr=0.05,
                           batch_size=BATCH, dtype=torch.float64,
                           on_epoch=lambda k, log: seen.append((k, log.epoch)))
    assert sorted(seen) == sorted(itertools.product(range(len(specs)), (1, 2)))
    for spec, res in zip(specs, results, strict=True):
        net, ref = _separate(spec, data, torch.float64, optimizer="sgd", lr=0.05,
                             batch_size=BATCH, max_epochs=2)
        assert isinstance(res.model, nn.Sequential) and str(res.model) == str(net)
        assert _max_weight_error(res.model, net) < FLOAT64_ATOL
        _assert_same_history(res.history, ref.history, loss_tol=1e-10)


def test_bucket_widths_is_optimal_and_pow2_groups():
    rng = np.random.default_rng(0)
    widths = [int(w) for w in rng.integers(2, 300, size=9)]

    def cost(groups):
        return sum(len(g) * max(widths[i] for i in g) for g in groups)

    def contiguous_partitions(order, parts):
        n = len(order)
        for cuts in itertools.combinations(range(1, n), parts - 1):
            bounds = (0, *cuts, n)
            yield [order[a:b] for a, b in itertools.pairwise(bounds)]

    order = sorted(range(len(widths)), key=lambda i: widths[i])
    for max_buckets in (1, 2, 3, 4):
        groups = bucket_widths(widths, max_buckets=max_buckets)
        assert sorted(i for g in groups for i in g) == list(range(len(widths)))
        assert len(groups) <= max_buckets
        best = min(cost(p) for b in range(1, max_buckets + 1)
                   for p in contiguous_partitions(order, b))
        assert cost(groups) == best
        # with a per-bucket overhead: brute force over every partition into <= max_buckets
        for overhead in (50.0, 400.0):
            groups = bucket_widths(widths, max_buckets=max_buckets, overhead=overhead)
            best = min(cost(p) + overhead * b for b in range(1, max_buckets + 1)
                       for p in contiguous_partitions(order, b))
            assert cost(groups) + overhead * len(groups) == best
    # a large overhead merges everything into one bucket; none splits as far as it may
    assert len(bucket_widths(widths, max_buckets=4, overhead=1e9)) == 1
    assert len(bucket_widths(widths, max_buckets=4)) == 4
    with pytest.raises(ValueError, match="overhead"):
        bucket_widths(widths, overhead=-1.0)
    pow2 = bucket_widths([3, 4, 5, 8, 9, 200, 256], method="pow2")
    assert pow2 == [[0, 1], [2, 3], [4], [5, 6]]
    # full sizes lists: cost counts the padded multiply-adds
    assert bucket_widths([[40, 4, 10], [40, 256, 10], [40, 5, 10]], max_buckets=2) == [[0, 2], [1]]


def test_validation_errors():
    data = _data()
    with pytest.raises(ValueError, match="same depth"):
        BatchedTrainer([ModelSpec([D, 4, C]), ModelSpec([D, 4, 4, C])], data)
    with pytest.raises(ValueError, match="equal size"):
        BatchedTrainer([ModelSpec([D, 4, C], subset=torch.arange(10)),
                        ModelSpec([D, 4, C], subset=torch.arange(11))], data)
    with pytest.raises(ValueError, match="activation"):
        BatchedTrainer([ModelSpec([D, 4, C])], data, activation="sigmoid")
