"""learnscope: a laboratory for how deep neural networks learn."""

__version__ = "0.1.0"
