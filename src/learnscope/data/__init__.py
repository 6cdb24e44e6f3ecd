"""Data sets: generated or shipped inside installed packages; nothing is downloaded."""

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
from learnscope.data.regression import (
    RegressionData,
    legendre_features,
    linear_teacher,
    random_relu_features,
    sine_1d,
)

__all__ = ["ClassificationData", "RegressionData", "digits", "flip_labels", "gaussian_inputs",
           "legendre_features", "linear_teacher", "mnist1d", "random_labels", "random_pixels",
           "random_relu_features", "shuffled_pixels", "sine_1d", "with_label_noise"]
