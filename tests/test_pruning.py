"""Oracle tests of the pruning masks: brute force on tiny weight matrices."""

import itertools

import pytest
import torch

from learnscope.measures.pruning import (
    apply_masks,
    imp_keep_fractions,
    keep_count,
    magnitude_masks,
    random_masks,
)
from learnscope.models import mlp
from learnscope.seeding import torch_generator


def _weights(seed, shapes):
    g = torch_generator(seed, "test-weights")
    return [torch.randn(*s, generator=g) for s in shapes]


def _brute_force_mask(w, alive, count):
    """The subset of ``count`` survivors with the largest sum of |w| (enumerated)."""
    flat, alive_idx = w.abs().flatten(), alive.flatten().nonzero().flatten().tolist()
    best = max(itertools.combinations(alive_idx, count),
               key=lambda idx: float(flat[list(idx)].sum()))
    mask = torch.zeros(w.numel(), dtype=torch.bool)
    mask[list(best)] = True
    return mask.view(w.shape)


@pytest.mark.parametrize("seed", range(5))
def test_magnitude_masks_match_brute_force_and_nest(seed):
    shapes = [(3, 4), (2, 3)]
    weights = _weights(seed, shapes)
    previous = None
    for counts in ([8, 5], [5, 3], [2, 1]):
        masks = magnitude_masks(weights, counts, previous)
        for i, (w, m, c) in enumerate(zip(weights, masks, counts, strict=True)):
            alive = torch.ones_like(m) if previous is None else previous[i]
            assert int(m.sum()) == c  # exact count
            assert torch.equal(m, _brute_force_mask(w, alive, c))  # largest |w| among survivors
            assert not (m & ~alive).any()  # nested: nothing pruned comes back
            kept, dropped = w.abs()[m], w.abs()[alive & ~m]
            if len(dropped):
                assert kept.min() >= dropped.max()
        previous = masks


def test_pruning_is_among_survivors_not_global():
    """A pruned weight with a large trained value stays pruned."""
    w = torch.tensor([[10.0, 1.0, 2.0, 3.0]])
    previous = [torch.tensor([[False, True, True, True]])]
    (mask,) = magnitude_masks([w], [2], previous)
    assert mask.tolist() == [[False, False, True, True]]
    with pytest.raises(ValueError):
        magnitude_masks([w], [4], previous)


def test_ties_are_deterministic():
    w = torch.ones(2, 3)
    a = magnitude_masks([w], [3])[0]
    assert torch.equal(a, magnitude_masks([w], [3])[0]) and int(a.sum()) == 3


def test_apply_masks_leaves_biases_and_kept_weights():
    net = mlp([5, 4, 3], seed=0)
    weights = [net[0].weight, net[2].weight]
    before = [p.detach().clone() for p in net.parameters()]
    masks = magnitude_masks(weights, [10, 6])
    apply_masks(weights, masks)
    for w, w0, m in zip(weights, (before[0], before[2]), masks, strict=True):
        assert torch.equal(w.detach()[m], w0[m]) and (w.detach()[~m] == 0).all()
    assert torch.equal(net[0].bias, before[1]) and torch.equal(net[2].bias, before[3])


def test_random_masks_counts_determinism_and_uniformity():
    shapes, counts = [(4, 5), (3, 2)], [7, 2]
    a = random_masks(shapes, counts, torch_generator(0, "m"))
    b = random_masks(shapes, counts, torch_generator(0, "m"))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert [int(m.sum()) for m in a] == counts and [tuple(m.shape) for m in a] == shapes
    # every position is kept with probability count / numel: 7/20 over 4000 draws
    g = torch_generator(1, "m")
    freq = torch.stack([random_masks([(4, 5)], [7], g)[0] for _ in range(4000)]).double().mean(0)
    se = (0.35 * 0.65 / 4000) ** 0.5
    assert (freq - 0.35).abs().max() < 5 * se


def test_imp_keep_fractions_output_at_half_rate():
    rounds = imp_keep_fractions([0.5, 0.3, 0.2, 0.1, 0.05], 3)
    assert [r[:2] for r in rounds] == [[f, f] for f in (0.5, 0.3, 0.2, 0.1, 0.05)]
    # output layer: each round prunes half the hidden layers' rate of what remains
    expected = [0.75, 0.75 * 0.8, 0.75 * 0.8 * 5 / 6, 0.75 * 0.8 * 5 / 6 * 0.75,
                0.75 * 0.8 * 5 / 6 * 0.75 * 0.75]
    assert [r[2] for r in rounds] == pytest.approx(expected)
    assert rounds[-1][2] == pytest.approx(0.28125)
    with pytest.raises(ValueError):
        imp_keep_fractions([0.5, 0.6], 3)


def test_keep_count():
    assert keep_count(40000, 0.2) == 8000 and keep_count(2000, 0.28125) == 562
    with pytest.raises(ValueError):
        keep_count(10, 0.0)
