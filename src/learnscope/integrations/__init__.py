"""learnscope inside the frameworks people train with.

``from learnscope.integrations import LearnscopeCallback`` (PyTorch Lightning; ``pip install
'learnscope[lightning]'``). Each name is imported on first use, so importing this package
imports no framework.
"""

from learnscope._exports import lazy_namespace

__getattr__, __dir__ = lazy_namespace(__name__, __path__, globals())
