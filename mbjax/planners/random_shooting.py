"""Random shooting: sample N sequences, execute the first action of the best.

Candidates are uniform in the bounds (``distribution="uniform"``) or Gaussian around the
previous best sequence shifted by one step (``"gaussian"``, std = scale (ub - lb) / 4,
clipped); the shifted previous best is always one of the candidates.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from mbjax.planners.base import (
    Objective,
    Planner,
    check_bounds,
    check_positive,
    sanitize_returns,
    shift,
)


@dataclasses.dataclass(frozen=True)
class RandomShootingConfig:
    horizon: int = 30
    population: int = 1000
    distribution: str = "uniform"

    def __post_init__(self):
        check_positive(horizon=self.horizon, population=self.population)
        if self.distribution not in ("uniform", "gaussian"):
            raise ValueError(f"distribution must be 'uniform' or 'gaussian', got "
                             f"{self.distribution!r}")


@struct.dataclass
class RandomShootingParams:
    std_scale: float = 1.0  # Gaussian candidates: std = scale * (ub - lb) / 4


@struct.dataclass
class RandomShootingState:
    best: jax.Array  # [H, A] previous best, shifted


def make_random_shooting(objective: Objective, action_low, action_high,
                         config: RandomShootingConfig | None = None,
                         params: RandomShootingParams | None = None) -> Planner:
    config = config or RandomShootingConfig()
    params = params or RandomShootingParams()
    low, high = check_bounds(action_low, action_high)
    mid = (low + high) / 2.0
    h, a = config.horizon, low.shape[0]

    def init(key):
        del key
        return RandomShootingState(best=jnp.broadcast_to(mid, (h, a)))

    def plan(params: RandomShootingParams, objective_params, state, obs, key):
        key_s, key_obj = jax.random.split(key)
        shape = (config.population - 1, h, a)
        if config.distribution == "uniform":
            samples = jax.random.uniform(key_s, shape, minval=low, maxval=high)
        else:
            std = params.std_scale * (high - low) / 4.0
            samples = jnp.clip(state.best + std * jax.random.normal(key_s, shape), low, high)
        samples = jnp.concatenate([state.best[None], samples], axis=0)
        returns, nbad = sanitize_returns(objective(objective_params, obs, samples, key_obj))
        i = jnp.argmax(returns)
        best = samples[i]
        info = {"plan": best, "best_return": returns[i], "num_nonfinite": nbad}
        return best[0], RandomShootingState(best=shift(best, mid)), info

    return Planner(init=init, plan=plan, default_params=params, horizon=h, action_size=a)
