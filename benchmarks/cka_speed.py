"""All-pairs linear CKA: one Gram-matrix product (cka_matrix) vs a pairwise linear_cka loop.

Usage: python benchmarks/cka_speed.py [--layers 8] [--examples 1000] [--width 256] [--repeats 3]

Prints a small table and, on its last line, ``cka_allpairs_speedup=<ratio>`` for the unbiased
form (pairwise-loop time / cka_matrix time, best of ``--repeats``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from learnscope.measures.cka import cka_matrix, linear_cka


def make_activations(layers: int, n: int, width: int, seed: int = 0) -> list[torch.Tensor]:
    """Random but related activations: a random deep ReLU-ish chain of layers."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, width, generator=g)
    acts = []
    for _ in range(layers):
        w = torch.randn(width, width, generator=g) / width**0.5
        h = torch.relu(h @ w) + 0.1 * torch.randn(n, width, generator=g)
        acts.append(h.clone())
    return acts


def pairwise(acts: list[torch.Tensor], unbiased: bool) -> torch.Tensor:
    n_layers = len(acts)
    out = torch.empty(n_layers, n_layers, dtype=torch.float64)
    for i in range(n_layers):
        for j in range(n_layers):
            out[i, j] = linear_cka(acts[i], acts[j], unbiased=unbiased)
    return out


def best_time(fn, repeats: int) -> tuple[float, torch.Tensor]:
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.set_num_threads(1)
    acts = make_activations(args.layers, args.examples, args.width)
    print(
        f"L={args.layers} layers, n={args.examples} examples, width={args.width}, "
        f"threads={torch.get_num_threads()}, best of {args.repeats}"
    )
    print(
        f"{'form':<10}{'pairwise (s)':>14}{'cka_matrix (s)':>16}{'speedup':>10}{'max |diff|':>13}"
    )
    speedups = {}
    for unbiased in (True, False):
        t_pair, m_pair = best_time(lambda u=unbiased: pairwise(acts, u), args.repeats)
        t_mat, m_mat = best_time(lambda u=unbiased: cka_matrix(acts, unbiased=u), args.repeats)
        diff = float((m_pair - m_mat).abs().max())
        if not diff <= 1e-8:
            raise SystemExit(f"cka_matrix and pairwise linear_cka disagree by {diff:.3g}")
        form = "unbiased" if unbiased else "biased"
        speedups[form] = t_pair / t_mat
        print(f"{form:<10}{t_pair:>14.4f}{t_mat:>16.4f}{speedups[form]:>9.2f}x{diff:>13.2e}")
    off_diag = m_mat[~torch.eye(args.layers, dtype=torch.bool)]
    print(f"(biased CKA off-diagonal range: {off_diag.min():.3f} .. {off_diag.max():.3f})")
    print(f"cka_allpairs_speedup={np.round(speedups['unbiased'], 2)}")


if __name__ == "__main__":
    main()
