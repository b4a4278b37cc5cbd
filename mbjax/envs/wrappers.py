"""Wrappers: each a small pure transformation of an ``Env``'s reset/step.

* ``EpisodeWrapper``: episode length (truncation) and auto-reset, keeping the true
  next observation in ``info["next_obs"]`` so transitions stay correct across resets.
* ``ActionRepeat``: repeat each action k times, summing rewards.
* ``ObservationExtension``: append features computed from (previous, new) state.
* ``VmapWrapper``: a batch of N independent environments (leading axis N).

``wrap_for_training`` composes them in the usual order.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from mbjax.envs.base import (
    Env,
    EnvError,
    RewardFnUnavailableError,
    State,
    forwarded,
    validate_action,
)
from mbjax.types import Array, PRNGKey


def _where_tree(cond: Array, on_true, on_false):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(cond, a, b), on_true, on_false)


class Wrapper(Env):
    """Forwards everything to the wrapped ``env``; subclasses override what they change."""

    def __init__(self, env: Env):
        self.env = env

    name = forwarded("env.name")  # type: ignore[assignment]
    has_reward_fn = forwarded("env.has_reward_fn")  # type: ignore[assignment]
    observation_size = forwarded("env.observation_size")
    action_size = forwarded("env.action_size")
    action_low = forwarded("env.action_low")
    action_high = forwarded("env.action_high")
    dt = forwarded("env.dt")
    unwrapped = forwarded("env.unwrapped")

    @property
    def default_episode_length(self) -> int:
        return getattr(self.env, "default_episode_length", 1000)

    def reset(self, key: PRNGKey) -> State:
        return self.env.reset(key)

    def step(self, state: State, action: Array) -> State:
        return self.env.step(state, action)

    def episode_measures(self, obs, action, next_obs, alive):
        return self.env.episode_measures(obs, action, next_obs, alive)

    def known_next_obs(self, obs: Array, next_obs: Array) -> Array:
        return self.env.known_next_obs(obs, next_obs)

    def _reset(self, key):  # wrappers override reset/step directly
        return self.reset(key)

    def _step(self, state, action):
        return self.step(state, action)

    def reward_fn(self, obs: Array, action: Array, next_obs: Array) -> Array:
        return self.env.reward_fn(obs, action, next_obs)

    def termination_fn(self, obs: Array, action: Array, next_obs: Array) -> Array:
        return self.env.termination_fn(obs, action, next_obs)

    def __getattr__(self, name):
        # Task-specific attributes (params, dynamics, ...) of the wrapped env.
        if name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)


class EpisodeWrapper(Wrapper):
    """Ends episodes after ``episode_length`` steps and optionally resets automatically.

    ``state.done`` is 1.0 when the episode ended (terminal or truncated);
    ``info["truncation"]`` is 1.0 when it ended only because of the time limit;
    ``info["next_obs"]`` holds the true s_{t+1} (before an auto-reset replaced ``obs``);
    ``info["steps"]`` counts steps in the episode, ``info["episode_return"]`` sums rewards.

    Auto-reset modes: ``"fresh"`` draws a new initial state from a key carried in
    ``info["key"]`` (correct randomisation, costs one ``reset`` per step under vmap);
    ``"cached"`` restarts from the episode's first state (brax's cheap default).
    """

    def __init__(self, env: Env, episode_length: int, auto_reset: bool = True,
                 reset_mode: str = "fresh"):
        super().__init__(env)
        if int(episode_length) < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length}")
        if reset_mode not in ("fresh", "cached"):
            raise ValueError(f"reset_mode must be 'fresh' or 'cached', got {reset_mode!r}")
        self.episode_length = int(episode_length)
        self.auto_reset = bool(auto_reset)
        self.reset_mode = reset_mode

    def reset(self, key: PRNGKey) -> State:
        key, key_reset = jax.random.split(key)
        state = self.env.reset(key_reset)
        zero = jnp.zeros(())
        info = dict(state.info)
        info.update(steps=zero, truncation=zero, next_obs=state.obs, episode_return=zero,
                    key=key)
        if self.reset_mode == "cached":
            info.update(first_physics=state.physics, first_obs=state.obs)
        return state.replace(info=info)

    def step(self, state: State, action: Array) -> State:
        state_in = strip_episode_info(state)
        nstate = self.env.step(state_in, action)
        steps = state.info["steps"] + 1
        truncation = jnp.where(
            (steps >= self.episode_length) & (nstate.done < 0.5), 1.0, 0.0
        )
        done = jnp.maximum(nstate.done, truncation)
        info = dict(nstate.info)
        info.update(
            steps=steps,
            truncation=truncation,
            next_obs=nstate.obs,
            episode_return=state.info["episode_return"] + nstate.reward,
            key=state.info["key"],
        )
        if self.reset_mode == "cached":
            info.update(first_physics=state.info["first_physics"],
                        first_obs=state.info["first_obs"])
        nstate = nstate.replace(done=done, info=info)
        if not self.auto_reset:
            return nstate
        return self._maybe_reset(nstate)

    def _maybe_reset(self, state: State) -> State:
        done = state.done > 0.5
        if self.reset_mode == "cached":
            physics = _where_tree(done, state.info["first_physics"], state.physics)
            obs = jnp.where(done, state.info["first_obs"], state.obs)
            key = state.info["key"]
        else:
            key, key_reset = jax.random.split(state.info["key"])
            fresh = self.env.reset(key_reset)
            physics = _where_tree(done, fresh.physics, state.physics)
            obs = jnp.where(done, fresh.obs, state.obs)
            key = jnp.where(done, key, state.info["key"])
        info = dict(state.info)
        info.update(
            steps=jnp.where(done, 0.0, state.info["steps"]),
            episode_return=jnp.where(done, 0.0, state.info["episode_return"]),
            key=key,
        )
        # The reward/done/next_obs of the finished transition stay visible on this state.
        return state.replace(physics=physics, obs=obs, info=info)


_EPISODE_KEYS = ("steps", "truncation", "next_obs", "episode_return", "key",
                 "first_physics", "first_obs")


def strip_episode_info(state: State) -> State:
    """The task env's own state inside an ``EpisodeWrapper`` state (its episode
    bookkeeping removed): what a planner on the true simulator starts from."""
    return state.replace(info={k: v for k, v in state.info.items() if k not in _EPISODE_KEYS})


class ActionRepeat(Wrapper):
    """Applies each action ``repeat`` times; reward is the sum, done if any step ended.

    Steps after a terminal inner step are still simulated (shapes are static) but add no
    reward. With ``repeat > 1`` the reward is no longer a function of (obs, a, next_obs),
    so ``reward_fn`` is unavailable.
    """

    def __init__(self, env: Env, repeat: int):
        super().__init__(env)
        if int(repeat) < 1:
            raise ValueError(f"action repeat must be >= 1, got {repeat}")
        self.repeat = int(repeat)

    @property
    def has_reward_fn(self) -> bool:  # type: ignore[override]
        return self.env.has_reward_fn and self.repeat == 1

    @property
    def dt(self) -> float:
        return self.env.dt * self.repeat

    def step(self, state: State, action: Array) -> State:
        def body(carry, _):
            s, total, done = carry
            s = self.env.step(s, action)
            total = total + s.reward * (1.0 - done)
            done = jnp.maximum(done, s.done)
            return (s, total, done), None

        zero = jnp.zeros(())
        (s, total, done), _ = jax.lax.scan(body, (state, zero, zero), None, length=self.repeat)
        return s.replace(reward=total, done=done)

    def known_next_obs(self, obs, next_obs):
        """The inner env's known entries advanced ``repeat`` inner steps."""
        out = next_obs
        for _ in range(self.repeat):
            out = self.env.known_next_obs(obs, out)
            obs = out
        return out

    def reward_fn(self, obs, action, next_obs):
        if self.repeat == 1:
            return self.env.reward_fn(obs, action, next_obs)
        raise RewardFnUnavailableError(
            f"{self.name} with action repeat {self.repeat}: the summed reward of "
            f"{self.repeat} inner steps is not a function of (obs, action, next_obs); "
            "learn the reward with the model's reward head, or use repeat=1."
        )


class ObservationExtension(Wrapper):
    """Appends ``features(prev_state, new_state) -> [extra_size]`` to the observation.

    ``features`` gets the inner states (with the inner observations); on reset the
    previous state is the new state itself. ``reward_fn``/``termination_fn`` of the inner
    env are forwarded on the first ``inner_size`` entries of the observation.
    """

    def __init__(self, env: Env, features: Callable[[State, State], Array], extra_size: int):
        super().__init__(env)
        self.features = features
        self.extra_size = int(extra_size)

    @property
    def observation_size(self) -> int:
        return self.env.observation_size + self.extra_size

    def _extend(self, prev: State, new: State) -> State:
        extra = self.features(prev, new)
        return new.replace(obs=jnp.concatenate([new.obs, extra]))

    def _strip(self, state: State) -> State:
        return state.replace(obs=state.obs[: self.env.observation_size])

    def reset(self, key):
        s = self.env.reset(key)
        return self._extend(s, s)

    def step(self, state, action):
        inner = self._strip(state)
        return self._extend(inner, self.env.step(inner, action))

    def reward_fn(self, obs, action, next_obs):
        n = self.env.observation_size
        return self.env.reward_fn(obs[:n], action, next_obs[:n])

    def termination_fn(self, obs, action, next_obs):
        n = self.env.observation_size
        return self.env.termination_fn(obs[:n], action, next_obs[:n])

    def episode_measures(self, obs, action, next_obs, alive):
        n = self.env.observation_size
        return self.env.episode_measures(obs[..., :n], action, next_obs[..., :n], alive)

    def known_next_obs(self, obs, next_obs):
        n = self.env.observation_size
        inner = self.env.known_next_obs(obs[:n], next_obs[:n])
        return jnp.concatenate([inner, next_obs[n:]])


class VmapWrapper(Wrapper):
    """A batch of ``num_envs`` independent environments.

    ``reset(key)`` splits one key into ``num_envs`` (or takes keys of shape [N, 2]);
    ``step(state, action)`` takes actions of shape [N, action_size]. ``reward_fn`` and
    ``termination_fn`` stay unbatched (vmap them where needed).
    """

    def __init__(self, env: Env, num_envs: int):
        super().__init__(env)
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = int(num_envs)

    def reset(self, key: PRNGKey) -> State:
        typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
        batched = key.ndim == (1 if typed else 2)
        keys = key if batched else jax.random.split(key, self.num_envs)
        if keys.shape[0] != self.num_envs:
            raise EnvError(f"{self.name}: got {keys.shape[0]} reset keys for "
                           f"{self.num_envs} environments")
        return jax.vmap(self.env.reset)(keys)

    def step(self, state: State, action: Array) -> State:
        shape = getattr(action, "shape", None)
        if shape != (self.num_envs, self.action_size):
            raise EnvError(
                f"{self.name}: batched action has shape {shape}, expected "
                f"({self.num_envs}, {self.action_size}) for {self.num_envs} environments."
            )
        if not isinstance(action, jax.core.Tracer):
            validate_action(action.reshape(-1), self.num_envs * self.action_size, self.name)
        return jax.vmap(self.env.step)(state, action)


def wrap_for_training(
    env: Env,
    episode_length: int | None = None,
    action_repeat: int = 1,
    num_envs: int | None = None,
    auto_reset: bool = True,
    reset_mode: str = "fresh",
) -> Env:
    """ActionRepeat -> EpisodeWrapper (auto-reset) -> VmapWrapper, like brax's training
    wrappers. ``episode_length`` defaults to the task's ``default_episode_length`` (in
    control steps after action repeat)."""
    if action_repeat != 1:
        env = ActionRepeat(env, action_repeat)
    length = episode_length or getattr(env, "default_episode_length", 1000)
    env = EpisodeWrapper(env, length, auto_reset=auto_reset, reset_mode=reset_mode)
    if num_envs is not None:
        env = VmapWrapper(env, num_envs)
    return env
