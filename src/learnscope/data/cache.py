"""A disk cache for generated data sets that are slow to make (MNIST-1D: importing its package
and generating 5000 examples take ~3-5 s per process; reading them back takes milliseconds).

Where: ``$LEARNSCOPE_CACHE_DIR``, else ``$XDG_CACHE_HOME/learnscope``, else
``~/.cache/learnscope``. ``LEARNSCOPE_CACHE_DIR=off`` turns the cache off. An entry is named by
a hash of everything that determines the data (the generator's name and version and its
arguments), written atomically, and checked when read (arrays, dtypes and a checksum): a
missing, unreadable or corrupt entry is made again and rewritten, and a cache folder that
cannot be written only costs the time saved. Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["cache_dir", "cached_arrays"]

_OFF = {"off", "0", "none", "false", ""}


def cache_dir() -> Path | None:
    """The cache folder (None: caching is off)."""
    env = os.environ.get("LEARNSCOPE_CACHE_DIR")
    if env is not None:
        return None if env.strip().lower() in _OFF else Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError:  # no home folder to be found
            return None
    return Path(base) / "learnscope"


def _digest(arrays: tuple[np.ndarray, ...]) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _read(path: Path, n: int) -> tuple[np.ndarray, ...] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = tuple(z[f"a{i}"] for i in range(n))
            stored = str(z["digest"])
    except Exception:  # missing, truncated, not an npz, other arrays: make it again
        return None
    return arrays if stored == _digest(arrays) else None


def _write(path: Path, arrays: tuple[np.ndarray, ...]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, digest=np.array(_digest(arrays)),
                         **{f"a{i}": a for i, a in enumerate(arrays)})
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:  # a read-only or full disk: the data are still returned
        pass


def cached_arrays(name: str, key: dict[str, Any],
                  make: Callable[[], tuple[np.ndarray, ...]], n: int) -> tuple[np.ndarray, ...]:
    """``make()`` (``n`` arrays), read from the cache when an intact entry for ``name`` and
    ``key`` (JSON-able: everything the arrays depend on) is there, else made and stored."""
    folder = cache_dir()
    if folder is None:
        return make()
    ident = hashlib.sha256(json.dumps([name, key], sort_keys=True).encode()).hexdigest()[:24]
    path = folder / f"{name}-{ident}.npz"
    arrays = _read(path, n)
    if arrays is None:
        arrays = make()
        if len(arrays) != n:
            raise ValueError(f"{name}: expected {n} arrays, got {len(arrays)}")
        _write(path, arrays)
    return arrays
