"""Matrix completion by deep factorization: the generators, the closed-form depth-1 answer, the
effective rank, the init scale and gradient descent on tiny problems."""

from __future__ import annotations

import math

import torch

from learnscope.measures.matrix_completion import (
    degrees_of_freedom,
    entropy_effective_rank,
    factor_init_std,
    low_rank_matrix,
    min_frobenius_completion,
    observation_mask,
    train_factorization,
    unobserved_error,
)
from learnscope.measures.spectra import effective_rank

torch.set_num_threads(1)


def test_low_rank_matrix_has_the_stated_rank_norm_and_is_deterministic():
    m = low_rank_matrix(12, 3, seed=4)
    s = torch.linalg.svdvals(m)
    assert float(s[2]) > 1e-6 and float(s[3:].max()) < 1e-10
    assert abs(float(m.norm()) - 12.0) < 1e-10
    assert torch.equal(m, low_rank_matrix(12, 3, seed=4))
    assert not torch.equal(m, low_rank_matrix(12, 3, seed=5))
    assert degrees_of_freedom(12, 3) == 3 * 21
    assert degrees_of_freedom(5, 5) == 25  # full rank: every entry is a degree of freedom


def test_observation_mask_has_exactly_the_count_and_differs_by_seed():
    a = observation_mask(10, 37, seed=1)
    assert set(a.unique().tolist()) == {0.0, 1.0} and int(a.sum()) == 37
    assert torch.equal(a, observation_mask(10, 37, seed=1))
    assert not torch.equal(a, observation_mask(10, 37, seed=2))
    # positions are uniform: every entry is observed with frequency ~ 37/100 over seeds
    freq = torch.stack([observation_mask(10, 37, seed=s) for s in range(400)]).mean(0)
    assert float((freq - 0.37).abs().max()) < 0.12


def test_depth1_gradient_descent_from_zero_is_the_zero_filled_min_frobenius_completion():
    """Oracle: with W from zero the gradient P_obs(W - M*) never touches an unobserved entry,
    and the observed entries converge geometrically: the limit is the zero fill, which is also
    the min-Frobenius-norm matrix agreeing with M* on the mask (brute force: any other
    completion adds the squared norm of what it puts on the unobserved entries)."""
    targets = torch.stack([low_rank_matrix(8, 2, seed=s) for s in range(3)])
    masks = torch.stack([observation_mask(8, 25, seed=s) for s in range(3)])
    run = train_factorization(targets, masks, depth=1, init_scale=0.0, lr=0.5, steps=60, seed=0)
    w = run.product()
    zero_fill = min_frobenius_completion(targets, masks)
    torch.testing.assert_close(w, zero_fill, atol=1e-12, rtol=0)
    assert torch.all((w * (1 - masks)) == 0)
    torch.testing.assert_close(unobserved_error(w, targets, masks),
                               torch.ones(3, dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        other = zero_fill + (1 - masks) * torch.randn(targets.shape, generator=g,
                                                      dtype=torch.float64)
        assert torch.all(other.norm(dim=(1, 2)) > zero_fill.norm(dim=(1, 2)))


def test_entropy_effective_rank_of_known_spectra():
    assert abs(float(entropy_effective_rank(torch.tensor([3.0, 3.0, 3.0, 0.0]))) - 3.0) < 1e-12
    # two values in ratio 3:1: p = (3/4, 1/4), exp(H) by hand
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert abs(float(entropy_effective_rank(torch.tensor([3.0, 1.0]))) - math.exp(h)) < 1e-12
    assert math.isnan(float(entropy_effective_rank(torch.zeros(4))))
    # batched and equal to the spectra module's definition on random matrices
    g = torch.Generator().manual_seed(1)
    mats = torch.randn(5, 7, 7, generator=g, dtype=torch.float64)
    batched = entropy_effective_rank(torch.linalg.svdvals(mats))
    for k in range(5):
        assert abs(float(batched[k]) - effective_rank(mats[k])) < 1e-10
    # a matrix with known singular values: U diag(s) V^T
    u, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    m = u @ torch.diag(torch.tensor([2.0, 2.0, 0, 0, 0, 0], dtype=torch.float64)) @ v.T
    assert abs(float(entropy_effective_rank(torch.linalg.svdvals(m))) - 2.0) < 1e-9


def test_factor_init_std_gives_the_stated_end_to_end_norm():
    n, scale = 6, 0.3
    for depth in (1, 2, 3):
        std = factor_init_std(n, depth, scale)
        g = torch.Generator().manual_seed(depth)
        prod = std * torch.randn(4000, n, n, generator=g, dtype=torch.float64)
        for _ in range(depth - 1):
            prod = std * torch.randn(4000, n, n, generator=g, dtype=torch.float64) @ prod
        mean_sq = float((prod ** 2).sum(dim=(1, 2)).mean())
        assert abs(mean_sq / scale ** 2 - 1) < 0.1, (depth, mean_sq)
    assert factor_init_std(6, 2, 0.0) == 0.0


def test_gradient_matches_autograd():
    targets = torch.stack([low_rank_matrix(5, 2, seed=s) for s in range(2)])
    masks = torch.stack([observation_mask(5, 12, seed=s) for s in range(2)])
    lr = 1e-3
    before = train_factorization(targets, masks, depth=3, init_scale=1.0, lr=lr, steps=0,
                                 seed=7).factors
    after = train_factorization(targets, masks, depth=3, init_scale=1.0, lr=lr, steps=1,
                                seed=7).factors
    ws = [w.clone().requires_grad_(True) for w in before]
    prod = ws[2] @ ws[1] @ ws[0]
    (0.5 * (masks * (prod - targets)).pow(2).sum()).backward()
    for w0, w1, w in zip(before, after, ws, strict=True):
        torch.testing.assert_close(w1, w0 - lr * w.grad, atol=1e-13, rtol=0)


def test_depth2_gradient_descent_recovers_a_fully_observed_matrix():
    """Fully observed, a small-init depth-2 product converges to M* itself, and it climbs rank
    by rank: the stronger singular value is learned first."""
    n = 6
    target = low_rank_matrix(n, 2, seed=3).unsqueeze(0)
    mask = torch.ones_like(target)
    s = torch.linalg.svdvals(target[0])
    crossed: dict[int, int] = {}

    def watch(step: int, w: torch.Tensor) -> None:
        sv = torch.linalg.svdvals(w[0])
        for i in range(2):
            if i not in crossed and sv[i] >= s[i] / 2:
                crossed[i] = step

    lr = 0.5 / (2 * float(s[0]))
    run = train_factorization(target, mask, depth=2, init_scale=1e-4, lr=lr, steps=3000,
                              seed=0, on_log=watch)
    # exact up to what is left of the random start outside M*'s singular directions, which
    # depth 2 shrinks only slowly (d sigma / dt = -2 sigma^2 for a direction with no target)
    torch.testing.assert_close(run.product(), target, atol=1e-4, rtol=0)
    assert crossed[0] < crossed[1]


def test_per_problem_step_sizes_equal_separate_runs():
    targets = torch.stack([low_rank_matrix(6, 2, seed=s) for s in range(2)])
    masks = torch.stack([observation_mask(6, 20, seed=s) for s in range(2)])
    both = train_factorization(targets, masks, depth=2, init_scale=0.1,
                               lr=torch.tensor([0.01, 0.02], dtype=torch.float64), steps=50, seed=0).product()
    same = train_factorization(targets, masks, depth=2, init_scale=0.1, lr=0.02, steps=50,
                               seed=0).product()
    torch.testing.assert_close(both[1], same[1], atol=1e-12, rtol=0)
    assert not torch.allclose(both[0], same[0])
