"""Matrix completion by deep matrix factorization (Gunasekar et al. 2017; Arora, Cohen, Hu &
Luo 2019, "Implicit regularization in deep matrix factorization").

A low-rank matrix ``M*`` (n x n, rank r) is seen only on ``m`` random entries. Infinitely many
matrices fit them; which one gradient descent returns depends on how the matrix is
parameterised. As one matrix ``W`` (depth 1) started from zero, the unobserved entries never
receive a gradient: the answer is the zero-filled, minimum Frobenius norm completion. As a
product ``W = W_N ... W_1`` of ``N >= 2`` square factors started near zero, gradient descent
grows the product's singular values one after another and ends at a low-rank completion,
lower the deeper the product: depth is an implicit bias towards low rank.

Everything here is float64 and batched over a leading axis of ``K`` problems (seeds,
observation counts), trained in lockstep by plain full-batch gradient descent.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from learnscope.seeding import torch_generator

__all__ = ["FactorizationRun", "degrees_of_freedom", "entropy_effective_rank",
           "factor_init_std", "low_rank_matrix", "min_frobenius_completion",
           "observation_mask", "train_factorization", "unobserved_error"]


def degrees_of_freedom(n: int, rank: int) -> int:
    """``r (2n - r)``: the dimension of the manifold of n x n matrices of rank r, the fewest
    observed entries from which such a matrix can be determined at all."""
    return rank * (2 * n - rank)


def low_rank_matrix(n: int, rank: int, *, seed: int) -> torch.Tensor:
    """``M* = A B^T`` with i.i.d. standard Gaussian ``A, B`` (n x rank), rescaled to Frobenius
    norm ``n`` (entries of size ~1): the ground truth of Arora et al.'s experiments. float64,
    drawn from the seed alone."""
    if not 1 <= rank <= n:
        raise ValueError(f"rank must be in [1, n={n}], got {rank}")
    g = torch_generator(seed, "matrix-completion-truth", n, rank)
    a = torch.randn(n, rank, generator=g, dtype=torch.float64)
    b = torch.randn(n, rank, generator=g, dtype=torch.float64)
    m = a @ b.T
    return m * (n / m.norm())


def observation_mask(n: int, observed: int, *, seed: int) -> torch.Tensor:
    """A float64 0/1 mask (n x n) with exactly ``observed`` ones at uniformly random
    positions, drawn from the seed and the count alone."""
    if not 0 <= observed <= n * n:
        raise ValueError(f"observed must be in [0, {n * n}], got {observed}")
    g = torch_generator(seed, "matrix-completion-mask", n, observed)
    mask = torch.zeros(n * n, dtype=torch.float64)
    mask[torch.randperm(n * n, generator=g)[:observed]] = 1.0
    return mask.view(n, n)


def min_frobenius_completion(target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The completion of smallest Frobenius norm that agrees with ``target`` on the mask: the
    observed entries, zeros elsewhere (what depth-1 gradient descent from zero returns)."""
    return target * mask


def unobserved_error(w: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``||P_unobs(W - M*)||_F / ||P_unobs(M*)||_F`` per problem (the last two axes are the
    matrix): 1 for the zero-filled completion, 0 for exact recovery. NaN with nothing
    unobserved."""
    unobs = 1.0 - mask
    den = (unobs * target).norm(dim=(-2, -1))
    num = (unobs * (w - target)).norm(dim=(-2, -1))
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(den, math.nan))


def entropy_effective_rank(singular_values: torch.Tensor) -> torch.Tensor:
    """Roy & Vetterli's effective rank ``exp(H(p))``, ``p_k = s_k / sum s``, over the last
    axis of ``singular_values`` (batched; the same definition as
    ``learnscope.measures.spectra.effective_rank``). A matrix with k equal nonzero singular
    values has effective rank k; NaN for an all-zero one."""
    s = singular_values.to(torch.float64)
    total = s.sum(-1, keepdim=True)
    p = s / total
    h = -torch.where(p > 0, p * torch.log(p.clamp_min(1e-300)), torch.zeros_like(p)).sum(-1)
    return torch.where(total.squeeze(-1) > 0, torch.exp(h), torch.full_like(h, math.nan))


def factor_init_std(n: int, depth: int, scale: float) -> float:
    """Entry std of ``depth`` i.i.d. Gaussian n x n factors whose product has expected squared
    Frobenius norm ``scale**2``: the product of N such factors with entry variance v has
    ``E ||W_N ... W_1||_F^2 = n^(N+1) v^N``. Depths compared at this std start from the same
    end-to-end size, so only the parameterisation differs."""
    if scale < 0 or depth < 1 or n < 1:
        raise ValueError("factor_init_std needs n >= 1, depth >= 1 and scale >= 0")
    if scale == 0:
        return 0.0
    return math.exp((2 * math.log(scale) - (depth + 1) * math.log(n)) / (2 * depth))


class FactorizationRun:
    """The factors of ``K`` depth-N factorizations trained in lockstep; ``product()`` is the
    end-to-end matrix of each (``(K, n, n)``)."""

    def __init__(self, factors: list[torch.Tensor]) -> None:
        self.factors = factors

    def product(self) -> torch.Tensor:
        out = self.factors[0]
        for w in self.factors[1:]:
            out = w @ out
        return out


def train_factorization(targets: torch.Tensor, masks: torch.Tensor, *, depth: int,
                        init_scale: float, lr: float | torch.Tensor, steps: int, seed: int,
                        log_every: int = 1,
                        on_log: Callable[[int, torch.Tensor], None] | None = None
                        ) -> FactorizationRun:
    """Full-batch gradient descent on ``0.5 * ||P_obs(W_N ... W_1 - M*)||_F^2`` for each of the
    ``K`` problems ``(targets[k], masks[k])`` (``(K, n, n)`` each).

    Every factor starts i.i.d. Gaussian with the std of :func:`factor_init_std` for an
    end-to-end Frobenius norm of ``init_scale`` (0: all factors zero). ``lr`` is one step size
    or one per problem (``(K,)``). ``on_log(step, product)`` sees the end-to-end matrices at
    step 0, every ``log_every`` steps and the last step. The gradient of factor j is
    ``(W_N..W_{j+1})^T E (W_{j-1}..W_1)^T`` with ``E = P_obs(W - M*)``.
    """
    if targets.shape != masks.shape or targets.ndim != 3 or targets.shape[1] != targets.shape[2]:
        raise ValueError("targets and masks must both have shape (K, n, n)")
    if depth < 1 or steps < 0 or log_every < 1:
        raise ValueError("train_factorization needs depth >= 1, steps >= 0, log_every >= 1")
    k, n, _ = targets.shape
    targets, masks = targets.to(torch.float64), masks.to(torch.float64)
    std = factor_init_std(n, depth, init_scale)
    g = torch_generator(seed, "matrix-completion-init", depth)
    factors = [std * torch.randn(k, n, n, generator=g, dtype=torch.float64)
               for _ in range(depth)]
    step_size = torch.as_tensor(lr, dtype=torch.float64).reshape(-1, 1, 1)
    for step in range(steps + 1):
        prefixes = [factors[0]]  # prefixes[j] = W_j ... W_1 (0-based: W_{j+1} in the maths)
        for w in factors[1:]:
            prefixes.append(w @ prefixes[-1])
        product = prefixes[-1]
        if on_log is not None and (step % log_every == 0 or step == steps):
            on_log(step, product)
        if step == steps:
            break
        residual = masks * (product - targets)
        suffix: torch.Tensor | None = None  # W_N ... W_{j+1}
        grads: list[torch.Tensor] = [residual] * depth
        for j in range(depth - 1, -1, -1):
            left = residual if suffix is None else suffix.transpose(1, 2) @ residual
            grads[j] = left if j == 0 else left @ prefixes[j - 1].transpose(1, 2)
            suffix = factors[j] if suffix is None else suffix @ factors[j]
        for w, grad in zip(factors, grads, strict=True):
            w.sub_(step_size * grad)
    return FactorizationRun(factors)
