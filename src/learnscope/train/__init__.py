"""Training loops."""

from learnscope.train.loop import EpochLog, TrainResult, evaluate, train_classifier

__all__ = ["EpochLog", "TrainResult", "evaluate", "train_classifier"]
