"""Probes inside a stack of models: each of the K models gets the records a probe session would
write for that model trained alone."""

import pytest
import torch
import torch.nn.functional as F

from learnscope.data.classification import ClassificationData
from learnscope.models import mlp
from learnscope.probes import LayerSimilarityProbe, WeightSpectrumProbe, at_steps
from learnscope.probes.session import ProbeSession
from learnscope.seeding import torch_generator
from learnscope.train.monitored import train_monitored
from learnscope.train.stacked import make_stack

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


@pytest.mark.parametrize("fast_path", [True, False])
def test_each_model_of_a_stack_gets_its_own_records(fast_path):
    data = _data()
    seeds = [3, 5]
    stack = make_stack(lambda s: mlp(SIZES, seed=s), seeds=seeds, optimizer="sgd", lr=0.1,
                       momentum=0.9, batch_size=BATCH, x_train=data.x_train,
                       y_train=data.y_train, dtype=torch.float64, fast_path=fast_path)
    sessions = [ProbeSession(stack.export(k), _probes(), data=(data.x_test, None))
                for k in range(len(seeds))]
    loads = []
    load_into = stack.load_into

    def load(k, module):
        loads.append(k)
        return load_into(k, module)

    stack.load_into = load
    stacked = train_monitored(stack, sessions, steps=STEPS)
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
