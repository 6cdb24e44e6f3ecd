"""Oracle tests of the parity tools: brute force over subsets and over GF(2) vectors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from learnscope.measures.parity import (
    gradient_information,
    hypercube,
    parity_labels,
    samples_to_recover,
    solve_gf2,
    walsh_hadamard,
)
from learnscope.models import mlp
from learnscope.seeding import numpy_rng, torch_generator


def _subsets(n: int) -> list[list[int]]:
    """Subset of bitmask S, in the order of the transform's output."""
    return [[i for i in range(n) if s >> i & 1] for s in range(2 ** n)]


@pytest.mark.parametrize("n", [1, 3, 5])
def test_walsh_hadamard_matches_brute_force_sum(n: int) -> None:
    x = hypercube(n)
    v = torch.randn(2 ** n, 3, generator=torch_generator(n, "wht"), dtype=torch.float64)
    brute = torch.stack([(parity_labels(x, s).unsqueeze(1) * v).sum(0) for s in _subsets(n)])
    assert torch.allclose(walsh_hadamard(v), brute, atol=1e-12)


def test_walsh_hadamard_rejects_non_power_of_two() -> None:
    with pytest.raises(ValueError):
        walsh_hadamard(torch.zeros(6))


def test_hypercube_rows_are_all_distinct_sign_vectors() -> None:
    x = hypercube(4)
    assert x.shape == (16, 4) and len({tuple(r.tolist()) for r in x}) == 16
    assert set(x.unique().tolist()) == {-1.0, 1.0}


@pytest.mark.parametrize("n", [3, 5])
def test_gradient_information_matches_loop_over_parities(n: int) -> None:
    model = mlp([n, 6, 1], seed=n).double()
    info = gradient_information(model, n)
    x = hypercube(n)
    params = list(model.parameters())
    loss_grads, sq = [], []
    for s in _subsets(n):
        y = parity_labels(x, s)
        loss = 0.5 * ((model(x).reshape(-1) - y) ** 2).mean()
        loss_grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
        corr = torch.autograd.grad((model(x).reshape(-1) * y).mean(), params)
        sq.append(sum(float((g ** 2).sum()) for g in corr))
    g = torch.stack(loss_grads)
    assert info.mean_sq_correlation == pytest.approx(float(np.mean(sq)), rel=1e-9)
    assert info.variance == pytest.approx(float(((g - g.mean(0)) ** 2).sum(1).mean()), rel=1e-9)
    # Parseval: the mean squared correlation equals E||grad f||^2 / 2^n exactly
    assert info.mean_sq_correlation == pytest.approx(info.bound, rel=1e-10)
    assert info.variance <= info.bound * (1 + 1e-12)


def _brute_solutions(a: np.ndarray, b: np.ndarray) -> list[tuple[int, ...]]:
    n = a.shape[1]
    return [s for s in itertools.product((0, 1), repeat=n)
            if np.array_equal((a @ np.array(s)) & 1, b)]


def test_solve_gf2_recovers_planted_parity() -> None:
    rng = numpy_rng(0, "gf2")
    for n in (4, 7, 10):
        target = (rng.random(n) < 0.5).astype(np.uint8)
        a = (rng.random((3 * n, n)) < 0.5).astype(np.uint8)
        sol = solve_gf2(a, (a @ target) & 1)
        brute = _brute_solutions(a, (a @ target) & 1)
        assert len(brute) == 2 ** (n - sol.rank)
        if len(brute) == 1:
            assert sol.status == "unique" and np.array_equal(sol.solution, target)


def test_solve_gf2_inconsistent_and_underdetermined_against_brute_force() -> None:
    rng = numpy_rng(1, "gf2")
    for _ in range(40):
        m, n = int(rng.integers(1, 7)), int(rng.integers(1, 6))
        a = (rng.random((m, n)) < 0.5).astype(np.uint8)
        b = (rng.random(m) < 0.5).astype(np.uint8)
        sol, brute = solve_gf2(a, b), _brute_solutions(a, b)
        if not brute:
            assert sol.status == "inconsistent" and sol.solution is None
        else:
            assert tuple(sol.solution) in brute
            assert len(brute) == 2 ** (n - sol.rank)
            assert sol.status == ("unique" if len(brute) == 1 else "underdetermined")


def test_solve_gf2_simple_cases() -> None:
    a = np.array([[1, 1], [1, 1]])
    assert solve_gf2(a, np.array([0, 1])).status == "inconsistent"
    under = solve_gf2(a, np.array([1, 1]))
    assert under.status == "underdetermined" and under.rank == 1
    assert solve_gf2(np.eye(3, dtype=np.uint8), np.array([1, 0, 1])).solution.tolist() == [1, 0, 1]


def test_samples_to_recover_finds_the_planted_set_with_about_n_samples() -> None:
    rng = numpy_rng(2, "gf2")
    used = []
    for _ in range(20):
        m, ok = samples_to_recover(20, [1, 5, 9], lambda k: rng.random((k, 20)) < 0.5, 200)
        assert ok and m is not None and m >= 20
        used.append(m)
    assert np.median(used) <= 23  # expected excess over n is about 1.6 samples
    m, ok = samples_to_recover(8, [0], lambda k: np.zeros((k, 8)), 30)
    assert m is None and not ok
