"""Models: MLPs, the MNIST-1D CNN, deep linear nets and the toy ReLU autoencoder (all with
seeded initialisation), closed-form regression fits."""

from learnscope.models.cnn1d import cnn1d
from learnscope.models.deep_linear import deep_linear, product_matrix
from learnscope.models.mlp import mlp
from learnscope.models.regression import min_norm_fit, ridge_fit
from learnscope.models.toy import ToyReLUAutoencoder

__all__ = ["ToyReLUAutoencoder", "cnn1d", "deep_linear", "min_norm_fit", "mlp", "product_matrix",
           "ridge_fit"]
