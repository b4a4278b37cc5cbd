"""Learned dynamics models: ensembles, training, rollouts."""

from mbjax.models.ensemble import (
    EnsembleConfig,
    EnsembleModel,
    EnsembleParams,
    ModelState,
    Prediction,
    pddm_ensemble_config,
)
from mbjax.models.training import (
    ModelTrainConfig,
    ModelTrainer,
    ModelTrainingError,
    make_model_trainer,
    raise_if_failed,
)

__all__ = ["EnsembleConfig", "EnsembleModel", "EnsembleParams", "ModelState",
           "ModelTrainConfig", "ModelTrainer", "ModelTrainingError", "Prediction",
           "make_model_trainer", "pddm_ensemble_config", "raise_if_failed"]
