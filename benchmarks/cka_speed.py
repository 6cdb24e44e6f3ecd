"""All-pairs linear CKA: learnscope's cka_matrix against torch-cka and a plain PyTorch loop.

Usage: python benchmarks/cka_speed.py [--layers 10] [--examples 1000] [--width 256]
       [--threads 1] [--repeats 3]

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
and 2 threads and counted from the multiply-adds of the route taken. The last line is
``cka_vs_torch_cka=<ratio>`` (torch-cka time / learnscope unbiased time).
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


def best_time(fn: Callable[[], torch.Tensor], repeats: int) -> tuple[float, torch.Tensor]:
    best, result = float("inf"), torch.empty(0)
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def matmul_peak(dtype: torch.dtype, threads: int, size: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of one ``size``-square ``torch.mm`` at ``threads`` threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(1)
    a = torch.randn(size, size, generator=g, dtype=dtype)
    b = torch.randn(size, size, generator=g, dtype=dtype)
    seconds, _ = best_time(lambda: torch.mm(a, b), repeats)
    torch.set_num_threads(previous)
    return 2.0 * size**3 / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slow-repeats", type=int, default=1,
                        help="repeats for torch-cka and the plain loop (slow)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    acts = make_activations(args.layers, args.examples, args.width)
    n, widths = args.examples, [args.width] * args.layers
    peaks = {(dt, t): matmul_peak(dt, t) for dt in (torch.float32, torch.float64) for t in (1, 2)}
    print(f"L={args.layers} layers, n={n} examples, width={args.width}, "
          f"threads={args.threads}, load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    for t in (1, 2):
        print(f"matmul peak at {t} thread(s): float32 {peaks[torch.float32, t] / 1e9:.1f} "
              f"GFLOP/s, float64 {peaks[torch.float64, t] / 1e9:.1f} GFLOP/s")
    torch.set_num_threads(args.threads)
    peak32 = peaks[torch.float32, min(args.threads, 2)]

    which = "torch-cka (real API)" if TorchCKA is not None else "torch-cka (its algorithm)"
    reference = torch_cka_api if TorchCKA is not None else torch_cka_algorithm
    t_ref, m_ref = best_time(lambda: reference(acts), args.slow_repeats)
    t_plain, m_plain = best_time(lambda: plain_pairwise(acts, True), args.slow_repeats)
    t_plain_b, m_plain_b = best_time(lambda: plain_pairwise(acts, False), args.slow_repeats)
    auto = _allpairs_route(n, widths)

    def fraction(macs: int, seconds: float) -> str:
        return f"{2.0 * macs / seconds / peak32:.1%}"

    print(f"{'method':<40}{'time (s)':>10}{'vs torch-cka':>14}{'vs plain':>10}"
          f"{'max|diff| torch-cka':>21}{'max|diff| plain':>17}{'f32 peak':>10}")
    print(f"{which:<40}{t_ref:>10.4f}{1.0:>13.1f}x{t_plain / t_ref:>9.1f}x{0.0:>21.1e}"
          f"{float((m_ref.double() - m_plain).abs().max()):>17.1e}"
          f"{fraction(torch_cka_macs(n, widths), t_ref):>10}")
    print(f"{'plain PyTorch loop, unbiased':<40}{t_plain:>10.4f}{t_ref / t_plain:>13.1f}x"
          f"{1.0:>9.1f}x{float((m_ref.double() - m_plain).abs().max()):>21.1e}{0.0:>17.1e}"
          f"{'':>10}")
    ratio_vs_torch_cka = 0.0
    for unbiased in (True, False):
        plain, t_p = (m_plain, t_plain) if unbiased else (m_plain_b, t_plain_b)
        form = "unbiased" if unbiased else "biased"
        for method in ("auto", "features", "gram"):
            route = auto if method == "auto" else method
            seconds, m = best_time(
                lambda u=unbiased, r=method: cka_matrix(acts, unbiased=u, method=r), args.repeats)
            diff_ref = (f"{float((m - m_ref.double()).abs().max()):>21.1e}" if unbiased
                        else f"{'':>21}")
            label = f"learnscope {form}, {method}" + (f" ({auto})" if method == "auto" else "")
            print(f"{label:<40}{seconds:>10.4f}{t_ref / seconds:>13.1f}x{t_p / seconds:>9.1f}x"
                  f"{diff_ref}{float((m - plain).abs().max()):>17.1e}"
                  f"{fraction(_allpairs_macs(n, widths, route), seconds):>10}")
            if unbiased and method == "auto":
                ratio_vs_torch_cka = t_ref / seconds
    print(f"(plain PyTorch loop, biased: {t_plain_b:.4f} s; multiply-adds: torch-cka "
          f"{torch_cka_macs(n, widths):.3g}, features {_allpairs_macs(n, widths, 'features'):.3g}"
          f", gram {_allpairs_macs(n, widths, 'gram'):.3g})")
    print(f"cka_vs_torch_cka={ratio_vs_torch_cka:.1f}")


if __name__ == "__main__":
    main()
