"""The model-based RL loop with MPC as one compiled program (PETS, PDDM; the notes'
data-aggregation loop), as an agent (``mbjax.agents.base``).

    prefill: K random-policy episodes per env -> buffer
    each iteration:
      1. fit the dynamics model on everything in the buffer      (mbjax.models.training)
      2. collect E episodes per env with closed-loop MPC         (mbjax.planners.mpc)
         on N parallel envs, the planner vmapped over envs
      3. add the new transitions to the buffer                  (mbjax.buffers)

``make_mpc_agent(config)`` returns ``MPCAgent(init, train_iteration, train, evaluate,
default_hparams, ...)``. The traced floats (``MPCHParams``: the planner's params, the
objective's discount / uncertainty penalty / risk aversion, the model learning rate) live
in ``MPCState.hparams``, so ``jax.vmap(agent.init)(keys, stacked_hparams)`` trains several
settings with the seeds in one program. ``true_dynamics=True`` plans on the simulator.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

import mbjax.envs as envs
import mbjax.planners as P
from mbjax.agents import base
from mbjax.agents.config import ObjectiveConfig, RunConfig, require_at_least
from mbjax.buffers import as_dataset, make_replay_buffer
from mbjax.envs.wrappers import strip_episode_info
from mbjax.models.base import DynamicsModel, ModelSpec, build_model
from mbjax.models.ensemble import pddm_ensemble_config
from mbjax.models.training import ModelTrainConfig
from mbjax.planners import MPPIConfig, PlannerSpec, traced_fields
from mbjax.planners.objectives import ObjectiveParams
from mbjax.types import PRNGKey

# PDDM (Nagabandi et al. 2019), Baoding: N = 700, H = 7, beta = 0.6, kappa = 20, sigma = 0.9.
PDDM_MPPI = MPPIConfig(horizon=7, population=700, iterations=1, kappa=20.0, beta=0.6,
                       sigma=0.9)


@dataclasses.dataclass(frozen=True)
class MPCConfig(RunConfig):
    """The model-based RL loop: prefill with a random policy, then per iteration
    train the model on all data -> collect episodes with MPC -> add them to the buffer.
    Defaults: PDDM (3 x 2 x 500 deterministic ensemble, filtered MPPI, 3 particles)."""

    algorithm = "mpc"

    preset: str = "pddm"
    model: ModelSpec = pddm_ensemble_config(500)
    """Default: PDDM's 3 x (2 x 500) deterministic ensemble."""
    model_train: ModelTrainConfig = ModelTrainConfig()
    planner: PlannerSpec = PDDM_MPPI
    """Any registered planner (``--planner.kind NAME`` switches; ``mbjax.planners``)."""
    objective: ObjectiveConfig = ObjectiveConfig()
    replan_every: int = 1
    """Execute this many planned actions before replanning."""
    true_dynamics: bool = False
    """Plan on the true simulator instead of a learned model (upper-bound baseline)."""
    prefill_episodes: int = 1
    """Random-policy episodes per env before the first iteration."""
    episodes_per_iteration: int = 1
    """MPC episodes per env per iteration."""
    buffer_capacity: int = 100_000
    """Transitions kept (oldest dropped)."""
    planner_chunk_size: int = 0
    """Plan this many envs at a time (``planners.batch``'s ``chunk_size``: less memory,
    the same plans); 0 = all ``num_envs`` in one batch."""

    def __post_init__(self):
        super().__post_init__()
        require_at_least(self, 1, "episodes_per_iteration", "buffer_capacity", "replan_every")
        require_at_least(self, 0, "planner_chunk_size")
        if self.prefill_episodes < 0:
            raise ValueError(f"prefill_episodes must be >= 0, got {self.prefill_episodes}")
        if self.buffer_capacity < self.num_envs:
            raise ValueError(f"buffer_capacity ({self.buffer_capacity}) must be >= num_envs "
                             f"({self.num_envs})")
        if self.replan_every > self.planner.horizon:
            raise ValueError(f"replan_every ({self.replan_every}) must be <= "
                             f"planner.horizon ({self.planner.horizon})")
        self.objective.check_planning_on(None if self.true_dynamics
                                         else self.model.num_members)

    @property
    def description(self) -> str:
        return f"{self.planner.kind} planner" + (" (simulator)" if self.true_dynamics else "")


@struct.dataclass
class MPCHParams:
    """The MPC agent's traced floats."""

    planner: Any  # the planner's params pytree (e.g. MPPIParams)
    objective: ObjectiveParams
    model_learning_rate: Any


@struct.dataclass
class MPCState:
    """Everything the loop carries from one iteration to the next (and checkpoints)."""

    model_state: Any
    buffer_state: Any
    hparams: MPCHParams
    key: PRNGKey
    iteration: jax.Array  # int32, iterations completed
    env_steps: jax.Array  # int32, environment steps taken (prefill included)


class MPCAgent(NamedTuple):
    init: Any  # (key, hparams=None) -> MPCState
    train_iteration: Any  # (state) -> (state, metrics)
    train: Any  # (key, hparams=None) -> (state, metrics [num_iterations])
    evaluate: Any  # (state, key) -> episode returns [episodes_per_iteration, N]
    evaluate_episodes: Any  # (state, key) -> (those returns, task measures {name: [E, N]})
    default_hparams: MPCHParams
    env: envs.Env  # the batched, episode-wrapped env the loop steps
    task_env: envs.Env  # the bare task (for reward/termination fns and true dynamics)
    model: DynamicsModel
    planner: P.Planner  # unbatched planner
    config: MPCConfig


def mpc_hparams(config: MPCConfig) -> MPCHParams:
    """The traced floats of ``config``."""
    return MPCHParams(planner=config.planner.default_params(),
                      objective=base.objective_params(config.objective),
                      model_learning_rate=config.model_train.learning_rate)


def mpc_traced_fields(config: MPCConfig) -> tuple[str, ...]:
    """Dotted config fields that live in ``MPCHParams`` (vmapped by sweeps)."""
    return (tuple(f"planner.{f}" for f in traced_fields(type(config.planner)))
            + base.OBJECTIVE_TRACED_FIELDS + ("model_train.learning_rate",))


def make_mpc_agent(config: MPCConfig, task_env: envs.Env | None = None) -> MPCAgent:
    """Builds the compiled loop for ``config``; see the module docstring.

    ``task_env`` replaces ``envs.make(config.env.name)`` (a custom env, or an instrumented
    one in tests).
    """
    cfg = config
    task = base.make_task(cfg, task_env)
    env = base.batched_env(task, cfg.num_envs)
    base.check_buffer_holds(cfg.buffer_capacity, cfg.num_envs, task.episode_length,
                            None if cfg.true_dynamics else cfg.model_train.batch_size)
    low, high = task.env.action_low, task.env.action_high
    model_trainer = build_model(cfg.model, task.env.observation_size, task.env.action_size,
                                cfg.model_train)
    model = model_trainer.model
    if cfg.true_dynamics:
        objective = base.simulator_objective(task, cfg.objective)
        observe = strip_episode_info
    else:
        objective = base.model_objective(model, task, cfg.model, cfg.objective, cfg.env.name)
        observe = lambda s: s.obs
    planner = cfg.planner.build(objective, low, high)
    batched_planner = base.batch_planner(planner, cfg.planner_chunk_size)
    buffer = make_replay_buffer(cfg.buffer_capacity, cfg.num_envs)
    example = base.example_transition(task.env)
    steps = task.episode_length
    default_hparams = mpc_hparams(cfg)

    def objective_inputs(model_state, hparams: MPCHParams):
        return (None if cfg.true_dynamics else model_state, hparams.objective, None)

    def init(key: PRNGKey, hparams: MPCHParams | None = None) -> MPCState:
        key, key_model, key_prefill = jax.random.split(key, 3)
        buffer_state = base.random_prefill(env, buffer, buffer.init(example), key_prefill,
                                           cfg.prefill_episodes, steps)
        return MPCState(
            model_state=model_trainer.init(key_model), buffer_state=buffer_state,
            hparams=default_hparams if hparams is None else hparams, key=key,
            iteration=jnp.zeros((), jnp.int32),
            env_steps=jnp.asarray(cfg.prefill_episodes * steps * cfg.num_envs, jnp.int32))

    def collect_episode(carry, key):
        buffer_state, model_state, hparams = carry
        key_reset, key_plan, key_mpc = jax.random.split(key, 3)
        env_state = env.reset(key_reset)
        pstate = batched_planner.init(jax.random.split(key_plan, cfg.num_envs))
        _, _, transitions, infos = P.mpc(
            env, batched_planner, hparams.planner, objective_inputs(model_state, hparams),
            env_state, pstate, key_mpc, steps, cfg.replan_every, observe=observe)
        buffer_state = buffer.add(buffer_state, transitions)
        ret, length = base.first_episode_return(transitions)
        stats = {"return": ret, "length": length,
                 "measures": base.first_episode_measures(task.env, transitions),
                 "planner_nonfinite": jnp.sum(infos["num_nonfinite"]),
                 "predicted_return": jnp.mean(infos["best_return"])}
        return (buffer_state, model_state, hparams), stats

    def train_iteration(ts: MPCState) -> tuple[MPCState, dict]:
        key, key_model, key_collect = jax.random.split(ts.key, 3)
        model_state = ts.model_state
        metrics = {}
        if not cfg.true_dynamics:
            data, num_valid = as_dataset(ts.buffer_state)
            model_state, metrics = model_trainer.train(
                model_state, data, num_valid, key_model,
                learning_rate=ts.hparams.model_learning_rate)
        (buffer_state, _, _), stats = jax.lax.scan(
            collect_episode, (ts.buffer_state, model_state, ts.hparams),
            jax.random.split(key_collect, cfg.episodes_per_iteration))
        new_steps = cfg.episodes_per_iteration * steps * cfg.num_envs
        ts = ts.replace(model_state=model_state, buffer_state=buffer_state, key=key,
                        iteration=ts.iteration + 1, env_steps=ts.env_steps + new_steps)
        metrics = dict(metrics)
        metrics.update({
            "iteration": ts.iteration,
            "env_steps": ts.env_steps,
            "return_mean": jnp.mean(stats["return"]),
            "return_min": jnp.min(stats["return"]),
            "return_max": jnp.max(stats["return"]),
            "episode_length": jnp.mean(stats["length"]),
            "planner/predicted_return": jnp.mean(stats["predicted_return"]),
            "planner/nonfinite_returns": jnp.sum(stats["planner_nonfinite"]),
            **base.measure_metrics(stats["measures"]),
        })
        return ts, metrics

    def evaluate_episodes(ts: MPCState, key: PRNGKey):
        """MPC episodes with the current model (the buffer is not changed): their returns
        and the task's success measures (``Env.episode_measures``)."""
        _, stats = jax.lax.scan(
            collect_episode, (ts.buffer_state, ts.model_state, ts.hparams),
            jax.random.split(key, cfg.episodes_per_iteration))
        return stats["return"], stats["measures"]

    def evaluate(ts: MPCState, key: PRNGKey):
        """The returns of ``evaluate_episodes``."""
        return evaluate_episodes(ts, key)[0]

    return MPCAgent(init=init, train_iteration=train_iteration,
                    train=base.scan_train(init, train_iteration, cfg.num_iterations),
                    evaluate=evaluate, evaluate_episodes=evaluate_episodes,
                    default_hparams=default_hparams, env=env,
                    task_env=task.env, model=model, planner=planner, config=cfg)


base.register_agent(MPCConfig, make_mpc_agent, mpc_traced_fields)
