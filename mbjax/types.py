"""Shared type aliases and the transition pytree."""

from __future__ import annotations

from typing import Any

import jax
from flax import struct

PRNGKey = jax.Array
Array = jax.Array
Params = Any
Metrics = dict[str, jax.Array]


@struct.dataclass
class Transition:
    """One environment transition (s, a, r, s', done, truncated).

    Attributes:
      obs: observation s_t, shape [obs_dim].
      action: action a_t, shape [action_dim].
      reward: reward r_t, shape [].
      next_obs: observation s_{t+1} reached by the dynamics, shape [obs_dim]
        (the true next observation, also when the episode ended and the env reset).
      done: 1.0 where s_{t+1} is terminal (the task ended: fall, drop), shape [].
      truncated: 1.0 where the episode was cut by a time limit after this step, shape [].
    """

    obs: Array
    action: Array
    reward: Array
    next_obs: Array
    done: Array
    truncated: Array

    @property
    def episode_end(self) -> Array:
        """1.0 where the episode ends after this transition (terminal or truncated)."""
        return jax.numpy.maximum(self.done, self.truncated)
