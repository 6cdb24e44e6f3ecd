"""Stacked training of K small models (learnscope.train.stacked) vs a one-by-one PyTorch loop.

Usage: python benchmarks/stacked_training.py [--threads 1] [--models 64] [--steps 300]
                                            [--repeats 3] [--width-models 32]
                                            [--cnn-models 16] [--cnn-steps 100]
                                            [--cnn1d-accuracy]

(a) K MLPs 40-64-10 (MNIST-1D shape: 4000 x 40 inputs, 10 classes; random data), batch 128,
    SGD with momentum, ``--steps`` steps each, three ways: a plain PyTorch loop (nn.Linear,
    autograd, torch.optim.SGD, one model after the other, the way a user writes it), the
    general engine (StackedTrainer: the batched forward written out for MLPs, vmap +
    functional_call for other modules such as the CNN, autograd) and the fast path
    (make_stack's choice here: the hand-written BatchedTrainer). Wall times, speedups over the
    one-by-one loop and achieved GFLOP/s (6 FLOPs per weight per example: 2 forward, 4
    backward; biases not counted) as a fraction of a 2048x2048 float32 matmul's GFLOP/s
    measured in the same process (the machine's practical peak).
(b) K=--width-models MLPs 40-w-10 for w in 32, 128, 256: the same three ways.
(c) K=--cnn-models cnn1d (the MNIST-1D paper's CNN, 5210 parameters), batch 100: one-by-one vs
    the general engine (the fast path does not apply).
(d) with --cnn1d-accuracy: the MNIST-1D paper's notebook recipe for its CNN (Adam lr 1e-2,
    batch 100, 6000 steps) on regenerated MNIST-1D (4000 train / 1000 test), 3 seeds trained as
    one stack; final test accuracy against the paper's 92.3% (notebook, frozen data) / 94%
    (README).

Times are the best of ``--repeats`` interleaved runs (the machine may be shared); every run
includes building its models (and the stack). The last line is
``stacked_speedup=<one-by-one time / general-engine time>`` for (a).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from _plain import plain_sgd
from torch import nn

from learnscope.models import cnn1d, mlp
from learnscope.train.stacked import FastMLPStack, StackedTrainer, make_stack

N_TRAIN, N_IN, N_CLASSES = 4000, 40, 10
LR, MOMENTUM = 0.01, 0.9
CNN_MACS = 19 * 25 * 5 + 10 * 25 * 75 + 5 * 25 * 75 + 125 * 10  # multiply-adds per example


def random_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(N_TRAIN, N_IN, generator=g),
            torch.randint(0, N_CLASSES, (N_TRAIN,), generator=g))


def matmul_peak(repeats: int = 5, n: int = 2048) -> float:
    """GFLOP/s of an n x n float32 matmul, best of ``repeats``."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)
    best = min(_timed(lambda: torch.mm(a, b, out=out)) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def one_by_one(make: Callable[[int], nn.Module], K: int, x: torch.Tensor, y: torch.Tensor,
               steps: int, batch: int) -> None:
    """The plain loop: each model trained on its own with autograd and torch.optim.SGD."""
    for seed in range(K):
        model = make(seed)
        plain_sgd(model, x, y, steps=steps, batch=batch, seed=seed, lr=LR, momentum=MOMENTUM)


def stacked(make: Callable[[int], nn.Module], K: int, x: torch.Tensor, y: torch.Tensor,
            steps: int, batch: int, fast_path: bool) -> None:
    stack = make_stack(make, seeds=list(range(K)), optimizer="sgd", lr=LR, momentum=MOMENTUM,
                       x_train=x, y_train=y, batch_size=batch, fast_path=fast_path)
    assert isinstance(stack, FastMLPStack) is fast_path
    stack.run_steps(steps)


def best_times(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            best[name] = min(best[name], _timed(fn))
    return best


def table(title: str, times: dict[str, float], flops: float, peak: float, baseline: str,
          model_steps: int) -> None:
    print(f"\n{title} ({flops / 1e9:.1f} GFLOP in all)")
    print(f"{'method':<22}{'wall s':>9}{'us/model-step':>15}{'speedup':>9}{'GFLOP/s':>9}"
          f"{'% peak':>8}")
    for name, t in times.items():
        g = flops / t / 1e9
        print(f"{name:<22}{t:>9.3f}{t / model_steps * 1e6:>15.1f}{times[baseline] / t:>8.1f}x"
              f"{g:>9.1f}{100 * g / peak:>7.1f}%")


def mlp_runs(width: int, K: int, x: torch.Tensor, y: torch.Tensor, steps: int,
             batch: int) -> dict[str, Callable[[], object]]:
    def make(s: int) -> nn.Module:
        return mlp([N_IN, width, N_CLASSES], seed=s)

    return {"one-by-one": lambda: one_by_one(make, K, x, y, steps, batch),
            "general engine": lambda: stacked(make, K, x, y, steps, batch, False),
            "fast path": lambda: stacked(make, K, x, y, steps, batch, True)}


def cnn1d_accuracy() -> None:
    from learnscope.data import mnist1d

    data = mnist1d(5000)
    seeds = [0, 1, 2]
    t0 = time.perf_counter()
    stack = StackedTrainer(lambda s: cnn1d(seed=s), seeds=seeds, optimizer="adam", lr=1e-2,
                           x_train=data.x_train, y_train=data.y_train, x_test=data.x_test,
                           y_test=data.y_test, batch_size=100)
    histories = stack.train(steps=6000, eval_every=1000)
    wall = time.perf_counter() - t0
    print(f"\n(d) cnn1d on regenerated MNIST-1D ({len(data.x_train)} train / "
          f"{len(data.x_test)} test), Adam lr 1e-2, batch 100, 6000 steps, {len(seeds)} seeds "
          f"as one stack ({wall:.0f} s)")
    print(f"{'seed':<6}" + "".join(f"{'step ' + str(log.step):>11}" for log in histories[0].logs))
    for seed, hist in zip(seeds, histories, strict=True):
        print(f"{seed:<6}" + "".join(f"{log.test_acc:>11.3f}" for log in hist.logs))
    final = torch.tensor([h.logs[-1].test_acc for h in histories])
    print(f"final test accuracy {100 * final.mean():.1f}% +- {100 * final.std():.1f}% (mean +- sd "
          f"over seeds); paper: 92.3% (notebook, frozen data), 94% (README)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--width-models", type=int, default=32)
    parser.add_argument("--width-steps", type=int, default=100)
    parser.add_argument("--cnn-models", type=int, default=16)
    parser.add_argument("--cnn-steps", type=int, default=100)
    parser.add_argument("--cnn1d-accuracy", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}; torch.get_num_threads() = {torch.get_num_threads()}")
    print(f"note: the machine may be shared with other jobs; times are best of {args.repeats} "
          "interleaved runs")
    x, y = random_data()
    peak = matmul_peak()
    print(f"float32 2048x2048 matmul peak: {peak:.1f} GFLOP/s")

    # (a) K MLPs 40-64-10
    K, steps, batch, hidden = args.models, args.steps, 128, 64
    runs = mlp_runs(hidden, K, x, y, 5, batch)
    for fn in runs.values():  # warm-up (allocator, kernels, vmap tracing paths)
        fn()
    times = best_times(mlp_runs(hidden, K, x, y, steps, batch), args.repeats)
    peak = max(peak, matmul_peak())  # again, in case the first measurement was disturbed
    flops = 6 * (N_IN * hidden + hidden * N_CLASSES) * batch * K * steps
    table(f"(a) K={K} MLPs {N_IN}-{hidden}-{N_CLASSES}, batch {batch}, {steps} SGD steps, "
          "float32", times, flops, peak, "one-by-one", K * steps)
    speedup = times["one-by-one"] / times["general engine"]

    # (b) other widths
    Kw, wsteps = args.width_models, args.width_steps
    for width in (32, 128, 256):
        t = best_times(mlp_runs(width, Kw, x, y, wsteps, batch), args.repeats)
        f = 6 * (N_IN * width + width * N_CLASSES) * batch * Kw * wsteps
        table(f"(b) K={Kw} MLPs {N_IN}-{width}-{N_CLASSES}, batch {batch}, {wsteps} SGD steps",
              t, f, peak, "one-by-one", Kw * wsteps)

    # (c) cnn1d
    Kc, csteps, cbatch = args.cnn_models, args.cnn_steps, 100

    def make_cnn(s: int) -> nn.Module:
        return cnn1d(seed=s)

    cnn = {"one-by-one": lambda: one_by_one(make_cnn, Kc, x, y, csteps, cbatch),
           "general engine": lambda: stacked(make_cnn, Kc, x, y, csteps, cbatch, False)}
    one_by_one(make_cnn, 2, x, y, 3, cbatch)
    stacked(make_cnn, Kc, x, y, 3, cbatch, False)
    t = best_times(cnn, args.repeats)
    f = 6 * CNN_MACS * cbatch * Kc * csteps
    table(f"(c) K={Kc} cnn1d (5210 params), batch {cbatch}, {csteps} SGD steps", t, f, peak,
          "one-by-one", Kc * csteps)

    if args.cnn1d_accuracy:
        cnn1d_accuracy()
    print(f"stacked_speedup={speedup:.2f}")


if __name__ == "__main__":
    main()
