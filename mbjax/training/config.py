"""Frozen dataclass configs of a training run; the CLI exposes every field.

A run = an environment (``EnvConfig``), a dynamics model (``EnsembleConfig`` +
``ModelTrainConfig``), a planner (``PlannerConfig``) and the loop around them
(``TrainConfig``). Presets with published settings live in ``mbjax.training.presets``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from mbjax.models.ensemble import EnsembleConfig, pddm_ensemble_config
from mbjax.models.training import ModelTrainConfig

PlannerKind = Literal["cem", "mppi", "icem", "random_shooting", "gradient", "cem_gradient"]
Propagation = Literal["ts_inf", "ts1", "expectation"]


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    """Which environment, and how episodes are cut."""

    name: str = "pendulum"
    """Registered environment name (``mbjax envs``)."""
    episode_length: int = 0
    """Control steps per episode; 0 = the task's default."""
    action_repeat: int = 1
    """Repeat each action this many times (reward summed)."""

    def __post_init__(self):
        if self.episode_length < 0:
            raise ValueError(f"env.episode_length must be >= 0, got {self.episode_length}")
        if self.action_repeat < 1:
            raise ValueError(f"env.action_repeat must be >= 1, got {self.action_repeat}")


@dataclasses.dataclass(frozen=True)
class PlannerConfig:
    """The planner and its objective. Defaults: PDDM's filtered MPPI (Nagabandi et al.
    2019, Baoding: N = 700, H = 7, beta = 0.6, kappa = 20, sigma = 0.9)."""

    kind: PlannerKind = "mppi"
    """cem | mppi | icem | random_shooting | gradient | cem_gradient."""
    horizon: int = 7
    population: int = 700
    """Candidate sequences per iteration (restarts for ``gradient``)."""
    num_elites: int = 50
    """CEM/iCEM elites."""
    iterations: int = 1
    """Optimiser iterations per planning call."""
    alpha: float = 0.1
    """CEM/iCEM smoothing of mean and std."""
    kappa: float = 20.0
    """MPPI reward-weighting temperature."""
    beta: float = 0.6
    """MPPI temporal filter coefficient (1 = no filter)."""
    sigma: float = 0.9
    """MPPI noise std."""
    noise_exponent: float = 2.0
    """iCEM colored-noise exponent."""
    learning_rate: float = 0.05
    """Gradient planner step size."""
    num_particles: int = 3
    """Particles per candidate (a multiple of the ensemble size for ts modes)."""
    propagation: Propagation = "ts_inf"
    """ts_inf | ts1 | expectation."""
    discount: float = 1.0
    uncertainty_penalty: float = 0.0
    """lambda of -lambda * ensemble disagreement per step."""
    risk_aversion: float = 0.0
    """k of mean - k std over particles."""
    replan_every: int = 1
    """Execute this many planned actions before replanning."""

    def __post_init__(self):
        for f in ("horizon", "population", "num_elites", "iterations", "num_particles",
                  "replan_every"):
            if getattr(self, f) < 1:
                raise ValueError(f"planner.{f} must be >= 1, got {getattr(self, f)}")
        if self.kind in ("cem", "icem", "cem_gradient") and self.num_elites > self.population:
            raise ValueError(f"planner.num_elites ({self.num_elites}) must be <= "
                             f"planner.population ({self.population})")
        if self.kappa <= 0:
            raise ValueError(f"planner.kappa must be > 0, got {self.kappa}")
        if not 0 <= self.beta <= 1:
            raise ValueError(f"planner.beta must be in [0, 1], got {self.beta}")
        if self.sigma <= 0 or self.learning_rate <= 0:
            raise ValueError("planner.sigma and planner.learning_rate must be > 0")
        if not 0 <= self.alpha < 1:
            raise ValueError(f"planner.alpha must be in [0, 1), got {self.alpha}")
        if self.replan_every > self.horizon:
            raise ValueError(f"planner.replan_every ({self.replan_every}) must be <= "
                             f"planner.horizon ({self.horizon})")


@dataclasses.dataclass(frozen=True)
class WandbConfig:
    """Weights & Biases logging: off unless asked for; never required."""

    mode: Literal["disabled", "offline", "online"] = "disabled"
    project: str = "mbjax"
    entity: str = ""


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """Several processes / hosts in one run (``mbjax.distributed``); off by default."""

    enabled: bool = False
    """Call jax.distributed.initialize; with the fields below left empty JAX detects
    SLURM, Open MPI, Kubernetes and Cloud TPU pods (and reads JAX_COORDINATOR_ADDRESS)."""
    coordinator_address: str = ""
    """HOST:PORT of process 0 (the same on every process)."""
    num_processes: int = 0
    """Number of processes (0 = detect)."""
    process_id: int = -1
    """This process's id in [0, num_processes) (-1 = detect)."""
    timeout_s: int = 300
    """Seconds to wait for all processes to connect."""

    def __post_init__(self):
        if self.num_processes < 0 or self.timeout_s < 1:
            raise ValueError("distributed.num_processes must be >= 0 and "
                             "distributed.timeout_s >= 1")
        if self.num_processes and not -1 <= self.process_id < self.num_processes:
            raise ValueError(f"distributed.process_id must be in [0, {self.num_processes}) "
                             f"(or -1 to detect), got {self.process_id}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The model-based RL loop: prefill with a random policy, then per iteration
    train the model on all data -> collect episodes with MPC -> add them to the buffer."""

    preset: str = "pddm"
    """Name of the preset this config came from (for the record)."""
    env: EnvConfig = EnvConfig()
    model: EnsembleConfig = pddm_ensemble_config(500)
    """Default: PDDM's 3 x (2 x 500) deterministic ensemble (the planner default is PDDM's
    MPPI with 3 particles, one per member)."""
    model_train: ModelTrainConfig = ModelTrainConfig()
    planner: PlannerConfig = PlannerConfig()
    true_dynamics: bool = False
    """Plan on the true simulator instead of a learned model (upper-bound baseline)."""
    num_envs: int = 1
    """Parallel environments collecting data (one planner each, vmapped)."""
    prefill_episodes: int = 1
    """Random-policy episodes per env before the first iteration."""
    episodes_per_iteration: int = 1
    """MPC episodes per env per iteration."""
    num_iterations: int = 10
    buffer_capacity: int = 100_000
    """Transitions kept (oldest dropped)."""
    seed: int = 0
    num_seeds: int = 1
    """Independent seeds trained at once (vmapped): seed, seed + 1, ..."""
    devices: int = 1
    """Devices the run is spread over (0 = all; of every process under multi-host)."""
    data_parallel: int = 1
    """Devices per seed: each seed's planner candidates and model minibatches are split
    over this many devices (gradients all-reduced); seeds split over devices /
    data_parallel groups, so num_seeds must be a multiple of that (``mbjax.sharding``)."""
    out_dir: str = "runs"
    run_name: str = ""
    """Run directory name under out_dir; empty = <preset>-<env>-seed<seed>."""
    checkpoint_every: int = 1
    """Save a checkpoint every this many iterations (0 = only at the end)."""
    wandb: WandbConfig = WandbConfig()
    distributed: DistributedConfig = DistributedConfig()

    def __post_init__(self):
        for f in ("num_envs", "episodes_per_iteration", "num_iterations", "num_seeds",
                  "buffer_capacity"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f} must be >= 1, got {getattr(self, f)}")
        if self.prefill_episodes < 0 or self.checkpoint_every < 0 or self.devices < 0:
            raise ValueError("prefill_episodes, checkpoint_every and devices must be >= 0")
        if self.data_parallel < 1:
            raise ValueError(f"data_parallel must be >= 1, got {self.data_parallel}")
        if self.buffer_capacity < self.num_envs:
            raise ValueError(f"buffer_capacity ({self.buffer_capacity}) must be >= num_envs "
                             f"({self.num_envs})")
        if (not self.true_dynamics and self.planner.propagation != "expectation"
                and self.planner.num_particles % self.model.num_members):
            raise ValueError(
                f"planner.num_particles ({self.planner.num_particles}) must be a multiple of "
                f"model.num_members ({self.model.num_members}) for {self.planner.propagation}")

    @property
    def default_run_name(self) -> str:
        return self.run_name or f"{self.preset}-{self.env.name.replace('/', '_')}-seed{self.seed}"
