"""Training loops: one model (``train_classifier``) or K models at once (``train_models``)."""

from learnscope.train.batched import BatchedTrainer, ModelSpec, bucket_widths, train_models
from learnscope.train.loop import EpochLog, TrainResult, evaluate, train_classifier

__all__ = ["BatchedTrainer", "EpochLog", "ModelSpec", "TrainResult", "bucket_widths", "evaluate",
           "train_classifier", "train_models"]
