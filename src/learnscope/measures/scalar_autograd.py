"""A tiny scalar reverse-mode automatic differentiation engine (in the spirit of micrograd).

Every arithmetic operation on :class:`Value` records a node of the computation graph with its
parents and the local derivative of its output with respect to each parent. ``backward`` visits
the nodes in reverse topological order and applies the chain rule once per edge, so a student
can check every number of backpropagation by hand (and the study checks them against
torch.autograd).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["Value", "topological_order", "values"]

Number = int | float


class Value:
    """A scalar node: its value, its gradient (filled by :meth:`backward`), its parents and
    the local derivative d(self)/d(parent) for each parent."""

    __slots__ = ("data", "grad", "parents", "local", "op", "label")

    def __init__(self, data: Number, parents: tuple[Value, ...] = (),
                 local: tuple[float, ...] = (), op: str = "", label: str = "") -> None:
        self.data = float(data)
        self.grad = 0.0
        self.parents = parents
        self.local = local
        self.op = op
        self.label = label

    def __repr__(self) -> str:
        return f"Value({self.data:g}, grad={self.grad:g}, op={self.op!r})"

    # -- operations: each records its local derivatives ---------------------------------------
    def __add__(self, other: Value | Number) -> Value:
        o = _value(other)
        return Value(self.data + o.data, (self, o), (1.0, 1.0), "+")

    def __mul__(self, other: Value | Number) -> Value:
        o = _value(other)
        return Value(self.data * o.data, (self, o), (o.data, self.data), "*")

    def __pow__(self, exponent: Number) -> Value:
        if not isinstance(exponent, int | float):
            raise TypeError("only a constant exponent is supported")
        return Value(self.data ** exponent, (self,),
                     (exponent * self.data ** (exponent - 1),), f"**{exponent:g}")

    def exp(self) -> Value:
        out = math.exp(self.data)
        return Value(out, (self,), (out,), "exp")

    def tanh(self) -> Value:
        t = math.tanh(self.data)
        return Value(t, (self,), (1.0 - t * t,), "tanh")

    def relu(self) -> Value:
        return Value(max(self.data, 0.0), (self,), (1.0 if self.data > 0 else 0.0,), "relu")

    def sigmoid(self) -> Value:
        s = 1.0 / (1.0 + math.exp(-self.data)) if self.data >= 0 else \
            math.exp(self.data) / (1.0 + math.exp(self.data))
        return Value(s, (self,), (s * (1.0 - s),), "sigmoid")

    def __neg__(self) -> Value:
        return self * -1.0

    def __sub__(self, other: Value | Number) -> Value:
        return self + (-_value(other))

    def __truediv__(self, other: Value | Number) -> Value:
        return self * _value(other) ** -1

    def __radd__(self, other: Number) -> Value:
        return _value(other) + self

    def __rmul__(self, other: Number) -> Value:
        return _value(other) * self

    def __rsub__(self, other: Number) -> Value:
        return _value(other) - self

    def __rtruediv__(self, other: Number) -> Value:
        return _value(other) / self

    # -- reverse mode ---------------------------------------------------------------------------
    def backward(self) -> list[Value]:
        """Set ``grad`` of every node to d(self)/d(node); return the nodes in the order their
        gradients were propagated (reverse topological: self first, the leaves last)."""
        order = list(reversed(topological_order(self)))
        for node in order:
            node.grad = 0.0
        self.grad = 1.0
        for node in order:
            for parent, d in zip(node.parents, node.local, strict=True):
                parent.grad += d * node.grad
        return order


def topological_order(root: Value) -> list[Value]:
    """Every node ``root`` depends on, each after all of its parents (root last). Iterative,
    so deep graphs do not hit the recursion limit."""
    order: list[Value] = []
    seen: set[int] = set()
    stack: list[tuple[Value, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack.extend((p, False) for p in reversed(node.parents) if id(p) not in seen)
    return order


def _value(x: Value | Number) -> Value:
    return x if isinstance(x, Value) else Value(x)


def values(xs: Iterable[Number]) -> list[Value]:
    """Leaf nodes for plain numbers."""
    return [Value(x) for x in xs]
