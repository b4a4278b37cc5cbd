"""The model-based RL loop as one compiled program (the notes' data-aggregation loop).

    prefill: K random-policy episodes per env -> buffer
    each iteration:
      1. fit the dynamics model on everything in the buffer      (mbjax.models.training)
      2. collect E episodes per env with closed-loop MPC         (mbjax.planners.mpc)
         on N parallel envs, the planner vmapped over envs
      3. add the new transitions to the buffer                  (mbjax.buffers)

``make_train(config)`` returns ``Trainer(init, train_iteration, train)``:

* ``init(key) -> TrainState`` (model, buffer, planner params, key, counters; prefilled);
* ``train_iteration(state) -> (state, metrics)``; shapes never change, so it compiles once;
* ``train(key) -> (state, metrics [num_iterations])`` = init + ``lax.scan`` of iterations,
  so ``jax.jit(jax.vmap(trainer.train))(keys)`` trains several seeds in one program.

Planner hyper-parameters live in ``TrainState.planner_params`` (a pytree of floats), so
they can be vmapped together with the seeds: ``jax.vmap(trainer.init)(keys, params)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

import mbjax.envs as envs
import mbjax.planners as P
from mbjax.buffers import as_dataset, make_replay_buffer
from mbjax.envs.wrappers import EpisodeWrapper
from mbjax.models.ensemble import EnsembleModel
from mbjax.models.training import make_model_trainer
from mbjax.training.config import PlannerConfig, TrainConfig
from mbjax.types import PRNGKey, Transition


@struct.dataclass
class TrainState:
    """Everything the loop carries from one iteration to the next (and checkpoints)."""

    model_state: Any
    buffer_state: Any
    planner_params: Any
    key: PRNGKey
    iteration: jax.Array  # int32, iterations completed
    env_steps: jax.Array  # int32, environment steps taken (prefill included)


class Trainer(NamedTuple):
    init: Any
    train_iteration: Any
    train: Any
    evaluate: Any  # (state, key) -> episode returns [episodes_per_iteration, N]
    env: envs.Env  # the batched, episode-wrapped env the loop steps
    task_env: envs.Env  # the bare task (for reward/termination fns and true dynamics)
    model: EnsembleModel
    planner: P.Planner  # unbatched planner
    config: TrainConfig


def make_planner(cfg: PlannerConfig, objective, low, high) -> P.Planner:
    """Builds the planner ``cfg.kind`` with the config's sizes and floats."""
    h = cfg.horizon
    if cfg.kind == "cem":
        return P.make_cem(objective, low, high, P.CEMConfig(
            horizon=h, population=cfg.population, num_elites=cfg.num_elites,
            iterations=cfg.iterations), P.CEMParams(alpha=cfg.alpha))
    if cfg.kind == "mppi":
        return P.make_mppi(objective, low, high, P.MPPIConfig(
            horizon=h, population=cfg.population, iterations=cfg.iterations),
            P.MPPIParams(kappa=cfg.kappa, beta=cfg.beta, sigma=cfg.sigma))
    if cfg.kind == "icem":
        return P.make_icem(objective, low, high, P.ICEMConfig(
            horizon=h, population=cfg.population, num_elites=cfg.num_elites,
            iterations=cfg.iterations), P.ICEMParams(noise_exponent=cfg.noise_exponent,
                                                     alpha=cfg.alpha))
    if cfg.kind == "random_shooting":
        return P.make_random_shooting(objective, low, high, P.RandomShootingConfig(
            horizon=h, population=cfg.population))
    if cfg.kind == "gradient":
        return P.make_gradient_planner(objective, low, high, P.GradientConfig(
            horizon=h, num_restarts=cfg.population, iterations=cfg.iterations),
            P.GradientParams(learning_rate=cfg.learning_rate))
    if cfg.kind == "cem_gradient":
        return P.make_cem_gradient(
            objective, low, high, P.CEMConfig(horizon=h, population=cfg.population,
                                              num_elites=cfg.num_elites,
                                              iterations=cfg.iterations),
            num_refine=min(4, cfg.num_elites), refine_iterations=10,
            params=P.CEMGradientParams(cem=P.CEMParams(alpha=cfg.alpha),
                                       learning_rate=cfg.learning_rate))
    raise ValueError(f"unknown planner kind {cfg.kind!r}")


def _strip_episode_info(state: envs.State) -> envs.State:
    """The task env's state inside an EpisodeWrapper state (for the true simulator)."""
    from mbjax.envs.wrappers import _EPISODE_KEYS

    return state.replace(info={k: v for k, v in state.info.items() if k not in _EPISODE_KEYS})


def first_episode_return(transitions: Transition) -> tuple[jax.Array, jax.Array]:
    """Return and length of the first episode in [T, N] transitions (per env, [N])."""
    ended_before = jnp.cumsum(transitions.episode_end, axis=0) - transitions.episode_end
    alive = (ended_before < 0.5).astype(jnp.float32)
    return jnp.sum(alive * transitions.reward, axis=0), jnp.sum(alive, axis=0)


def make_train(config: TrainConfig, task_env: envs.Env | None = None) -> Trainer:
    """Builds the compiled loop for ``config``; see the module docstring.

    ``task_env`` replaces ``envs.make(config.env.name)`` (a custom env, or an instrumented
    one in tests).
    """
    cfg = config
    task = task_env if task_env is not None else envs.make(cfg.env.name)
    if cfg.env.action_repeat > 1:
        task = envs.ActionRepeat(task, cfg.env.action_repeat)
    episode_length = cfg.env.episode_length or getattr(task, "default_episode_length", 1000)
    env = envs.VmapWrapper(EpisodeWrapper(task, episode_length), cfg.num_envs)
    obs_size, action_size = task.observation_size, task.action_size
    low, high = task.action_low, task.action_high

    model = EnsembleModel(obs_size, action_size, cfg.model)
    model_trainer = make_model_trainer(model, cfg.model_train)
    if cfg.true_dynamics:
        objective = P.make_env_objective(task, cfg.planner.discount)
        observe = _strip_episode_info
    else:
        if not task.has_reward_fn and not cfg.model.learn_reward:
            raise ValueError(
                f"{cfg.env.name} has no reward function of observations; set "
                "--model.learn-reward True (and --model.learn-termination True if it "
                "terminates) so the model learns them")
        reward_fn = task.reward_fn if task.has_reward_fn else None
        termination_fn = task.termination_fn if task.has_reward_fn else None
        objective = P.make_model_objective(
            model, reward_fn, termination_fn, num_particles=cfg.planner.num_particles,
            propagation=cfg.planner.propagation, discount=cfg.planner.discount,
            uncertainty_penalty=cfg.planner.uncertainty_penalty,
            risk_aversion=cfg.planner.risk_aversion)
        observe = lambda s: s.obs
    planner = make_planner(cfg.planner, objective, low, high)
    batched_planner = P.batch(planner)
    buffer = make_replay_buffer(cfg.buffer_capacity, cfg.num_envs)
    example = Transition(obs=jnp.zeros(obs_size), action=jnp.zeros(action_size),
                         reward=jnp.zeros(()), next_obs=jnp.zeros(obs_size),
                         done=jnp.zeros(()), truncated=jnp.zeros(()))
    random_policy = envs.uniform_random_policy(env)
    steps_per_episode = episode_length

    def init(key: PRNGKey, planner_params=None) -> TrainState:
        key, key_model, key_prefill = jax.random.split(key, 3)
        buffer_state = buffer.init(example)

        def prefill_episode(buffer_state, key):
            key_reset, key_roll = jax.random.split(key)
            state = env.reset(key_reset)
            _, transitions = envs.rollout(env, random_policy, state, key_roll,
                                          steps_per_episode)
            return buffer.add(buffer_state, transitions), None

        if cfg.prefill_episodes > 0:
            buffer_state, _ = jax.lax.scan(
                prefill_episode, buffer_state,
                jax.random.split(key_prefill, cfg.prefill_episodes))
        return TrainState(
            model_state=model_trainer.init(key_model),
            buffer_state=buffer_state,
            planner_params=planner.default_params if planner_params is None
            else planner_params,
            key=key,
            iteration=jnp.zeros((), jnp.int32),
            env_steps=jnp.asarray(cfg.prefill_episodes * steps_per_episode * cfg.num_envs,
                                  jnp.int32),
        )

    def collect_episode(carry, key):
        buffer_state, model_state, planner_params = carry
        key_reset, key_plan, key_mpc = jax.random.split(key, 3)
        env_state = env.reset(key_reset)
        pstate = batched_planner.init(jax.random.split(key_plan, cfg.num_envs))
        _, _, transitions, infos = P.mpc(
            env, batched_planner, planner_params, model_state, env_state, pstate, key_mpc,
            steps_per_episode, cfg.planner.replan_every, observe=observe)
        buffer_state = buffer.add(buffer_state, transitions)
        ret, length = first_episode_return(transitions)
        stats = {"return": ret, "length": length,
                 "planner_nonfinite": jnp.sum(infos["num_nonfinite"]),
                 "predicted_return": jnp.mean(infos["best_return"])}
        return (buffer_state, model_state, planner_params), stats

    def train_iteration(ts: TrainState) -> tuple[TrainState, dict]:
        key, key_model, key_collect = jax.random.split(ts.key, 3)
        model_state = ts.model_state
        metrics = {}
        if not cfg.true_dynamics:
            data, num_valid = as_dataset(ts.buffer_state)
            model_state, metrics = model_trainer.train(model_state, data, num_valid, key_model)
        (buffer_state, _, _), stats = jax.lax.scan(
            collect_episode, (ts.buffer_state, model_state, ts.planner_params),
            jax.random.split(key_collect, cfg.episodes_per_iteration))
        new_steps = cfg.episodes_per_iteration * steps_per_episode * cfg.num_envs
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
        })
        return ts, metrics

    def evaluate(ts: TrainState, key: PRNGKey):
        """MPC episodes with the current model; the buffer is not changed."""
        _, stats = jax.lax.scan(
            collect_episode, (ts.buffer_state, ts.model_state, ts.planner_params),
            jax.random.split(key, cfg.episodes_per_iteration))
        return stats["return"]

    def train(key: PRNGKey, planner_params=None):
        ts = init(key, planner_params)
        return jax.lax.scan(lambda s, _: train_iteration(s), ts, None,
                            length=cfg.num_iterations)

    return Trainer(init=init, train_iteration=train_iteration, train=train,
                   evaluate=evaluate, env=env,
                   task_env=task, model=model, planner=planner, config=cfg)
