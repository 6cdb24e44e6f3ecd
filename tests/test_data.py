import numpy as np
import pytest
import torch

from learnscope.data import (
    digits,
    flip_labels,
    gaussian_inputs,
    legendre_features,
    linear_teacher,
    mnist1d,
    random_labels,
    random_pixels,
    random_relu_features,
    shuffled_pixels,
    sine_1d,
    with_label_noise,
)


def _global_states():
    import random

    return random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone()


def _same_states(a, b):
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and torch.equal(a[2], b[2])


def test_digits_deterministic_and_split():
    a, b, c = digits(1000, seed=3), digits(1000, seed=3), digits(1000, seed=4)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.x_train, c.x_train)
    assert a.x_train.shape == (1000, 64) and a.x_test.shape == (797, 64)
    assert float(a.x_train.max()) <= 1.0 and float(a.x_train.min()) >= 0.0


def test_mnist1d_offline_deterministic_and_restores_global_rng():
    before = _global_states()
    a = mnist1d(1000, seed=1)
    after = _global_states()
    assert _same_states(before, after)
    b = mnist1d(1000, seed=1)
    assert a.x_train.shape == (800, 40) and a.x_test.shape == (200, 40) and a.n_classes == 10
    assert torch.equal(a.x_train, b.x_train)
    assert set(a.y_train.tolist()) == set(range(10))


@pytest.mark.parametrize("fraction", [0.0, 0.13, 0.5, 1.0])
def test_flip_labels_exact_count_all_different(fraction):
    y = torch.arange(1000) % 10
    new, mask = flip_labels(y, fraction, 10, seed=0)
    assert int(mask.sum()) == round(fraction * 1000)
    assert bool((new[mask] != y[mask]).all())
    assert bool((new[~mask] == y[~mask]).all())
    assert int(new.min()) >= 0 and int(new.max()) <= 9


def test_flip_labels_uniform_over_other_classes_and_seeded():
    y = torch.zeros(20000, dtype=torch.long)
    new, mask = flip_labels(y, 1.0, 5, seed=1)
    counts = torch.bincount(new, minlength=5)
    assert counts[0] == 0
    assert (counts[1:].float() / 20000 - 0.25).abs().max() < 0.02
    again, _ = flip_labels(y, 1.0, 5, seed=1)
    assert torch.equal(new, again)


def test_flip_labels_rejects_bad_fraction():
    with pytest.raises(ValueError, match="fraction"):
        flip_labels(torch.zeros(5, dtype=torch.long), 1.5, 10, seed=0)


def test_with_label_noise_keeps_test_clean():
    d = digits(500, seed=0)
    noisy = with_label_noise(d, 0.4, seed=0)
    assert torch.equal(noisy.y_test, d.y_test)
    assert torch.equal(noisy.y_train_clean, d.y_train)
    assert int(noisy.noisy_mask.sum()) == 200


def test_zhang_random_labels_mask_marks_changed_only():
    d = digits(1000, seed=0)
    r = random_labels(d, 1.0, seed=0)
    assert torch.equal(r.noisy_mask, r.y_train != d.y_train)
    # Uniform replacement keeps ~1/10 of labels by chance.
    assert 0.85 < float(r.noisy_mask.float().mean()) < 0.95


def test_random_inputs():
    d = digits(300, seed=0)
    g = gaussian_inputs(d, seed=0)
    assert torch.equal(g.x_test, d.x_test) and torch.equal(g.y_train, d.y_train)
    assert abs(float(g.x_train.mean() - d.x_train.mean())) < 0.01
    s = shuffled_pixels(d, seed=0)
    assert torch.equal(s.x_train.sort(1).values, d.x_train.sort(1).values)
    assert not torch.equal(s.x_train, d.x_train)
    r = random_pixels(d, seed=0)
    assert torch.equal(r.x_train.sort(1).values, d.x_train.sort(1).values)


def test_regression_generators_deterministic():
    a = linear_teacher(50, 100, 5, 0.5, seed=2)
    b = linear_teacher(50, 100, 5, 0.5, seed=2)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_train, b.y_train)
    f1, _ = random_relu_features(a.x_train, a.x_test, 30, seed=2)
    f2, _ = random_relu_features(a.x_train, a.x_test, 30, seed=2)
    assert np.array_equal(f1, f2) and (f1 >= 0).all()
    s = sine_1d(20, 50, 0.0, seed=0)
    assert np.allclose(s.y_train, np.sin(2 * np.pi * s.x_train[:, 0]))


def test_legendre_features_closed_form():
    x = np.array([-1.0, 0.0, 0.5, 1.0])
    f = legendre_features(x, 3)
    assert np.allclose(f[:, 0], 1) and np.allclose(f[:, 1], x)
    assert np.allclose(f[:, 2], (3 * x**2 - 1) / 2)
