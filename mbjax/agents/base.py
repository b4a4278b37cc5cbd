"""The agent protocol, the agent registry, and the building blocks agents share.

Every training algorithm (the MPC/PETS/PDDM loop, MBPO/SAC, distillation, a user's own)
is an **agent**: a config class (a ``RunConfig`` subclass) and a factory
``make(config, task_env=None) -> Agent`` registered under the config's ``algorithm``
name. The runner, checkpoints, sharding, multi-host runs, sweeps and the CLI know only
this protocol (optax's ``GradientTransformation`` style):

    agent.default_hparams                    traced floats (a pytree): vmappable, sweepable
    agent.init(key, hparams=None) -> state   everything the loop carries (one pytree)
    agent.train_iteration(state) -> (state, metrics)   shapes never change: compiles once
    agent.evaluate(state, key) -> returns    evaluation episode returns (nothing stored)
    agent.evaluate_episodes(state, key) -> (returns, measures)   optional: with the
                                             task's success measures ({name: values})
    agent.train(key, hparams=None) -> (state, metrics [num_iterations])   init + scan

``state.iteration`` (int32 []) and ``state.env_steps`` count progress; ``state.hparams``
holds the hyper-parameters the state was initialised with (so ``jax.vmap(agent.init)``
over keys and a stacked hparams pytree trains several settings in one program).
``metrics`` has at least ``iteration``, ``env_steps`` and ``return_mean``.

``register_agent(config_cls, make, traced_fields)`` also names the dotted config fields
whose values live in the hparams pytree (``traced_fields(config)``): ``mbjax sweep``
vmaps exactly those, taking each point's hparams from ``make_agent(point).default_hparams``
(building an agent compiles nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

import mbjax.envs as envs
import mbjax.planners as P
from mbjax.agents.config import (  # noqa: F401 (re-exported for the agents)
    OBJECTIVE_TRACED_FIELDS,
    ObjectiveConfig,
    RunConfig,
    objective_params,
)
from mbjax.envs.wrappers import EpisodeWrapper
from mbjax.models.true_dynamics import simulate, simulate_native
from mbjax.planners.objectives import (
    discounted_return,
    make_randomized_task_objective,
    make_tunable_model_objective,
)
from mbjax.sharding import shard_along_data
from mbjax.types import Array, Metrics, PRNGKey, Transition
from mbjax.utils.registry import Registry


class Agent(Protocol):
    """What the runner needs of a training algorithm (see the module docstring)."""

    config: RunConfig
    default_hparams: Any

    def init(self, key: PRNGKey, hparams: Any = None) -> Any: ...

    def train_iteration(self, state: Any) -> tuple[Any, Metrics]: ...

    def evaluate(self, state: Any, key: PRNGKey) -> Array: ...

    def train(self, key: PRNGKey, hparams: Any = None) -> tuple[Any, Metrics]: ...


class AgentSpec(NamedTuple):
    """A registered agent: its config class, factory and hyper-parameter description."""

    config_type: type
    make: Callable[..., Agent]  # (config, task_env=None) -> Agent
    traced_fields: Callable[[Any], tuple[str, ...]]  # config -> dotted fields in hparams


AGENTS: Registry[AgentSpec] = Registry("agent")


def register_agent(config_type: type, make: Callable[..., Agent],
                   traced_fields: Callable[[Any], tuple[str, ...]],
                   replace: bool = False) -> AgentSpec:
    """Registers an agent under ``config_type.algorithm`` (a ``RunConfig`` subclass)."""
    if not (isinstance(config_type, type) and issubclass(config_type, RunConfig)):
        raise TypeError(f"an agent's config must subclass mbjax.agents.RunConfig, got "
                        f"{config_type!r}")
    if not config_type.algorithm:
        raise ValueError(f"{config_type.__name__} needs a class attribute "
                         "algorithm = '<name>' (its registered name)")
    return AGENTS.register(config_type.algorithm,
                           AgentSpec(config_type, make, traced_fields), replace)


def agent_spec(config_or_name) -> AgentSpec:
    """The registered agent of a config (by its ``algorithm``) or of a name."""
    name = config_or_name if isinstance(config_or_name, str) else config_or_name.algorithm
    return AGENTS.get(name)


def make_agent(config: RunConfig, task_env: envs.Env | None = None) -> Agent:
    """Builds the agent of ``config`` (``task_env`` replaces ``envs.make(config.env.name)``)."""
    spec = agent_spec(config)
    if not isinstance(config, spec.config_type):
        raise TypeError(f"agent {config.algorithm!r} expects a {spec.config_type.__name__}, "
                        f"got {type(config).__name__}")
    return spec.make(config, task_env)


# ---------------------------------------------------------------------------------------
# Building blocks.


class Task(NamedTuple):
    """The task env of a run with its episode length and auto-reset mode (``make_task``)."""

    env: envs.Env  # unwrapped (with action repeat): reward/termination fns, true dynamics
    episode_length: int
    reset_mode: str = "fresh"  # EnvConfig.reset_mode


def make_task(config: RunConfig, task_env: envs.Env | None = None) -> Task:
    """The task env of ``config.env`` (or ``task_env``), with action repeat applied, and
    its episode length (``env.episode_length`` or the task's default)."""
    if task_env is not None and config.env.options:
        raise ValueError(f"env.options {config.env.options!r} configure the env built from "
                         "env.name; a task_env was given instead: build it with the options")
    task = (task_env if task_env is not None
            else envs.make(config.env.name, **config.env.parsed_options()))
    if config.env.action_repeat > 1:
        task = envs.ActionRepeat(task, config.env.action_repeat)
    length = config.env.episode_length or getattr(task, "default_episode_length", 1000)
    return Task(task, int(length), config.env.reset_mode)


def batched_env(task: Task, num_envs: int) -> envs.Env:
    """``num_envs`` vmapped copies of the task with episode cuts and auto-reset."""
    return envs.VmapWrapper(EpisodeWrapper(task.env, task.episode_length,
                                           reset_mode=task.reset_mode), num_envs)


def batch_planner(planner: P.Planner, chunk_size: int) -> P.Planner:
    """The planner batched over the envs (``planners.batch``): all at once for
    ``chunk_size`` 0, else ``chunk_size`` envs at a time (less memory, same plans)."""
    if chunk_size < 0:
        raise ValueError(f"planner_chunk_size must be >= 0 (0 = all envs at once), got "
                         f"{chunk_size}")
    return P.batch(planner, chunk_size=chunk_size or None)


def check_buffer_holds(capacity: int, num_envs: int, episode_length: int,
                       batch_size: int | None = None, field: str = "buffer_capacity") -> None:
    """A replay buffer must hold at least one episode per env (and a minibatch): a
    smaller one silently trains on a handful of transitions."""
    per_env = capacity // num_envs
    if per_env < episode_length:
        raise ValueError(
            f"{field} ({capacity}) holds {per_env} steps per env, less than one episode "
            f"({episode_length} steps) of each of the {num_envs} envs; use >= "
            f"{episode_length * num_envs}")
    if batch_size is not None and capacity < batch_size:
        raise ValueError(f"{field} ({capacity}) must be >= the minibatch size "
                         f"({batch_size})")


def random_prefill(env: envs.Env, buffer, buffer_state, key: PRNGKey, num_episodes: int,
                   episode_length: int):
    """``buffer_state`` with ``num_episodes`` uniform-random-policy episodes of the batched
    ``env`` added (a ``lax.scan``; no-op for 0 episodes)."""
    if num_episodes < 1:
        return buffer_state
    policy = envs.uniform_random_policy(env)

    def episode(buffer_state, key):
        key_reset, key_roll = jax.random.split(key)
        _, transitions = envs.rollout(env, policy, env.reset(key_reset), key_roll,
                                      episode_length)
        return buffer.add(buffer_state, transitions), None

    buffer_state, _ = jax.lax.scan(episode, buffer_state, jax.random.split(key, num_episodes))
    return buffer_state


def example_transition(env: envs.Env) -> Transition:
    """A zero ``Transition`` of one step of ``env`` (the shape buffers are built from)."""
    obs, action = jnp.zeros(env.observation_size), jnp.zeros(env.action_size)
    zero = jnp.zeros(())
    return Transition(obs=obs, action=action, reward=zero, next_obs=obs, done=zero,
                      truncated=zero)


def first_episode_mask(transitions: Transition) -> Array:
    """[T, N]: 1.0 for the transitions of each env's first episode, 0.0 after it ended."""
    ended_before = jnp.cumsum(transitions.episode_end, axis=0) - transitions.episode_end
    return (ended_before < 0.5).astype(jnp.float32)


def first_episode_return(transitions: Transition) -> tuple[Array, Array]:
    """Return and length of the first episode in [T, N] transitions (per env, [N])."""
    alive = first_episode_mask(transitions)
    return jnp.sum(alive * transitions.reward, axis=0), jnp.sum(alive, axis=0)


def first_episode_measures(task_env: envs.Env, transitions: Transition) -> dict[str, Array]:
    """The task's success measures (``Env.episode_measures``) of each env's first episode
    in [T, N] transitions: name -> [N]; empty for tasks that define none."""
    alive = first_episode_mask(transitions)
    measures = jax.vmap(task_env.episode_measures, in_axes=1)
    return measures(transitions.obs, transitions.action, transitions.next_obs, alive)


def measure_metrics(measures: dict[str, Array]) -> dict[str, Array]:
    """Per-iteration metrics ``task/<name>``: each measure's mean over all episodes."""
    return {f"task/{k}": jnp.mean(v) for k, v in measures.items()}


def reward_functions(task: Task, model_config, env_name: str):
    """(reward_fn, termination_fn) to plan or roll out with: the task's, or None (= the
    model's learned heads) when the task has no reward function of observations, which
    then needs ``model.learn_reward``."""
    if task.env.has_reward_fn:
        return task.env.reward_fn, task.env.termination_fn
    if not getattr(model_config, "learn_reward", False):
        raise ValueError(
            f"{env_name} has no reward function of observations; set "
            "--model.learn-reward True (and --model.learn-termination True if it "
            "terminates) so the model learns them")
    return None, None


def model_objective(model, task: Task, model_config, objective: ObjectiveConfig,
                    env_name: str, terminal_value: Callable | None = None):
    """The planning objective J((model_state, ObjectiveParams, value_params), obs,
    actions, key) of a learned model on the task (``make_tunable_model_objective``).

    Disagreement and the risk term are computed when the config's value is nonzero
    (a sweep over them sets the base value to the grid's largest, see ``mbjax sweep``);
    the risk term (``objective.risk`` over the particles) also when the measure is not
    mean_std.
    """
    objective.check_particles(model.num_members)
    objective.check_learned_model()
    reward_fn, termination_fn = reward_functions(task, model_config, env_name)
    return make_tunable_model_objective(
        model, reward_fn, termination_fn, objective.num_particles, objective.propagation,
        with_disagreement=objective.uncertainty_penalty > 0,
        with_risk=objective.with_risk, terminal_value=terminal_value, risk=objective.risk,
        known_next_obs=task.env.known_next_obs)


def simulator_objective(task: Task, config: ObjectiveConfig | None = None) -> Callable:
    """J((_, ObjectiveParams, _), env_state, actions [N, H, A], key) -> returns [N] on the
    true simulator (``simulate`` of the task env, no auto-reset): sum_t gamma^t alive_t r_t
    with the traced discount gamma. The simulator is deterministic: there is no
    disagreement or particle spread to penalise.

    With ``config.num_randomized`` = M > 0: the returns on M simulators with randomised
    physical parameters p (1 + s U(-1, 1)) (s = ``config.randomization_scale``, drawn
    once with key 0, so every seed plans on the same M simulators), aggregated with
    ``config.risk`` (traced cvar_alpha / risk_aversion;
    ``mbjax.planners.objectives.make_randomized_task_objective``). Only envs with physical
    parameters (the pure-JAX classic tasks) support it; others raise ValueError.

    With ``config.simulator`` "mujoco": the returns of rollouts on native MuJoCo
    (``simulate_native``; hand tasks only, TypeError otherwise)."""
    if config is not None and config.simulator == "mujoco":
        from mbjax.envs.hand.native import NativeRollout

        native = NativeRollout(task.env)

        def native_objective(params, state, actions: Array, key: PRNGKey) -> Array:
            del key
            out = simulate_native(native, state, actions)
            return discounted_return(out.reward, out.terminated, params[1].discount)

        return native_objective
    if config is not None and config.num_randomized > 0:
        randomized = make_randomized_task_objective(
            task.env, config.num_randomized, config.randomization_scale,
            jax.random.PRNGKey(0), risk=config.risk)
        return lambda params, state, actions, key: randomized(params[1], state, actions, key)

    def objective(params, state, actions: Array, key: PRNGKey) -> Array:
        del key
        hparams = params[1]
        out = simulate(task.env, state, shard_along_data(actions))  # N sims over devices
        return discounted_return(out.reward, out.terminated, hparams.discount)

    return objective


def scan_train(init: Callable, train_iteration: Callable, num_iterations: int) -> Callable:
    """``train(key, hparams=None) = lax.scan(train_iteration, init(key, hparams))``."""

    def train(key: PRNGKey, hparams: Any = None):
        state = init(key, hparams)
        return jax.lax.scan(lambda s, _: train_iteration(s), state, None,
                            length=num_iterations)

    return train


def reset_where(done: Array, fresh: Any, current: Any) -> Any:
    """Leaves of ``fresh`` where ``done`` [N] is true, of ``current`` elsewhere."""
    return jax.tree_util.tree_map(
        lambda f, c: jnp.where(done.reshape((-1,) + (1,) * (c.ndim - 1)), f, c),
        fresh, current)
