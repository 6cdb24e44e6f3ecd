"""Train K copies of any small architecture as one stack: the numbers of K separate runs.

A study that compares many small models (seeds, learning rates, label-noise masks, sparsities)
spends most of its time in per-operation overhead when it trains them one by one: a step of a
5k-parameter model is microseconds of arithmetic and tens of microseconds of dispatch.
:class:`StackedTrainer` trains K models of one architecture (same module structure, different
initial weights) in one set of tensor operations, and each model keeps everything that makes it
a separate experiment: its initial weights, its batch order (exactly the one the single-model
reference :func:`~learnscope.train.loop.train_model` draws for its seed), its learning rate and
weight decay, its training labels or targets, its training subset, its loss weights, its
optimizer state and its divergence status.

**How.** The K modules' parameters are stacked along a leading model axis and stored in one flat
buffer (parameter ``i`` is the contiguous block ``(K, *shape_i)``). A step makes the buffer an
autograd leaf, splits it into the stacked parameters and runs the architecture's own
``forward`` over all K models with ``torch.func.vmap(functional_call(...))``: ``vmap`` turns every
operation of the module into its batched form (a ``Linear`` becomes one batched matmul, a
``Conv1d`` one grouped convolution), so any module written for one model works unchanged; for
``mlp``/``deep_linear`` networks and modules with a ``stacked_forward`` method the batched
forward is written out instead (:mod:`learnscope.train.stacked_forward`: the same numbers
without vmap's per-op overhead, 1.1-1.3x faster steps on MLP stacks, 1.8x on the toy
autoencoder). (Convolutions gain little on a CPU: a
small CNN's step is already compute-bound one model at a time, and a grouped convolution is
not faster per model; measured 1.2x for 16 MNIST-1D CNNs.) One
backward pass of the sum of the K losses gives every model the gradient of its own loss (the
models share no parameters, so the sum separates exactly), and it lands in one flat gradient
buffer; SGD (momentum), Adam and AdamW then update all parameters of all models with a handful
of element-wise operations, exactly as ``torch.optim`` computes them (per-model learning rates
and weight decays are flat tensors broadcast over each model's block). In float64 the trained
weights equal K separate ``train_model`` runs to ~1e-16 (measured, every architecture and
optimizer of ``tests/test_stacked_training.py``); in float32 to the rounding of a different
summation order (measured at most 2.4e-7 after 50 steps).

**Divergence.** A model whose loss becomes non-finite is marked diverged at that step; the step
is not applied to it (its weights stay those from before, as in the single-model loop) and from
then on its updates are masked: it is frozen while the others continue. Nothing crosses between
models, NaNs included: every batched operation acts on each model's own slice. On the CPU the
check costs nothing; on an accelerator the mask is applied every step without synchronising.

**Memory.** Parameters, gradients and optimizer state take ``K * P * d * (3 for SGD with
momentum, 4 for Adam/AdamW)`` bytes (``P`` parameters per model, ``d`` bytes per number), plus
the saved activations of one step for all K models (``K * batch * (activations per example) *
d``), plus the shared data on the device. Evaluation runs in chunks of ``eval_chunk`` (models x
examples) to bound its activations.

**The fast path.** For plain MLPs (an ``nn.Sequential`` of biased ``Linear`` layers with ReLU or
Tanh between them) trained with cross-entropy by SGD or Adam on a fixed data set, the hand-written
:class:`~learnscope.train.batched.BatchedTrainer` is about twice as fast as autograd over
``vmap`` (1.7-2.6x measured on one CPU thread, ``benchmarks/stacked_training.py``; both are
2-10x faster than training the models one by one). :func:`make_stack` uses it whenever it applies (:func:`fast_path_reason` says why
not otherwise) behind the same interface (:class:`FastMLPStack`): same batch order, same
updates, same evaluation and histories.

**Device.** ``device`` places parameters, optimizer state, buffers and data; the batch-order
generators stay on the CPU (so a run draws the same batches on every device) and each epoch's
indices are moved once.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from learnscope.data.classification import ClassificationData
from learnscope.seeding import torch_generator
from learnscope.train.batched import BatchedTrainer, ModelSpec
from learnscope.train.loop import LOSSES, OPTIMIZERS, StepLog, TrainHistory, plan_run
from learnscope.train.stacked_forward import stacked_forward

__all__ = [
    "FastMLPStack",
    "ModelStack",
    "StackedTrainer",
    "fast_path_reason",
    "make_stack",
]

BatchFn = Callable[[int], tuple[torch.Tensor, torch.Tensor]]
"""``batch_fn(step) -> (x (K, b, ...), y (K, b, ...))``: the per-model batches of a step."""
StepHook = Callable[[int, "ModelStack"], None]


def _resolve_models(models: Sequence[nn.Module] | Callable[[int], nn.Module],
                    seeds: Sequence[int] | None) -> tuple[list[nn.Module], list[int]]:
    if isinstance(models, nn.Module):
        raise TypeError("pass a list of K modules (or a factory make(seed)), not one module")
    if callable(models):
        if seeds is None:
            raise ValueError("a model factory needs seeds: make(seed) is called for each")
        built = [models(int(s)) for s in seeds]
        return built, [int(s) for s in seeds]
    built = list(models)
    if not built:
        raise ValueError("a stack needs at least one model")
    if not all(isinstance(m, nn.Module) for m in built):
        raise TypeError("models must be nn.Module instances")
    seed_list = list(range(len(built))) if seeds is None else [int(s) for s in seeds]
    if len(seed_list) != len(built):
        raise ValueError(f"got {len(built)} models but {len(seed_list)} seeds")
    return built, seed_list


def _signature(module: nn.Module) -> tuple[str, list[tuple[str, tuple[int, ...]]]]:
    named = [(n, tuple(p.shape)) for n, p in module.named_parameters()]
    named += [(f"buffer:{n}", tuple(b.shape)) for n, b in module.named_buffers()]
    return repr(module), named


def _per_model(value: float | Sequence[float], K: int, name: str) -> list[float]:
    if isinstance(value, int | float):
        return [float(value)] * K
    values = [float(v) for v in value]
    if len(values) != K:
        raise ValueError(f"{name} has {len(values)} values for {K} models")
    return values


class ModelStack:
    """K models of one architecture trained as one stack; the engine-independent part.

    Subclasses (:class:`StackedTrainer`, :class:`FastMLPStack`) implement the optimizer step;
    options, data, batch schedule, evaluation, histories and hooks live here. Use
    :func:`make_stack` (or a subclass directly); the keyword arguments are:

    * ``models``: K modules of one architecture (their weights are copied, the modules are left
      alone), or a factory ``make(seed)`` called for each of ``seeds``.
    * ``seeds``: per-model seeds of the batch order (default ``0..K-1``).
    * ``loss``: ``"ce"`` (logits ``(b, C)``, integer labels) or ``"mse"`` (targets shaped like
      the output); ``loss_weights`` ``(K, *w)``: per-model class weights (``"ce"``, PyTorch's
      weighted mean) or weights of the output elements (``"mse"``: ``mean(w * (out - y)**2)``,
      e.g. feature importances ``(K, n)``). Shared weights: ``w.expand(K, ...)``.
    * ``optimizer``: ``"sgd"`` (with ``momentum``), ``"adam"`` or ``"adamw"`` (``betas``,
      ``eps``), as in ``torch.optim``; ``lr`` and ``weight_decay``: one value or K values.
    * Data, either a fixed set ``x_train`` ``(n, ...)`` with ``y_train`` ``(n, ...)`` shared by
      all models or ``y_train_by_model`` ``(K, n, ...)`` (per-model labels or targets), and
      optionally ``subsets`` ``(K, m)`` (each model trains on its ``m`` examples), visited in
      minibatches of ``batch_size`` (None: the full set every step); or ``batch_fn(step)``
      returning the per-model batches ``(K, b, ...)`` of each step. ``x_test``/``y_test``: a
      test set shared by all models (optional).
    * ``lr_schedule(t)``: a factor multiplying every model's learning rate at step ``t``
      (0-based), e.g. warm-up then cosine decay, as ``torch.optim.lr_scheduler.LambdaLR`` with
      the same function; AdamW's decoupled decay uses the scheduled rate too.
    * ``dtype`` (float32 or float64; parameters and floating data are cast), ``device``.
    """

    def __init__(
        self,
        models: Sequence[nn.Module] | Callable[[int], nn.Module],
        *,
        seeds: Sequence[int] | None = None,
        loss: str = "ce",
        optimizer: str = "adam",
        lr: float | Sequence[float] = 1e-3,
        weight_decay: float | Sequence[float] = 0.0,
        momentum: float = 0.9,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        batch_size: int | None = 100,
        x_train: torch.Tensor | None = None,
        y_train: torch.Tensor | None = None,
        y_train_by_model: torch.Tensor | None = None,
        subsets: torch.Tensor | Sequence[torch.Tensor] | None = None,
        x_test: torch.Tensor | None = None,
        y_test: torch.Tensor | None = None,
        batch_fn: BatchFn | None = None,
        loss_weights: torch.Tensor | None = None,
        lr_schedule: Callable[[int], float] | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        eval_chunk: int = 32768,
    ) -> None:
        modules, self.seeds = _resolve_models(models, seeds)
        K = self.K = len(modules)
        sig = _signature(modules[0])
        if any(_signature(m) != sig for m in modules[1:]):
            raise ValueError("all models of a stack need the same architecture (modules, names "
                             "and shapes of parameters and buffers)")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose from {LOSSES}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; choose from {OPTIMIZERS}")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError("dtype must be torch.float32 or torch.float64")
        if batch_size is not None and batch_size < 1:
            raise ValueError("batch_size must be >= 1 (or None for full batch)")
        if eval_chunk < 1:
            raise ValueError("eval_chunk must be >= 1")
        self.loss, self.optimizer = loss, optimizer
        self.lrs = _per_model(lr, K, "lr")
        self.weight_decays = _per_model(weight_decay, K, "weight_decay")
        self.momentum, self.betas, self.eps = float(momentum), (float(betas[0]),
                                                                 float(betas[1])), float(eps)
        self.batch_size, self.dtype = batch_size, dtype
        self.device = torch.device(device)
        self.eval_chunk = int(eval_chunk)
        self.step = 0
        """Optimizer steps taken so far."""
        self.histories = [TrainHistory() for _ in range(K)]
        """Per-model logs and divergence status (filled by :meth:`train`)."""
        self._template = copy.deepcopy(modules[0]).to(dtype=dtype, device=self.device)
        self._meta = copy.deepcopy(modules[0]).to("meta")
        self._param_names = [n for n, _ in self._template.named_parameters()]
        self._buffers = {
            n: torch.stack([dict(m.named_buffers())[n].detach() for m in modules]).to(
                device=self.device, dtype=dtype if b.is_floating_point() else b.dtype)
            for n, b in self._template.named_buffers()}
        self._modules_for_init = modules

        def forward(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                    x: torch.Tensor) -> torch.Tensor:
            return functional_call(self._meta, (params, buffers), (x,))

        self._vmapped = {True: vmap(forward, in_dims=(0, 0, None)),
                         False: vmap(forward, in_dims=(0, 0, 0))}
        # the batched forward written out where the module kind allows (no vmap overhead)
        self._direct = stacked_forward(self._template) if not self._buffers else None
        self.lr_schedule = lr_schedule
        self._setup_data(x_train, y_train, y_train_by_model, subsets, x_test, y_test, batch_fn,
                         loss_weights)
        self._gens = [torch_generator(s, "batch-order") for s in self.seeds]
        self._online_sum = torch.zeros(K, dtype=torch.float64, device=self.device)
        self._online_count = 0

    # ---------------------------------------------------------------- data

    def _floating(self, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t)
        return t.to(self.device, self.dtype if t.is_floating_point() else t.dtype)

    def _targets(self, y: torch.Tensor) -> torch.Tensor:
        y = torch.as_tensor(y)
        if self.loss == "ce":
            if y.is_floating_point():
                raise ValueError('loss "ce" needs integer class labels')
            return y.to(self.device, torch.long)
        return y.to(self.device, self.dtype)

    def _setup_data(self, x_train: torch.Tensor | None, y_train: torch.Tensor | None,
                    y_train_by_model: torch.Tensor | None,
                    subsets: torch.Tensor | Sequence[torch.Tensor] | None,
                    x_test: torch.Tensor | None, y_test: torch.Tensor | None,
                    batch_fn: BatchFn | None, loss_weights: torch.Tensor | None) -> None:
        K = self.K
        self.batch_fn = batch_fn
        has_labels = y_train is not None or y_train_by_model is not None
        if batch_fn is not None:
            if x_train is not None or has_labels or subsets is not None:
                raise ValueError("give either a fixed training set or batch_fn, not both")
        elif x_train is None or not has_labels:
            raise ValueError("give x_train with y_train (or y_train_by_model), or batch_fn")
        self._x = None if x_train is None else self._floating(x_train)
        self._y = None if y_train is None else self._targets(y_train)
        self._y_by_model = None if y_train_by_model is None else self._targets(y_train_by_model)
        n = 0 if self._x is None else len(self._x)
        if self._y is not None and len(self._y) != n:
            raise ValueError("x_train and y_train have different lengths")
        if self._y_by_model is not None and tuple(self._y_by_model.shape[:2]) != (K, n):
            raise ValueError(f"y_train_by_model must have shape (K={K}, n={n}, ...), got "
                             f"{tuple(self._y_by_model.shape)}")
        self._subsets_cpu: torch.Tensor | None = None
        if subsets is not None:
            subs = ([torch.as_tensor(s).long() for s in subsets]
                    if not isinstance(subsets, torch.Tensor) else list(subsets.long()))
            if len(subs) != K:
                raise ValueError(f"got {len(subs)} subsets for {K} models")
            if len({len(s) for s in subs}) != 1:
                raise ValueError("all training subsets of a stack must have equal size")
            stacked = torch.stack(subs).cpu()
            if stacked.numel() and (int(stacked.min()) < 0 or int(stacked.max()) >= n):
                raise ValueError("subset indices out of range of x_train")
            self._subsets_cpu = stacked
        self._subsets = None if self._subsets_cpu is None else self._subsets_cpu.to(self.device)
        self.n_train: int | None = None
        if self._x is not None:
            self.n_train = n if self._subsets_cpu is None else self._subsets_cpu.shape[1]
            if self.n_train < 1:
                raise ValueError("the training set is empty")
        if (x_test is None) != (y_test is None):
            raise ValueError("give both x_test and y_test, or neither")
        self._x_test = None if x_test is None else self._floating(x_test)
        self._y_test = None if y_test is None else self._targets(y_test)
        if self._x_test is not None and self._y_test is not None \
                and len(self._x_test) != len(self._y_test):
            raise ValueError("x_test and y_test have different lengths")
        self._w = None
        if loss_weights is not None:
            w = torch.as_tensor(loss_weights).to(self.device, self.dtype)
            if w.dim() < 1 or w.shape[0] != K:
                raise ValueError(f"loss_weights need a leading model axis of size K={K} "
                                 f"(shared weights: w.expand({K}, ...)), got {tuple(w.shape)}")
            if self.loss == "ce" and w.dim() != 2:
                raise ValueError('loss "ce" takes class weights of shape (K, n_classes)')
            self._w = w
        # full batch: the per-model training sets are fixed, prepared once
        self._full_x: torch.Tensor | None = None
        self._full_y: torch.Tensor | None = None

    def _model_rows(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs ``(K, b, ...)`` and targets ``(K, b, ...)`` at per-model row indices ``(K, b)``."""
        assert self._x is not None
        # index_select of flat indices: several times faster than advanced indexing x[rows]
        flat = rows.reshape(-1)
        x = self._x.index_select(0, flat).view(*rows.shape, *self._x.shape[1:])
        if self._y_by_model is not None:
            K, n = self._y_by_model.shape[:2]
            offsets = torch.arange(0, K * n, n, device=rows.device).unsqueeze(1)
            y_rows = self._y_by_model.reshape(K * n, *self._y_by_model.shape[2:])
            return x, y_rows.index_select(0, (rows + offsets).reshape(-1)).view(
                *rows.shape, *self._y_by_model.shape[2:])
        assert self._y is not None
        return x, self._y.index_select(0, flat).view(*rows.shape, *self._y.shape[1:])

    def _full_batch(self) -> tuple[torch.Tensor, torch.Tensor, bool, bool]:
        """The whole training set of every model: (x, y, x shared?, y shared?)."""
        assert self._x is not None
        if self._subsets is not None:
            if self._full_x is None:
                self._full_x, self._full_y = self._model_rows(self._subsets)
            assert self._full_y is not None
            return self._full_x, self._full_y, False, False
        if self._y_by_model is not None:
            return self._x, self._y_by_model, True, False
        assert self._y is not None
        return self._x, self._y, True, True

    def _epoch_rows(self) -> torch.Tensor:
        """One epoch's per-model example order ``(K, m)`` (rows of ``x_train``), on the device."""
        assert self.n_train is not None
        perms = torch.stack([torch.randperm(self.n_train, generator=g) for g in self._gens])
        if self._subsets_cpu is not None:
            perms = torch.gather(self._subsets_cpu, 1, perms)
        return perms.to(self.device)

    @property
    def steps_per_epoch(self) -> int | None:
        if self.n_train is None:
            return None
        return 1 if self.batch_size is None else math.ceil(self.n_train / self.batch_size)

    # ---------------------------------------------------------------- loss

    def _forward(self, params: dict[str, torch.Tensor], x: torch.Tensor,
                 x_shared: bool) -> torch.Tensor:
        if self._direct is not None:
            return self._direct(params, x, x_shared)
        return self._vmapped[x_shared](params, self._buffers, x)

    def _loss_terms(self, out: torch.Tensor, y: torch.Tensor, y_shared: bool
                    ) -> tuple[torch.Tensor, torch.Tensor | float]:
        """Per-model (sum of weighted losses, normaliser): the mean loss is their ratio."""
        K = out.shape[0]
        if self.loss == "ce":
            if out.dim() != 3:
                raise ValueError(f'loss "ce" needs logits (b, C) per model, got {tuple(out.shape)}')
            yk = y.expand(K, *y.shape) if y_shared else y
            # log_softmax over a short last axis is slow on the CPU (measured ~5x); class-major
            # logits (K, C, b) make it fast, the copy included
            logits = out.transpose(1, 2).contiguous()
            nll = -torch.log_softmax(logits, 1).gather(1, yk.unsqueeze(1)).squeeze(1)
            if self._w is None:
                return nll.sum(1), float(nll.shape[1])
            wi = torch.gather(self._w, 1, yk)
            return (wi * nll).sum(1), wi.sum(1)
        err = (out - y) ** 2
        if self._w is not None:
            err = self._w.view(K, *([1] * (err.dim() - self._w.dim())), *self._w.shape[1:]) * err
        return err.flatten(1).sum(1), float(err[0].numel())

    # ---------------------------------------------------------------- engine interface

    def _advance(self) -> None:
        """One optimizer step of every model (divergence handled); increments :attr:`step`."""
        raise NotImplementedError

    def _stacked_params(self) -> dict[str, torch.Tensor]:
        """Current parameters ``name -> (K, *shape)`` (no gradient)."""
        raise NotImplementedError

    def parameter_views(self) -> dict[str, torch.Tensor]:
        """Writable views ``name -> (K, *shape)`` of the parameters being trained (the
        models' own layout): changing them in place changes the models, e.g. re-applying
        pruning masks after every step from an ``on_step`` hook. Refused once a model has
        diverged (the engine may then drop its row); fetch the views again after each
        :meth:`train` call."""
        raise NotImplementedError

    def _model_params(self, k: int) -> dict[str, torch.Tensor]:
        """Model ``k``'s current parameters ``name -> shape``."""
        raise NotImplementedError

    @property
    def diverged(self) -> list[bool]:
        """Whether each model has diverged (and is frozen)."""
        raise NotImplementedError

    def _diverged_at(self) -> list[int | None]:
        raise NotImplementedError

    # ---------------------------------------------------------------- public

    def train(self, *, steps: int | None = None, epochs: int | None = None,
              eval_every: int | None = None, on_step: StepHook | None = None,
              on_epoch: StepHook | None = None) -> list[TrainHistory]:
        """Train every model for ``steps`` optimizer steps or ``epochs`` epochs.

        Logs (per-model :class:`~learnscope.train.loop.StepLog`, appended to
        :attr:`histories`) follow every ``eval_every`` epochs (with ``epochs``) or steps (with
        ``steps``) of this call, and its last step; diverged models get no more logs.
        ``on_step(step, stack)`` runs after every step, ``on_epoch(epoch, stack)`` after every
        completed epoch (fixed data only); both may read the models with :meth:`load_into` or
        :meth:`export`. Calling ``train`` again continues where the last call stopped.
        """
        plan = plan_run(n_train=self.n_train, batch_size=self.batch_size, steps=steps,
                        epochs=epochs, eval_every=eval_every)
        spe = self.steps_per_epoch
        for i in range(plan.total_steps):
            self._advance()
            if on_step is not None:
                on_step(self.step, self)
            if plan.logs_after(i + 1):
                self._log()
            if on_epoch is not None and spe is not None and self.step % spe == 0:
                on_epoch(self.step // spe, self)
        self._sync_divergence()
        return self.histories

    def run_steps(self, n_steps: int) -> None:
        """Take ``n_steps`` optimizer steps with no evaluation and no hooks (for timing, and for
        callers that measure on their own); divergence is still handled at every step."""
        for _ in range(n_steps):
            self._advance()

    def _sync_divergence(self) -> None:
        for hist, div, at in zip(self.histories, self.diverged, self._diverged_at(), strict=True):
            hist.diverged, hist.diverged_at = div, at

    def _log(self) -> None:
        logs = self.evaluate()
        self._sync_divergence()
        for hist, log in zip(self.histories, logs, strict=True):
            if not hist.diverged:
                hist.logs.append(log)
        self._online_sum.zero_()
        self._online_count = 0

    @torch.no_grad()
    def predict(self, x: torch.Tensor, *, per_model: bool = False) -> torch.Tensor:
        """Every model's outputs ``(K, n, ...)`` on ``x`` (``(n, ...)``, or ``(K, n, ...)`` with
        ``per_model=True``), in chunks."""
        x = self._floating(x)
        params = self._stacked_params()
        n = x.shape[1] if per_model else x.shape[0]
        c = max(1, self.eval_chunk // self.K)
        outs = [self._forward(params, x[:, i:i + c] if per_model else x[i:i + c], not per_model)
                for i in range(0, n, c)]
        return torch.cat(outs, 1)

    @torch.no_grad()
    def _metrics(self, params: dict[str, torch.Tensor], n: int,
                 batch: Callable[[int, int], tuple[torch.Tensor, torch.Tensor, bool, bool]]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-model (loss, accuracy) over ``n`` examples served by ``batch(start, stop)``."""
        K, c = self.K, max(1, self.eval_chunk // self.K)
        total = torch.zeros(K, dtype=torch.float64, device=self.device)
        norm = torch.zeros(K, dtype=torch.float64, device=self.device)
        hits = torch.zeros(K, dtype=torch.float64, device=self.device)
        for i in range(0, n, c):
            x, y, x_shared, y_shared = batch(i, min(i + c, n))
            out = self._forward(params, x, x_shared)
            num, den = self._loss_terms(out, y, y_shared)
            total += num.double()
            norm += den.double() if isinstance(den, torch.Tensor) else den
            if self.loss == "ce":
                hits += (out.argmax(-1) == y).sum(1).double()
        acc = hits / n if self.loss == "ce" else torch.full_like(hits, math.nan)
        return total / norm, acc

    @torch.no_grad()
    def evaluate(self) -> list[StepLog]:
        """Every model's log at the current step (train set, test set), diverged ones included."""
        K, nan = self.K, math.nan
        params = self._stacked_params()
        if self._x is not None:
            assert self.n_train is not None

            def train_batch(i: int, j: int) -> tuple[torch.Tensor, torch.Tensor, bool, bool]:
                if self._subsets is not None:
                    x, y = self._model_rows(self._subsets[:, i:j])
                    return x, y, False, False
                assert self._x is not None
                if self._y_by_model is not None:
                    return self._x[i:j], self._y_by_model[:, i:j], True, False
                assert self._y is not None
                return self._x[i:j], self._y[i:j], True, True

            train_loss, train_acc = self._metrics(params, self.n_train, train_batch)
        else:
            train_loss = (self._online_sum / self._online_count if self._online_count
                          else torch.full((K,), nan, dtype=torch.float64))
            train_acc = torch.full((K,), nan, dtype=torch.float64)
        test_loss = test_acc = torch.full((K,), nan, dtype=torch.float64)
        if self._x_test is not None and self._y_test is not None and len(self._x_test):
            xt, yt = self._x_test, self._y_test
            test_loss, test_acc = self._metrics(
                params, len(xt), lambda i, j: (xt[i:j], yt[i:j], True, True))
        spe = self.steps_per_epoch
        epoch = None if spe is None else self.step // spe
        rows = zip(train_loss.tolist(), train_acc.tolist(), test_loss.tolist(),
                   test_acc.tolist(), strict=True)
        return [StepLog(self.step, epoch, *row) for row in rows]

    @torch.no_grad()
    def load_into(self, k: int, module: nn.Module) -> nn.Module:
        """Copy model ``k``'s current parameters (and buffers) into ``module`` (same
        architecture); cheap enough to call at every step for per-model probes."""
        params = self._model_params(k)
        for name, p in module.named_parameters():
            p.copy_(params[name])
        for name, b in module.named_buffers():
            b.copy_(self._buffers[name][k])
        return module

    def export(self, k: int) -> nn.Module:
        """Model ``k``'s current weights in a new module of the original architecture."""
        return self.load_into(k, copy.deepcopy(self._template))


# --------------------------------------------------------------------------------------------
# the general engine


class _FlatOptimizer:
    """SGD (momentum), Adam or AdamW over one flat parameter buffer, as ``torch.optim`` does it.

    ``lr`` / ``weight_decay`` are Python floats when shared by all models, else flat tensors
    (each model's value over its parameters).
    """

    def __init__(self, kind: str, flat: torch.Tensor, lr: float | torch.Tensor,
                 weight_decay: float | torch.Tensor, momentum: float,
                 betas: tuple[float, float], eps: float) -> None:
        self.kind, self.lr, self.wd = kind, lr, weight_decay
        self.momentum, self.betas, self.eps = momentum, betas, eps
        self.t = 0
        self.buf: torch.Tensor | None = None
        if kind == "sgd":
            pass
        else:
            self.exp_avg = torch.zeros_like(flat)
            self.exp_avg_sq = torch.zeros_like(flat)
        self.decay: float | torch.Tensor | None = None
        if kind == "adamw":
            self.decay = 1 - lr * weight_decay

    @staticmethod
    def _has(value: float | torch.Tensor) -> bool:
        return isinstance(value, torch.Tensor) or value != 0

    def _decayed_grad(self, p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if isinstance(self.wd, torch.Tensor):
            return torch.addcmul(g, p, self.wd)
        return g.add(p, alpha=self.wd) if self.wd != 0 else g

    @torch.no_grad()
    def step(self, p: torch.Tensor, g: torch.Tensor, factor: float = 1.0) -> None:
        self.t += 1
        lr = self.lr if factor == 1.0 else self.lr * factor
        if self.kind == "sgd":
            g = self._decayed_grad(p, g)
            if self.momentum != 0:
                if self.buf is None:
                    self.buf = g.clone()
                else:
                    # momentum * buf + g in one pass (torch.optim's mul_ then add_)
                    torch.add(g, self.buf, alpha=self.momentum, out=self.buf)
                g = self.buf
            if isinstance(lr, torch.Tensor):
                p.addcmul_(g, lr, value=-1)
            else:
                p.add_(g, alpha=-lr)
            return
        if self.kind == "adamw":
            assert self.decay is not None
            if self._has(self.wd):
                p.mul_(self.decay if factor == 1.0 else 1 - lr * self.wd)
        else:
            g = self._decayed_grad(p, g)
        beta1, beta2 = self.betas
        self.exp_avg.lerp_(g, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bias_correction1 = 1 - beta1**self.t
        bias_correction2_sqrt = (1 - beta2**self.t) ** 0.5
        denom = (self.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.eps)
        if isinstance(lr, torch.Tensor):
            p.addcmul_(self.exp_avg / denom, lr, value=-1 / bias_correction1)
        else:
            p.addcdiv_(self.exp_avg, denom, value=-(lr / bias_correction1))


class StackedTrainer(ModelStack):
    """The general engine: ``vmap`` + ``functional_call`` over stacked parameters, autograd.

    Keyword arguments: see :class:`ModelStack`. Modules must not draw random numbers (dropout)
    or update buffers (BatchNorm in training mode) in ``forward``: ``vmap`` refuses both.

    >>> from learnscope.models import deep_linear
    >>> x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    >>> stack = StackedTrainer(lambda s: deep_linear([4, 8, 2], init_scale=0.5, seed=s),
    ...                        seeds=[0, 1, 2], loss="mse", optimizer="sgd", lr=[0.1, 0.05, 0.02],
    ...                        x_train=x, y_train=x[:, :2], batch_size=None)
    >>> hist = stack.train(steps=20)
    >>> [round(h.logs[-1].train_loss, 3) for h in hist]  # smaller learning rate, slower fit
    [0.054, 0.069, 0.077]
    """

    def __init__(self, models: Sequence[nn.Module] | Callable[[int], nn.Module],
                 **options: Any) -> None:
        super().__init__(models, **options)
        K, modules = self.K, self._modules_for_init
        named = [dict(m.named_parameters()) for m in modules]
        self._shapes = [tuple(named[0][n].shape) for n in self._param_names]
        self._block_numels = [K * math.prod(s) for s in self._shapes]
        total = sum(self._block_numels)
        self._flat = torch.empty(total, dtype=self.dtype, device=self.device)
        with torch.no_grad():
            for name, view in self._unflatten(self._flat).items():
                view.copy_(torch.stack([params[name].detach() for params in named]))
        del self._modules_for_init
        owner = torch.cat([torch.arange(K).repeat_interleave(n // K)
                           for n in self._block_numels]).to(self.device)
        self._owner = owner
        lr = self._flat_values(self.lrs)
        wd = self._flat_values(self.weight_decays)
        self._opt = _FlatOptimizer(self.optimizer, self._flat, lr, wd, self.momentum,
                                   self.betas, self.eps)
        self._active = torch.ones(K, dtype=torch.bool, device=self.device)
        self._diverged_step = torch.zeros(K, dtype=torch.long, device=self.device)
        # On the CPU a finite check is free, so masking starts only once a model has diverged;
        # elsewhere it would synchronise every step, so the mask is always applied.
        self._masking = self.device.type != "cpu"
        self._epoch: torch.Tensor | None = None

    def _flat_values(self, values: list[float]) -> float | torch.Tensor:
        if len(set(values)) == 1:
            return values[0]
        return torch.tensor(values, dtype=self.dtype, device=self.device)[self._owner]

    def _unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = flat.split(self._block_numels)
        return {name: part.view(self.K, *shape)
                for name, part, shape in zip(self._param_names, parts, self._shapes, strict=True)}

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor, bool, bool]:
        if self.batch_fn is not None:
            x, y = self.batch_fn(self.step)
            x, y = self._floating(x), self._targets(y)
            if x.shape[0] != self.K or y.shape[0] != self.K:
                raise ValueError(f"batch_fn must return per-model batches (K={self.K}, b, ...), "
                                 f"got {tuple(x.shape)} and {tuple(y.shape)}")
            return x, y, False, False
        if self.batch_size is None:
            return self._full_batch()
        spe = self.steps_per_epoch
        assert spe is not None
        pos = self.step % spe
        if pos == 0 or self._epoch is None:
            self._epoch = self._epoch_rows()
        rows = self._epoch[:, pos * self.batch_size:(pos + 1) * self.batch_size]
        x, y = self._model_rows(rows)
        return x, y, False, False

    def _advance(self) -> None:
        x, y, x_shared, y_shared = self._next_batch()
        leaf = self._flat.detach().requires_grad_(True)
        out = self._forward(self._unflatten(leaf), x, x_shared)
        num, den = self._loss_terms(out, y, y_shared)
        loss = num / den
        (grad,) = torch.autograd.grad(loss.sum(), leaf)
        loss = loss.detach()
        finite = torch.isfinite(loss)
        if not self._masking and not bool(finite.all()):
            self._masking = True
        if self._masking:
            newly = self._active & ~finite
            self._diverged_step = torch.where(newly, self.step + 1, self._diverged_step)
            self._active &= finite
            keep = self._active[self._owner]
            before = self._flat.clone()
            self._opt.step(self._flat, grad, self._lr_factor())
            torch.where(keep, self._flat, before, out=self._flat)
        else:
            self._opt.step(self._flat, grad, self._lr_factor())
        if self.batch_fn is not None:
            self._online_sum += loss.double() * y.shape[1]
            self._online_count += int(y.shape[1])
        self.step += 1

    def _lr_factor(self) -> float:
        return 1.0 if self.lr_schedule is None else float(self.lr_schedule(self.step))

    def _stacked_params(self) -> dict[str, torch.Tensor]:
        return self._unflatten(self._flat)

    def parameter_views(self) -> dict[str, torch.Tensor]:
        _refuse_after_divergence(self)
        return self._unflatten(self._flat)

    def _model_params(self, k: int) -> dict[str, torch.Tensor]:
        return {name: view[k] for name, view in self._unflatten(self._flat).items()}

    @property
    def diverged(self) -> list[bool]:
        return [not a for a in self._active.tolist()]

    def _diverged_at(self) -> list[int | None]:
        return [None if a else int(s) for a, s in zip(self._active.tolist(),
                                                       self._diverged_step.tolist(), strict=True)]


# --------------------------------------------------------------------------------------------
# the fast path


def _mlp_layers(module: nn.Module) -> tuple[list[nn.Linear], str] | None:
    """The Linear layers and activation name of an ``mlp``-shaped Sequential, else None."""
    if not isinstance(module, nn.Sequential) or len(module) % 2 != 1:
        return None
    linears, acts = list(module)[0::2], list(module)[1::2]
    if not all(type(m) is nn.Linear and m.bias is not None for m in linears):
        return None
    names = {type(a) for a in acts}
    if not names:
        return linears, "relu"  # type: ignore[return-value]
    if names == {nn.ReLU}:
        return linears, "relu"  # type: ignore[return-value]
    if names == {nn.Tanh}:
        return linears, "tanh"  # type: ignore[return-value]
    return None


def fast_path_reason(models: Sequence[nn.Module], **options: Any) -> str | None:
    """Why the hand-written MLP trainer cannot train this stack (None: it can).

    It applies to ``mlp``-shaped ``nn.Sequential`` models (biased ``Linear`` layers, ReLU or
    Tanh between them, nothing else) trained with ``loss="ce"`` by ``"sgd"`` or ``"adam"`` on a
    fixed 2-D training set, without loss weights, with one weight decay for all models.
    """
    models = list(models)
    if not models:
        return "no models"
    if options.get("loss", "ce") != "ce":
        return 'loss is not "ce"'
    if options.get("optimizer", "adam") not in ("sgd", "adam"):
        return "optimizer is not sgd or adam"
    if options.get("batch_fn") is not None:
        return "batches come from a batch function"
    if options.get("loss_weights") is not None:
        return "loss weights"
    if options.get("lr_schedule") is not None:
        return "a learning-rate schedule"
    wd = options.get("weight_decay", 0.0)
    if not isinstance(wd, int | float) and len({float(v) for v in wd}) > 1:
        return "per-model weight decay"
    layers = _mlp_layers(models[0])
    if layers is None:
        return "not an mlp-shaped nn.Sequential of Linear and ReLU/Tanh layers"
    if any(_signature(m) != _signature(models[0]) for m in models[1:]):
        return "models differ in architecture"
    x = options.get("x_train")
    if x is None or x.dim() != 2 or not x.is_floating_point():
        return "x_train is not a 2-D floating-point tensor"
    return None


class FastMLPStack(ModelStack):
    """The fast path: a :class:`~learnscope.train.batched.BatchedTrainer` behind the stack API.

    Same options as :class:`ModelStack`, restricted as :func:`fast_path_reason` says. The
    models' own initial weights are loaded into the trainer; it draws the same batch order;
    evaluation and histories are the shared ones.
    """

    def __init__(self, models: Sequence[nn.Module] | Callable[[int], nn.Module],
                 **options: Any) -> None:
        super().__init__(models, **options)
        modules = self._modules_for_init
        del self._modules_for_init
        reason = fast_path_reason(modules, **options)
        if reason is not None:
            raise ValueError(f"the fast path does not apply: {reason}")
        found = _mlp_layers(modules[0])
        assert found is not None
        linears, activation = found
        self._n_layers = len(linears)
        sizes = [linears[0].in_features] + [lin.out_features for lin in linears]
        assert self._x is not None and self.n_train is not None
        x_cpu = self._x.cpu()
        labels = (self._y_by_model if self._y_by_model is not None else None)
        y_shared = self._y if self._y is not None else labels[0]  # type: ignore[index]
        n_classes = sizes[-1]
        # the trainer needs a test set; without one it gets a placeholder it never evaluates
        x_test = self._x_test.cpu() if self._x_test is not None else x_cpu[:1]
        y_test = self._y_test.cpu() if self._y_test is not None else y_shared.cpu()[:1]
        data = ClassificationData("stack", x_cpu, y_shared.cpu(), x_test, y_test, n_classes)
        specs = []
        for k, seed in enumerate(self.seeds):
            specs.append(ModelSpec(
                sizes, seed=seed, lr=self.lrs[k],
                y_train=None if labels is None else labels[k].cpu(),
                subset=None if self._subsets_cpu is None else self._subsets_cpu[k]))
        self._trainer = BatchedTrainer(
            specs, data, activation=activation, optimizer=self.optimizer, lr=self.lrs[0],
            momentum=self.momentum, weight_decay=self.weight_decays[0], betas=self.betas,
            eps=self.eps, batch_size=self.batch_size or self.n_train, dtype=self.dtype,
            device=self.device)
        with torch.no_grad():
            params = self._trainer.params
            for k, module in enumerate(modules):
                found_k = _mlp_layers(module)
                assert found_k is not None
                for li, lin in enumerate(found_k[0]):
                    W, b = params[2 * li][k], params[2 * li + 1][k]
                    if li < self._n_layers - 1:  # hidden layers: W (in, out), b (1, out)
                        W.copy_(lin.weight.detach().T)
                        b[0].copy_(lin.bias.detach())
                    else:  # output layer: W (out, in), b (out, 1)
                        W.copy_(lin.weight.detach())
                        b[:, 0].copy_(lin.bias.detach())
        self._diverged_steps: dict[int, int] = {}

    def _advance(self) -> None:
        before = len(self._trainer.active)
        self._trainer.steps(1)
        if len(self._trainer.active) != before:
            for k, res in enumerate(self._trainer.results):
                if res.diverged and k not in self._diverged_steps:
                    self._diverged_steps[k] = self.step + 1
        self.step += 1

    def _model_params(self, k: int) -> dict[str, torch.Tensor]:
        padded = self._trainer.padded_parameters(k)
        out = {}
        names = self._param_names  # "0.weight", "0.bias", "2.weight", ...
        for li in range(self._n_layers):
            W, b = padded[2 * li], padded[2 * li + 1]
            if li < self._n_layers - 1:
                out[names[2 * li]], out[names[2 * li + 1]] = W.T, b[0]
            else:
                out[names[2 * li]], out[names[2 * li + 1]] = W, b[:, 0]
        return out

    def parameter_views(self) -> dict[str, torch.Tensor]:
        _refuse_after_divergence(self)
        p, names, out = self._trainer.params, self._param_names, {}
        for li in range(self._n_layers):
            W, b = p[2 * li], p[2 * li + 1]
            if li < self._n_layers - 1:  # stored (K, in, out) and (K, 1, out)
                out[names[2 * li]], out[names[2 * li + 1]] = W.transpose(1, 2), b[:, 0, :]
            else:  # stored (K, out, in) and (K, out, 1)
                out[names[2 * li]], out[names[2 * li + 1]] = W, b[:, :, 0]
        return out

    def _stacked_params(self) -> dict[str, torch.Tensor]:
        per_model = [self._model_params(k) for k in range(self.K)]
        return {name: torch.stack([p[name] for p in per_model]) for name in self._param_names}

    @property
    def diverged(self) -> list[bool]:
        return [res.diverged for res in self._trainer.results]

    def _diverged_at(self) -> list[int | None]:
        return [self._diverged_steps.get(k) for k in range(self.K)]


def _refuse_after_divergence(stack: ModelStack) -> None:
    if any(stack.diverged):
        raise RuntimeError("parameter views are not available once a model of the stack has "
                           "diverged")


def make_stack(models: Sequence[nn.Module] | Callable[[int], nn.Module], *,
               fast_path: bool | None = None, **options: Any) -> ModelStack:
    """A stack of K models, on the fast path when it applies (see :func:`fast_path_reason`).

    ``fast_path``: None chooses automatically, True requires it (ValueError with the reason
    when it does not apply), False forces the general :class:`StackedTrainer`. Other keyword
    arguments: :class:`ModelStack`.

    >>> from learnscope.models import mlp
    >>> x, y = torch.randn(50, 6), torch.arange(50) % 3
    >>> stack = make_stack(lambda s: mlp([6, 8, 3], seed=s), seeds=[0, 1], x_train=x, y_train=y)
    >>> type(stack).__name__
    'FastMLPStack'
    """
    if fast_path is not False:
        modules, seeds = _resolve_models(models, options.pop("seeds", None))
        reason = fast_path_reason(modules, **options)
        if reason is None:
            return FastMLPStack(modules, seeds=seeds, **options)
        if fast_path:
            raise ValueError(f"the fast path does not apply: {reason}")
        return StackedTrainer(modules, seeds=seeds, **options)
    return StackedTrainer(models, **options)
