"""Learned dynamics models: ensembles, training, rollouts."""

from mbjax.models.ensemble import (
    EnsembleConfig,
    EnsembleModel,
    EnsembleParams,
    ModelState,
    Prediction,
    load_model,
    model_metadata,
    pddm_ensemble_config,
    save_model,
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
           "load_model", "make_model_trainer", "model_metadata", "pddm_ensemble_config",
           "raise_if_failed", "save_model"]
