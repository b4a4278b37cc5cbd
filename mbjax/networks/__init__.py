"""Neural network building blocks as pure (init, apply) functions over pytrees."""

from mbjax.networks.mlp import ACTIVATIONS, ensemble_mlp_apply, ensemble_mlp_init, mlp_apply
from mbjax.networks.normalizer import Normalizer, fit_normalizer

__all__ = ["ACTIVATIONS", "Normalizer", "ensemble_mlp_apply", "ensemble_mlp_init",
           "fit_normalizer", "mlp_apply"]
