"""Data sets: generated or shipped inside installed packages; nothing is downloaded."""

from learnscope.data.bits12 import bits12
from learnscope.data.classification import ClassificationData
from learnscope.data.corruptions import (
    flip_labels,
    gaussian_inputs,
    random_labels,
    random_pixels,
    shuffled_pixels,
    with_label_noise,
)
from learnscope.data.digits import digits
from learnscope.data.mnist1d import mnist1d
from learnscope.data.modular import modular_addition
from learnscope.data.multiview import multiview
from learnscope.data.regression import (
    RegressionData,
    legendre_features,
    linear_teacher,
    random_relu_features,
    sine_1d,
)
from learnscope.data.repetition import balanced_multiset, repeated_subset
from learnscope.data.slabs import lms_data

__all__ = ["ClassificationData", "RegressionData", "balanced_multiset", "bits12", "digits",
           "flip_labels", "gaussian_inputs", "legendre_features", "linear_teacher", "lms_data",
           "mnist1d", "modular_addition", "multiview", "random_labels", "random_pixels", "random_relu_features",
           "repeated_subset", "shuffled_pixels", "sine_1d", "with_label_noise"]
