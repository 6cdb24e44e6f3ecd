"""The toy model of superposition (Elhage et al. 2022): a tied-weight ReLU autoencoder.

``n`` sparse features are squeezed through ``m < n`` hidden dimensions and read back out,
``x' = ReLU(W^T W x + b)`` with ``W`` of shape ``(m, n)``: column ``W_i`` is the hidden direction
of feature ``i`` (the convention of :mod:`learnscope.measures.superposition`). Trained with
importance-weighted MSE on sparse inputs, the ReLU lets the model store more than ``m`` features
in superposition, in geometric arrangements (antipodal pairs, pentagons, ...).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from learnscope.seeding import torch_generator

__all__ = ["ToyReLUAutoencoder"]


class ToyReLUAutoencoder(nn.Module):
    """``x' = ReLU(W^T W x + b)``; inputs and outputs ``(N, n_features)``.

    Initialisation: ``W`` i.i.d. ``N(0, 2 / (m + n))`` (Xavier-normal of the ``(m, n)`` matrix,
    gain 1), ``b = 0``. Elhage et al. apply ``xavier_normal_`` to a stacked ``(instances, n, m)``
    tensor, whose fan computation then depends on the number of instances; taking the fans of the
    model's own matrix makes a model's initialisation independent of how many are trained with
    it. The draws come from ``torch_generator(seed, "toy-relu-autoencoder-init")``.

    >>> model = ToyReLUAutoencoder(20, 5, seed=0)
    >>> tuple(model.W.shape), tuple(model.b.shape), float(model.b.detach().abs().sum())
    ((5, 20), (20,), 0.0)
    >>> model(torch.rand(7, 20)).shape
    torch.Size([7, 20])
    """

    def __init__(self, n_features: int, m_hidden: int, *, seed: int = 0) -> None:
        super().__init__()
        if n_features < 1 or m_hidden < 1:
            raise ValueError("n_features and m_hidden must be positive")
        self.n_features, self.m_hidden = int(n_features), int(m_hidden)
        std = math.sqrt(2.0 / (self.n_features + self.m_hidden))
        g = torch_generator(seed, "toy-relu-autoencoder-init")
        self.W = nn.Parameter(torch.randn(self.m_hidden, self.n_features, generator=g) * std)
        self.b = nn.Parameter(torch.zeros(self.n_features))

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The hidden code ``W x``, shape ``(N, m_hidden)``."""
        return x @ self.W.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.hidden(x) @ self.W + self.b)

    @staticmethod
    def stacked_forward(params: dict[str, torch.Tensor], x: torch.Tensor,
                        shared: bool) -> torch.Tensor:
        """``forward`` of K models at once: ``params`` holds ``W`` ``(K, m, n)`` and ``b``
        ``(K, n)``; ``x`` is ``(K, N, n)``, or ``(N, n)`` for all with ``shared``. Used by
        learnscope's stacked trainer instead of ``vmap`` (same numbers, less overhead)."""
        w, b = params["W"], params["b"]
        h = torch.matmul(x, w.transpose(1, 2))  # (K, N, m); a shared x broadcasts
        return torch.relu(torch.baddbmm(b.unsqueeze(1), h, w))

    def extra_repr(self) -> str:
        return f"n_features={self.n_features}, m_hidden={self.m_hidden}"
