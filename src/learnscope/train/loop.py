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
