"""Synthetic regression problems for double descent (Belkin et al. 2019).

* A linear teacher ``y = x . beta + noise`` with Gaussian inputs, fitted through random ReLU
  features ``relu(x W)``, ``W ~ N(0, 1/d)``.
* A 1-D target ``sin(2 pi x) + noise`` on [-1, 1], fitted with Legendre polynomial features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.polynomial import legendre

from learnscope.seeding import numpy_rng


@dataclass(frozen=True)
class RegressionData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_val: np.ndarray | None = None
    """Held-out points with noisy targets like the training ones (for tuning a penalty)."""
    y_val: np.ndarray | None = None


def linear_teacher(n_train: int, n_test: int, d: int, noise_sd: float, *, seed: int,
                   n_val: int = 0) -> RegressionData:
    """Gaussian inputs in ``d`` dimensions, ``y = x . beta + N(0, noise_sd^2)``, ``||beta|| = 1``.

    Test targets carry no noise, so the test MSE is the excess risk plus nothing else.
    ``n_val`` held-out points with noisy targets are drawn after everything else, so the
    training and test data do not depend on it.
    """
    rng = numpy_rng(seed, "linear-teacher")
    beta = rng.standard_normal(d)
    beta /= np.linalg.norm(beta)
    x = rng.standard_normal((n_train, d))
    xt = rng.standard_normal((n_test, d))
    y = x @ beta + noise_sd * rng.standard_normal(n_train)
    if not n_val:
        return RegressionData(x, y, xt, xt @ beta)
    xv = rng.standard_normal((n_val, d))
    yv = xv @ beta + noise_sd * rng.standard_normal(n_val)
    return RegressionData(x, y, xt, xt @ beta, xv, yv)


def random_relu_features(x: np.ndarray, x_test: np.ndarray, p: int, *, seed: int
                         ) -> tuple[np.ndarray, np.ndarray]:
    """``relu(x W)`` with ``W ~ N(0, 1/d)`` of shape (d, p), for train and test inputs."""
    d = x.shape[1]
    w = numpy_rng(seed, "relu-features", p).standard_normal((d, p)) / np.sqrt(d)
    return np.maximum(x @ w, 0.0), np.maximum(x_test @ w, 0.0)


def sine_1d(n_train: int, n_test: int, noise_sd: float, *, seed: int) -> RegressionData:
    """``x ~ U[-1, 1]``, ``y = sin(2 pi x) + N(0, noise_sd^2)``; test targets noise-free."""
    rng = numpy_rng(seed, "sine-1d")
    x = rng.uniform(-1.0, 1.0, n_train)
    xt = np.linspace(-1.0, 1.0, n_test)
    y = np.sin(2 * np.pi * x) + noise_sd * rng.standard_normal(n_train)
    return RegressionData(x[:, None], y, xt[:, None], np.sin(2 * np.pi * xt))


def legendre_features(x: np.ndarray, p: int) -> np.ndarray:
    """The first ``p`` Legendre polynomials P_0..P_{p-1} evaluated at 1-D inputs in [-1, 1]."""
    return legendre.legvander(np.asarray(x).reshape(-1), p - 1)
