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

from mbjax.planners.base import Objective, Planner, check_positive, positive_floats
from mbjax.planners.registry import PlannerSpec, register_planner, spec_kind
from mbjax.planners.sampling import make_sequence_planner, no_best, sampling_round, scorer


@struct.dataclass
class RandomShootingParams:
    std_scale: float = 1.0  # Gaussian candidates: std = scale * (ub - lb) / 4


@register_planner
@dataclasses.dataclass(frozen=True)
class RandomShootingConfig(PlannerSpec):
    """The random-shooting spec."""

    horizon: int = 30
    population: int = 1000
    distribution: str = "uniform"
    std_scale: float = RandomShootingParams.std_scale
    kind: str = spec_kind("random_shooting")
    params_type = RandomShootingParams
    check_params = staticmethod(positive_floats("std_scale"))

    def __post_init__(self):
        check_positive(population=self.population)
        if self.distribution not in ("uniform", "gaussian"):
            raise ValueError(f"planner.distribution must be 'uniform' or 'gaussian', got "
                             f"{self.distribution!r}")
        super().__post_init__()

    def build_search(self, objective, action_low, action_high, params=None) -> Planner:
        return _search(objective, action_low, action_high, self, params)


@struct.dataclass
class RandomShootingState:
    best: jax.Array  # [H, A] previous best, shifted


def _search(objective: Objective, action_low, action_high,
                         config: RandomShootingConfig,
                         params: RandomShootingParams | None = None) -> Planner:
    """The planner of ``config``'s search space (``RandomShootingConfig.build_search``)."""

    def solve(box, params: RandomShootingParams, objective_params, state, obs, key):
        low, high = box.low, box.high

        def sample(previous, key):
            shape = (config.population - 1, box.horizon, box.action_size)
            if config.distribution == "uniform":
                samples = jax.random.uniform(key, shape, minval=low, maxval=high)
            else:
                std = params.std_scale * (high - low) / 4.0
                samples = jnp.clip(previous + std * jax.random.normal(key, shape), low, high)
            return jnp.concatenate([previous[None], samples], axis=0)

        _, best = sampling_round(scorer(objective, objective_params, obs), sample,
                                 lambda carry, samples, returns: carry, state.best,
                                 no_best(state.best), key)
        return best.sequence, best, RandomShootingState(best=box.shift(best.sequence, box.mid)), {}

    return make_sequence_planner(config, action_low, action_high, params,
                                 lambda box: RandomShootingState(best=box.middle()), solve)


def make_random_shooting(objective: Objective, action_low, action_high,
                         config: RandomShootingConfig | None = None,
                         params: RandomShootingParams | None = None) -> Planner:
    """Random shooting over J; see the module docstring (``params=None``:
    ``config.default_params()``).

    Any action parameterisation of ``config`` applies (``RandomShootingConfig.build``)."""
    return (config or RandomShootingConfig()).build(objective, action_low, action_high, params)
