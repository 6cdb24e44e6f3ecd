"""Mixup batches and the regularisers of the batched trainer, against plain-PyTorch references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from learnscope.data.classification import ClassificationData
from learnscope.models.mlp import mlp
from learnscope.seeding import torch_generator
from learnscope.train.batched import BatchedTrainer, ModelSpec
from learnscope.train.loop import train_classifier
from learnscope.train.mixup import MixupSampler, mix_batch

N, D, C, BATCH = 130, 7, 4, 20  # 7 steps per epoch, the last a partial batch of 10


def _data() -> ClassificationData:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N + 40, D, generator=g, dtype=torch.float64)
    y = (x[:, :C] + 0.3 * torch.randn(N + 40, C, generator=g, dtype=torch.float64)).argmax(1)
    return ClassificationData("toy", x[:N], y[:N], x[N:], y[N:], C)


# ------------------------------------------------------------------ the mixup sampler


def test_mixup_draws_are_deterministic_given_the_seed():
    a, b, c = (MixupSampler(1.0, seed=3), MixupSampler(1.0, seed=3), MixupSampler(1.0, seed=4))
    draws_a = [a.draw(16) for _ in range(5)]
    draws_b = [b.draw(16) for _ in range(5)]
    draws_c = [c.draw(16) for _ in range(5)]
    for (la, pa), (lb, pb) in zip(draws_a, draws_b, strict=True):
        assert la == lb and torch.equal(pa, pb)
    assert [lam for lam, _ in draws_a] != [lam for lam, _ in draws_c]


@pytest.mark.parametrize("alpha", [0.5, 1.0, 8.0])
def test_mixup_lambda_follows_beta(alpha):
    """lam ~ Beta(alpha, alpha): mean 1/2, variance 1 / (4 (2 alpha + 1)); 20000 draws, the
    tolerances are 5 standard errors of the sample mean and variance."""
    sampler = MixupSampler(alpha, seed=0)
    lams = np.array([sampler.draw(2)[0] for _ in range(20000)])
    var = 1 / (4 * (2 * alpha + 1))
    # the sample variance's standard error from the Beta's fourth central moment
    m4 = 3 * var**2 * (2 * alpha + 1) / (2 * alpha + 3)
    assert abs(lams.mean() - 0.5) < 5 * math.sqrt(var / len(lams))
    assert abs(lams.var() - var) < 5 * math.sqrt((m4 - var**2) / len(lams))
    assert lams.min() >= 0 and lams.max() <= 1


def test_mixup_permutations_are_uniform_and_alpha_zero_is_off():
    sampler = MixupSampler(1.0, seed=1)
    first = np.array([int(sampler.draw(4)[1][0]) for _ in range(4000)])
    counts = np.bincount(first, minlength=4)
    assert np.all(np.abs(counts - 1000) < 5 * math.sqrt(4000 * 0.25 * 0.75))
    lam, perm = MixupSampler(0.0, seed=1).draw(5)
    assert lam == 1.0 and perm.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        MixupSampler(-1.0, seed=0)


def test_mix_batch_mixes_inputs_and_labels_with_the_same_draw():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    lam, perm = MixupSampler(1.0, seed=5).draw(6)
    xm, ym = mix_batch(x, y, 3, lam, perm)
    for i in range(6):
        j = int(perm[i])
        assert torch.allclose(xm[i], lam * x[i] + (1 - lam) * x[j], atol=1e-12)
        expected = torch.zeros(3, dtype=torch.float64)
        expected[y[i]] += lam
        expected[y[j]] += 1 - lam
        assert torch.allclose(ym[i], expected, atol=1e-12)
    assert torch.allclose(ym.sum(1), torch.ones(6, dtype=torch.float64))


# ------------------------------------------------------------------ the trainer's regularisers


def _reference(spec: ModelSpec, data: ClassificationData, epochs: int, lr: float) -> torch.nn.Module:
    """Plain PyTorch: the same batch order, dropout masks and mixup draws as the batched
    trainer promises, soft-target cross-entropy, torch.optim.SGD with momentum."""
    net = mlp(spec.sizes, seed=spec.seed).double()
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9,
                          weight_decay=spec.weight_decay or 0.0)
    order = torch_generator(spec.seed, "batch-order")
    drops = torch_generator(spec.seed, "dropout-masks")
    mixer = MixupSampler(spec.mixup_alpha, seed=spec.seed)
    for _ in range(epochs):
        for idx in torch.randperm(N, generator=order).split(BATCH):
            b = len(idx)
            masks = [(torch.rand(b, w, generator=drops, dtype=torch.float64) >= spec.dropout)
                     .double() / (1 - spec.dropout) if spec.dropout > 0 else None
                     for w in spec.sizes[1:-1]]
            lam, perm = mixer.draw(b)
            x, target = mix_batch(data.x_train[idx], data.y_train[idx], C, lam, perm)
            target = (1 - spec.label_smoothing) * target + spec.label_smoothing / C
            h = x
            for li, lin in enumerate(linears[:-1]):
                h = torch.relu(lin(h))
                if masks[li] is not None:
                    h = h * masks[li]
            loss = F.cross_entropy(linears[-1](h), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net


@pytest.mark.parametrize("options", [
    {"dropout": 0.3},
    {"label_smoothing": 0.2},
    {"mixup_alpha": 1.0},
    {"mixup_alpha": 8.0, "label_smoothing": 0.1, "dropout": 0.5},
    {"weight_decay": 1e-2},
])
def test_regularised_stack_equals_a_plain_pytorch_run(options):
    """Each regularised model of a mixed stack trains exactly as its plain-PyTorch reference
    (float64), while an unregularised neighbour in the same stack is unaffected."""
    data = _data()
    sizes = [D, 12, 9, C]
    spec = ModelSpec(sizes, seed=2, **options)
    plain = ModelSpec(sizes, seed=5)
    trainer = BatchedTrainer([spec, plain], data, optimizer="sgd", lr=0.05, batch_size=BATCH,
                             dtype=torch.float64)
    trainer.train(max_epochs=3)
    reference = _reference(spec, data, 3, 0.05)
    for a, b in zip(trainer.export(0).parameters(), reference.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-10), float((a - b).abs().max())
    # the plain neighbour equals a separate train_classifier run
    net = mlp(sizes, seed=5).double()
    train_classifier(net, data, optimizer="sgd", lr=0.05, batch_size=BATCH, max_epochs=3, seed=5)
    for a, b in zip(trainer.export(1).parameters(), net.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-10)


def test_train_logits_are_undropped_and_unmixed():
    data = _data()
    spec = ModelSpec([D, 10, C], seed=1, dropout=0.5, mixup_alpha=1.0)
    trainer = BatchedTrainer([spec], data, optimizer="sgd", lr=0.05, batch_size=BATCH,
                             dtype=torch.float64)
    trainer.train(max_epochs=2)
    logits = trainer.train_logits()
    assert logits.shape == (1, N, C)
    expected = trainer.export(0)(data.x_train)
    assert torch.allclose(logits[0], expected, atol=1e-12)
    acc = float((logits[0].argmax(1) == data.y_train).double().mean())
    assert acc == pytest.approx(trainer.evaluate()[0].train_acc)
    assert torch.allclose(trainer.logits(data.x_test)[0], trainer.export(0)(data.x_test),
                          atol=1e-12)


def test_dropout_needs_relu_and_options_are_checked():
    data = _data()
    with pytest.raises(ValueError, match="relu"):
        BatchedTrainer([ModelSpec([D, 5, C], dropout=0.2)], data, activation="tanh")
    for bad in ({"dropout": 1.0}, {"label_smoothing": -0.1}, {"mixup_alpha": -1.0},
                {"weight_decay": -1.0}):
        with pytest.raises(ValueError):
            ModelSpec([D, 5, C], **bad)


# ------------------------------------------------------------------ the regularizers study


def test_early_stopping_is_the_erm_checkpoint_of_best_validation_accuracy():
    from learnscope.studies.base import Trial
    from learnscope.studies.regularizers import (
        EARLY_STOPPING,
        ERM,
        RegularizersConfig,
        _early_stopped,
        _regularisers,
        train_networks,
    )
    from learnscope.train.loop import EpochLog

    history = [EpochLog(e, 10 * e, 1.0, 0.5, 1.0, 0.1 * e, 0.9, 0.01 * e) for e in range(1, 6)]
    out = _early_stopped(history, [0.3, 0.6, 0.5, 0.6, 0.2], False)
    assert out.info["stop_epoch"] == 2  # the first epoch of the best validation accuracy
    final = {r.key: r.value for r in out.records}  # in epoch order: the last value wins
    assert final["stop_epoch"] == 2 and final["test_acc"] == pytest.approx(0.2)
    assert max(r.step for r in out.records if r.key != "stop_epoch") == 2

    cfg = RegularizersConfig(seeds=1, hidden=8, epochs=4, n_train=200)
    names = _regularisers(cfg)
    assert ERM in names and EARLY_STOPPING in names and len(names) == 7
    trials = [Trial({"part": "train", "regularizer": r, "seed": 0}) for r in names]
    outputs = train_networks(cfg, trials)
    by_name = {t.regularizer: o for t, o in zip(trials, outputs, strict=True)}
    erm = [(r.key, r.step, r.value) for r in by_name[ERM].records if r.key != "stop_epoch"]
    stop = by_name[EARLY_STOPPING].info["stop_epoch"]
    early = [(r.key, r.step, r.value) for r in by_name[EARLY_STOPPING].records
             if r.key != "stop_epoch"]
    assert early == [x for x in erm if x[1] <= stop]
    val = [v for k, _, v in erm if k == "val_acc"]
    assert len(val) == 4 and stop == int(np.argmax(val)) + 1
    # without its ERM trial in the batch, early stopping trains the ERM network itself
    alone = train_networks(cfg, [Trial({"part": "train", "regularizer": EARLY_STOPPING,
                                        "seed": 0})])
    assert [(r.key, r.step, r.value) for r in alone[0].records] == \
        [(r.key, r.step, r.value) for r in by_name[EARLY_STOPPING].records]
