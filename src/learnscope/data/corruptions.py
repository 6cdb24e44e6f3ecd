"""Corruptions of a training set: label noise and random inputs (Zhang et al. 2017)."""

from __future__ import annotations

import torch

from learnscope.data.classification import ClassificationData
from learnscope.seeding import torch_generator


def flip_labels(labels: torch.Tensor, fraction: float, n_classes: int, *, seed: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace exactly ``round(fraction * n)`` labels by a *different* class, chosen uniformly.

    Returns ``(new_labels, mask)`` with ``mask`` marking the changed examples. Uniform
    resampling would leave about 1/C of the "noisy" labels correct; this never does.

    >>> y = torch.zeros(10, dtype=torch.long)
    >>> new, mask = flip_labels(y, 0.3, 10, seed=0)
    >>> int(mask.sum()), bool((new[mask] != 0).all()), bool((new[~mask] == 0).all())
    (3, True, True)
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"label-noise fraction must be in [0, 1], got {fraction}")
    if n_classes < 2:
        raise ValueError("label noise needs at least 2 classes")
    n = len(labels)
    g = torch_generator(seed, "flip-labels")
    k = round(fraction * n)
    idx = torch.randperm(n, generator=g)[:k]
    # An offset in 1..C-1 added modulo C always lands on a different class, uniformly.
    offset = torch.randint(1, n_classes, (k,), generator=g)
    new = labels.clone()
    new[idx] = (labels[idx] + offset) % n_classes
    mask = torch.zeros(n, dtype=torch.bool)
    mask[idx] = True
    return new, mask


def with_label_noise(data: ClassificationData, fraction: float, *, seed: int
                     ) -> ClassificationData:
    """``data`` with a fraction of its training labels flipped; test labels stay clean."""
    new, mask = flip_labels(data.y_train_clean, fraction, data.n_classes, seed=seed)
    return data.with_train(y_train=new, noisy_mask=mask)


def gaussian_inputs(data: ClassificationData, *, seed: int) -> ClassificationData:
    """Training inputs replaced by Gaussian noise with the training set's mean and std.

    Labels are kept; the test set is untouched (real images), so test accuracy is at chance.
    """
    g = torch_generator(seed, "gaussian-inputs")
    x = data.x_train
    noise = torch.randn(x.shape, generator=g, dtype=x.dtype) * x.std() + x.mean()
    return data.with_train(x_train=noise)


def shuffled_pixels(data: ClassificationData, *, seed: int) -> ClassificationData:
    """One fixed random permutation of the input positions, applied to train and test."""
    g = torch_generator(seed, "shuffled-pixels")
    perm = torch.randperm(data.n_features, generator=g)
    flat = data.x_train.reshape(len(data.x_train), -1)[:, perm].reshape(data.x_train.shape)
    flat_t = data.x_test.reshape(len(data.x_test), -1)[:, perm].reshape(data.x_test.shape)
    return data.with_train(x_train=flat, x_test=flat_t)


def random_pixels(data: ClassificationData, *, seed: int) -> ClassificationData:
    """A different random permutation of the input positions for every training image."""
    g = torch_generator(seed, "random-pixels")
    flat = data.x_train.reshape(len(data.x_train), -1)
    keys = torch.rand(flat.shape, generator=g)
    perms = keys.argsort(dim=1)
    return data.with_train(x_train=flat.gather(1, perms).reshape(data.x_train.shape))


def random_labels(data: ClassificationData, fraction: float, *, seed: int) -> ClassificationData:
    """Zhang et al.'s corruption: a chosen ``fraction`` of examples (exact count) get a
    uniformly random label, which may coincide with the true one; ``noisy_mask`` marks the
    labels that actually changed. (For memorisation studies use ``flip_labels``, which always
    changes the class.)"""
    g = torch_generator(seed, "random-labels")
    n = len(data.y_train_clean)
    k = round(fraction * n)
    idx = torch.randperm(n, generator=g)[:k]
    y = data.y_train_clean.clone()
    y[idx] = torch.randint(0, data.n_classes, (k,), generator=g)
    return data.with_train(y_train=y, noisy_mask=y != data.y_train_clean)
