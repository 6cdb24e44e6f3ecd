"""MNIST-1D model-wise double descent (MLP 40-h-h-10) with train_models vs a plain PyTorch loop.

Usage: python benchmarks/double_descent_sweep.py [--threads 2] [--epochs 500]
           [--widths 2,3,4,...,300] [--num-samples 16000] [--n-train 4000]
           [--plain-widths 2,36,128,300] [--plain-steps 1000] [--skip-plain]
           [--skip-final-only] [--eval-every 5] [--workers 2] [--device cpu]

The sweep of the MNIST-1D reference notebook ``deep-double-descent.ipynb``: two-hidden-layer
MLPs 40-h-h-10 for its 19 widths ``np.unique(np.geomspace(2, 300, 20, dtype=int))``, 4000
training points with 15% label noise, SGD lr 0.01 momentum 0.9, batch 100, 500 epochs (20000
steps per model), cross-entropy, one seed. Differences from the notebook: the data are
regenerated offline with ``mnist1d(num_samples)`` (80/20 split; by default 16000 samples, of
which the first 4000 training points and all 3200 test points are used; the notebook drew 4000
train / 12000 test from its own 16000 with a 25/75 split), the label noise is ``flip_labels``
(exactly 15%, always a different class; the notebook resamples ~15% of the labels uniformly,
so ~13.5% actually change), and learnscope's seeded initialisation and batch order. Errors
therefore differ somewhat from the notebook's.

(1) The whole sweep in one ``train_models`` call (batched, float32, bucketed by FLOPs,
    ``--threads`` torch threads). ``train_models`` evaluates every model after every epoch
    (train accuracy on the noisy labels, test loss / accuracy): total wall time, time per
    bucket (from the ``on_epoch`` time stamps), final train/test error per width next to the
    notebook's.
(1b) The notebook's work: it evaluates once, after training: ``train_models(eval_every=epochs)``
    (the same buckets and batch order, so the same final errors).
(1c) train_models with ``eval_every=--eval-every``: the curves every k epochs (and the last), for
    the cost of per-epoch curves relative to (1b); the same final errors as (1).
``--workers W`` (default 2) runs (1), (1b), (1c) with ``train_models(workers=W)``: W buckets at a
time, each in its own spawned process with one torch thread (``--threads`` is then only the
peak's thread count: give ``--threads W``); ``--workers 1`` trains the buckets one after another
in this process at ``--threads`` torch threads. Measured on a quiet 2-core machine: the
final-only sweep took 44.8 s with 2 worker processes, 51.5 s at 2 torch threads in one process,
60.4 s with 2 worker *threads* (the GIL between their small ops); the matrix products alone at
the sweep's padded shapes would take ~24 s on 2 cores (4 buckets), ~47% of the matmul peak.
The float32 2048x2048 matmul peak at ``--threads`` is measured in the same process (best of a
few, before and after the sweep) and every batched run is given as a percentage of it.
(2) One model at a time, the way the notebook does it: ``nn.Sequential``, autograd,
    ``torch.optim.SGD``, one thread (batches by indexing, which is faster than the notebook's
    ``DataLoader``). A full plain sweep takes far too long, so ``--plain-widths`` are timed for
    ``--plain-steps`` steps each (best of ``--repeats``), plus one evaluation pass, and the full
    sweep is *extrapolated*: time = a + b * FLOPs/step fitted on the measured widths (the same
    for the evaluation pass), summed over the sweep's widths and scaled to its steps, with an
    evaluation every epoch (to compare with (1)) or once (with (1b)).

``--device cuda`` trains everything (batched, plain, the matmul ceiling and peak) on the GPU,
synchronising before each clock read (use ``--workers 1`` there: one process drives the GPU).

The machine may be shared with other jobs (load averages are printed). The last line is
``dd_sweep_seconds=<wall time of (1b)>`` (the notebook's work; of (1) when (1b) is skipped).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time

import batched_training
import numpy as np
import torch
import torch.nn.functional as F
from _plain import plain_sgd
from batched_training import matmul_peak
from torch import nn

from learnscope.data.classification import ClassificationData
from learnscope.data.corruptions import flip_labels
from learnscope.data.mnist1d import mnist1d
from learnscope.train.batched import (
    _STEP_OVERHEAD,
    BatchedResult,
    ModelSpec,
    bucket_widths,
    train_models,
)
from learnscope.train.loop import EpochLog

# the notebook's np.unique(np.geomspace(2, 300, 20, dtype=int))
WIDTHS = (2, 3, 4, 5, 7, 9, 12, 16, 21, 27, 36, 47, 61, 80, 104, 135, 177, 230, 300)
N_IN, N_CLASSES, BATCH, LR, MOMENTUM = 40, 10, 100, 0.01, 0.9
# deep-double-descent.ipynb, run with label noise: test error % (and the one train error
# quoted) per width
NOTEBOOK_TEST = {2: 69.6, 9: 49.0, 16: 47.2, 36: 52.8, 47: 54.1, 300: 45.5}
NOTEBOOK_TRAIN = {47: 5.5}

Buckets = list[tuple[list[int], float]]


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def sizes_of(width: int) -> list[int]:
    return [N_IN, width, width, N_CLASSES]


def flops_per_step(width: int) -> float:
    """Training FLOPs of one SGD step: 6 per weight per example (2 forward, 4 backward)."""
    s = sizes_of(width)
    return 6.0 * BATCH * sum(a * b for a, b in zip(s[:-1], s[1:], strict=True))


def n_params(width: int) -> int:
    s = sizes_of(width)
    return sum((a + 1) * b for a, b in zip(s[:-1], s[1:], strict=True))


def fit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) of a least-squares line; through the origin for one point."""
    if len(x) >= 2:
        slope, intercept = np.polyfit(x, y, 1)
        return float(slope), float(intercept)
    return float(y[0] / x[0]), 0.0


def load() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def make_data(num_samples: int, n_train: int, noise: float, seed: int) -> ClassificationData:
    data = mnist1d(num_samples=num_samples, n_train=n_train)
    y, mask = flip_labels(data.y_train, noise, data.n_classes, seed=seed)
    return data.with_train(y_train=y, noisy_mask=mask)


# -------------------------------------------------------------------------------- batched


def buckets_of(widths: list[int], max_buckets: int) -> list[list[int]]:
    # as train_models buckets them (its per-bucket overhead included)
    return bucket_widths([sizes_of(w) for w in widths], max_buckets=max_buckets,
                         overhead=_STEP_OVERHEAD)


def _sync() -> None:
    device = batched_training.DEVICE
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batched_sweep(widths: list[int], data: ClassificationData, epochs: int, seed: int,
                  max_buckets: int, eval_every: int = 1, workers: int = 1
                  ) -> tuple[float, Buckets, list[BatchedResult]]:
    """(total wall s, [(bucket widths, s from the start to its end)] in order of their ends,
    results) of one train_models."""
    specs = [ModelSpec(sizes_of(w), seed=seed) for w in widths]
    buckets = buckets_of(widths, max_buckets)
    last = [0.0] * len(specs)

    def on_epoch(k: int, _log: EpochLog) -> None:
        last[k] = time.perf_counter()

    t0 = time.perf_counter()
    results = train_models(specs, data, max_epochs=epochs, max_buckets=max_buckets,
                           on_epoch=on_epoch, optimizer="sgd", lr=LR, momentum=MOMENTUM,
                           batch_size=BATCH, dtype=torch.float32, eval_every=eval_every,
                           workers=workers, device=batched_training.DEVICE)
    _sync()
    total = time.perf_counter() - t0
    ends = sorted((max(last[i] for i in b), b) for b in buckets)
    return total, [([widths[i] for i in b], end - t0) for end, b in ends], results


def gemm_seconds_per_step(n_models: int, width: int, repeats: int = 3, n: int = 300) -> float:
    """Wall s of the 8 batched matrix products of one training step of a bucket (forward,
    weight and input gradients; ``out=`` buffers, inputs with the bias column), nothing else:
    the time a step could take if everything but the matmuls were free."""
    g = torch.Generator().manual_seed(0)
    K, B, w, C, d = n_models, BATCH, width, N_CLASSES, N_IN + 1
    dev = batched_training.DEVICE

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(dev)

    x, w0, w1, b1, w2, b2 = r(K, B, d), r(K, d, w), r(K, w, w), r(K, 1, w), r(K, C, w), r(K, C, 1)
    a0, a1, d1, d0 = (torch.empty(K, B, w, device=dev) for _ in range(4))
    z, g0, g1, g2 = (torch.empty(*shape, device=dev)
                     for shape in ((K, C, B), (K, d, w), (K, w, w), (K, C, w)))

    def step() -> None:
        torch.bmm(x, w0, out=a0)
        torch.baddbmm(b1, a0, w1, out=a1)
        torch.baddbmm(b2, w2, a1.transpose(1, 2), out=z)
        torch.bmm(z, a1, out=g2)
        torch.bmm(z.transpose(1, 2), w2, out=d1)
        torch.bmm(a0.transpose(1, 2), d1, out=g1)
        torch.bmm(d1, w1.transpose(1, 2), out=d0)
        torch.bmm(x.transpose(1, 2), d0, out=g0)

    step()
    best = math.inf
    for _ in range(repeats):
        _sync()
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        _sync()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def print_buckets(per_bucket: Buckets, total: float) -> None:
    print(f"{'bucket widths':<44}{'padded to':>10}{'models':>8}{'ends at s':>11}")
    for bw, t in per_bucket:
        print(f"{','.join(map(str, bw)):<44}{max(bw):>10}{len(bw):>8}{t:>11.1f}")


# -------------------------------------------------------------------------------- plain


@torch.no_grad()
def _evaluate(model: nn.Module, data: ClassificationData) -> tuple[float, float, float]:
    """(train acc on the noisy labels, test loss, test acc): one evaluation pass."""
    model.eval()
    train_acc = float((model(data.x_train).argmax(1) == data.y_train).float().mean())
    logits = model(data.x_test)
    test_loss = float(F.cross_entropy(logits, data.y_test))
    test_acc = float((logits.argmax(1) == data.y_test).float().mean())
    model.train()
    return train_acc, test_loss, test_acc


def plain_run(width: int, data: ClassificationData, steps: int, seed: int,
              evals: int = 5) -> tuple[float, float]:
    """(wall s of ``steps`` plain-PyTorch SGD steps of one model, model construction included;
    wall s of one evaluation pass, the mean of ``evals`` passes after training)."""
    _sync()
    t0 = time.perf_counter()
    torch.manual_seed(seed)  # the notebook's way; the benchmark does not care about the RNG
    model = nn.Sequential(nn.Linear(N_IN, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                          nn.Linear(width, N_CLASSES)).to(data.x_train.device)
    plain_sgd(model, data.x_train, data.y_train, steps=steps, batch=BATCH, seed=seed, lr=LR,
              momentum=MOMENTUM)
    _sync()
    t1 = time.perf_counter()
    for _ in range(evals):
        _evaluate(model, data)
    return t1 - t0, (time.perf_counter() - t1) / evals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads, batched runs")
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--widths", type=_ints, default=list(WIDTHS))
    parser.add_argument("--num-samples", type=int, default=16000,
                        help="MNIST-1D samples generated (80%% train / 20%% test)")
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--noise", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-buckets", type=int, default=4)
    parser.add_argument("--plain-widths", type=_ints, default=[2, 36, 128, 300])
    parser.add_argument("--plain-steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2, help="plain timings: best of")
    parser.add_argument("--skip-plain", action="store_true")
    parser.add_argument("--skip-final-only", action="store_true",
                        help="skip (1b), the batched run that evaluates only at the end")
    parser.add_argument("--workers", type=int, default=2,
                        help="train_models(workers=W): buckets trained W at a time, each in "
                             "its own process (1: all in this process at --threads)")
    parser.add_argument("--eval-every", type=int, default=5,
                        help="(1c): train_models(eval_every=k); 1 skips (1c)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    batched_training.DEVICE = torch.device(args.device)
    if batched_training.DEVICE.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU is available to torch here")

    T = args.threads
    torch.set_num_threads(T)
    print(f"torch {torch.__version__}; torch.set_num_threads({T}) -> "
          f"torch.get_num_threads() = {torch.get_num_threads()}")
    print(f"note: the machine may be shared with other jobs; load average at start: {load()}")
    peak = matmul_peak()
    where = (f"on {torch.cuda.get_device_name(batched_training.DEVICE)}"
             if batched_training.DEVICE.type == "cuda" else f"at {T} thread(s)")
    print(f"float32 matmul peak {where}: {peak:.1f} GFLOP/s (best of 5)")
    t0 = time.perf_counter()
    data = make_data(args.num_samples, args.n_train, args.noise, args.seed)
    t_data = time.perf_counter() - t0
    n_train, n_test = len(data.x_train), len(data.x_test)
    steps = args.epochs * math.ceil(n_train / BATCH)
    widths = sorted(set(args.widths))
    print(f"data: mnist1d(num_samples={args.num_samples}) regenerated offline "
          f"({t_data:.1f} s, not timed below): first {n_train} training points, {n_test} test "
          f"points; {int(data.noisy_mask.sum())} training labels ({args.noise:.0%}) flipped to "
          "a different class (flip_labels)")
    print(f"sweep: MLP {N_IN}-h-h-{N_CLASSES}, {len(widths)} widths {widths}; SGD lr {LR} "
          f"momentum {MOMENTUM}, batch {BATCH}, {args.epochs} epochs = {steps} steps per model, "
          f"seed {args.seed}")

    # (1) train_models, evaluation every epoch
    W = args.workers
    total, per_bucket, results = batched_sweep(widths, data, args.epochs, args.seed,
                                               args.max_buckets, workers=W)
    useful = sum(flops_per_step(w) for w in widths) * steps
    how = f"{T} thread(s)" if W == 1 else f"workers={W} (1 torch thread each)"
    print(f"\n(1) train_models (evaluates every model after every epoch), float32, {how}, "
          f"bucketed (flops, <= {args.max_buckets} buckets): {total:.1f} s in all "
          f"({useful / 1e12:.2f} TFLOP of training steps, {useful / total / 1e9:.1f} useful "
          f"GFLOP/s incl. the evaluations = {100 * useful / total / 1e9 / peak:.1f}% of peak)")
    print_buckets(per_bucket, total)
    finals = [res.history[-1] for res in results]

    # (1b) the notebook's work: one evaluation at the end
    total_nb = None
    if not args.skip_final_only:
        total_nb, per_bucket_nb, results_nb = batched_sweep(
            widths, data, args.epochs, args.seed, args.max_buckets, args.epochs, W)
        same = all(a == b.history[-1] for a, b in zip(finals, results_nb, strict=True))
        print(f"\n(1b) the notebook's work (one evaluation, after training): "
              f"train_models(eval_every={args.epochs}): {total_nb:.1f} s "
              f"({useful / total_nb / 1e9:.1f} useful GFLOP/s = "
              f"{100 * useful / total_nb / 1e9 / peak:.1f}% of peak); final errors "
              f"{'identical to' if same else 'DIFFER from'} (1)'s")
        print_buckets(per_bucket_nb, total_nb)
        print(f"per-epoch curves cost (1) / (1b) = {total / total_nb:.2f}x")

    # (1c) curves every k epochs
    if args.eval_every > 1:
        total_ce, per_bucket_ce, results_ce = batched_sweep(
            widths, data, args.epochs, args.seed, args.max_buckets, args.eval_every, W)
        same = all(a.history[-1] == b.history[-1]
                   for a, b in zip(results, results_ce, strict=True))
        vs = f"; (1c) / (1b) = {total_ce / total_nb:.2f}x" if total_nb else ""
        print(f"\n(1c) train_models(eval_every={args.eval_every}): {total_ce:.1f} s "
              f"({100 * useful / total_ce / 1e9 / peak:.1f}% of peak){vs}; final logs "
              f"{'identical to' if same else 'DIFFER from'} (1)'s")
        print_buckets(per_bucket_ce, total_ce)
    # the ceiling set by the matrix products alone, at one thread per bucket, W at a time
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    buckets = [[widths[i] for i in b] for b in buckets_of(widths, args.max_buckets)]
    per_step = [gemm_seconds_per_step(len(b), max(b)) for b in buckets]
    torch.set_num_threads(threads_before)
    cores = max(W, T) if W > 1 else T
    bound = sum(per_step) * steps / cores
    print(f"\nmatrix products alone (8 bmm per step and bucket at its padded width, 1 thread, "
          f"nothing else), {len(buckets)} buckets: {1e3 * sum(per_step):.2f} ms per step in all "
          f"= {bound:.1f} s for the sweep on {cores} cores if perfectly shared "
          f"({100 * useful / bound / 1e9 / peak:.1f}% of peak: the ceiling of this sweep's "
          "shapes)" + (f"; (1b) takes {total_nb / bound:.2f}x that" if total_nb else ""))
    peak_end = matmul_peak()
    print(f"matmul peak re-measured after the batched runs: {peak_end:.1f} GFLOP/s (the "
          f"percentages above use the first, {peak:.1f})")

    print(f"\nfinal errors after {args.epochs} epochs (train error on the noisy training "
          "labels, test error on clean test labels); notebook = deep-double-descent.ipynb, "
          "its run with label noise (its own data and noise: expect differences of a few points)")
    print(f"{'width':>6}{'params':>9}{'train err %':>13}{'test err %':>12}"
          f"{'notebook test %':>17}{'notebook train %':>18}")
    for w, res, last in zip(widths, results, finals, strict=True):
        nb_test = f"{NOTEBOOK_TEST[w]:.1f}" if w in NOTEBOOK_TEST else ""
        nb_train = f"{NOTEBOOK_TRAIN[w]:.1f}" if w in NOTEBOOK_TRAIN else ""
        flag = "  (diverged)" if res.diverged else ""
        print(f"{w:>6}{n_params(w):>9}{100 * (1 - last.train_acc):>13.1f}"
              f"{100 * (1 - last.test_acc):>12.1f}{nb_test:>17}{nb_train:>18}{flag}")

    # (2) plain loop, extrapolated
    if not args.skip_plain:
        torch.set_num_threads(1)
        pw = sorted(set(args.plain_widths))
        dev = batched_training.DEVICE
        if dev.type != "cpu":
            data = dataclasses.replace(data, x_train=data.x_train.to(dev),
                                       y_train=data.y_train.to(dev),
                                       x_test=data.x_test.to(dev), y_test=data.y_test.to(dev))
        plain_run(pw[0], data, 20, args.seed, evals=1)  # warm-up
        measured: dict[int, tuple[float, float]] = {}
        for w in pw:
            runs = [plain_run(w, data, args.plain_steps, args.seed) for _ in range(args.repeats)]
            measured[w] = (min(r[0] for r in runs), min(r[1] for r in runs))
        torch.set_num_threads(T)
        f = np.array([flops_per_step(w) for w in pw])
        t_steps = np.array([measured[w][0] for w in pw])
        t_eval = np.array([measured[w][1] for w in pw])
        (b, a), (d, c) = fit_line(f, t_steps), fit_line(f, t_eval)
        print(f"\n(2) plain PyTorch loop (nn.Sequential, autograd, torch.optim.SGD, x[idx] "
              f"batches, 1 thread): {args.plain_steps} steps per width (best of {args.repeats}) "
              "and one evaluation pass (train + test sets; mean of 5)")
        print(f"fit: time per step = {1e3 * a / args.plain_steps:.3f} ms + FLOPs/step / "
              f"{args.plain_steps * 1e-9 / b if b > 0 else math.inf:.1f} GFLOP/s; one "
              f"evaluation = {1e3 * c:.2f} ms + {1e9 * d:.3f} ms per MFLOP/step")
        print(f"{'width':>6}{'MFLOP/step':>12}{'steps s':>9}{'fit s':>8}{'ms/step':>9}"
              f"{'eval ms':>9}{'fit ms':>8}")
        for w, fi, ts, te in zip(pw, f, t_steps, t_eval, strict=True):
            print(f"{w:>6}{fi / 1e6:>12.2f}{ts:>9.2f}{a + b * fi:>8.2f}"
                  f"{1e3 * ts / args.plain_steps:>9.3f}{1e3 * te:>9.2f}{1e3 * (c + d * fi):>8.2f}")
        fs = np.array([flops_per_step(w) for w in widths])
        plain_steps_s = float(np.sum(a + b * fs)) * steps / args.plain_steps
        plain_eval_s = float(np.sum(c + d * fs))
        plain_epoch_eval = plain_steps_s + args.epochs * plain_eval_s
        plain_final_eval = plain_steps_s + plain_eval_s
        print(f"plain sweep, EXTRAPOLATED from the fits (not run), {len(widths)} widths x "
              f"{steps} steps: {plain_epoch_eval:.0f} s ({plain_epoch_eval / 60:.1f} min) with "
              f"an evaluation every epoch like (1); {plain_final_eval:.0f} s "
              f"({plain_final_eval / 60:.1f} min) with one at the end like (1b)")
        print(f"speedup (batched, {how}, measured, over plain at 1 thread, "
              f"extrapolated): (1) {plain_epoch_eval / total:.1f}x"
              + (f", (1b) {plain_final_eval / total_nb:.1f}x" if total_nb else ""))

    print(f"load average at the end: {load()}")
    goal = "met" if total < 90 else "NOT met"
    nb = ""
    if total_nb is not None:
        nb = (f"; {'met' if total_nb < 90 else 'NOT met'} by (1b), the notebook's work "
              f"({total_nb:.1f} s)")
    print(f"\ngoal (batched sweep under 90 s on 2 cores; notebook: ~11-13 min on a 4-thread "
          f"CPU): {goal} by (1), train_models with per-epoch evaluation ({total:.1f} s){nb}")
    # The headline is the like-for-like figure: the notebook's own work (one evaluation at the
    # end) when (1b) ran, else (1).
    print(f"dd_sweep_seconds={total_nb if total_nb is not None else total:.1f}")


if __name__ == "__main__":
    main()
