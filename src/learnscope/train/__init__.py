"""Training loops: one model (``train_classifier``, ``train_model``) or K models at once
(``train_models`` for MLPs, ``make_stack`` / ``StackedTrainer`` for any architecture)."""

from learnscope.train.batched import BatchedTrainer, ModelSpec, bucket_widths, train_models
from learnscope.train.loop import (
    EpochLog,
    StepLog,
    TrainHistory,
    TrainResult,
    evaluate,
    evaluate_model,
    train_classifier,
    train_model,
)
from learnscope.train.stacked import (
    FastMLPStack,
    ModelStack,
    StackedTrainer,
    fast_path_reason,
    make_stack,
)

__all__ = ["BatchedTrainer", "EpochLog", "FastMLPStack", "ModelSpec", "ModelStack",
           "StackedTrainer", "StepLog", "TrainHistory", "TrainResult", "bucket_widths",
           "evaluate", "evaluate_model", "fast_path_reason", "make_stack", "train_classifier",
           "train_model", "train_models"]
