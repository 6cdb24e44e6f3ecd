"""``python -m learnscope``: the same command line as ``learnscope``."""

from learnscope.cli import _entry

if __name__ == "__main__":
    _entry()
