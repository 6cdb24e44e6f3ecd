"""Exact tools for parities on n bits: the hypercube, the Walsh-Hadamard transform, the
gradient-information identity of Shalev-Shwartz, Shamir & Shammah (2017) and Gaussian
elimination over GF(2).

Inputs live on {-1, +1}^n; the parity of a subset S is chi_S(x) = prod_{i in S} x_i. Row ``r`` of
:func:`hypercube` has x_i = -1 exactly where bit i of r is set, so the Walsh-Hadamard transform
over rows computes every correlation E_x[chi_S(x) v(x)] at once (S as a bitmask).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["GF2Solution", "GradientInformation", "gradient_information", "hypercube",
           "parity_labels", "samples_to_recover", "solve_gf2", "walsh_hadamard"]


def hypercube(n: int) -> torch.Tensor:
    """All 2^n points of {-1, +1}^n as rows ``(2^n, n)``: x_i = -1 where bit i of the row is set."""
    if not 1 <= n <= 24:
        raise ValueError(f"n must be in 1..24, got {n}")
    rows = torch.arange(2 ** n).unsqueeze(1)
    bits = (rows >> torch.arange(n)) & 1
    return (1 - 2 * bits).to(torch.float64)


def parity_labels(x: torch.Tensor, subset: Sequence[int]) -> torch.Tensor:
    """chi_S(x) = prod_{i in S} x_i for +-1 inputs ``x`` ``(..., n)``; the empty set gives 1."""
    if len(subset) == 0:
        return torch.ones(x.shape[:-1], dtype=x.dtype)
    return x[..., list(subset)].prod(-1)


def walsh_hadamard(values: torch.Tensor) -> torch.Tensor:
    """Unnormalised fast Walsh-Hadamard transform along dim 0 (length 2^n), O(n 2^n):
    ``out[S] = sum_r (-1)^popcount(r & S) values[r]``, i.e. 2^n E_x[chi_S(x) v(x)] on
    :func:`hypercube` rows."""
    size = values.shape[0]
    if size < 1 or size & (size - 1):
        raise ValueError(f"length must be a power of two, got {size}")
    out = values.clone()
    rest = out.shape[1:]
    h = 1
    while h < size:
        blocks = out.reshape(size // (2 * h), 2, h, *rest)
        a, b = blocks[:, 0], blocks[:, 1]
        out = torch.stack((a + b, a - b), 1).reshape(size, *rest)
        h *= 2
    return out


@dataclass(frozen=True)
class GradientInformation:
    """How much the gradient of a square loss tells about which parity is the target.

    ``mean_sq_correlation``: mean over all 2^n subsets S of ||E_x[chi_S(x) grad f(x)]||^2;
    ``bound``: E_x||grad f(x)||^2 / 2^n, equal to it by Parseval; ``variance``: variance over
    S of the gradient of L_S = E_x (f(x) - chi_S(x))^2 / 2 (at most ``bound``)."""

    n: int
    mean_sq_correlation: float
    bound: float
    variance: float
    mean_sq_grad: float


def per_example_gradients(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Gradients of the scalar output f(x) with respect to every parameter, one row per input
    ``(len(x), n_params)`` (float64)."""
    params = {k: v.detach().double() for k, v in model.named_parameters()}

    def f(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, p, (xi.unsqueeze(0),)).reshape(())

    grads = torch.func.vmap(torch.func.grad(f), in_dims=(None, 0))(params, x.double())
    return torch.cat([g.reshape(len(x), -1) for g in grads.values()], 1)


def gradient_information(model: nn.Module, n: int) -> GradientInformation:
    """Exact gradient statistics of a scalar model over all parities of n bits (Walsh-Hadamard
    over the full hypercube; the model is evaluated in float64)."""
    model = _double_copy(model)
    x = hypercube(n)
    grads = per_example_gradients(model, x)
    with torch.no_grad():
        fx = model(x).reshape(-1)
    size = float(2 ** n)
    corr = walsh_hadamard(grads) / size                       # E_x[chi_S grad f], one row per S
    mean_sq = float((corr ** 2).sum(1).mean())
    mean_sq_grad = float((grads ** 2).sum(1).mean())
    shared = (fx.unsqueeze(1) * grads).mean(0)                # E_x[f grad f]
    loss_grads = shared - corr                                 # grad of L_S for every S
    variance = float(((loss_grads - loss_grads.mean(0)) ** 2).sum(1).mean())
    return GradientInformation(n, mean_sq, mean_sq_grad / size, variance, mean_sq_grad)


def _double_copy(model: nn.Module) -> nn.Module:
    import copy
    return copy.deepcopy(model).double()


@dataclass(frozen=True)
class GF2Solution:
    """A solution of A s = b over GF(2): ``status`` is ``"unique"``, ``"underdetermined"``
    (``solution`` is one of 2^(n - rank)) or ``"inconsistent"`` (``solution`` is None)."""

    status: str
    solution: np.ndarray | None
    rank: int


def solve_gf2(a: np.ndarray, b: np.ndarray) -> GF2Solution:
    """Gaussian elimination over GF(2) of the m x n 0/1 system ``a s = b``."""
    a = np.asarray(a, dtype=np.uint8) & 1
    b = np.asarray(b, dtype=np.uint8).reshape(-1) & 1
    m, n = a.shape
    if len(b) != m:
        raise ValueError(f"a has {m} rows but b has {len(b)} entries")
    aug = np.concatenate([a, b[:, None]], 1)
    pivots: list[int] = []
    row = 0
    for col in range(n):
        hit = np.nonzero(aug[row:, col])[0]
        if len(hit) == 0:
            continue
        r = row + hit[0]
        aug[[row, r]] = aug[[r, row]]
        others = np.nonzero(aug[:, col])[0]
        others = others[others != row]
        aug[others] ^= aug[row]
        pivots.append(col)
        row += 1
        if row == m:
            break
    rank = len(pivots)
    if np.any(aug[rank:, n]):
        return GF2Solution("inconsistent", None, rank)
    solution = np.zeros(n, dtype=np.uint8)
    for i, col in enumerate(pivots):
        solution[col] = aug[i, n]
    return GF2Solution("unique" if rank == n else "underdetermined", solution, rank)


def samples_to_recover(n: int, subset: Sequence[int], draw: Callable[[int], np.ndarray],
                       max_samples: int) -> tuple[int | None, bool]:
    """Feed samples ``draw(1)`` (0/1 bits, label = XOR of the bits in ``subset``) to GF(2)
    elimination one at a time until the system has a unique solution: (samples used, whether
    the solution is exactly ``subset``); (None, False) if ``max_samples`` never suffice."""
    target = np.zeros(n, dtype=np.uint8)
    target[list(subset)] = 1
    rows: list[np.ndarray] = []
    basis: dict[int, int] = {}           # pivot bit -> reduced row as an int
    for m in range(1, max_samples + 1):
        bits = np.asarray(draw(1), dtype=np.uint8).reshape(n)
        rows.append(bits)
        v = int("".join(map(str, bits[::-1])), 2)
        while v:
            top = v.bit_length() - 1
            if top not in basis:
                basis[top] = v
                break
            v ^= basis[top]
        if len(basis) == n:
            a = np.stack(rows)
            sol = solve_gf2(a, (a @ target) & 1)
            return m, sol.status == "unique" and bool(np.array_equal(sol.solution, target))
    return None, False
