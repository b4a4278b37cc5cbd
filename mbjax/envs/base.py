"""The environment API: a brax / MuJoCo Playground shaped ``Env`` over a ``State`` pytree.

An ``Env`` is an immutable object holding static configuration; all of its methods are
pure functions of their arguments, so ``jax.jit(env.step)`` and ``jax.vmap(env.step)``
just work. ``reset``/``step`` are written for ONE environment; batch with
``mbjax.envs.wrappers.VmapWrapper`` or ``jax.vmap``.

Every task also exports pure ``reward_fn(obs, action, next_obs)`` and
``termination_fn(obs, action, next_obs)`` that reproduce the environment's reward and
terminal flag from observations alone, so planners can score model predictions.
"""

from __future__ import annotations

import abc
import functools
import operator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.experimental import checkify

from mbjax.types import Array, PRNGKey


@struct.dataclass
class State:
    """State of one environment (or a batch of them, with leading axes).

    Attributes:
      physics: the simulator's state pytree (a vector for pure-JAX envs, brax's
        pipeline state or ``mjx.Data`` for MJX envs).
      obs: observation, shape [obs_dim].
      reward: reward of the last transition, shape [].
      done: 1.0 once the episode is over (terminal, or truncated by a time limit when
        wrapped by ``EpisodeWrapper``), shape [].
      metrics: per-step scalars for logging.
      info: auxiliary per-env data (step counters, truncation flag, RNG keys).
    """

    physics: Any
    obs: Array
    reward: Array
    done: Array
    metrics: dict[str, Array] = struct.field(default_factory=dict)
    info: dict[str, Any] = struct.field(default_factory=dict)


class RewardFnUnavailableError(RuntimeError):
    """Raised by ``reward_fn``/``termination_fn`` of an env whose reward is not a
    function of the observation; plan with a model that learns the reward instead."""


class EnvError(ValueError):
    """Bad input to an environment (wrong action shape or dtype, NaN/inf action)."""


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def validate_action(action: Array, action_size: int, env_name: str) -> Array:
    """Checks one action's shape and dtype (always) and finiteness (where possible).

    Shape and dtype are checked at trace time and raise ``EnvError``. Finiteness is
    checked eagerly for concrete arrays; under ``jit`` it is a ``checkify`` debug check
    (free unless the function is called through :func:`checked` from outside any trace,
    which then raises on NaN/inf).

    Args:
      action: shape [action_size], floating dtype.
      action_size: expected action dimension.
      env_name: used in error messages.

    Returns:
      The action as a JAX array.
    """
    shape = getattr(action, "shape", None)
    if shape != (action_size,):
        raise EnvError(
            f"{env_name}: action has shape {shape}, expected ({action_size},) for one "
            f"environment. For a batch of N environments wrap the env with "
            f"mbjax.envs.VmapWrapper (or jax.vmap) and pass shape (N, {action_size})."
        )
    if not jnp.issubdtype(action.dtype, jnp.floating):
        raise EnvError(
            f"{env_name}: action dtype is {action.dtype}, expected a floating dtype "
            f"(e.g. float32); cast with action.astype(jnp.float32)."
        )
    action = jnp.asarray(action)
    if _is_concrete(action):
        if not np.all(np.isfinite(np.asarray(action))):
            raise EnvError(
                f"{env_name}: action contains NaN or inf: {np.asarray(action)}. "
                "Check the policy or planner that produced it."
            )
    else:
        checkify.check(
            jnp.all(jnp.isfinite(action)),
            f"{env_name}: action contains NaN or inf: {{}}. Check the policy or planner "
            "that produced it.",
            action,
            debug=True,
        )
    return action


def _traced(tree: Any) -> bool:
    """True when any leaf of ``tree`` is a tracer (the caller is being traced)."""
    return not all(_is_concrete(leaf) for leaf in jax.tree_util.tree_leaves(tree))


def checked(fn):
    """Wraps ``fn`` so that bad actions inside it raise ``EnvError``, NaN/inf ones included.

    What is checked depends on where the wrapper runs:

    * Called with concrete arrays (``checked(f)`` or ``checked(jax.jit(f))``): every check
      of :func:`validate_action`, i.e. an action's shape and dtype (at trace time) and
      the finiteness of its values, via ``checkify``: a NaN/inf action raises
      ``EnvError`` after the call. The cost is one reduction per step, so use it while
      debugging or in tests, not in benchmarks.
    * Called while being traced (``jax.jit(checked(f))``, or inside ``vmap``/``scan``):
      ``fn`` runs unchanged, without ``checkify``. Shape and dtype still raise
      ``EnvError`` while tracing; values are NOT checked (a traced value cannot raise a
      Python error), so a NaN/inf action goes through.
    """
    checked_fn = checkify.checkify(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if _traced((args, kwargs)):
            return fn(*args, **kwargs)
        err, out = checked_fn(*args, **kwargs)
        if _traced(err):  # concrete arguments, but inside an enclosing trace
            return out
        msg = err.get()
        if msg is not None:
            raise EnvError(msg)
        return out

    return wrapper


def forwarded(path: str) -> property:
    """A read-only property with the value of ``self.<path>``.

    Example: ``dt = forwarded("env.dt")`` in a class body makes ``obj.dt`` return
    ``obj.env.dt``, for wrappers and envs built around another env.
    """
    return property(operator.attrgetter(path), doc=f"``self.{path}``.")


class Env(abc.ABC):
    """Base class of mbjax environments; subclasses implement ``_reset`` and ``_step``.

    Subclasses set ``name`` and implement ``observation_size``, ``action_size``,
    ``action_low``/``action_high`` (shape [action_size]) and ``dt`` (seconds per step).
    """

    name: str = "env"
    #: True when ``reward_fn``/``termination_fn`` reproduce the env's reward and done.
    has_reward_fn: bool = True

    # -- sizes and bounds ---------------------------------------------------------------
    @property
    @abc.abstractmethod
    def observation_size(self) -> int: ...

    @property
    @abc.abstractmethod
    def action_size(self) -> int: ...

    @property
    def action_low(self) -> Array:
        """Lower action bound, shape [action_size]."""
        return -jnp.ones(self.action_size)

    @property
    def action_high(self) -> Array:
        """Upper action bound, shape [action_size]."""
        return jnp.ones(self.action_size)

    @property
    @abc.abstractmethod
    def dt(self) -> float:
        """Seconds of simulated time per ``step``."""

    @property
    def unwrapped(self) -> Env:
        return self

    # -- dynamics -----------------------------------------------------------------------
    def reset(self, key: PRNGKey) -> State:
        """Samples an initial state. key: PRNG key; returns an unbatched ``State``."""
        typed = jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key)
        if getattr(key, "shape", None) != (() if typed else (2,)):
            raise EnvError(
                f"{self.name}: reset takes one PRNG key (shape (2,) or a typed key), got "
                f"shape {getattr(key, 'shape', None)}; use VmapWrapper for a batch of keys."
            )
        return self._reset(key)

    def step(self, state: State, action: Array) -> State:
        """Advances one control step. action: shape [action_size]."""
        action = validate_action(action, self.action_size, self.name)
        return self._step(state, action)

    @abc.abstractmethod
    def _reset(self, key: PRNGKey) -> State: ...

    @abc.abstractmethod
    def _step(self, state: State, action: Array) -> State: ...

    # -- reward and termination in observation space ---------------------------------------
    def reward_fn(self, obs: Array, action: Array, next_obs: Array) -> Array:
        """Reward r(s, a, s') of one transition from observations; returns shape []."""
        raise RewardFnUnavailableError(
            f"{self.name} has no reward function of observations; use a model with a "
            "learned reward head."
        )

    def termination_fn(self, obs: Array, action: Array, next_obs: Array) -> Array:
        """Terminal flag (1.0 / 0.0) of one transition from observations; shape []."""
        return jnp.zeros((), dtype=jnp.float32)

    def known_next_obs(self, obs: Array, next_obs: Array) -> Array:
        """``next_obs`` with the entries the task computes itself set from ``obs``.

        Some observation entries are not physics but the task's own bookkeeping: a goal
        clock (cos phi, sin phi advancing by a known step), a fixed target. A learned
        model's prediction passes through this before rewards are computed, so the model
        need not learn those entries, and a goal changed at test time (another path, a
        reversed clock, new targets; ``mbjax eval --env-options``) reaches the planner
        without retraining. Contract: the returned known entries depend only on the known
        entries of ``obs`` (so wrappers may iterate it); the other entries are
        ``next_obs``'s. Shapes [obs_dim] -> [obs_dim]; the default changes nothing.
        """
        del obs
        return next_obs

    # -- task success measures ----------------------------------------------------------
    def episode_measures(self, obs: Array, action: Array, next_obs: Array,
                         alive: Array) -> dict[str, Array]:
        """The task's success measures of one episode, from its observations.

        Args: obs [T, obs_dim], action [T, action_size], next_obs [T, obs_dim] of T
        consecutive transitions, alive [T] (1.0 for the transitions of the episode, 0.0
        after it ended). Returns a dict of scalars (shape []); the default has none.
        Tasks override it (the hand tasks: half-turns, steps on target, drops); the
        agents report each measure per iteration as ``task/<name>``, averaged over the
        iteration's episodes.
        """
        del obs, action, next_obs, alive
        return {}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, obs={self.observation_size}, "
            f"action={self.action_size}, dt={self.dt})"
        )
