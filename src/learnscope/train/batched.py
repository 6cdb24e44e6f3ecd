"""Train K small MLPs at once: one set of batched tensor operations, the numbers of K runs.

:class:`BatchedTrainer` trains K multi-layer perceptrons of the same depth side by side. Their
parameters are stacked along a leading *model axis*: ``W`` of shape ``(K, fan_in, fan_out)`` and
``b`` of shape ``(K, 1, fan_out)`` for hidden layers, ``(K, out, fan_in)`` and ``(K, out, 1)``
for the output layer (whose logits are computed class-major, ``(K, C, batch)``: the layouts in
which these small batched matrix products run fastest). A step is a handful of
``torch.bmm`` / ``torch.baddbmm`` calls over all K models. Each model keeps everything that
makes it a separate experiment: its seed (initial weights exactly ``mlp(sizes, seed=seed)``'s,
batch order exactly the one :func:`~learnscope.train.loop.train_classifier` draws for that
seed), its label vector (label noise), its training subset, its learning rate, its optimizer
state, its stopping rule and its divergence status. In float64 the trained weights agree with K
separate ``train_classifier`` runs to ~1e-15 (only the order of floating-point sums differs); in
float32 to ~1e-6 after a few dozen steps (see the tests).

**Why not autograd.** At these sizes (a few thousand weights per model, batches of ~100) a step
costs microseconds of arithmetic but a per-operation overhead of tens of microseconds; autograd
adds a graph, saved tensors, fresh allocations and slow generic kernels (softmax over 10
classes, ``grad * (h > 0)``) on top. The forward and backward passes are therefore written out by
hand: a max-shifted ``exp`` for the softmax, ``aten.threshold_backward`` for the ReLU derivative,
``out=`` variants into preallocated buffers, the first layer's bias folded into its matmul (the
inputs carry a constant-1 feature, so the bias gradient comes out of the weight-gradient matmul
too), and one flat parameter / gradient / optimizer-state buffer per trainer so that an SGD or
Adam update is a few element-wise operations over *all* parameters of *all* models.

**The padding trick.** Models of different hidden widths share one stack by padding every hidden
layer to the widest one with zeros: a padded unit has zero incoming weights, zero bias and zero
outgoing weights. Its pre-activation is then exactly 0, its activation ``f(0) = 0`` (ReLU, tanh),
so it sends nothing forward; the gradient reaching it is ``0 * (outgoing weights) = 0``, so its
incoming weights, bias and outgoing weights all receive an exactly-zero gradient (the outgoing
weights because the unit's activation is 0). Zero gradients give zero momentum / Adam moments
and zero updates, weight decay of a zero weight is zero: padded units stay exactly zero for the
whole run and the real units compute exactly what the unpadded model computes (up to the order
of floating-point summation). :func:`bucket_widths` groups very different widths into a few
buckets so that little arithmetic is wasted on padding; :func:`train_models` trains a list of
:class:`ModelSpec` bucket by bucket.

A model whose loss becomes non-finite is marked diverged and removed from the stack (its weights
are kept as they were before the offending step, like ``train_classifier``); a model that reaches
its ``stop_at_train_acc`` is removed at the end of that epoch. The others continue unchanged: all
operations act on each model's own slice, so nothing (NaNs included) crosses between models.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from learnscope.data.classification import ClassificationData
from learnscope.models.mlp import mlp
from learnscope.seeding import torch_generator
from learnscope.train.loop import EpochLog, TrainResult
from learnscope.train.mixup import MixupSampler

__all__ = [
    "BatchedResult",
    "BatchedTrainer",
    "ModelSpec",
    "bucket_widths",
    "spec_data",
    "train_models",
]

_ACTIVATIONS = ("relu", "tanh")
# The fast element-wise derivatives (``grad * (h > 0)`` is several times slower at these sizes).
_threshold_backward = torch.ops.aten.threshold_backward.grad_input
_tanh_backward = torch.ops.aten.tanh_backward.grad_input


def _class_argmax(z: torch.Tensor) -> torch.Tensor:
    """``argmax`` over the class axis of class-major logits ``(K, C, n)``, several times faster.

    ``argmax`` over the strided class axis takes a slow generic path on the CPU (it was a third
    of an evaluation pass); ``max(1).indices`` walks the same axis vectorised over ``n`` and
    returns the same index (the first maximum; a NaN counts as the maximum).
    """
    return torch.max(z, 1).indices


@dataclass(frozen=True, eq=False)
class ModelSpec:
    """One model of a batched run (everything else is shared by the trainer).

    ``sizes`` are ``mlp``'s ``[in, h1, ..., out]``; ``seed`` seeds its initialisation and batch
    order exactly as ``mlp(sizes, seed=seed)`` and ``train_classifier(..., seed=seed)`` do.
    ``lr`` overrides the trainer's learning rate. ``y_train`` (length ``len(data.x_train)``)
    replaces the data's training labels (label noise); ``noisy_mask`` marks the corrupted
    examples (default: the data's mask, or ``y_train != data.y_train_clean`` when ``y_train`` is
    given). ``subset`` (indices into ``data.x_train``) trains the model on those examples only;
    all subsets of one trainer must have the same size. ``stop_at_train_acc`` stops this model
    once its end-of-epoch train accuracy reaches the value.

    Regularisers (each model its own, so that e.g. ERM, dropout and mixup of one seed train as
    one stack): ``weight_decay`` overrides the trainer's (L2 added to the gradient, as
    ``torch.optim``); ``dropout`` drops each hidden ReLU unit with this probability during
    training steps (inverted dropout, scaled by ``1 / (1 - p)``; evaluation never drops), with
    masks from the model's own stream ``(seed, "dropout-masks")``, not the global RNG;
    ``label_smoothing`` trains against ``(1 - eps) * onehot + eps / classes`` (as
    ``F.cross_entropy(label_smoothing=eps)``); ``mixup_alpha > 0`` trains on mixup batches
    (:class:`~learnscope.train.mixup.MixupSampler` seeded by ``seed``: one ``lam`` and one
    partner permutation per batch). Evaluation (train accuracy, the clean and noisy fit) is
    always on the un-mixed training inputs and their assigned labels.
    """

    sizes: tuple[int, ...]
    seed: int = 0
    lr: float | None = None
    y_train: torch.Tensor | None = None
    noisy_mask: torch.Tensor | None = None
    subset: torch.Tensor | None = None
    stop_at_train_acc: float | None = None
    weight_decay: float | None = None
    dropout: float = 0.0
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", tuple(int(s) for s in self.sizes))
        if len(self.sizes) < 2 or min(self.sizes) < 1:
            raise ValueError(f"sizes must be at least two positive integers, got {self.sizes}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if not 0.0 <= self.label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1], got {self.label_smoothing}")
        if not (self.mixup_alpha >= 0 and math.isfinite(self.mixup_alpha)):
            raise ValueError(f"mixup_alpha must be finite and >= 0, got {self.mixup_alpha}")
        if self.weight_decay is not None and not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")


@dataclass
class BatchedResult(TrainResult):
    """A :class:`TrainResult` plus the trained network (an ``mlp``-shaped ``nn.Sequential``)."""

    model: nn.Sequential | None = None


def _labels_and_mask(data: ClassificationData, spec: ModelSpec
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The spec's training labels and corrupted-example mask over all of ``data.x_train``."""
    y = data.y_train if spec.y_train is None else torch.as_tensor(spec.y_train).long()
    if len(y) != len(data.y_train):
        raise ValueError("ModelSpec.y_train must have one label per training example")
    if spec.noisy_mask is not None:
        noisy = torch.as_tensor(spec.noisy_mask).bool()
        if len(noisy) != len(y):
            raise ValueError("ModelSpec.noisy_mask must have one entry per training example")
    elif spec.y_train is not None:
        noisy = y != data.y_train_clean
    else:
        noisy = data.noisy_mask
    return y.long(), noisy


def spec_data(data: ClassificationData, spec: ModelSpec) -> ClassificationData:
    """The data a separate ``train_classifier`` run of ``spec`` would use (labels, subset, mask).

    Batched training of ``spec`` on ``data`` is numerically the training of
    ``mlp(spec.sizes, seed=spec.seed)`` by ``train_classifier(net, spec_data(data, spec),
    seed=spec.seed, ...)``.
    """
    y, noisy = _labels_and_mask(data, spec)
    x, clean = data.x_train, data.y_train_clean
    if spec.subset is not None:
        idx = torch.as_tensor(spec.subset).long()
        x, y, clean, noisy = x[idx], y[idx], clean[idx], noisy[idx]
    return data.with_train(x_train=x, y_train=y, y_train_clean=clean, noisy_mask=noisy)


# --------------------------------------------------------------------------------------------
# bucketing


def _as_sizes(w: int | Sequence[int]) -> tuple[int, ...]:
    return (int(w),) if isinstance(w, int | np.integer) else tuple(int(s) for s in w)


def _cost(sizes: np.ndarray) -> np.ndarray:
    """Multiply-adds per example of (padded) sizes; rows of ``sizes`` are models."""
    if sizes.shape[-1] == 1:
        return sizes[..., 0].astype(float)
    return (sizes[..., :-1].astype(float) * sizes[..., 1:]).sum(-1)


def bucket_widths(widths: Sequence[int | Sequence[int]], *, method: str = "flops",
                  max_buckets: int = 4, overhead: float = 0.0) -> list[list[int]]:
    """Group models into a few width buckets; returns lists of indices into ``widths``.

    Each entry is either a hidden width (cost of a model proportional to it) or a full
    ``sizes`` list ``[in, h1, ..., out]`` (cost = multiply-adds per example, ``sum in*out``;
    all lists of the same length). Every bucket is trained padded to its elementwise-largest
    sizes, so a bucket of ``n`` models costs ``n * cost(padded sizes)``.

    ``method="flops"`` (default): the partition of the models, sorted by cost, into at most
    ``max_buckets`` contiguous groups that minimises the total padded cost plus ``overhead``
    per bucket (exact dynamic programme; ``overhead`` is in the units of the cost: the per-step
    work of a bucket that does not scale with its size, so that more buckets are not always
    better). ``method="pow2"``: one bucket per power of two of the (hidden) widths
    (``max_buckets`` is ignored).

    >>> bucket_widths([4, 5, 8, 100, 120, 7], max_buckets=2)
    [[0, 1, 2, 5], [3, 4]]
    >>> bucket_widths([4, 5, 8, 100, 120, 7], method="pow2")
    [[0], [1, 2, 5], [3, 4]]
    """
    if not widths:
        return []
    sizes = [_as_sizes(w) for w in widths]
    if len({len(s) for s in sizes}) != 1:
        raise ValueError("all size lists given to bucket_widths must have the same length")
    arr = np.array(sizes, dtype=np.int64)
    if method == "pow2":
        hidden = arr[:, 1:-1] if arr.shape[1] >= 3 else arr
        keys = [tuple(int(math.ceil(math.log2(v))) for v in row) for row in hidden]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(key, []).append(i)
        return [groups[k] for k in sorted(groups)]
    if method != "flops":
        raise ValueError(f"unknown bucketing method {method!r}; choose flops or pow2")
    if max_buckets < 1:
        raise ValueError("max_buckets must be >= 1")
    if not (overhead >= 0 and math.isfinite(overhead)):
        raise ValueError(f"overhead must be finite and >= 0, got {overhead}")
    order = sorted(range(len(sizes)), key=lambda i: (_cost(arr[i]), sizes[i]))
    s = arr[order]
    n = len(s)
    # group_cost[i, j]: cost of bucket order[i..j] padded to its elementwise max.
    group_cost = np.full((n, n), np.inf)
    for i in range(n):
        padded = np.maximum.accumulate(s[i:], axis=0)
        group_cost[i, i:] = _cost(padded) * np.arange(1, n - i + 1)
    best = np.full((max_buckets + 1, n + 1), np.inf)
    cut = np.zeros((max_buckets + 1, n + 1), dtype=np.int64)
    best[0, 0] = 0.0
    for b in range(1, max_buckets + 1):
        for j in range(1, n + 1):
            cand = best[b - 1, :j] + group_cost[:j, j - 1] + overhead
            i = int(np.argmin(cand))
            best[b, j], cut[b, j] = cand[i], i
    b = int(np.argmin(best[:, n]))  # the fewest buckets among the cheapest partitions
    out, j = [], n
    while j > 0:
        i = int(cut[b, j])
        out.append(sorted(order[i:j]))
        j, b = i, b - 1
    return sorted(out)


# --------------------------------------------------------------------------------------------
# the trainer


def _with_ones(x: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Flattened inputs with a constant-1 feature appended (the first layer's bias input)."""
    x = x.reshape(len(x), -1).to(device=device, dtype=dtype)
    return torch.cat([x, torch.ones(len(x), 1, dtype=dtype, device=device)], 1).contiguous()


def _blocks(t: torch.Tensor, b: int) -> list[torch.Tensor]:
    """The columns of ``t`` (K, m) cut into contiguous (K, b) batches (the last one shorter)."""
    K, m = t.shape
    full = m // b
    out = list(t[:, :full * b].reshape(K, full, b).transpose(0, 1).contiguous().unbind(0))
    if m % b:
        out.append(t[:, full * b:].contiguous())
    return out


class _Buffers:
    """Preallocated work tensors of one step for batch size ``b`` (views of shared storage)."""

    def __init__(self, store: dict[str, torch.Tensor], K: int, b: int, sizes: list[int]):
        def view(name: str, *shape: int) -> torch.Tensor:
            numel = math.prod(shape)
            return store[name][:numel].view(*shape)

        C, L = sizes[-1], len(sizes) - 1
        self.x = view("x", K, b, sizes[0] + 1)  # inputs with a constant 1 appended
        self.x_rows = self.x.view(K * b, sizes[0] + 1)
        self.xT = self.x.transpose(1, 2)
        self.a = [view(f"a{li}", K, b, sizes[li + 1]) for li in range(L - 1)]
        self.aT = [a.transpose(1, 2) for a in self.a]
        self.da = [view(f"da{li}", K, b, sizes[li + 1]) for li in range(L - 1)]
        self.z = view("z", K, C, b)
        self.e = view("e", K, C, b)
        self.eT = self.e.transpose(1, 2)
        self.m = view("m", K, 1, b)
        self.s = view("s", K, 1, b)
        self.zy = view("zy", K, 1, b)
        self.lv = view("lv", K, 1, b)
        # its own tensor: the views of the other buffers are rewritten at every step, this not
        self.neg = torch.full((K, 1, b), -1.0 / b, dtype=store["e"].dtype,
                              device=store["e"].device)
        self.loss = view("loss", K)


class BatchedTrainer:
    """Train K MLPs of equal depth in one set of batched operations (see the module docstring).

    ``specs`` describe the models (:class:`ModelSpec`); the remaining arguments are shared and
    mean what they mean in :func:`~learnscope.train.loop.train_classifier` (``lr`` is the default
    for specs without their own; ``betas``/``eps`` are Adam's; ``stop_at_train_acc`` the default
    for specs without their own). Hidden widths may differ and are zero-padded to the widest.
    ``dtype`` is the compute dtype (float32 or float64); inputs are cast to it. ``device`` holds
    parameters, optimizer state, work buffers and data; the batch-order generators stay on the
    CPU (the same batches on every device) and each epoch's indices are moved once.

    >>> from learnscope.data import digits
    >>> d = digits(200, seed=0)
    >>> t = BatchedTrainer([ModelSpec([64, 16, 10], seed=s) for s in range(3)], d, batch_size=50)
    >>> [len(r.history) for r in t.train(max_epochs=2)]
    [2, 2, 2]
    >>> type(t.export(0)[0]).__name__
    'Linear'
    """

    def __init__(self, specs: Sequence[ModelSpec], data: ClassificationData, *,
                 activation: str = "relu", optimizer: str = "adam", lr: float = 1e-3,
                 momentum: float = 0.9, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 batch_size: int = 100, stop_at_train_acc: float | None = None,
                 dtype: torch.dtype = torch.float32, eval_batch_size: int = 4096,
                 device: torch.device | str = "cpu") -> None:
        specs = list(specs)
        if not specs:
            raise ValueError("BatchedTrainer needs at least one ModelSpec")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"unknown optimizer {optimizer!r}; choose sgd or adam")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError("dtype must be torch.float32 or torch.float64")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        depth = {len(s.sizes) for s in specs}
        ends = {(s.sizes[0], s.sizes[-1]) for s in specs}
        if len(depth) != 1 or len(ends) != 1:
            raise ValueError("all specs of a BatchedTrainer need the same depth, inputs and outputs")
        if specs[0].sizes[0] != data.n_features:
            raise ValueError(f"sizes[0]={specs[0].sizes[0]} but the data have "
                             f"{data.n_features} features")
        if activation != "relu" and any(s.dropout > 0 for s in specs):
            raise ValueError("dropout in a BatchedTrainer needs activation='relu'")
        self.specs = specs
        self.activation, self.optimizer = activation, optimizer
        self.momentum, self.weight_decay = float(momentum), float(weight_decay)
        self.betas, self.eps = (float(betas[0]), float(betas[1])), float(eps)
        self.batch_size, self.dtype, self.eval_batch_size = int(batch_size), dtype, eval_batch_size
        self.device = torch.device(device)
        self.sizes = [max(col) for col in zip(*(s.sizes for s in specs), strict=True)]
        """The padded sizes ``[in, max h1, ..., out]`` shared by the stack."""
        self.results = [TrainResult() for _ in specs]
        """Per-model histories, ``diverged`` and ``fit_epoch`` (filled by :meth:`train`)."""
        self.stop_at = [s.stop_at_train_acc if s.stop_at_train_acc is not None
                        else stop_at_train_acc for s in specs]

        K = len(specs)
        n = len(data.x_train)
        dev = self.device
        self._x = _with_ones(data.x_train, dtype, dev)
        self._x_test = _with_ones(data.x_test, dtype, dev)
        self._y_test = data.y_test.long().to(dev)
        labels, masks, subsets = [], [], []
        for spec in specs:
            y, noisy = _labels_and_mask(data, spec)
            labels.append(y)
            masks.append(noisy)
            subsets.append(None if spec.subset is None else torch.as_tensor(spec.subset).long())
        if all(s is None for s in subsets):
            self._subset: torch.Tensor | None = None
            self.n_train = n
        else:
            full = torch.arange(n)
            subs = [full if s is None else s for s in subsets]
            if len({len(s) for s in subs}) != 1:
                raise ValueError("all training subsets of a BatchedTrainer must have equal size")
            self._subset = torch.stack(subs)
            self.n_train = len(subs[0])
        self._y = torch.stack(labels)  # (K, n): labels of model k over the full training set
        if self._subset is None:
            self._y_fit = self._y
            self._noisy = torch.stack(masks)
        else:
            self._y_fit = torch.gather(self._y, 1, self._subset)
            self._noisy = torch.stack([m[s] for m, s in zip(masks, self._subset, strict=True)])
            self._subset = self._subset.to(dev)
        self._y, self._y_fit, self._noisy = self._y.to(dev), self._y_fit.to(dev), self._noisy.to(dev)

        self.active = list(range(K))
        """Indices (into ``specs``) of the models still training, in stack order."""
        self._gens = [torch_generator(s.seed, "batch-order") for s in specs]
        self._lrs = [float(lr if s.lr is None else s.lr) for s in specs]
        self._wds = [float(weight_decay if s.weight_decay is None else s.weight_decay)
                     for s in specs]
        self._dropouts = [float(s.dropout) for s in specs]
        self._smoothing = [float(s.label_smoothing) for s in specs]
        self._mixers = [MixupSampler(s.mixup_alpha, seed=s.seed) for s in specs]
        self._drop_gens = [torch_generator(s.seed, "dropout-masks") for s in specs]
        # soft targets (label smoothing or mixup) take the general loss; plain labels the
        # original hand-tuned one
        self._soft = any(s.label_smoothing > 0 or s.mixup_alpha > 0 for s in specs)
        self._masks: list[torch.Tensor] | None = None
        self._final: dict[int, list[torch.Tensor]] = {}
        self._step_count = 0  # optimizer steps taken by the active models
        self.epoch = 0
        """Completed training epochs."""
        # this epoch's batches, step-major: (example indices (K, b), labels (K, 1, b))
        self._epoch_idx: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._pos = 0
        self._loss_sum = torch.zeros(K, dtype=torch.float64, device=dev)
        self._build_state(self._initial_parameters())
        self._opt_state_init()

    # ---------------------------------------------------------------- parameters and state

    def _numel(self, K: int) -> int:
        s = self.sizes
        return K * sum((s[li] + 1) * s[li + 1] for li in range(len(s) - 1))

    def _layout(self, flat: torch.Tensor, K: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Views ``[W0, b0, W1, b1, ...]`` of a flat buffer, and the first layer's block.

        The first layer's weights and bias share one block, ``(K, in + 1, h1)`` (or
        ``(K, out, in + 1)`` without hidden layers), multiplied by inputs that carry a constant
        1 as last feature: its bias is added, and its bias gradient summed, by the matmul.
        """
        sizes, L = self.sizes, len(self.sizes) - 1
        d, h = sizes[0], sizes[1]
        if L > 1:
            first = flat[:K * (d + 1) * h].view(K, d + 1, h)
            views = [first[:, :d], first[:, d:]]
        else:
            first = flat[:K * h * (d + 1)].view(K, h, d + 1)
            views = [first[:, :, :d], first[:, :, d:]]
        offset = first.numel()
        for li in range(1, L):
            fan_in, fan_out = sizes[li], sizes[li + 1]
            shapes = ([(K, fan_in, fan_out), (K, 1, fan_out)] if li < L - 1
                      else [(K, fan_out, fan_in), (K, fan_out, 1)])
            for shape in shapes:
                numel = math.prod(shape)
                views.append(flat[offset:offset + numel].view(shape))
                offset += numel
        return views, first

    def _views(self, flat: torch.Tensor, K: int) -> list[torch.Tensor]:
        return self._layout(flat, K)[0]

    def _initial_parameters(self) -> list[torch.Tensor]:
        K = len(self.specs)
        params = self._views(torch.zeros(self._numel(K), dtype=self.dtype), K)
        for k, spec in enumerate(self.specs):
            net = mlp(spec.sizes, activation=self.activation, seed=spec.seed).to(self.dtype)
            self._load(params, k, net)
        return params

    def _linear_layers(self, net: nn.Module) -> list[nn.Linear]:
        return [m for m in net if isinstance(m, nn.Linear)]

    @torch.no_grad()
    def _load(self, params: list[torch.Tensor], k: int, net: nn.Module) -> None:
        layers = self._linear_layers(net)
        L = len(layers)
        for li, lin in enumerate(layers):
            W, b = params[2 * li][k], params[2 * li + 1][k]
            o, i = lin.weight.shape
            if li < L - 1:
                W[:i, :o] = lin.weight.T
                b[0, :o] = lin.bias
            else:
                W[:o, :i] = lin.weight
                b[:o, 0] = lin.bias

    def _build_state(self, params: list[torch.Tensor]) -> None:
        """(Re)build the flat buffers of the current stack from per-parameter tensors."""
        K = params[0].shape[0]
        self.K = K
        total = self._numel(K)
        dev = self.device
        self._flat = torch.empty(total, dtype=self.dtype, device=dev)
        self.params, self._first = self._layout(self._flat, K)
        """Stacked parameters ``[W0, b0, W1, b1, ...]`` of the active models (see module doc)."""
        for dst, src in zip(self.params, params, strict=True):
            dst.copy_(src)
        self._gflat = torch.zeros(total, dtype=self.dtype, device=dev)
        self.grads, self._gfirst = self._layout(self._gflat, K)
        self._pT = [p.transpose(1, 2) for p in self.params]
        lr_full = torch.empty(total, dtype=self.dtype, device=dev)
        lrs = torch.tensor(self._lrs, dtype=self.dtype, device=dev).view(K, 1, 1)
        for v in self._views(lr_full, K):
            v.copy_(lrs.expand_as(v))
        self._lr_full = lr_full
        self._lr_scalar = self._lrs[0] if len(set(self._lrs)) == 1 else None
        self._wd_scalar: float | None = self._wds[0] if len(set(self._wds)) == 1 else None
        self._wd_full: torch.Tensor | None = None
        if self._wd_scalar is None:
            wd_full = torch.empty(total, dtype=self.dtype, device=dev)
            wds = torch.tensor(self._wds, dtype=self.dtype, device=dev).view(K, 1, 1)
            for v in self._views(wd_full, K):
                v.copy_(wds.expand_as(v))
            self._wd_full = wd_full
        self._tmp = torch.empty(total, dtype=self.dtype, device=dev)
        self._store: dict[str, torch.Tensor] = {}
        self._buffers: dict[int, _Buffers] = {}
        B, s = self.batch_size, self.sizes
        need = {"x": K * B * (s[0] + 1), "z": K * B * s[-1], "e": K * B * s[-1],
                "m": K * B, "s": K * B, "zy": K * B, "lv": K * B, "loss": K}
        for li in range(len(s) - 2):
            need[f"a{li}"] = need[f"da{li}"] = K * B * s[li + 1]
        for name, numel in need.items():
            self._store[name] = torch.empty(numel, dtype=self.dtype, device=dev)

    def _opt_state_init(self) -> None:
        total = self._flat.numel()
        if self.optimizer == "sgd":
            self._buf = torch.zeros(total, dtype=self.dtype, device=self.device)
        else:
            self._exp_avg = torch.zeros(total, dtype=self.dtype, device=self.device)
            self._exp_avg_sq = torch.zeros(total, dtype=self.dtype, device=self.device)

    def _bufs(self, b: int) -> _Buffers:
        if b not in self._buffers:
            self._buffers[b] = _Buffers(self._store, self.K, b, self.sizes)
        return self._buffers[b]

    def _retire(self, positions: Sequence[int]) -> None:
        """Remove the models at stack ``positions``, keeping a copy of their final weights."""
        drop = set(positions)
        for pos in drop:
            self._final[self.active[pos]] = [p[pos].clone() for p in self.params]
        keep_pos = [p for p in range(self.K) if p not in drop]
        self.active = [self.active[p] for p in keep_pos]
        keep = torch.tensor(keep_pos, dtype=torch.long, device=self.device)
        if not keep_pos:
            self.K = 0
            return
        opt_state = self._opt_flats()
        params = [p.index_select(0, keep) for p in self.params]
        states = [[v.index_select(0, keep) for v in self._views(f, self.K)] for f in opt_state]
        self._lrs = [self._lrs[p] for p in keep_pos]
        self._wds = [self._wds[p] for p in keep_pos]
        self._dropouts = [self._dropouts[p] for p in keep_pos]
        self._smoothing = [self._smoothing[p] for p in keep_pos]
        self._mixers = [self._mixers[p] for p in keep_pos]
        self._drop_gens = [self._drop_gens[p] for p in keep_pos]
        self._gens = [self._gens[p] for p in keep_pos]
        self._y = self._y.index_select(0, keep)
        self._y_fit = self._y_fit.index_select(0, keep)
        self._noisy = self._noisy.index_select(0, keep)
        if self._subset is not None:
            self._subset = self._subset.index_select(0, keep)
        self._loss_sum = self._loss_sum.index_select(0, keep)
        self._epoch_idx = [(i.index_select(0, keep), y.index_select(0, keep))
                           for i, y in self._epoch_idx]
        self._build_state(params)
        self._opt_state_init()
        for flat, views in zip(self._opt_flats(), states, strict=True):
            for dst, src in zip(self._views(flat, self.K), views, strict=True):
                dst.copy_(src)

    def _opt_flats(self) -> list[torch.Tensor]:
        return [self._buf] if self.optimizer == "sgd" else [self._exp_avg, self._exp_avg_sq]

    # ---------------------------------------------------------------- one step

    def _new_epoch(self) -> None:
        m, B = self.n_train, self.batch_size
        perms = torch.stack([torch.randperm(m, generator=g) for g in self._gens]).to(self.device)
        if self._subset is not None:
            perms = torch.gather(self._subset, 1, perms)
        labels = torch.gather(self._y, 1, perms)
        self._epoch_idx = list(zip(_blocks(perms, B), [y.unsqueeze(1) for y in _blocks(labels, B)],
                                   strict=True))
        self._pos = 0
        self._loss_sum.zero_()

    def _forward(self, x: torch.Tensor, bufs: _Buffers | None) -> torch.Tensor:
        """Logits ``(K, C, b)`` of input ``x`` ``(K, b, in)``; keeps activations in ``bufs``."""
        p, L = self.params, len(self.sizes) - 1
        if L == 1:
            out = None if bufs is None else bufs.z
            return torch.bmm(self._first, x.transpose(1, 2), out=out)
        h = x
        for li in range(L - 1):
            out = None if bufs is None else bufs.a[li]
            if li == 0:
                h = torch.bmm(h, self._first, out=out)
            else:
                h = torch.baddbmm(p[2 * li + 1], h, p[2 * li], out=out)
            if self.activation == "relu":
                h.relu_()
            else:
                h.tanh_()
            if bufs is not None and self._masks is not None:
                h.mul_(self._masks[li])
        if bufs is None:
            return torch.baddbmm(p[-1], p[-2], h.transpose(1, 2))
        return torch.baddbmm(p[-1], p[-2], bufs.aT[-1], out=bufs.z)

    def _step(self, idx: torch.Tensor, y: torch.Tensor) -> None:
        """One optimizer step of every active model on its batch ``idx`` ``(K, b)``, labels ``y``."""
        K, b = idx.shape
        bf = self._bufs(b)
        torch.index_select(self._x, 0, idx.view(-1), out=bf.x_rows)
        self._masks = self._draw_masks(b)
        if self._soft:
            self._soft_step(idx, y, bf)
            return
        z = self._forward(bf.x, bf)
        # cross-entropy with a hand-written, max-shifted softmax over the class axis (dim 1)
        m, e, s = bf.m, bf.e, bf.s
        torch.amax(z, 1, keepdim=True, out=m)
        torch.sub(z, m, out=e).exp_()
        torch.sum(e, 1, keepdim=True, out=s)
        torch.gather(z, 1, y, out=bf.zy)
        torch.log(s, out=bf.lv).add_(m).sub_(bf.zy)
        torch.sum(bf.lv.view(K, b), 1, out=bf.loss)  # b * (mean cross-entropy) per model
        if not all(map(math.isfinite, bf.loss.tolist())):  # one call; a reduction costs more
            bad = [k for k in range(K) if not math.isfinite(float(bf.loss[k]))]
            for pos in bad:
                self.results[self.active[pos]].diverged = True
            keep = torch.tensor([k for k in range(K) if k not in bad], dtype=torch.long,
                                device=self.device)
            self._retire(bad)
            if self.K:
                self._step(idx.index_select(0, keep), y.index_select(0, keep))
            return
        self._loss_sum.add_(bf.loss)
        # backward: dL/dz = (softmax - onehot) / b, laid out (K, C, b)
        s.mul_(b)
        e.div_(s).scatter_add_(1, y, bf.neg)
        self._backward(bf, e)
        self._update()
        self._step_count += 1

    def _draw_masks(self, b: int) -> list[torch.Tensor] | None:
        """This step's inverted-dropout masks ``(K, b, width)`` per hidden layer (None: no
        dropout). Model k draws ``torch.rand(b, width)`` per hidden layer, in layer order, from
        its own generator; its units are kept where the draw is ``>= p``."""
        if not any(self._dropouts):
            return None
        masks = []
        for width in self.sizes[1:-1]:
            rows = []
            for p, g in zip(self._dropouts, self._drop_gens, strict=True):
                if p > 0:
                    keep = torch.rand(b, width, generator=g, dtype=self.dtype) >= p
                    rows.append(keep.to(self.dtype) / (1.0 - p))
                else:
                    rows.append(torch.ones(b, width, dtype=self.dtype))
            masks.append(torch.stack(rows).to(self.device))
        return masks

    def _soft_step(self, idx: torch.Tensor, y: torch.Tensor, bf: _Buffers) -> None:
        """One step with soft targets: label smoothing and/or mixup, per model.

        Loss per model: ``(1 - eps) * (lam * CE(y) + (1 - lam) * CE(y[perm])) + eps * mean_c
        (-log p_c)`` on inputs ``lam * x + (1 - lam) * x[perm]``; its gradient with respect to
        the logits is ``softmax - target`` divided by the batch size.
        """
        K, b = idx.shape
        dev, dt = self.device, self.dtype
        lams, perms = [], []
        for mixer in self._mixers:
            lam, perm = mixer.draw(b)
            lams.append(lam)
            perms.append(perm)
        lam_t = torch.tensor(lams, dtype=dt, device=dev).view(K, 1, 1)
        perm_t = torch.stack(perms).to(dev)
        y2 = torch.gather(y, 2, perm_t.unsqueeze(1))
        if any(lam != 1.0 for lam in lams):
            idx2 = torch.gather(idx, 1, perm_t)
            x2 = self._x.index_select(0, idx2.reshape(-1)).view_as(bf.x)
            bf.x.lerp_(x2, 1.0 - lam_t)
        z = self._forward(bf.x, bf)  # (K, C, b)
        C = z.shape[1]
        eps_t = torch.tensor(self._smoothing, dtype=dt, device=dev).view(K, 1, 1)
        lse = torch.logsumexp(z, 1, keepdim=True)  # (K, 1, b)
        ce1 = lse - torch.gather(z, 1, y)
        ce2 = lse - torch.gather(z, 1, y2)
        uniform = lse - z.mean(1, keepdim=True)
        lv = (1 - eps_t) * (lam_t * ce1 + (1 - lam_t) * ce2) + eps_t * uniform
        loss = lv.view(K, b).sum(1)
        if not math.isfinite(float(loss.sum())):
            bad = [k for k in range(K) if not math.isfinite(float(loss[k]))]
            for pos in bad:
                self.results[self.active[pos]].diverged = True
            keep = torch.tensor([k for k in range(K) if k not in bad], dtype=torch.long,
                                device=dev)
            self._retire(bad)
            if self.K:
                self._step(idx.index_select(0, keep), y.index_select(0, keep))
            return
        self._loss_sum.add_(loss)
        dz = torch.softmax(z, 1).sub_(eps_t / C)
        dz.scatter_add_(1, y, (-(1 - eps_t) * lam_t).expand(K, 1, b).contiguous())
        dz.scatter_add_(1, y2, (-(1 - eps_t) * (1 - lam_t)).expand(K, 1, b).contiguous())
        dz.div_(b)
        bf.e.copy_(dz)  # the backward pass reads e through its transposed view
        self._backward(bf, bf.e)
        self._update()
        self._step_count += 1

    def _backward(self, bf: _Buffers, dz: torch.Tensor) -> None:
        """Gradients of the mean loss into :attr:`grads`, given ``dz = dL/dlogits`` (K, C, b)."""
        p, pT, g, L = self.params, self._pT, self.grads, len(self.sizes) - 1
        if L == 1:
            torch.bmm(dz, bf.x, out=self._gfirst)
            return
        torch.bmm(dz, bf.a[-1], out=g[-2])
        torch.sum(dz, 2, keepdim=True, out=g[-1])
        da = torch.bmm(bf.eT, p[-2], out=bf.da[-1])
        for li in range(L - 2, -1, -1):
            if self._masks is not None:
                da.mul_(self._masks[li])  # a[li] holds the dropped activations: 0 where dropped
            if self.activation == "relu":
                _threshold_backward(da, bf.a[li], 0, grad_input=da)
            else:
                _tanh_backward(da, bf.a[li], grad_input=da)
            if li == 0:
                torch.bmm(bf.xT, da, out=self._gfirst)
            else:
                torch.bmm(bf.aT[li - 1], da, out=g[2 * li])
                torch.sum(da, 1, keepdim=True, out=g[2 * li + 1])
                da = torch.bmm(da, pT[2 * li], out=bf.da[li - 1])

    def _update(self) -> None:
        """SGD-with-momentum or Adam on the flat buffers, exactly as ``torch.optim`` does it."""
        p, g, lr = self._flat, self._gflat, self._lr_scalar
        if self._wd_full is not None:
            g.addcmul_(p, self._wd_full)
        elif self._wd_scalar:
            g.add_(p, alpha=self._wd_scalar)
        if self.optimizer == "sgd":
            buf = self._buf
            # buf = momentum * buf + g in one pass (torch.optim's mul_ then add_, to rounding);
            # first step: 0 * m + g = g, as torch clones g
            torch.add(g, buf, alpha=self.momentum, out=buf)
            if lr is not None:
                p.add_(buf, alpha=-lr)
            else:
                p.addcmul_(buf, self._lr_full, value=-1)
            return
        beta1, beta2 = self.betas
        step = self._step_count + 1
        m, v, denom = self._exp_avg, self._exp_avg_sq, self._tmp
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bias_correction1 = 1 - beta1**step
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        torch.sqrt(v, out=denom).div_(bias_correction2_sqrt).add_(self.eps)
        if lr is not None:
            p.addcdiv_(m, denom, value=-(lr / bias_correction1))
        else:
            torch.div(m, denom, out=denom).mul_(self._lr_full)
            p.add_(denom, alpha=-1 / bias_correction1)

    # ---------------------------------------------------------------- public loop

    def steps(self, n_steps: int) -> None:
        """Take ``n_steps`` optimizer steps (crossing epochs as needed) without evaluating.

        For timing and for callers that evaluate on their own; :meth:`train` is the logged
        loop (do not mix the two: :meth:`train` always starts a fresh epoch). Divergence is
        still detected per step.
        """
        for _ in range(n_steps):
            if not self.K:
                return
            if self._pos >= len(self._epoch_idx):
                self._new_epoch()
            self._step(*self._epoch_idx[self._pos])
            self._pos += 1

    def run_epoch(self) -> None:
        """One epoch of training of every active model (no evaluation)."""
        self._new_epoch()
        while self.K and self._pos < len(self._epoch_idx):
            self._step(*self._epoch_idx[self._pos])
            self._pos += 1
        self.epoch += 1

    def train(self, max_epochs: int = 100,
              on_epoch: Callable[[int, EpochLog], None] | None = None,
              eval_every: int = 1) -> list[TrainResult]:
        """Train until every model has stopped, diverged, or ``max_epochs`` epochs have run.

        Each epoch ends with an evaluation pass per model, giving the same ``EpochLog`` as
        ``train_classifier``; ``on_epoch(k, log)`` is called for each model ``k`` still
        training. Returns :attr:`results` (one ``TrainResult`` per spec, in order).

        ``eval_every=k`` evaluates only after epochs ``k, 2k, ...`` and the last one
        (``max_epochs``): an evaluation pass costs about half a training epoch, so sparse
        curves are much cheaper. Training is unchanged (the logs are those of ``k=1`` at the
        same epochs; a log's ``train_loss`` is the mean over its own epoch); a
        ``stop_at_train_acc`` is checked at evaluated epochs only. Divergence is still detected
        at every step.
        """
        if max_epochs < 0:
            raise ValueError("max_epochs must be >= 0")
        if eval_every < 1:
            raise ValueError("eval_every must be >= 1")
        while self.K and self.epoch < max_epochs:
            self.run_epoch()
            if not self.K:
                break
            if self.epoch % eval_every and self.epoch < max_epochs:
                continue
            logs = self.evaluate()
            done = []
            for pos, (k, log) in enumerate(zip(self.active, logs, strict=True)):
                res = self.results[k]
                res.history.append(log)
                if on_epoch is not None:
                    on_epoch(k, log)
                if not math.isfinite(log.train_loss):
                    res.diverged = True
                    done.append(pos)
                elif self.stop_at[k] is not None and log.train_acc >= self.stop_at[k]:
                    res.fit_epoch = self.epoch
                    done.append(pos)
            if done:
                self._retire(done)
        return self.results

    @torch.no_grad()
    def _eval_logits(self, x: torch.Tensor | None, rows: torch.Tensor | None, start: int,
                     stop: int) -> torch.Tensor:
        if rows is None:
            assert x is not None
            xb = x[start:stop].unsqueeze(0).expand(self.K, -1, -1)
        else:
            xb = self._x[rows[:, start:stop]]
        return self._forward(xb, None)

    def _eval_chunk(self) -> int:
        width = max(self.sizes[1:])
        return max(1, min(self.eval_batch_size, (1 << 22) // max(1, self.K * width)))

    @torch.no_grad()
    def evaluate(self) -> list[EpochLog]:
        """End-of-epoch logs of the active models (train accuracy on each model's labels)."""
        K, c = self.K, self._eval_chunk()
        # train set: the model's own (subset of) examples and labels
        dev = self.device
        hits = torch.empty(K, self.n_train, dtype=torch.bool, device=dev)
        for i in range(0, self.n_train, c):
            j = min(i + c, self.n_train)
            z = self._eval_logits(self._x, self._subset, i, j)
            torch.eq(_class_argmax(z), self._y_fit[:, i:j], out=hits[:, i:j])
        n_test = len(self._x_test)
        test_hits = torch.empty(K, n_test, dtype=torch.bool, device=dev)
        test_loss = torch.zeros(K, dtype=self.dtype, device=dev)
        for i in range(0, n_test, c):
            j = min(i + c, n_test)
            z = self._eval_logits(self._x_test, None, i, j)
            y = self._y_test[i:j].view(1, 1, -1).expand(K, 1, -1)
            zmax = z.amax(1, keepdim=True)
            lse = (z - zmax).exp_().sum(1, keepdim=True).log_().add_(zmax)
            test_loss += (lse - torch.gather(z, 1, y)).sum((1, 2))
            torch.eq(_class_argmax(z), self._y_test[i:j], out=test_hits[:, i:j])
        f_hits, f_test = hits.float(), test_hits.float()
        noisy = self._noisy
        train_acc = f_hits.mean(1)
        test_acc = f_test.mean(1) if n_test else torch.full((K,), math.nan, device=dev)
        clean_n, noisy_n = (~noisy).sum(1), noisy.sum(1)
        clean_fit = (f_hits * ~noisy).sum(1) / clean_n.float()
        noisy_fit = (f_hits * noisy).sum(1) / noisy_n.float()
        test_loss = test_loss / max(n_test, 1)
        logs = []
        for pos in range(K):
            logs.append(EpochLog(
                self.epoch, self._step_count, float(self._loss_sum[pos]) / max(self.n_train, 1),
                float(train_acc[pos]), float(test_loss[pos]), float(test_acc[pos]),
                float(clean_fit[pos]) if clean_n[pos] else math.nan,
                float(noisy_fit[pos]) if noisy_n[pos] else math.nan,
            ))
        return logs

    @torch.no_grad()
    def train_logits(self) -> torch.Tensor:
        """Logits ``(K, n_train, C)`` of every active model (stack order, :attr:`active`) on
        its own un-mixed training examples, without dropout: the input of per-example
        measures (margins, learning times)."""
        c = self._eval_chunk()
        chunks = [self._eval_logits(self._x, self._subset, i, min(i + c, self.n_train))
                  for i in range(0, self.n_train, c)]
        return torch.cat(chunks, 2).transpose(1, 2)

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(K, n, C)`` of every active model (stack order) on inputs ``x`` ``(n, ...)``,
        without dropout (e.g. a validation set for early stopping)."""
        x1 = _with_ones(x, self.dtype, self.device)
        c = self._eval_chunk()
        chunks = [self._eval_logits(x1, None, i, min(i + c, len(x1)))
                  for i in range(0, len(x1), c)]
        return torch.cat(chunks, 2).transpose(1, 2)

    @property
    def train_labels(self) -> torch.Tensor:
        """The labels ``(K, n_train)`` each active model is trained on (its assigned labels)."""
        return self._y_fit

    # ---------------------------------------------------------------- export

    def padded_parameters(self, k: int) -> list[torch.Tensor]:
        """Model ``k``'s padded ``[W0, b0, W1, b1, ...]`` in storage layout (copies).

        Hidden layers: ``W (in, out)``, ``b (1, out)``; output layer: ``W (out, in)``,
        ``b (out, 1)``. Padded rows/columns are exactly zero.
        """
        if k in self._final:
            return [p.clone() for p in self._final[k]]
        pos = self.active.index(k)
        return [p[pos].clone() for p in self.params]

    @torch.no_grad()
    def export(self, k: int) -> nn.Sequential:
        """Model ``k``'s current weights as an ``nn.Sequential`` shaped like ``mlp(sizes_k)``
        (on the trainer's device)."""
        spec = self.specs[k]
        params = self.padded_parameters(k)
        net = mlp(spec.sizes, activation=self.activation, seed=spec.seed).to(self.dtype)
        layers = self._linear_layers(net)
        for li, lin in enumerate(layers):
            W, b = params[2 * li], params[2 * li + 1]
            o, i = lin.weight.shape
            if li < len(layers) - 1:
                lin.weight.copy_(W[:i, :o].T)
                lin.bias.copy_(b[0, :o])
            else:
                lin.weight.copy_(W[:o, :i])
                lin.bias.copy_(b[:o, 0])
        return net.to(self.device)


def train_models(specs: Sequence[ModelSpec], data: ClassificationData, *,
                 max_epochs: int = 100, bucketing: str = "flops", max_buckets: int = 4,
                 on_epoch: Callable[[int, EpochLog], None] | None = None,
                 device: torch.device | str = "cpu", eval_every: int = 1, workers: int = 1,
                 **trainer_kwargs: object) -> list[BatchedResult]:
    """Train a list of model specs in a few batched stacks; results in the order of ``specs``.

    Specs are grouped by depth, then into at most ``max_buckets`` width buckets by
    :func:`bucket_widths` (``bucketing`` is its ``method``; the flops method counts a fixed
    per-step overhead per bucket, so it uses fewer buckets when splitting saves less padding
    than a bucket's overhead costs); each bucket is one :class:`BatchedTrainer`
    (``trainer_kwargs`` are its keyword arguments, ``device`` included). Each result carries the trained network in
    ``.model`` (on ``device``); ``on_epoch(k, log)`` receives indices into ``specs``.
    ``eval_every`` is :meth:`BatchedTrainer.train`'s (evaluate every k epochs and at the end).

    ``workers > 1`` trains that many buckets at a time, each in its own spawned process with
    one torch thread (with fewer buckets than workers, the costliest are split in two until
    each worker has one: 64 MLPs 40-64-10 as two processes of 32 took 1.59 ms per step against
    1.88 ms as one stack on 2 threads): the small batched kernels of a bucket scale poorly
    over threads, a
    spinning multi-threaded kernel stalls badly when another process holds a core, and two
    Python threads take turns on the GIL between their many small operations (each ran ~1.5x
    slower than in a process of its own), whereas whole buckets in processes keep each core busy
    on its own. Starting the processes costs a second or two (importing torch), so it pays for
    sweeps that train for tens of seconds. The costliest buckets start first (estimated by
    padded multiply-adds plus a per-step overhead), so the cores finish close together. The
    numbers are the same as with ``workers=1`` at one torch thread; ``on_epoch`` runs in the
    calling process, in each bucket's order, interleaved across buckets. The workers end with
    the calling process (even when it is killed) and are stopped when the call ends. As for any
    spawned processes, a script must make this call under ``if __name__ == "__main__":`` (a
    spawned worker imports the script's main module).
    """
    if workers < 1:
        raise ValueError("workers must be >= 1")
    specs = list(specs)
    by_depth: dict[int, list[int]] = {}
    for i, spec in enumerate(specs):
        by_depth.setdefault(len(spec.sizes), []).append(i)
    results: list[BatchedResult | None] = [None] * len(specs)
    jobs: list[list[int]] = []
    for members in by_depth.values():
        buckets = bucket_widths([specs[i].sizes for i in members], method=bucketing,
                                max_buckets=max_buckets, overhead=_STEP_OVERHEAD)
        jobs.extend([members[j] for j in bucket] for bucket in buckets)

    if workers > 1:
        jobs = _spread(jobs, specs, workers)
    if workers == 1 or len(jobs) == 1:
        for idx in jobs:
            cb = None if on_epoch is None else (
                lambda k, log, idx=idx: on_epoch(idx[k], log))  # type: ignore[misc]
            outs = _train_bucket([specs[i] for i in idx], data, max_epochs, eval_every, device,
                                 trainer_kwargs, cb)
            for i, res in zip(idx, outs, strict=True):
                results[i] = res
    else:
        jobs.sort(key=lambda idx: -_bucket_step_cost([specs[i].sizes for i in idx]))
        for i, res in _train_in_processes(jobs, specs, data, max_epochs, eval_every, device,
                                          trainer_kwargs, on_epoch, workers):
            results[i] = res
    return [r for r in results if r is not None]


def _spread(jobs: list[list[int]], specs: Sequence[ModelSpec], workers: int
            ) -> list[list[int]]:
    """Fewer buckets than workers: split the costliest bucket of two or more models in two
    (its narrower half apart) until every worker has one, so that no core idles (e.g. many
    seeds of one width). A model's numbers do not depend on the bucket it trains in (the
    padded units are exact zeros and each model's products are its own), so the results are
    those of one bucket; buckets whose training subsets differ in size are not split (their
    trainer refuses them, with one worker or several)."""
    def subset_sizes(idx: list[int]) -> set[int | None]:
        return {None if specs[i].subset is None else len(specs[i].subset) for i in idx}

    jobs = [list(idx) for idx in jobs]  # each in bucket_widths' order: narrowest first
    while len(jobs) < workers:
        splittable = [idx for idx in jobs if len(idx) > 1 and len(subset_sizes(idx)) == 1]
        if not splittable:
            break
        big = max(splittable, key=lambda idx: _bucket_step_cost([specs[i].sizes for i in idx]))
        jobs.remove(big)
        half = (len(big) + 1) // 2
        jobs += [big[:half], big[half:]]
    return jobs


def _train_bucket(specs: list[ModelSpec], data: ClassificationData, max_epochs: int,
                  eval_every: int, device: torch.device | str, trainer_kwargs: dict[str, object],
                  on_epoch: Callable[[int, EpochLog], None] | None) -> list[BatchedResult]:
    """Train one bucket; ``on_epoch(k, log)`` gets positions in ``specs``."""
    trainer = BatchedTrainer(specs, data, device=device, **trainer_kwargs)  # type: ignore[arg-type]
    return [BatchedResult(history=res.history, diverged=res.diverged, fit_epoch=res.fit_epoch,
                          model=trainer.export(k))
            for k, res in enumerate(trainer.train(max_epochs, on_epoch, eval_every))]


_EPOCH_QUEUE: object | None = None  # a worker process's queue of (job, k, log) messages


def _init_bucket_worker(parent_pid: int, queue: object | None) -> None:
    from learnscope.processes import init_pool_worker

    global _EPOCH_QUEUE
    init_pool_worker(parent_pid)
    _EPOCH_QUEUE = queue


def _bucket_job(job: int, specs: list[ModelSpec], data: ClassificationData, max_epochs: int,
                eval_every: int, device: torch.device | str, trainer_kwargs: dict[str, object],
                report: bool) -> list[BatchedResult]:
    """A worker process's task: one bucket; epochs, then an end marker, go to the queue."""
    queue = _EPOCH_QUEUE
    cb = None
    if report and queue is not None:
        def cb(k: int, log: EpochLog) -> None:
            queue.put((job, k, log))  # type: ignore[attr-defined]
    try:
        return _train_bucket(specs, data, max_epochs, eval_every, device, trainer_kwargs, cb)
    finally:
        if report and queue is not None:
            queue.put((job, None, None))  # type: ignore[attr-defined]


def _train_in_processes(jobs: list[list[int]], specs: list[ModelSpec], data: ClassificationData,
                        max_epochs: int, eval_every: int, device: torch.device | str,
                        trainer_kwargs: dict[str, object],
                        on_epoch: Callable[[int, EpochLog], None] | None, workers: int
                        ) -> Iterator[tuple[int, BatchedResult]]:
    """(spec index, result) of every bucket, each trained in a spawned worker process."""
    import multiprocessing
    import os
    import queue as queue_module
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    from learnscope.processes import stop_pool

    ctx = multiprocessing.get_context("spawn")
    report = on_epoch is not None
    queue = ctx.Queue() if report else None
    pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx,
                               initializer=_init_bucket_worker, initargs=(os.getpid(), queue))
    clean = False
    try:
        futures = [pool.submit(_bucket_job, j, [specs[i] for i in idx], data, max_epochs,
                               eval_every, device, trainer_kwargs, report)
                   for j, idx in enumerate(jobs)]
        running = len(jobs) if report else 0  # buckets whose end marker has not arrived
        while running:
            try:
                job, k, log = queue.get(timeout=0.2)  # type: ignore[union-attr]
            except queue_module.Empty:
                failed = [f for f in futures if f.done() and f.exception() is not None]
                if failed:
                    failed[0].result()  # re-raises the worker's exception
                continue
            if k is None:
                running -= 1
            else:
                on_epoch(jobs[job][k], log)  # type: ignore[misc]
        wait(futures, return_when=FIRST_EXCEPTION)
        for idx, fut in zip(jobs, futures, strict=True):
            yield from zip(idx, fut.result(), strict=True)
        clean = True
    finally:
        if clean:
            pool.shutdown()
        else:
            stop_pool(pool)


# Per-step cost of a stack that does not scale with its size (kernel launches, Python), in
# multiply-adds per example: measured on the CPU, a one-model stack of width 2 takes about a
# tenth of the step time of one of width 300 (40-300-300-10, ~105k multiply-adds per example).
_STEP_OVERHEAD = 10_000.0


def _bucket_step_cost(sizes: list[tuple[int, ...]]) -> float:
    """Rough time of one step of a bucket: padded multiply-adds of its models + overhead."""
    padded = np.array([max(col) for col in zip(*sizes, strict=True)], dtype=np.int64)
    return len(sizes) * float(_cost(padded)) + _STEP_OVERHEAD
