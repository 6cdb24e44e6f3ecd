"""Probes inside a stack of models: each of the K models gets the records a probe session would
write for that model trained alone."""

import math

import pytest
import torch
import torch.nn.functional as F

from learnscope.data.classification import ClassificationData
from learnscope.models import mlp
from learnscope.probes import LayerSimilarityProbe, WeightSpectrumProbe, at_steps
from learnscope.probes.session import ProbeSession
from learnscope.seeding import torch_generator
from learnscope.train.batched import BatchedTrainer, ModelSpec
from learnscope.train.monitored import train_monitored

N, D, C, BATCH, STEPS = 120, 8, 3, 40, 14  # 3 steps per epoch: epochs are crossed
SIZES = [D, 16, 16, C]
SCHEDULE = (0, 2, 5, 9)


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N + 50, D, generator=g, dtype=torch.float64)
    y = (x[:, :C]).argmax(1)
    return ClassificationData("toy", x[:N], y[:N], x[N:], y[N:], C)


def _probes():
    return [LayerSimilarityProbe(schedule=at_steps(*SCHEDULE), pairs=True),
            WeightSpectrumProbe(schedule=at_steps(*SCHEDULE))]


def _alone(seed: int, data: ClassificationData) -> list:
    """The reference: one model, a plain loop with the batch order the trainers use."""
    model = mlp(SIZES, seed=seed).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    session = ProbeSession(model, _probes(), data=(data.x_test, None))
    order = torch_generator(seed, "batch-order")
    step = 0
    while step < STEPS:
        perm = torch.randperm(N, generator=order)
        for i in range(0, N, BATCH):
            if step == STEPS:
                break
            idx = perm[i:i + BATCH]
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            session.step()
            if step % (N // BATCH) == 0:
                session.epoch()
    return session.close()


def test_each_model_of_a_stack_gets_its_own_records():
    data = _data()
    seeds = [3, 5]
    trainer = BatchedTrainer([ModelSpec(SIZES, seed=s) for s in seeds], data, optimizer="sgd",
                             lr=0.1, momentum=0.9, batch_size=BATCH, dtype=torch.float64)
    twins = [trainer.export(k) for k in range(len(seeds))]
    sessions = [ProbeSession(t, _probes(), data=(data.x_test, None)) for t in twins]
    loads = []

    def load(k, module):
        loads.append(k)
        module.load_state_dict(trainer.export(k).state_dict())

    stacked = train_monitored(trainer, sessions, STEPS, steps_per_epoch=math.ceil(N / BATCH),
                              load=load)
    # weights are copied only where a probe is due (steps 2, 5, 9) and once at the end
    assert len(loads) == len(seeds) * 4
    for seed, records in zip(seeds, stacked, strict=True):
        alone = _alone(seed, data)
        def key(r):  # float metadata (e.g. a fitted xmin) compared to 8 digits
            return (r.probe, r.key, r.step, sorted(
                (k, f"{v:.8g}" if isinstance(v, float) else str(v)) for k, v in r.meta.items()))

        a, b = sorted(alone, key=key), sorted(records, key=key)
        assert [key(r) for r in a] == [key(r) for r in b]
        assert {r.key for r in b} >= {"similarity_to_final", "steps_to_threshold"}
        for ra, rb in zip(a, b, strict=True):
            assert rb.value == pytest.approx(ra.value, rel=1e-7, abs=1e-9, nan_ok=True)
