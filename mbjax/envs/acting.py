"""Acting in an environment: policies as pure functions and scanned rollouts."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from mbjax.envs.base import Env, State
from mbjax.types import Array, PRNGKey, Transition

#: A policy maps (observation [..., obs_dim], key) to an action [..., action_size].
Policy = Callable[[Array, PRNGKey], Array]


def uniform_random_policy(env: Env) -> Policy:
    """a ~ U(action_low, action_high), for one observation or a batch [N, obs_dim]."""
    low, high = env.action_low, env.action_high

    def policy(obs: Array, key: PRNGKey) -> Array:
        shape = obs.shape[:-1] + (env.action_size,)
        return jax.random.uniform(key, shape, minval=low, maxval=high)

    return policy


def transition(state: State, action: Array, next_state: State) -> Transition:
    """The transition (s, a, r, s', done, truncated) between two states of an env.

    Uses ``info["next_obs"]`` (set by ``EpisodeWrapper``) as s' so that auto-resets do not
    leak the reset observation into the data; ``done`` is the terminal flag only.
    """
    truncated = next_state.info.get("truncation", jnp.zeros_like(next_state.done))
    next_obs = next_state.info.get("next_obs", next_state.obs)
    return Transition(
        obs=state.obs,
        action=action,
        reward=next_state.reward,
        next_obs=next_obs,
        done=next_state.done * (1.0 - truncated),
        truncated=truncated,
    )


def rollout(
    env: Env, policy: Policy, state: State, key: PRNGKey, num_steps: int
) -> tuple[State, Transition]:
    """Runs ``policy`` for ``num_steps`` steps with ``lax.scan``.

    Returns the final state and the transitions with a leading time axis [T, ...]
    (then the env's batch axis, if ``env`` is batched).
    """

    def body(state, key):
        action = policy(state.obs, key)
        next_state = env.step(state, action)
        return next_state, transition(state, action, next_state)

    keys = jax.random.split(key, num_steps)
    return jax.lax.scan(body, state, keys)
