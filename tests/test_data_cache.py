"""The disk cache of generated data sets: hits, misses, corrupt entries, caching off."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from learnscope.data.cache import cache_dir, cached_arrays

mnist1d_mod = importlib.import_module("learnscope.data.mnist1d")  # the module, not the function


def _maker(calls: list[int]):
    def make():
        calls.append(1)
        return (np.arange(12, dtype=np.float32).reshape(3, 4), np.array([1, 2, 3]))
    return make


def test_miss_then_hit_returns_the_same_arrays(tmp_path, monkeypatch):
    monkeypatch.setenv("LEARNSCOPE_CACHE_DIR", str(tmp_path))
    calls: list[int] = []
    a = cached_arrays("toy", {"n": 3}, _maker(calls), 2)
    b = cached_arrays("toy", {"n": 3}, _maker(calls), 2)
    assert len(calls) == 1
    assert len(list(tmp_path.glob("toy-*.npz"))) == 1
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y)
    cached_arrays("toy", {"n": 4}, _maker(calls), 2)  # another key: another entry
    assert len(calls) == 2 and len(list(tmp_path.glob("toy-*.npz"))) == 2


@pytest.mark.parametrize("damage", ["truncate", "garbage", "other arrays"])
def test_a_corrupt_entry_is_made_again_and_rewritten(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("LEARNSCOPE_CACHE_DIR", str(tmp_path))
    calls: list[int] = []
    first = cached_arrays("toy", {"n": 3}, _maker(calls), 2)
    (path,) = tmp_path.glob("toy-*.npz")
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage":
        path.write_bytes(b"not an npz at all")
    else:  # intact file, arrays that do not match their checksum
        with np.load(path) as z:
            digest = z["digest"]
        np.savez(path, digest=digest, a0=np.zeros((3, 4), np.float32), a1=np.array([1, 2, 3]))
    again = cached_arrays("toy", {"n": 3}, _maker(calls), 2)
    assert len(calls) == 2
    assert all(np.array_equal(x, y) for x, y in zip(first, again, strict=True))
    cached_arrays("toy", {"n": 3}, _maker(calls), 2)  # rewritten: a hit again
    assert len(calls) == 2


def test_caching_off_and_an_unwritable_folder(tmp_path, monkeypatch):
    calls: list[int] = []
    monkeypatch.setenv("LEARNSCOPE_CACHE_DIR", "off")
    assert cache_dir() is None
    cached_arrays("toy", {"n": 3}, _maker(calls), 2)
    cached_arrays("toy", {"n": 3}, _maker(calls), 2)
    assert len(calls) == 2
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("LEARNSCOPE_CACHE_DIR", str(blocker / "cache"))
    out = cached_arrays("toy", {"n": 3}, _maker(calls), 2)
    assert len(calls) == 3 and out[1].tolist() == [1, 2, 3]


def test_default_folder_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("LEARNSCOPE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "learnscope"


def test_mnist1d_from_the_cache_equals_a_fresh_generation(tmp_path, monkeypatch):
    monkeypatch.setenv("LEARNSCOPE_CACHE_DIR", str(tmp_path))
    mnist1d_mod._generate.cache_clear()
    fresh = mnist1d_mod.mnist1d(200, seed=5)
    assert len(list(tmp_path.glob("mnist1d-*.npz"))) == 1
    mnist1d_mod._generate.cache_clear()
    import mnist1d.data

    def refuse(*args, **kwargs):
        raise AssertionError("generated again although the cache holds it")

    monkeypatch.setattr(mnist1d.data, "make_dataset", refuse)
    cached = mnist1d_mod.mnist1d(200, seed=5)
    mnist1d_mod._generate.cache_clear()
    for name in ("x_train", "y_train", "x_test", "y_test"):
        a, b = getattr(fresh, name), getattr(cached, name)
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_cached_mnist1d_needs_neither_the_package_nor_scipy(tmp_path):
    """A process that finds MNIST-1D in the cache imports neither mnist1d nor scipy (together
    ~1.5 s) nor scikit-learn."""
    env = os.environ | {"LEARNSCOPE_CACHE_DIR": str(tmp_path)}
    code = ("import sys; from learnscope.data import mnist1d; mnist1d(100, seed=1); "
            "print(sorted(m for m in ('mnist1d', 'scipy', 'sklearn') if m in sys.modules))")
    for expected in ("['mnist1d', 'scipy']", "[]"):  # made (and stored), then read back
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, check=True)
        assert done.stdout.strip() == expected
