"""Learned dynamics models: the model protocol and registry, ensembles, training,
rollouts."""

from mbjax.models.base import (
    MODELS,
    BuiltModel,
    DynamicsModel,
    ModelSpec,
    build_model,
    model_spec,
    register_model,
    switch_model,
    unregister_model,
)
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
    build_ensemble,
    make_model_trainer,
    raise_if_failed,
)

__all__ = [
    "MODELS", "BuiltModel", "DynamicsModel", "EnsembleConfig", "EnsembleModel",
    "EnsembleParams", "ModelSpec", "ModelState", "ModelTrainConfig", "ModelTrainer",
    "ModelTrainingError", "Prediction", "build_ensemble", "build_model", "load_model",
    "make_model_trainer", "model_metadata", "model_spec", "pddm_ensemble_config",
    "raise_if_failed", "register_model", "switch_model", "save_model", "unregister_model",
]
