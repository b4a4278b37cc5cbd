"""Policies from models: SAC, MBPO (SAC on branched model rollouts), planner distillation
and terminal values for planning.

>>> from mbjax.agents import MBPOConfig, make_mbpo_train
>>> trainer = make_mbpo_train(MBPOConfig())  # init / train_iteration / train / evaluate

Agent configs carry an ``algorithm`` tag; ``mbjax.training.run`` uses
``agent_config_from_dict`` and ``make_agent_trainer`` to rebuild and train them, so they
share the run directory, checkpoints, resume and the CLI with the MPC loop.
"""

from __future__ import annotations

import dataclasses
import typing

from mbjax.agents.distill import DistillConfig, DistillTrainer, make_distill_train
from mbjax.agents.mbpo import (
    MBPOConfig,
    MBPOState,
    MBPOTrainer,
    branched_rollouts,
    initial_state_mask,
    make_elite_step,
    make_mbpo_train,
    rollout_length,
)
from mbjax.agents.sac import SAC, SACConfig, SACState, make_sac, td_target
from mbjax.agents.value import (
    make_env_value_objective,
    make_value_model_objective,
    sac_terminal_value,
)

#: ``algorithm`` tag -> (config class, trainer factory).
AGENTS = {
    "mbpo": (MBPOConfig, make_mbpo_train),
    "distill": (DistillConfig, make_distill_train),
}


def _from_dict(cls, values: dict):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        v, t = values[f.name], hints[f.name]
        if dataclasses.is_dataclass(t) and isinstance(v, dict):
            v = _from_dict(t, v)
        elif isinstance(v, list):
            v = tuple(v)
        kwargs[f.name] = v
    return cls(**kwargs)


def agent_config_from_dict(d: dict):
    """Rebuilds an agent config from ``dataclasses.asdict`` output (a run's config.json)."""
    name = d.get("algorithm")
    if name not in AGENTS:
        raise ValueError(f"unknown algorithm {name!r} in the config; valid: "
                         f"{', '.join(AGENTS)}")
    return _from_dict(AGENTS[name][0], d)


def make_agent_trainer(config):
    """The trainer (init / train_iteration / train / evaluate) of an agent config."""
    for cls, factory in AGENTS.values():
        if isinstance(config, cls):
            return factory(config)
    raise TypeError(f"no trainer for config type {type(config).__name__}")


__all__ = [
    "AGENTS", "DistillConfig", "DistillTrainer", "MBPOConfig", "MBPOState", "MBPOTrainer",
    "SAC", "SACConfig", "SACState", "agent_config_from_dict", "branched_rollouts",
    "initial_state_mask", "make_agent_trainer", "make_distill_train", "make_elite_step",
    "make_env_value_objective", "make_mbpo_train", "make_sac", "make_value_model_objective",
    "rollout_length", "sac_terminal_value", "td_target",
]
