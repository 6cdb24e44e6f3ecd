"""The stacked trainer == K separate train_model runs, for every architecture, loss and optimizer.

The reference is :func:`learnscope.train.loop.train_model`: one module, ``torch.optim``,
``torch.nn.functional`` losses, the batch order of ``train_classifier``. Float64 runs must agree
to ~1e-10 (only the order of floating-point sums differs); float32 runs to a measured tolerance.
"""

import copy
import math

import pytest
import torch
from torch import nn

from learnscope.models import ToyReLUAutoencoder, cnn1d, deep_linear, mlp
from learnscope.train import (
    FastMLPStack,
    StackedTrainer,
    fast_path_reason,
    make_stack,
    train_model,
)

N, D, C, BATCH = 90, 12, 5, 20  # 5 steps per epoch, the last one a partial batch of 10
SUBSET = 70  # equal-size per-model training subsets: 4 steps per epoch
FLOAT64_ATOL = 1e-10
# Float64: measured max |stacked - separate| over trained weights was 2.2e-16 (all tests here).
# Float32: this file's runs measured 6.0e-8 (MLP+Adam 3 epochs), 4.5e-8 (cnn1d+SGD 2 epochs),
# 6.0e-8 (toy autoencoder+AdamW 40 steps); longer runs (10 epochs MLP with SGD/Adam/AdamW, 5
# epochs cnn1d with SGD/Adam, 3 seeds each) at most 2.4e-7 (MLP+SGD). Only the order of
# floating-point sums differs (batched vs single matmuls, grouped convolutions), so the gap is
# a few float32 ulps growing slowly with steps; the tolerance leaves ~10x over the longest run.
FLOAT32_ATOL = 2e-6


def _classification(dtype=torch.float64, n_in=D, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n_in, C, generator=g, dtype=torch.float64)
    x = torch.randn(N + 40, n_in, generator=g, dtype=torch.float64)
    y = (x @ w + 0.5 * torch.randn(N + 40, C, generator=g, dtype=torch.float64)).argmax(1)
    return x[:N].to(dtype), y[:N], x[N:].to(dtype), y[N:]


def _noisy_labels(y, frac=0.3, seed=1):
    g = torch.Generator().manual_seed(seed)
    flip = torch.rand(len(y), generator=g) < frac
    out = y.clone()
    out[flip] = (out[flip] + 1 + torch.randint(0, C - 1, (int(flip.sum()),), generator=g)) % C
    return out


def _subsets(K, seed=5):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(N, generator=g)[:SUBSET] for _ in range(K)])


def _max_weight_error(a: nn.Module, b: nn.Module) -> float:
    pa, pb = list(a.parameters()), list(b.parameters())
    assert [p.shape for p in pa] == [p.shape for p in pb]
    return max(float((p - q).detach().abs().max()) for p, q in zip(pa, pb, strict=True))


def _assert_same_history(stacked, separate, tol):
    assert stacked.diverged == separate.diverged
    assert stacked.diverged_at == separate.diverged_at
    assert len(stacked.logs) == len(separate.logs)
    assert separate.logs or separate.diverged
    for a, b in zip(stacked.logs, separate.logs, strict=True):
        assert (a.step, a.epoch) == (b.step, b.epoch)
        for key in ("train_loss", "test_loss", "train_acc", "test_acc"):
            va, vb = getattr(a, key), getattr(b, key)
            if math.isnan(vb):
                assert math.isnan(va), key
            elif key.endswith("acc") and tol < 1e-8:
                assert va == vb, (key, va, vb)
            else:
                assert va == pytest.approx(vb, rel=tol, abs=tol), key


def _separate_runs(make, seeds, *, lrs, wds, x_train=None, y_by_model=None, subsets=None,
                   loss_weights=None, batch_fn=None, dtype=torch.float64, **shared):
    """Each model trained alone by train_model on exactly its own data and options."""
    out = []
    for k, seed in enumerate(seeds):
        model = make(seed).to(dtype)
        kw = dict(shared)
        if x_train is not None:
            x, y = x_train, y_by_model[k]
            if subsets is not None:
                x, y = x[subsets[k]], y[subsets[k]]
            kw.update(x_train=x, y_train=y)
        if batch_fn is not None:
            kw["batch_fn"] = lambda step, _k=k: tuple(t[_k] for t in batch_fn(step))
        history = train_model(model, lr=lrs[k], weight_decay=wds[k], seed=seed,
                              loss_weights=None if loss_weights is None else loss_weights[k], **kw)
        out.append((model, history))
    return out


def _check_against_separate(make, seeds, tol, **kw):
    """Train one stack and K separate runs with the same options; return the max weight error."""
    dtype = kw.setdefault("dtype", torch.float64)
    lrs, wds = kw.pop("lrs"), kw.pop("wds")
    y_by_model = kw.pop("y_by_model", None)
    run = {key: kw.pop(key) for key in ("steps", "epochs", "eval_every") if key in kw}
    state = torch.get_rng_state().clone()
    modules = [make(s) for s in seeds]
    originals = copy.deepcopy(modules)
    stack = StackedTrainer(modules, seeds=seeds, lr=lrs, weight_decay=wds,
                           y_train_by_model=y_by_model, **kw)
    histories = stack.train(**run)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    for m, orig in zip(modules, originals, strict=True):
        assert _max_weight_error(m, orig) == 0  # the given modules are not trained in place
    kw.pop("dtype", None)
    kw.pop("device", None)
    refs = _separate_runs(make, seeds, lrs=lrs, wds=wds, y_by_model=y_by_model, dtype=dtype,
                          **kw, **run)
    worst = 0.0
    for k, (net, ref) in enumerate(refs):
        exported = stack.export(k)
        assert repr(exported) == repr(net)
        assert next(exported.parameters()).dtype == dtype
        worst = max(worst, _max_weight_error(exported, net))
        _assert_same_history(histories[k], ref, tol)
    assert worst < (FLOAT64_ATOL if dtype == torch.float64 else FLOAT32_ATOL), worst
    return worst, stack


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.05), ("adam", 5e-3), ("adamw", 5e-3)])
def test_mlp_ce_per_model_lr_wd_labels_subsets(optimizer, lr):
    x, y, xt, yt = _classification()
    seeds = [3, 7, 11]
    labels = torch.stack([y, _noisy_labels(y), y])
    _, stack = _check_against_separate(
        lambda s: mlp([D, 16, C], activation="tanh", seed=s), seeds, 1e-10,
        loss="ce", optimizer=optimizer, lrs=[lr, lr, 0.5 * lr], wds=[0.0, 1e-3, 1e-2],
        x_train=x, y_by_model=labels, subsets=_subsets(3), x_test=xt, y_test=yt,
        batch_size=BATCH, epochs=3, eval_every=1)
    assert stack.steps_per_epoch == math.ceil(SUBSET / BATCH)


def test_mlp_mse_per_model_targets_and_weights():
    x, _, xt, _ = _classification()
    g = torch.Generator().manual_seed(2)
    proj = torch.randn(3, D, 3, generator=g, dtype=torch.float64)
    targets = torch.einsum("nd,kdo->kno", x, proj)  # a different regression task per model
    weights = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.5, 0.25], [2.0, 0.0, 1.0]],
                           dtype=torch.float64)
    _check_against_separate(
        lambda s: mlp([D, 16, 3], seed=s), [0, 1, 2], 1e-10, loss="mse", optimizer="adam",
        lrs=[3e-3] * 3, wds=[0.0] * 3, x_train=x, y_by_model=targets, loss_weights=weights,
        batch_size=BATCH, epochs=2, eval_every=1)


def test_cnn1d_ce_with_class_weights_sgd_momentum():
    x, y, xt, yt = _classification(n_in=40)
    weights = torch.tensor([[1.0, 2.0, 1.0, 0.5, 1.0], [1.0] * 5], dtype=torch.float64)
    _check_against_separate(
        lambda s: cnn1d(40, C, channels=4, seed=s), [0, 1], 1e-10, loss="ce", optimizer="sgd",
        lrs=[0.05, 0.02], wds=[1e-3, 0.0], x_train=x, y_by_model=torch.stack([y, y]),
        loss_weights=weights, x_test=xt, y_test=yt, batch_size=BATCH, epochs=2)


def test_deep_linear_mse_full_batch_gradient_descent():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(40, 6, generator=g, dtype=torch.float64)
    target_map = torch.randn(4, 6, generator=g, dtype=torch.float64)
    y = x @ target_map.T
    for init_scale in (0.05, 1.0):  # saddle-to-saddle and lazy
        _check_against_separate(
            lambda s, c=init_scale: deep_linear([6, 8, 8, 4], init_scale=c, seed=s), [0, 1, 2],
            1e-10, loss="mse", optimizer="sgd", momentum=0.0, lrs=[0.05, 0.03, 0.01],
            wds=[0.0] * 3, x_train=x, y_by_model=torch.stack([y] * 3), batch_size=None,
            steps=60, eval_every=20)


def _sparse_feature_batches(K, steps, b, n, sparsities, dtype, seed=0):
    """Each model's own fresh sparse feature vectors per step: x_i ~ U[0, 1] w.p. 1 - S_k."""
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(steps, K, b, n, generator=g, dtype=torch.float64)
    present = torch.rand(steps, K, b, n, generator=g, dtype=torch.float64)
    keep = present >= torch.tensor(sparsities, dtype=torch.float64).view(1, K, 1, 1)
    return (values * keep).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_toy_autoencoder_importance_weighted_mse_with_batch_fn(dtype):
    K, n, m, steps = 3, 8, 3, 40
    batches = _sparse_feature_batches(K, steps, 32, n, [0.0, 0.7, 0.9], dtype)
    importance = torch.stack([0.9 ** torch.arange(n, dtype=torch.float64)] * K).to(dtype)
    importance[2] = 0.7 ** torch.arange(n, dtype=torch.float64)
    x_test = _sparse_feature_batches(1, 1, 50, n, [0.5], dtype, seed=1)[0, 0]
    worst, stack = _check_against_separate(
        lambda s: ToyReLUAutoencoder(n, m, seed=s), [0, 1, 2],
        1e-10 if dtype == torch.float64 else 1e-4, loss="mse", optimizer="adamw",
        lrs=[1e-2, 5e-3, 1e-2], wds=[1e-2, 0.0, 1e-2], batch_fn=lambda s: (batches[s], batches[s]),
        loss_weights=importance, x_test=x_test, y_test=x_test, dtype=dtype, steps=steps,
        eval_every=10)
    logs = stack.histories[0].logs
    assert [log.step for log in logs] == [10, 20, 30, 40] and logs[0].epoch is None
    assert math.isnan(logs[0].train_acc) and logs[-1].train_loss < logs[0].train_loss


@pytest.mark.parametrize("arch", ["mlp", "cnn1d"])
def test_float32_within_tolerance(arch):
    x, y, xt, yt = _classification(torch.float32, n_in=40 if arch == "cnn1d" else D)
    if arch == "mlp":
        make, opt, lrs, epochs = (lambda s: mlp([D, 16, C], seed=s)), "adam", [5e-3] * 3, 3
    else:
        make, opt, lrs, epochs = (lambda s: cnn1d(40, C, channels=4, seed=s)), "sgd", [0.05] * 3, 2
    _check_against_separate(make, [0, 1, 2], 1e-4, loss="ce", optimizer=opt, lrs=lrs,
                            wds=[1e-3] * 3, x_train=x, y_by_model=torch.stack([y] * 3),
                            x_test=xt, y_test=yt, batch_size=BATCH, epochs=epochs,
                            dtype=torch.float32)


@pytest.mark.parametrize("optimizer,lrs", [("sgd", [0.05, 1e30, 0.03]),  # diverges at step 7
                                           ("adam", [5e-3, 1e200, 3e-3])])  # at step 2
@pytest.mark.parametrize("fast_path", [False, True])
def test_diverging_model_is_frozen_and_does_not_affect_the_others(optimizer, lrs, fast_path):
    x, y, xt, yt = _classification()
    seeds = [1, 2, 3]
    make = lambda s: mlp([D, 32, C], seed=s)  # noqa: E731
    options = dict(loss="ce", optimizer=optimizer, x_train=x, y_train=y, x_test=xt, y_test=yt,
                   batch_size=BATCH, dtype=torch.float64, fast_path=fast_path)
    stack = make_stack(make, seeds=seeds, lr=lrs, **options)
    assert isinstance(stack, FastMLPStack) is fast_path
    histories = stack.train(epochs=4, eval_every=1)
    assert stack.diverged == [False, True, False]
    refs = _separate_runs(make, seeds, lrs=lrs, wds=[0.0] * 3, x_train=x, y_by_model=[y] * 3,
                          loss="ce", optimizer=optimizer, x_test=xt, y_test=yt,
                          batch_size=BATCH, epochs=4, eval_every=1)
    assert refs[1][1].diverged and len(histories[1].logs) < 4
    for k, (net, ref) in enumerate(refs):
        _assert_same_history(histories[k], ref, 1e-10)
        scale = max(float(p.detach().abs().max()) for p in net.parameters())  # 1e200 if frozen
        assert _max_weight_error(stack.export(k), net) < FLOAT64_ATOL * max(1.0, scale)
    assert all(bool(torch.isfinite(p).all()) for p in stack.export(1).parameters())
    clean = make_stack(make, seeds=[1, 3], lr=[lrs[0], lrs[2]], **options)
    clean.train(epochs=4, eval_every=1)
    for j, k in enumerate((0, 2)):
        assert _max_weight_error(stack.export(k), clean.export(j)) < 1e-13


def test_fast_path_is_chosen_when_it_applies_and_gives_the_same_numbers():
    x, y, xt, yt = _classification()
    labels = torch.stack([y, _noisy_labels(y), y])
    seeds = [4, 5, 6]
    options = dict(loss="ce", lr=[0.05, 0.03, 0.05], weight_decay=1e-3, x_train=x,
                   y_train_by_model=labels, subsets=_subsets(3), x_test=xt, y_test=yt,
                   batch_size=BATCH, dtype=torch.float64)
    for optimizer in ("sgd", "adam"):
        make = lambda s: mlp([D, 16, 8, C], activation="relu", seed=s)  # noqa: E731
        fast = make_stack(make, seeds=seeds, optimizer=optimizer, **options)
        general = make_stack(make, seeds=seeds, optimizer=optimizer, fast_path=False, **options)
        assert isinstance(fast, FastMLPStack) and type(general) is StackedTrainer
        seen: list[int] = []
        fast_h = fast.train(epochs=3, eval_every=1, on_epoch=lambda e, s, seen=seen: seen.append(e))
        general_h = general.train(epochs=3, eval_every=1)
        assert seen == [1, 2, 3]
        for k in range(3):
            _assert_same_history(fast_h[k], general_h[k], 1e-10)
            assert _max_weight_error(fast.export(k), general.export(k)) < FLOAT64_ATOL
    # and the general engine is chosen (with the reason) whenever the fast path does not apply
    mods = [mlp([D, 8, C], seed=s) for s in range(2)]
    base = dict(x_train=x, y_train=y)
    cases = {
        'loss is not "ce"': dict(loss="mse", x_train=x, y_train=torch.zeros(N, C)),
        "optimizer is not sgd or adam": dict(optimizer="adamw", **base),
        "loss weights": dict(loss_weights=torch.ones(2, C), **base),
        "per-model weight decay": dict(weight_decay=[0.0, 1e-3], **base),
        "batches come from a batch function": dict(batch_fn=lambda s: (x[None], y[None])),
    }
    for reason, kw in cases.items():
        assert fast_path_reason(mods, **kw) == reason
        assert type(make_stack(mods, **kw)) is StackedTrainer
        with pytest.raises(ValueError, match="fast path does not apply"):
            make_stack(mods, fast_path=True, **kw)
    for other in ([cnn1d(D, C, channels=2, seed=s) for s in range(2)],
                  [deep_linear([D, C], seed=s) for s in range(2)],
                  [mlp([D, 8, C], activation="gelu", seed=s) for s in range(2)]):
        assert "mlp-shaped" in fast_path_reason(other, **base)
        assert type(make_stack(other, **base)) is StackedTrainer


@pytest.mark.parametrize("fast_path", [False, True])
def test_hooks_see_each_model_during_training(fast_path):
    x, y, xt, yt = _classification()
    stack = make_stack(lambda s: mlp([D, 8, C], seed=s), seeds=[0, 1], optimizer="sgd", lr=0.05,
                       x_train=x, y_train=y, batch_size=BATCH, dtype=torch.float64,
                       fast_path=fast_path)
    probe = mlp([D, 8, C], seed=99).to(torch.float64)
    norms, epochs = [], []

    def on_step(step, s):
        s.load_into(1, probe)  # a per-model probe reading model 1 in place
        norms.append((step, float(probe[0].weight.detach().norm())))
        assert _max_weight_error(probe, s.export(1)) == 0

    stack.train(steps=12, eval_every=4, on_step=on_step,
                on_epoch=lambda e, s: epochs.append((e, s.step)))
    assert [s for s, _ in norms] == list(range(1, 13))
    assert len({v for _, v in norms}) == 12  # the weights moved at every step
    assert epochs == [(1, 5), (2, 10)]
    assert [log.step for log in stack.histories[0].logs] == [4, 8, 12]
    # train() continues where it stopped; predict() gives every model's outputs
    stack.train(steps=3)
    assert stack.step == 15 and stack.histories[0].logs[-1].step == 15
    out = stack.predict(xt)
    assert out.shape == (2, len(xt), C)
    torch.testing.assert_close(out[1], stack.export(1)(xt.to(torch.float64)), rtol=0, atol=1e-12)


class _FixedProjectionNet(nn.Module):
    """A model with a per-seed buffer (a fixed random input projection) and a trained head."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("projection", torch.randn(D, 6, generator=g, dtype=torch.float64))
        self.head = mlp([6, 8, C], seed=seed)

    def forward(self, x):
        return self.head(torch.tanh(x @ self.projection))


def test_modules_with_buffers():
    x, y, xt, yt = _classification()
    _, stack = _check_against_separate(
        _FixedProjectionNet, [0, 1], 1e-10, loss="ce", optimizer="adam", lrs=[1e-2, 5e-3],
        wds=[0.0, 0.0], x_train=x, y_by_model=torch.stack([y, y]), x_test=xt, y_test=yt,
        batch_size=BATCH, epochs=2, eval_every=1)
    for k in range(2):  # each model keeps its own buffer
        assert torch.equal(stack.export(k).projection, _FixedProjectionNet(k).projection)


def test_validation_errors():
    x, y, _, _ = _classification()
    with pytest.raises(ValueError, match="same architecture"):
        StackedTrainer([mlp([D, 4, C]), mlp([D, 5, C])], x_train=x, y_train=y)
    with pytest.raises(TypeError, match="list of K modules"):
        StackedTrainer(mlp([D, 4, C]), x_train=x, y_train=y)
    with pytest.raises(ValueError, match="needs seeds"):
        StackedTrainer(lambda s: mlp([D, 4, C], seed=s), x_train=x, y_train=y)
    with pytest.raises(ValueError, match="lr has 3 values for 2 models"):
        StackedTrainer([mlp([D, 4, C])] * 2, lr=[0.1] * 3, x_train=x, y_train=y)
    with pytest.raises(ValueError, match="not both"):
        StackedTrainer([mlp([D, 4, C])] * 2, x_train=x, y_train=y,
                       batch_fn=lambda s: (x[None], y[None]))
    with pytest.raises(ValueError, match="leading model axis"):
        StackedTrainer([mlp([D, 4, C])] * 2, loss="ce", loss_weights=torch.ones(C),
                       x_train=x, y_train=y)
    with pytest.raises(ValueError, match="equal size"):
        StackedTrainer([mlp([D, 4, C])] * 2, x_train=x, y_train=y,
                       subsets=[torch.arange(10), torch.arange(11)])
    with pytest.raises(ValueError, match="exactly one of steps and epochs"):
        StackedTrainer([mlp([D, 4, C])] * 2, x_train=x, y_train=y).train()
    with pytest.raises(ValueError, match="batch function give steps"):
        StackedTrainer([mlp([D, 4, C])] * 2, batch_fn=lambda s: (x[None], y[None])).train(
            epochs=1)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.parametrize("fast_path", [False, True])
def test_cuda_equals_cpu(fast_path):
    x, y, xt, yt = _classification()
    options = dict(seeds=[0, 1, 2], optimizer="adam", lr=[5e-3, 1e200, 3e-3], x_train=x,
                   y_train_by_model=torch.stack([y, _noisy_labels(y), y]), subsets=_subsets(3),
                   x_test=xt, y_test=yt, batch_size=BATCH, dtype=torch.float64,
                   fast_path=fast_path)
    make = lambda s: mlp([D, 16, C], seed=s)  # noqa: E731
    on_cpu = make_stack(make, **options)
    on_gpu = make_stack(make, device="cuda", **options)
    cpu_h, gpu_h = on_cpu.train(epochs=3, eval_every=1), on_gpu.train(epochs=3, eval_every=1)
    assert on_gpu.diverged == on_cpu.diverged == [False, True, False]
    for k in range(3):
        exported = on_gpu.export(k)
        assert next(exported.parameters()).device.type == "cuda"
        assert _max_weight_error(exported.cpu(), on_cpu.export(k)) < FLOAT64_ATOL
        _assert_same_history(gpu_h[k], cpu_h[k], 1e-10)


@cuda
def test_cuda_general_engine_other_architectures():
    K, n, steps = 3, 8, 20
    batches = _sparse_feature_batches(K, steps, 32, n, [0.0, 0.7, 0.9], torch.float64)
    importance = torch.stack([0.9 ** torch.arange(n, dtype=torch.float64)] * K)
    results = []
    for device in ("cpu", "cuda"):
        stack = StackedTrainer(lambda s: ToyReLUAutoencoder(n, 3, seed=s), seeds=[0, 1, 2],
                               loss="mse", optimizer="adamw", lr=1e-2, weight_decay=1e-2,
                               batch_fn=lambda s: (batches[s], batches[s]),
                               loss_weights=importance, dtype=torch.float64, device=device)
        stack.train(steps=steps, eval_every=5)
        results.append(stack)
    for k in range(K):
        assert _max_weight_error(results[0].export(k), results[1].export(k).cpu()) < FLOAT64_ATOL
        _assert_same_history(results[1].histories[k], results[0].histories[k], 1e-10)


def test_lr_schedule_matches_lambda_lr():
    """A warm-up + cosine factor gives what torch.optim.AdamW with LambdaLR gives."""
    from learnscope.models import ToyReLUAutoencoder
    from learnscope.train.stacked import StackedTrainer

    steps = 12

    def factor(t):
        return (t + 1) / 3 if t < 3 else 0.5 * (1 + math.cos(math.pi * (t - 3) / (steps - 3)))

    x = torch.rand(2, 16, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    stack = StackedTrainer(lambda s: ToyReLUAutoencoder(6, 2, seed=s).double(), seeds=[0, 1],
                           loss="mse", optimizer="adamw", lr=0.05, weight_decay=0.1,
                           batch_fn=lambda t: (x, x), lr_schedule=factor, dtype=torch.float64)
    stack.train(steps=steps)
    for k, seed in enumerate([0, 1]):
        model = ToyReLUAutoencoder(6, 2, seed=seed).double()
        opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        for _ in range(steps):
            loss = ((model(x[k]) - x[k]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        trained = stack.export(k)
        torch.testing.assert_close(trained.W, model.W, atol=1e-12, rtol=0)
        torch.testing.assert_close(trained.b, model.b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("fast_path", [True, False])
def test_parameter_views_are_the_trained_parameters_and_write_through(fast_path):
    x, y, xt, yt = _classification()
    stack = make_stack(lambda s: mlp([D, 8, 6, C], seed=s), seeds=[0, 1, 2], optimizer="adam",
                       lr=0.01, x_train=x, y_train=y, batch_size=BATCH, dtype=torch.float64,
                       fast_path=fast_path)
    assert isinstance(stack, FastMLPStack) == fast_path
    stack.train(steps=3)
    views = stack.parameter_views()
    for k in range(3):  # each view's row k is model k's parameter, in the model's own layout
        model = stack.export(k)
        for name, p in model.named_parameters():
            assert views[name].shape == (3, *p.shape)
            torch.testing.assert_close(views[name][k], p.detach(), rtol=0, atol=0)
    mask = (torch.arange(8 * D) % 3 != 0).reshape(8, D).to(torch.float64)
    first = next(iter(views))  # "0.weight"
    views[first].mul_(mask)  # in place: the models being trained change
    for k in range(3):
        assert (stack.export(k)[0].weight.detach()[mask == 0] == 0).all()
    # a mask kept by re-applying it after every step survives training
    stack.train(steps=4, on_step=lambda step, s: s.parameter_views()[first].mul_(mask))
    assert all((stack.export(k)[0].weight.detach()[mask == 0] == 0).all() for k in range(3))
    assert (stack.export(0)[0].weight.detach()[mask == 1] != 0).all()
