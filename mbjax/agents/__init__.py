"""Training algorithms as agents over one run config (``mbjax.agents.base``): the MPC
loop (PETS, PDDM), MBPO and SAC, planner distillation, plus terminal values for planning.

>>> from mbjax.agents import MPCConfig, make_agent
>>> agent = make_agent(MPCConfig())  # init / train_iteration / train / evaluate
>>> state = agent.init(key, agent.default_hparams)

Every agent is registered by name (``AGENTS``; ``register_agent`` adds a user's own), and
``mbjax.runner`` runs any of them with run directories, checkpoints, devices and sweeps.
"""

from __future__ import annotations

from mbjax.agents.base import (
    AGENTS,
    Agent,
    AgentSpec,
    Task,
    agent_spec,
    batched_env,
    example_transition,
    first_episode_measures,
    first_episode_return,
    make_agent,
    make_task,
    model_objective,
    register_agent,
    reset_where,
    reward_functions,
    scan_train,
    simulator_objective,
)
from mbjax.agents.config import (
    RUNTIME_FIELDS,
    ConfigError,
    DistributedConfig,
    EnvConfig,
    ObjectiveConfig,
    RunConfig,
    WandbConfig,
    config_to_dict,
    dataclass_from_dict,
    objective_params,
    upgrade_legacy_config,
)
from mbjax.agents.distill import DistillAgent, DistillConfig, DistillHParams, make_distill_agent
from mbjax.agents.mbpo import (
    MBPOAgent,
    MBPOConfig,
    MBPOHParams,
    MBPOState,
    branched_rollouts,
    initial_state_mask,
    make_elite_step,
    make_mbpo_agent,
    rollout_length,
)
from mbjax.agents.mpc import MPCAgent, MPCConfig, MPCHParams, MPCState, make_mpc_agent
from mbjax.agents.sac import SAC, SACConfig, SACHParams, SACState, make_sac, td_target
from mbjax.agents.value import (
    make_env_value_objective,
    make_value_model_objective,
    sac_terminal_value,
)

__all__ = [
    "AGENTS", "RUNTIME_FIELDS", "SAC", "Agent", "AgentSpec", "ConfigError", "DistillAgent",
    "DistillConfig", "DistillHParams", "DistributedConfig", "EnvConfig", "MBPOAgent",
    "MBPOConfig", "MBPOHParams", "MBPOState", "MPCAgent", "MPCConfig", "MPCHParams",
    "MPCState", "ObjectiveConfig", "RunConfig", "SACConfig", "SACHParams", "SACState", "Task",
    "WandbConfig", "agent_spec", "batched_env", "branched_rollouts", "config_to_dict",
    "dataclass_from_dict", "example_transition", "first_episode_measures",
    "first_episode_return",
    "initial_state_mask", "make_agent", "make_distill_agent", "make_elite_step",
    "make_env_value_objective", "make_mbpo_agent", "make_mpc_agent", "make_sac",
    "make_task", "make_value_model_objective", "model_objective", "objective_params",
    "register_agent", "reset_where", "reward_functions", "rollout_length",
    "sac_terminal_value", "scan_train", "simulator_objective", "td_target",
    "upgrade_legacy_config",
]
