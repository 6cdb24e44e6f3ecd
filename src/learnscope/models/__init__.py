"""Models: MLPs with seeded initialisation, closed-form regression fits."""

from learnscope.models.mlp import mlp
from learnscope.models.regression import min_norm_fit, ridge_fit

__all__ = ["min_norm_fit", "mlp", "ridge_fit"]
