"""Batched training of many small MLPs (learnscope.train.batched) vs a one-by-one PyTorch loop.

Usage: python benchmarks/batched_training.py [--threads 2] [--models 64] [--steps 500]
                                            [--repeats 3] [--skip-widths] [--device cpu]

(a) K MLPs 40-64-10 (MNIST-1D shape: 4000 x 40 inputs, 10 classes; random data), batch 128,
    SGD with momentum, ``--steps`` steps each: a plain PyTorch loop (nn.Linear, autograd,
    torch.optim.SGD, one model after the other, the way a user writes it) vs one
    BatchedTrainer. Reports wall times, the speedup, and the batched run's achieved GFLOP/s
    (6 FLOPs per weight per example: 2 forward, 4 backward; biases not counted) as a fraction of
    a 2048x2048 float32 matmul's GFLOP/s measured in the same process (best of a few), the
    machine's practical peak.
(a') on the CPU, the same K models as ``train_models(..., workers=2)`` runs them: two spawned
    processes of K/2 models, one torch thread each, started together after a warm-up (the
    processes' start, ~1-2 s once per sweep, is not counted).
(b) K=32 MLPs 40-w-10 with widths log-spaced 4..256: one-by-one vs bucketed (bucket_widths,
    at most 4 buckets), and vs a single stack padded to 256.

``--device cuda`` runs everything (both ways, and the matmul peak) on the GPU, synchronising
before each clock read; thread counts then only matter for the CPU side.

Every time is the best of ``--repeats`` interleaved runs (the machine may be shared). The
one-by-one loop is timed at 1 thread and at ``--threads`` (tiny ops often run slower on more
threads); speedups are against the faster of the two. The last line is
``batched_speedup=<one-by-one time / batched time>`` for (a).
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

import numpy as np
import torch
from _plain import plain_sgd
from torch import nn

from learnscope.data.classification import ClassificationData
from learnscope.train.batched import BatchedTrainer, ModelSpec, bucket_widths

N_TRAIN, N_TEST, N_IN, N_CLASSES, BATCH = 4000, 1000, 40, 10, 128
LR, MOMENTUM = 0.01, 0.9
DEVICE = torch.device("cpu")  # --device


def random_data(seed: int = 0) -> ClassificationData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N_TRAIN + N_TEST, N_IN, generator=g)
    y = torch.randint(0, N_CLASSES, (N_TRAIN + N_TEST,), generator=g)
    return ClassificationData("random-mnist1d-shape", x[:N_TRAIN], y[:N_TRAIN],
                              x[N_TRAIN:], y[N_TRAIN:], N_CLASSES)


def matmul_peak(repeats: int = 5, n: int = 2048, device: torch.device | None = None) -> float:
    """GFLOP/s of an n x n float32 matmul on ``device`` (default: ``--device``), best of
    ``repeats`` (on a GPU: 8192 x 8192, so that the launch is negligible)."""
    device = DEVICE if device is None else device
    if device.type == "cuda":
        n = max(n, 8192)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device)
    b = torch.randn(n, n, generator=g).to(device)
    out = torch.empty(n, n, device=device)
    torch.mm(a, b, out=out)
    best = min(_timed(lambda: torch.mm(a, b, out=out)) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def _timed(fn) -> float:
    _sync()
    t0 = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - t0


def one_by_one(widths: list[int], data: ClassificationData, steps: int) -> None:
    """The plain loop: each model trained on its own with autograd and torch.optim.SGD."""
    x, y = data.x_train.to(DEVICE), data.y_train.to(DEVICE)
    for seed, width in enumerate(widths):
        torch.manual_seed(seed)  # the user's way; the benchmark does not care about the RNG
        model = nn.Sequential(nn.Linear(N_IN, width), nn.ReLU(),
                              nn.Linear(width, N_CLASSES)).to(DEVICE)
        plain_sgd(model, x, y, steps=steps, batch=BATCH, seed=seed, lr=LR, momentum=MOMENTUM)


def batched(groups: list[list[int]], data: ClassificationData, steps: int) -> None:
    """One BatchedTrainer per group of widths (construction, incl. initialisation, timed too)."""
    for widths in groups:
        specs = [ModelSpec([N_IN, w, N_CLASSES], seed=s) for s, w in enumerate(widths)]
        trainer = BatchedTrainer(specs, data, optimizer="sgd", lr=LR, momentum=MOMENTUM,
                                 batch_size=BATCH, device=DEVICE)
        trainer.steps(steps)


def _process_part(k: int, steps: int, barrier, queue) -> None:
    torch.set_num_threads(1)
    specs = [ModelSpec([N_IN, 64, N_CLASSES], seed=s) for s in range(k)]
    trainer = BatchedTrainer(specs, random_data(), optimizer="sgd", lr=LR, momentum=MOMENTUM,
                             batch_size=BATCH)
    trainer.steps(5)  # warm-up
    barrier.wait()
    trainer.steps(steps)
    queue.put(time.perf_counter())


def in_processes(K: int, steps: int, workers: int = 2) -> float:
    """Wall s for ``steps`` steps of K models split over ``workers`` spawned processes (1
    thread each), from a common start to the last one's end (CLOCK_MONOTONIC is system-wide)."""
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(workers + 1), ctx.Queue()
    procs = [ctx.Process(target=_process_part, args=(K // workers, steps, barrier, queue))
             for _ in range(workers)]
    for proc in procs:
        proc.start()
    barrier.wait()
    t0 = time.perf_counter()
    ends = [queue.get() for _ in procs]
    for proc in procs:
        proc.join()
    return max(ends) - t0


def best_times(runs: dict[str, tuple[int, object]], repeats: int) -> dict[str, float]:
    """Best wall time of each ``name: (threads, fn)``, the runs interleaved ``repeats`` times."""
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, (threads, fn) in runs.items():
            torch.set_num_threads(threads)
            best[name] = min(best[name], _timed(fn))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", type=int, default=64)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--width-models", type=int, default=32)
    parser.add_argument("--width-steps", type=int, default=200)
    parser.add_argument("--skip-widths", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU is available to torch here")

    T = args.threads
    torch.set_num_threads(T)
    print(f"torch {torch.__version__}; torch.set_num_threads({T}) -> "
          f"torch.get_num_threads() = {torch.get_num_threads()}")
    print("note: the machine may be shared with other jobs; times are best of "
          f"{args.repeats} interleaved runs")
    data = random_data()
    peak = matmul_peak()
    where = (f"on {torch.cuda.get_device_name(DEVICE)}" if DEVICE.type == "cuda"
             else f"at {T} thread(s)")
    print(f"float32 matmul peak {where}: {peak:.1f} GFLOP/s")
    thread_counts = sorted({1, T})

    # (a) K identical architectures
    K, steps, hidden = args.models, args.steps, 64
    batched([[hidden] * K], data, 5)  # warm-up (allocator, MKL kernels)
    one_by_one([hidden] * 2, data, 5)
    runs = {f"batched, {T} thr": (T, lambda: batched([[hidden] * K], data, steps))}
    for th in thread_counts:
        runs[f"one-by-one, {th} thr"] = (th, lambda: one_by_one([hidden] * K, data, steps))
    times = best_times(runs, args.repeats)
    torch.set_num_threads(T)
    peak = max(peak, matmul_peak())  # again, in case the first measurement was disturbed
    print(f"matmul peak re-measured after (a); using the best: {peak:.1f} GFLOP/s")
    t_batched = times[f"batched, {T} thr"]
    t_single = min(times[f"one-by-one, {th} thr"] for th in thread_counts)
    flops = 6 * (N_IN * hidden + hidden * N_CLASSES) * BATCH * K * steps
    gflops = flops / t_batched / 1e9
    speedup = t_single / t_batched
    print(f"\n(a) K={K} MLPs {N_IN}-{hidden}-{N_CLASSES}, batch {BATCH}, {steps} SGD steps "
          f"each, float32 ({flops / 1e9:.1f} GFLOP in all)")
    print(f"{'method':<26}{'wall s':>9}{'us/model-step':>15}{'GFLOP/s':>10}{'% peak':>8}")
    for name, t in times.items():
        g = flops / t / 1e9
        print(f"{name:<26}{t:>9.3f}{t / (K * steps) * 1e6:>15.1f}{g:>10.1f}"
              f"{100 * g / peak:>7.1f}%")
    print(f"speedup {speedup:.1f}x over the faster one-by-one run; batched at "
          f"{gflops:.1f} GFLOP/s = {100 * gflops / peak:.1f}% of the matmul peak")
    if DEVICE.type == "cpu" and T > 1 and K % T == 0:
        t_proc = min(in_processes(K, steps, T) for _ in range(args.repeats))
        g = flops / t_proc / 1e9
        print(f"(a') {T} processes of {K // T} models, 1 thread each (as train_models(workers="
              f"{T})): {t_proc:.3f} s, {t_single / t_proc:.1f}x over the faster one-by-one "
              f"run, {g:.1f} GFLOP/s = {100 * g / peak:.1f}% of the matmul peak")

    # (b) widths log-spaced 4..256
    if not args.skip_widths:
        Kw, wsteps = args.width_models, args.width_steps
        widths = [int(round(w)) for w in np.geomspace(4, 256, Kw)]
        buckets = [[widths[i] for i in b] for b in bucket_widths(widths, max_buckets=4)]
        runs = {f"bucketed (4), {T} thr": (T, lambda: batched(buckets, data, wsteps)),
                f"padded to 256, {T} thr": (T, lambda: batched([widths], data, wsteps))}
        for th in thread_counts:
            runs[f"one-by-one, {th} thr"] = (th, lambda: one_by_one(widths, data, wsteps))
        times_b = best_times(runs, args.repeats)
        torch.set_num_threads(T)
        t1 = min(times_b[f"one-by-one, {th} thr"] for th in thread_counts)
        print(f"\n(b) K={Kw} MLPs {N_IN}-w-{N_CLASSES}, w log-spaced 4..256, {wsteps} SGD steps")
        print("buckets (max width: count): "
              + ", ".join(f"{max(b)}: {len(b)}" for b in buckets))
        useful = sum(6 * (N_IN * w + w * N_CLASSES) for w in widths) * BATCH * wsteps
        print(f"{'method':<26}{'wall s':>9}{'speedup':>10}{'useful GFLOP/s':>16}")
        for name, t in times_b.items():
            print(f"{name:<26}{t:>9.3f}{t1 / t:>10.1f}{useful / t / 1e9:>16.1f}")
    print(f"batched_speedup={speedup:.2f}")


if __name__ == "__main__":
    main()
