"""All-pairs linear CKA: learnscope's cka_matrix against torch-cka and a plain PyTorch loop.

Usage: python benchmarks/cka_speed.py [--layers 10] [--examples 1000] [--width 256]
       [--threads 1] [--repeats 10] [--slow-repeats 1]

Everything is measured in one process on the same float32 activations (a random ReLU chain):

* torch-cka (pip ``torch_cka``, AntixK/PyTorch-Model-Compare): its real ``CKA.compare`` API on
  modules that replay the activations, one batch of all ``n`` examples (so its minibatch HSIC
  is the unbiased HSIC of the whole set). When it is not installed, its per-pair loop and
  ``_HSIC`` are reproduced below from its source (float32 Grams, ``trace(K @ L)``, per pair);
* learnscope ``cka_matrix`` (unbiased, to match torch-cka; biased too), on its automatic
  route and on both forced routes;
* the plain PyTorch way: a loop over pairs, each forming both float64 Grams and centering them
  (Kornblith et al.'s reference recipe, U-centering for the unbiased form).

It prints the times, the ratios, the max abs differences (torch-cka computes in float32), and
the achieved fraction of the float32 matmul peak, measured here with one big ``torch.mm`` at 1
and 2 threads and counted from the multiply-adds of the route taken. Times are best-of on the
process CPU clock by default (``--clock wall`` for wall time; both are printed). The last line
is ``cka_vs_torch_cka=<ratio>`` (torch-cka time / learnscope unbiased time, automatic route).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch
from torch import nn

from learnscope.measures.cka import _allpairs_macs, _allpairs_route, cka_matrix

try:
    import torch_cka.cka as torch_cka_module
    from torch_cka import CKA as TorchCKA

    torch_cka_module.tqdm = lambda iterable, **_: iterable  # no progress bar in the table
except ImportError:  # optional: fall back to its algorithm, reproduced below
    TorchCKA = None


def make_activations(layers: int, n: int, width: int, seed: int = 0) -> list[torch.Tensor]:
    """Random but related float32 activations: a random ReLU chain with a little noise."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, width, generator=g)
    acts = []
    for _ in range(layers):
        w = torch.randn(width, width, generator=g) / width**0.5
        h = torch.relu(h @ w) + 0.1 * torch.randn(n, width, generator=g)
        acts.append(h.clone())
    return acts


# ----------------------------------------------------------------------------------------------
# torch-cka: its real API on replayed activations, or its algorithm
# ----------------------------------------------------------------------------------------------


class _Replay(nn.Module):
    """Returns stored activations for the example indices it is given."""

    def __init__(self, acts: torch.Tensor) -> None:
        super().__init__()
        self.acts = acts

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.acts[index]


class _ReplayNet(nn.Module):
    """A 'network' whose layers ``layer0..`` output the stored activations (for torch-cka's
    forward hooks)."""

    def __init__(self, acts: list[torch.Tensor]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_Replay(a) for a in acts)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return torch.stack([layer(index).sum() for layer in self.layers])


def torch_cka_api(acts: list[torch.Tensor]) -> torch.Tensor:
    """torch-cka's ``CKA.compare`` on one batch holding all examples."""
    n = acts[0].shape[0]
    names = [f"layers.{i}" for i in range(len(acts))]
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.arange(n)), batch_size=n)
    metric = TorchCKA(_ReplayNet(acts), _ReplayNet(acts), model1_name="a", model2_name="b",
                      model1_layers=names, model2_layers=names)
    metric.compare(loader, loader)
    return metric.export()["CKA"]


def torch_cka_algorithm(acts: list[torch.Tensor]) -> torch.Tensor:
    """torch-cka's compare loop for one batch, as in its source: float32 Grams with zeroed
    diagonals formed per pair, HSIC by Song et al.'s formula with ``trace(K @ L)``."""

    def hsic(k: torch.Tensor, l_: torch.Tensor) -> float:
        n = k.shape[0]
        ones = torch.ones(n, 1)
        result = torch.trace(k @ l_)
        result += ((ones.t() @ k @ ones @ ones.t() @ l_ @ ones) / ((n - 1) * (n - 2))).item()
        result -= ((ones.t() @ k @ l_ @ ones) * 2 / (n - 2)).item()
        return (1 / (n * (n - 3)) * result).item()

    terms = torch.zeros(len(acts), len(acts), 3)
    for i, x in enumerate(acts):
        k = x @ x.t()
        k.fill_diagonal_(0.0)
        terms[i, :, 0] += hsic(k, k)
        for j, y in enumerate(acts):
            l_ = y @ y.t()
            l_.fill_diagonal_(0)
            terms[i, j, 1] += hsic(k, l_)
            terms[i, j, 2] += hsic(l_, l_)
    return terms[:, :, 1] / (terms[:, :, 0].sqrt() * terms[:, :, 2].sqrt())


def torch_cka_macs(n: int, widths: list[int]) -> int:
    """Multiply-adds of torch-cka's loop: per pair one Gram and two ``n x n`` products, per
    row layer one Gram and one product."""
    layers = len(widths)
    grams = n * n * (sum(widths) + layers * sum(widths))
    return grams + (2 * layers * layers + layers) * n**3


# ----------------------------------------------------------------------------------------------
# The plain PyTorch way
# ----------------------------------------------------------------------------------------------


def plain_pairwise(acts: list[torch.Tensor], unbiased: bool) -> torch.Tensor:
    """Per pair: both float64 Grams, centered (``H K H``) or U-centered, then the normalized
    Frobenius product."""

    def centered_gram(x: torch.Tensor) -> torch.Tensor:
        k = x.double() @ x.double().T
        n = k.shape[0]
        if not unbiased:
            means = k.mean(dim=0)
            means -= means.mean() / 2
            return k - means[:, None] - means[None, :]
        k.fill_diagonal_(0.0)
        means = k.sum(dim=0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        k -= means[:, None] + means[None, :]
        k.fill_diagonal_(0.0)
        return k

    out = torch.empty(len(acts), len(acts), dtype=torch.float64)
    for i, x in enumerate(acts):
        for j, y in enumerate(acts):
            kx, ky = centered_gram(x), centered_gram(y)
            out[i, j] = (kx * ky).sum() / (torch.linalg.norm(kx) * torch.linalg.norm(ky))
    return out


# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------


def best_time(fn: Callable[[], torch.Tensor], repeats: int, clock: Callable[[], float]
              ) -> tuple[float, float, torch.Tensor]:
    """Best of ``repeats`` on ``clock`` and on the wall clock, and the last result."""
    best, best_wall, result = float("inf"), float("inf"), torch.empty(0)
    for _ in range(repeats):
        start, start_wall = clock(), time.perf_counter()
        result = fn()
        best = min(best, clock() - start)
        best_wall = min(best_wall, time.perf_counter() - start_wall)
    return best, best_wall, result


def matmul_peak(dtype: torch.dtype, threads: int, clock: Callable[[], float],
                size: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of one ``size``-square ``torch.mm`` at ``threads`` threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(1)
    a = torch.randn(size, size, generator=g, dtype=dtype)
    b = torch.randn(size, size, generator=g, dtype=dtype)
    seconds, _, _ = best_time(lambda: torch.mm(a, b), repeats, clock)
    torch.set_num_threads(previous)
    return 2.0 * size**3 / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--slow-repeats", type=int, default=1,
                        help="repeats for torch-cka and the plain loop (slow)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="what the ratios use: process CPU time (default; on a shared "
                        "machine it leaves out time spent waiting for a core) or wall time")
    args = parser.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    acts = make_activations(args.layers, args.examples, args.width)
    n, widths = args.examples, [args.width] * args.layers
    peaks = {(dt, t): matmul_peak(dt, t, clock)
             for dt in (torch.float32, torch.float64) for t in (1, 2)}
    torch.set_num_threads(args.threads)
    print(f"L={args.layers} layers, n={n} examples, width={args.width}, "
          f"threads={args.threads}, load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs, ratios on {args.clock} time")
    for t in (1, 2):
        print(f"matmul peak at {t} thread(s) ({args.clock} time): float32 "
              f"{peaks[torch.float32, t] / 1e9:.1f} GFLOP/s, float64 "
              f"{peaks[torch.float64, t] / 1e9:.1f} GFLOP/s")
    peak32 = peaks[torch.float32, min(args.threads, 2)]

    which = "torch-cka (real API)" if TorchCKA is not None else "torch-cka (its algorithm)"
    reference = torch_cka_api if TorchCKA is not None else torch_cka_algorithm
    t_ref, w_ref, m_ref = best_time(lambda: reference(acts), args.slow_repeats, clock)
    plain = {u: best_time(lambda u=u: plain_pairwise(acts, u), args.slow_repeats, clock)
             for u in (True, False)}
    auto = _allpairs_route(n, widths)

    print(f"{'method':<38}{args.clock + ' s':>9}{'wall s':>9}{'vs torch-cka':>13}"
          f"{'vs plain':>9}{'|diff| torch-cka':>17}{'|diff| plain':>13}{'f32 peak':>9}")

    def row(label: str, seconds: float, wall: float, plain_seconds: float, diff_ref: str,
            diff_plain: float, macs: int) -> None:
        print(f"{label:<38}{seconds:>9.4f}{wall:>9.4f}{t_ref / seconds:>12.1f}x"
              f"{plain_seconds / seconds:>8.1f}x{diff_ref:>17}{diff_plain:>13.1e}"
              f"{2.0 * macs / seconds / peak32:>9.1%}")

    row(which, t_ref, w_ref, plain[True][0], "0", float((m_ref.double() - plain[True][2])
                                                         .abs().max()), torch_cka_macs(n, widths))
    for unbiased in (True, False):
        t_plain, w_plain, m_plain = plain[unbiased]
        form = "unbiased" if unbiased else "biased"
        diff = f"{float((m_plain - m_ref.double()).abs().max()):.1e}" if unbiased else ""
        print(f"{'plain PyTorch loop, ' + form:<38}{t_plain:>9.4f}{w_plain:>9.4f}"
              f"{t_ref / t_plain:>12.1f}x{1.0:>8.1f}x{diff:>17}{0.0:>13.1e}")
        for method in ("auto", "features", "gram"):
            route = auto if method == "auto" else method
            seconds, wall, m = best_time(
                lambda u=unbiased, r=method: cka_matrix(acts, unbiased=u, method=r),
                args.repeats, clock)
            diff = f"{float((m - m_ref.double()).abs().max()):.1e}" if unbiased else ""
            label = f"learnscope {form}, {method}" + (f" ({auto})" if method == "auto" else "")
            row(label, seconds, wall, t_plain, diff, float((m - m_plain).abs().max()),
                _allpairs_macs(n, widths, route))
            if unbiased and method == "auto":
                ratio_vs_torch_cka = t_ref / seconds
    print(f"(multiply-adds: torch-cka {torch_cka_macs(n, widths):.3g}, learnscope features "
          f"{_allpairs_macs(n, widths, 'features'):.3g}, gram "
          f"{_allpairs_macs(n, widths, 'gram'):.3g}; torch-cka computes in float32)")
    print(f"cka_vs_torch_cka={ratio_vs_torch_cka:.1f}")


if __name__ == "__main__":
    main()
