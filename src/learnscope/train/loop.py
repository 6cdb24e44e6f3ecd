"""A deterministic single-model training loop for classifiers.

Same seed, same numbers: batch order comes from a generator seeded by ``seed``, dropout masks
from a forked RNG seeded the same way (the caller's global RNG state is restored afterwards).
Every epoch ends with an evaluation pass (train accuracy on the *assigned*, possibly corrupted,
labels; test accuracy on the clean test labels). A non-finite loss stops training and marks the
run as diverged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from learnscope.data.classification import ClassificationData
from learnscope.seeding import derive_seed, torch_generator
from learnscope.store.records import Record


@dataclass(frozen=True)
class EpochLog:
    epoch: int
    step: int
    train_loss: float
    """Mean minibatch loss over the epoch (online, during training)."""
    train_acc: float
    """Eval-pass accuracy on the labels the model is trained on."""
    test_loss: float
    test_acc: float
    clean_fit: float
    """Eval-pass accuracy on the training examples whose labels were not corrupted."""
    noisy_fit: float
    """Eval-pass accuracy, on the assigned labels, of the corrupted training examples."""


@dataclass
class TrainResult:
    history: list[EpochLog] = field(default_factory=list)
    diverged: bool = False
    fit_epoch: int | None = None
    """First epoch whose train accuracy reached ``stop_at_train_acc`` (None if never)."""

    def records(self, probe: str = "train") -> list[Record]:
        """The history as tidy records, step = epoch."""
        out = []
        for log in self.history:
            for key, value in asdict(log).items():
                if key not in ("epoch",):
                    out.append(Record(key, value, log.epoch, probe))
        return out


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 4096
             ) -> tuple[float, float, torch.Tensor]:
    """(mean cross-entropy, accuracy, per-example correctness) in eval mode.

    The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        losses, correct = [], []
        for i in range(0, len(x), batch_size):
            logits = model(x[i:i + batch_size])
            losses.append(F.cross_entropy(logits, y[i:i + batch_size], reduction="sum"))
            correct.append(logits.argmax(1) == y[i:i + batch_size])
        hits = torch.cat(correct) if correct else torch.zeros(0, dtype=torch.bool)
        n = max(len(x), 1)
        return float(sum(losses) / n), float(hits.float().mean()) if len(hits) else math.nan, hits
    finally:
        model.train(was_training)


def make_optimizer(model: nn.Module, name: str, lr: float, momentum: float = 0.9,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                               weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose sgd or adam")


def train_classifier(
    model: nn.Module,
    data: ClassificationData,
    *,
    optimizer: str = "adam",
    lr: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    batch_size: int = 100,
    max_epochs: int = 100,
    seed: int = 0,
    stop_at_train_acc: float | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place with cross-entropy and minibatch SGD or Adam.

    Stops after ``max_epochs``, when train accuracy reaches ``stop_at_train_acc``, or on a
    non-finite loss (``diverged``).
    """
    if batch_size < 1 or max_epochs < 0:
        raise ValueError("batch_size must be >= 1 and max_epochs >= 0")
    opt = make_optimizer(model, optimizer, lr, momentum, weight_decay)
    order_gen = torch_generator(seed, "batch-order")
    result = TrainResult()
    x, y = data.x_train, data.y_train
    noisy = data.noisy_mask if data.noisy_mask is not None else torch.zeros(len(y), dtype=bool)
    n = len(x)
    step = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "dropout"))
        model.train()
        for epoch in range(1, max_epochs + 1):
            perm = torch.randperm(n, generator=order_gen)
            total, count = 0.0, 0
            for i in range(0, n, batch_size):
                idx = perm[i:i + batch_size]
                loss = F.cross_entropy(model(x[idx]), y[idx])
                if not torch.isfinite(loss):
                    result.diverged = True
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                total += float(loss.detach()) * len(idx)
                count += len(idx)
            if result.diverged:
                break
            log = _epoch_log(model, data, noisy, epoch, step, total / max(count, 1))
            result.history.append(log)
            if on_epoch is not None:
                on_epoch(log)
            if not math.isfinite(log.train_loss):
                result.diverged = True
                break
            if stop_at_train_acc is not None and log.train_acc >= stop_at_train_acc:
                result.fit_epoch = epoch
                break
    return result


def _epoch_log(model: nn.Module, data: ClassificationData, noisy: torch.Tensor, epoch: int,
               step: int, train_loss: float) -> EpochLog:
    _, train_acc, hits = evaluate(model, data.x_train, data.y_train)
    test_loss, test_acc, _ = evaluate(model, data.x_test, data.y_test)
    clean_fit = float(hits[~noisy].float().mean()) if (~noisy).any() else math.nan
    noisy_fit = float(hits[noisy].float().mean()) if noisy.any() else math.nan
    return EpochLog(epoch, step, train_loss, train_acc, test_loss, test_acc, clean_fit, noisy_fit)


# --------------------------------------------------------------------------------------------
# a general single-model loop: any module, cross-entropy or (weighted) MSE, SGD / Adam / AdamW


LOSSES = ("ce", "mse")
OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclass(frozen=True)
class StepLog:
    """Evaluation of one model after ``step`` optimizer steps (see :func:`train_model`)."""

    step: int
    epoch: int | None
    """Completed epochs over a fixed training set; None when batches come from a function."""
    train_loss: float
    """Eval-pass loss on the model's training set (fixed data); with a batch function, the mean
    loss of the minibatches since the previous log (online, before each step's update)."""
    train_acc: float
    """Eval-pass accuracy on the training set ("ce" with fixed data only, NaN otherwise)."""
    test_loss: float
    test_acc: float
    """Accuracy on the test set ("ce" only; NaN for "mse" or without test data)."""


@dataclass
class TrainHistory:
    """One model's evaluation logs and divergence status."""

    logs: list[StepLog] = field(default_factory=list)
    diverged: bool = False
    diverged_at: int | None = None
    """The step (1-based) whose loss was non-finite; that step was not applied."""


@dataclass(frozen=True)
class RunPlan:
    """How many steps a run takes, and after which steps it logs."""

    total_steps: int
    steps_per_epoch: int | None
    eval_interval: int | None
    """Steps between logs (None: only the final log)."""

    def logs_after(self, step: int) -> bool:
        """Whether an evaluation follows optimizer step ``step`` (1-based)."""
        return step == self.total_steps or (
            self.eval_interval is not None and step % self.eval_interval == 0)


def plan_run(*, n_train: int | None, batch_size: int | None, steps: int | None,
             epochs: int | None, eval_every: int | None) -> RunPlan:
    """The step count of a run; ``eval_every`` counts epochs if ``epochs`` is given, else steps.

    ``n_train`` is None when batches come from a batch function (only ``steps`` then).

    >>> plan_run(n_train=410, batch_size=20, steps=None, epochs=3, eval_every=1)
    RunPlan(total_steps=63, steps_per_epoch=21, eval_interval=21)
    """
    if (steps is None) == (epochs is None):
        raise ValueError("give exactly one of steps and epochs")
    if batch_size is not None and batch_size < 1:
        raise ValueError("batch_size must be >= 1 (or None for full batch)")
    if eval_every is not None and eval_every < 1:
        raise ValueError("eval_every must be >= 1 (or None: evaluate at the end only)")
    spe = None
    if n_train is not None:
        if n_train < 1:
            raise ValueError("the training set is empty")
        spe = 1 if batch_size is None else math.ceil(n_train / batch_size)
    if epochs is not None:
        if spe is None:
            raise ValueError("epochs need a fixed training set; with a batch function give steps")
        if epochs < 0:
            raise ValueError("epochs must be >= 0")
        interval = None if eval_every is None else eval_every * spe
        return RunPlan(epochs * spe, spe, interval)
    assert steps is not None
    if steps < 0:
        raise ValueError("steps must be >= 0")
    return RunPlan(steps, spe, eval_every)


def _reference_loss(out: torch.Tensor, y: torch.Tensor, loss: str,
                    weights: torch.Tensor | None, reduction: str = "mean") -> torch.Tensor:
    """The loss with ``torch.nn.functional`` (the oracle the stacked engine is tested against).

    "ce": cross-entropy, ``weights`` are class weights with PyTorch's semantics (weighted mean
    ``sum w[y_i] l_i / sum w[y_i]``). "mse": ``mean(weights * (out - y)**2)`` over all elements
    (``weights`` broadcast against one example's output, e.g. feature importances).
    """
    if loss == "ce":
        return F.cross_entropy(out, y, weight=weights, reduction=reduction)
    if weights is None:
        return F.mse_loss(out, y, reduction=reduction)
    err = weights * (out - y) ** 2
    return err.mean() if reduction == "mean" else err.sum()


@torch.no_grad()
def evaluate_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss: str = "ce",
                   loss_weights: torch.Tensor | None = None, batch_size: int = 4096
                   ) -> tuple[float, float]:
    """(loss, accuracy) of ``model`` on ``(x, y)`` in eval mode (accuracy NaN for "mse").

    The loss is the training objective of :func:`train_model` over the whole set. The model's
    train/eval mode is restored afterwards.
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose from {LOSSES}")
    was_training = model.training
    model.eval()
    try:
        total, norm, hits = 0.0, 0.0, 0
        for i in range(0, len(x), batch_size):
            out, yb = model(x[i:i + batch_size]), y[i:i + batch_size]
            total += float(_reference_loss(out, yb, loss, loss_weights, reduction="sum"))
            if loss == "ce":
                norm += float(len(yb) if loss_weights is None else loss_weights[yb].sum())
                hits += int((out.argmax(-1) == yb).sum())
            else:
                norm += float(out.numel())
        if not len(x):
            return math.nan, math.nan
        return total / norm, hits / len(x) if loss == "ce" else math.nan
    finally:
        model.train(was_training)


def train_model(
    model: nn.Module,
    *,
    loss: str = "ce",
    optimizer: str = "adam",
    lr: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    x_train: torch.Tensor | None = None,
    y_train: torch.Tensor | None = None,
    x_test: torch.Tensor | None = None,
    y_test: torch.Tensor | None = None,
    batch_fn: Callable[[int], tuple[torch.Tensor, torch.Tensor]] | None = None,
    batch_size: int | None = 100,
    loss_weights: torch.Tensor | None = None,
    steps: int | None = None,
    epochs: int | None = None,
    eval_every: int | None = None,
    seed: int = 0,
    on_step: Callable[[int, nn.Module], None] | None = None,
) -> TrainHistory:
    """Train ``model`` in place: the single-model reference of the stacked trainer.

    Data: a fixed training set ``(x_train, y_train)`` visited in minibatches of ``batch_size``
    (None: the full set, in its order, every step), in the order ``train_classifier`` draws for
    ``seed`` (``torch_generator(seed, "batch-order")``, one ``torch.randperm(n)`` per epoch, the
    last batch of an epoch possibly shorter); or ``batch_fn(step) -> (x, y)`` called before each
    step (0-based). ``loss``: "ce" (labels) or "mse" (targets); ``loss_weights`` are class
    weights for "ce" and weights of the output elements for "mse" (see :func:`evaluate_model`).
    ``optimizer``: ``torch.optim`` SGD (``momentum``), Adam or AdamW. Run length: ``steps`` or
    ``epochs``; ``eval_every`` (in the same unit) adds logs (and the run always ends with one).
    ``on_step(step, model)`` is called after every optimizer step. A non-finite loss stops the
    run before that step is applied (``diverged``). Dropout masks come from a forked RNG seeded
    by ``seed``; the caller's global RNG is untouched.
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose from {LOSSES}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose from {OPTIMIZERS}")
    if (batch_fn is None) == (x_train is None or y_train is None):
        raise ValueError("give either x_train and y_train, or batch_fn")
    n_train = None if x_train is None else len(x_train)
    plan = plan_run(n_train=n_train, batch_size=batch_size, steps=steps, epochs=epochs,
                    eval_every=eval_every)
    opt: torch.optim.Optimizer
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                              weight_decay=weight_decay)
    elif optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr, betas=betas, eps=eps,
                               weight_decay=weight_decay)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=betas, eps=eps,
                                weight_decay=weight_decay)
    order_gen = torch_generator(seed, "batch-order")
    history = TrainHistory()
    online_sum, online_count = 0.0, 0
    perm = torch.arange(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "dropout"))
        model.train()
        for step in range(plan.total_steps):
            if batch_fn is not None:
                xb, yb = batch_fn(step)
            elif batch_size is None:
                xb, yb = x_train, y_train
            else:
                assert x_train is not None and y_train is not None and n_train is not None
                pos = step % math.ceil(n_train / batch_size)
                if pos == 0:
                    perm = torch.randperm(n_train, generator=order_gen).to(x_train.device)
                idx = perm[pos * batch_size:(pos + 1) * batch_size]
                xb, yb = x_train[idx], y_train[idx]
            assert xb is not None and yb is not None
            value = _reference_loss(model(xb), yb, loss, loss_weights)
            if not torch.isfinite(value):
                history.diverged, history.diverged_at = True, step + 1
                break
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            online_sum += float(value.detach()) * len(xb)
            online_count += len(xb)
            if on_step is not None:
                on_step(step + 1, model)
            if plan.logs_after(step + 1):
                if x_train is not None and y_train is not None:
                    train_loss, train_acc = evaluate_model(model, x_train, y_train, loss=loss,
                                                           loss_weights=loss_weights)
                else:
                    train_loss, train_acc = online_sum / max(online_count, 1), math.nan
                online_sum, online_count = 0.0, 0
                test_loss, test_acc = math.nan, math.nan
                if x_test is not None and y_test is not None and len(x_test):
                    test_loss, test_acc = evaluate_model(model, x_test, y_test, loss=loss,
                                                         loss_weights=loss_weights)
                epoch = None if plan.steps_per_epoch is None else (step + 1) // plan.steps_per_epoch
                history.logs.append(StepLog(step + 1, epoch, train_loss, train_acc, test_loss,
                                            test_acc))
    return history
