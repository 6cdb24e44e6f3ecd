"""Explicit random number generators. Nothing here touches a global RNG.

Every generator in learnscope takes a seed (or a generator) and derives independent streams
from it with :func:`derive_seed`, so that e.g. the data of seed 3 are identical whatever the
model width, and two trials never share a stream by accident.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Iterator

import numpy as np
import torch


def derive_seed(seed: int, *names: object) -> int:
    """A 63-bit seed derived deterministically from ``seed`` and any labels.

    >>> derive_seed(0, "data") == derive_seed(0, "data")
    True
    >>> derive_seed(0, "data") != derive_seed(0, "model")
    True
    """
    text = repr((int(seed),) + tuple(str(n) for n in names)).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def numpy_rng(seed: int, *names: object) -> np.random.Generator:
    """A NumPy generator for the stream ``(seed, *names)``."""
    return np.random.default_rng(derive_seed(seed, *names))


def torch_generator(seed: int, *names: object) -> torch.Generator:
    """A CPU torch generator for the stream ``(seed, *names)``."""
    g = torch.Generator()
    g.manual_seed(derive_seed(seed, *names))
    return g


@contextlib.contextmanager
def preserved_global_rng() -> Iterator[None]:
    """Run code that reseeds global RNGs (third-party generators) and restore them afterwards."""
    py_state = random.getstate()
    np_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
