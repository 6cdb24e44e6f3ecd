"""The versions a result was computed with (written into every ``result.json``)."""

from __future__ import annotations

import platform
import sys

__all__ = ["versions"]


def versions() -> dict[str, str]:
    """Versions of learnscope, Python and the numerical packages (read from their metadata,
    without importing them: importing scikit-learn alone takes a second or more)."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from learnscope import __version__

    out = {"learnscope": __version__, "python": sys.version.split()[0],
           "torch": torch.__version__}
    for name in ("numpy", "scipy", "scikit-learn"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:  # pragma: no cover
            out[name] = "not installed"
    return out | {"platform": platform.platform()}
