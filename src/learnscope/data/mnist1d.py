"""MNIST-1D (Greydanus 2020), generated offline with the ``mnist1d`` package.

``mnist1d.data.get_dataset`` downloads a frozen pickle by default; learnscope always calls
``make_dataset`` instead (about 2 s for the standard 5000 examples, plus ~1.5 s to import the
package). The regenerated set can differ slightly from the frozen pickle used in the paper, so
compare with the paper's accuracies only within a tolerance. ``make_dataset`` reseeds Python's
and NumPy's global RNGs; learnscope restores them afterwards. Generated sets are kept in the
disk cache of :mod:`learnscope.data.cache` (per package version, size and seed), so later
processes read them back in milliseconds.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from learnscope.data.cache import cached_arrays
from learnscope.data.classification import ClassificationData
from learnscope.seeding import preserved_global_rng


@functools.lru_cache(maxsize=4)
def _generate(num_samples: int, seed: int) -> tuple[np.ndarray, ...]:
    from importlib.metadata import version

    def make() -> tuple[np.ndarray, ...]:
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.num_samples = num_samples
        args.seed = seed
        with preserved_global_rng():
            data = make_dataset(args)
        return (data["x"].astype(np.float32), data["y"].astype(np.int64),
                data["x_test"].astype(np.float32), data["y_test"].astype(np.int64))

    key = {"num_samples": num_samples, "seed": seed, "mnist1d": version("mnist1d"),
           "format": 1}
    return cached_arrays("mnist1d", key, make, 4)


def mnist1d(num_samples: int = 5000, *, seed: int = 42, n_train: int | None = None,
            n_test: int | None = None) -> ClassificationData:
    """MNIST-1D: 40-dim sequences, 10 classes; 80/20 train/test split of ``num_samples``.

    ``seed=42`` is the package's default (the paper's data set). ``n_train``/``n_test`` take
    the first examples of each split.
    """
    if num_samples < 20:
        raise ValueError(f"num_samples must be at least 20, got {num_samples}")
    x, y, xt, yt = _generate(int(num_samples), int(seed))
    x, y = x[:n_train], y[:n_train]
    xt, yt = xt[:n_test], yt[:n_test]
    return ClassificationData("mnist1d", torch.from_numpy(x.copy()), torch.from_numpy(y.copy()),
                              torch.from_numpy(xt.copy()), torch.from_numpy(yt.copy()), 10)
