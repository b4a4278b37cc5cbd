"""The compiled model-based RL loop, its configs, presets and the host-side runner."""

from mbjax.training.config import EnvConfig, PlannerConfig, TrainConfig, WandbConfig
from mbjax.training.loop import Trainer, TrainState, make_planner, make_train

__all__ = ["EnvConfig", "PlannerConfig", "TrainConfig", "TrainState", "Trainer",
           "WandbConfig", "make_planner", "make_train"]
