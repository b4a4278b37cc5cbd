"""Cross-entropy method with the PETS details (Chua et al. 2018; mbrl-lib's CEM).

Per call, from the warm-started mean mu [H, A] and std0 = scale (ub - lb) / 4 (initial
variance (ub - lb)^2 / 16), for ``iterations`` rounds:
  sigma_cap = min(sigma, (mu - lb) / 2, (ub - mu) / 2)     (variance capped by the bounds)
  a_i = mu + sigma_cap * eps_i,  eps_i ~ N(0, 1) truncated at +-2      (i = 1..N)
  elites = the K sequences with the highest J
  mu <- alpha mu + (1 - alpha) mean(elites);  sigma^2 <- alpha sigma^2 + (1 - alpha) var(elites)
An optional early stop freezes the distribution once max(sigma) < ``min_std`` (shapes stay
static under jit). The executed action is mu[0] (the elite mean; mbrl-lib found the argmax
unstable) or, with ``return_best``, the best sequence seen. Warm start: mu is shifted by
one step and the last step set to the middle of the bounds.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from mbjax.planners.base import (
    Objective,
    Planner,
    check_elite_sizes,
    check_range,
)
from mbjax.planners.registry import PlannerSpec, register_planner, spec_kind
from mbjax.planners.sampling import (
    ActionBox,
    Best,
    make_sequence_planner,
    no_best,
    sampling_rounds,
    scorer,
)
from mbjax.utils.random import hash_truncated_normal


@struct.dataclass
class CEMParams:
    """Tunable floats (vmappable)."""

    alpha: float = 0.1  # PETS / mbrl-lib smoothing
    init_std_scale: float = 1.0  # std0 = scale * (ub - lb) / 4
    min_std: float = 0.0  # early stop once every std is below this (0: never)


def check_cem_params(params) -> None:
    """alpha in [0, 1), init_std_scale > 0, min_std >= 0 (a ``CEMParams`` or a spec)."""
    check_range("alpha", params.alpha, 0.0, 1.0, include_high=False)
    check_range("init_std_scale", params.init_std_scale, 0, include_low=False)
    check_range("min_std", params.min_std, 0)


@register_planner
@dataclasses.dataclass(frozen=True)
class CEMConfig(PlannerSpec):
    """The CEM spec: sizes and floats. Defaults: PETS HalfCheetah (Chua et al. 2018,
    App. A.4)."""

    horizon: int = 30
    population: int = 500
    num_elites: int = 50
    iterations: int = 5
    return_best: bool = False  # execute the best sequence seen instead of the elite mean
    alpha: float = CEMParams.alpha
    init_std_scale: float = CEMParams.init_std_scale
    min_std: float = CEMParams.min_std
    kind: str = spec_kind("cem")
    params_type = CEMParams
    check_params = staticmethod(check_cem_params)

    def __post_init__(self):
        check_elite_sizes(self.population, self.num_elites, self.iterations)
        super().__post_init__()

    def build_search(self, objective, action_low, action_high, params=None) -> Planner:
        return _search(objective, action_low, action_high, self, params)


@struct.dataclass
class CEMState:
    mean: jax.Array  # [H, A] warm-started solution


def cem_iterations(objective: Objective, config: CEMConfig, box: ActionBox,
                   params: CEMParams, objective_params, obs, mean, key
                   ) -> tuple[jax.Array, jax.Array, Best]:
    """Runs the CEM rounds from ``mean`` [H, A]; returns (mean, last elites [K, H, A],
    best seen). Shared by CEM and the CEM -> gradient hybrid."""
    low, high = box.low, box.high
    h, a = mean.shape

    def sample(carry, key):
        mean, std, _, _ = carry
        cap = jnp.minimum(jnp.minimum(mean - low, high - mean) / 2.0, std)
        eps = hash_truncated_normal(key, -2.0, 2.0, (config.population, h, a))
        return jnp.clip(mean + cap * eps, low, high)

    def update(carry, samples, returns):
        mean, std, active, _ = carry
        _, idx = jax.lax.top_k(returns, config.num_elites)
        elites = samples[idx]
        new_mean = params.alpha * mean + (1 - params.alpha) * elites.mean(0)
        new_std = jnp.sqrt(params.alpha * std**2 + (1 - params.alpha) * elites.var(0))
        mean = jnp.where(active, new_mean, mean)
        std = jnp.where(active, new_std, std)
        active = active & (jnp.max(std) >= params.min_std)
        return mean, std, active, elites

    std0 = params.init_std_scale * (high - low) / 4.0 * jnp.ones((h, a))
    init = (mean, std0, jnp.array(True), jnp.zeros((config.num_elites, h, a)))
    (mean, _, _, elites), best = sampling_rounds(
        scorer(objective, objective_params, obs), sample, update, init, no_best(mean), key,
        config.iterations)
    return mean, elites, best


def _search(objective: Objective, action_low, action_high, config: CEMConfig,
             params: CEMParams | None = None) -> Planner:
    """The planner of ``config``'s search space (``CEMConfig.build_search``)."""

    def solve(box, params, objective_params, state: CEMState, obs, key):
        mean, _, best = cem_iterations(objective, config, box, params, objective_params, obs,
                                       state.mean, key)
        solution = best.sequence if config.return_best else mean
        return solution, best, CEMState(mean=box.shift(solution, box.mid)), {}

    return make_sequence_planner(config, action_low, action_high, params,
                                 lambda box: CEMState(mean=box.middle()), solve)


def make_cem(objective: Objective, action_low, action_high, config: CEMConfig | None = None,
             params: CEMParams | None = None) -> Planner:
    """CEM planner over J; see the module docstring (``params=None``:
    ``config.default_params()``).

    Any action parameterisation of ``config`` applies (``CEMConfig.build``)."""
    return (config or CEMConfig()).build(objective, action_low, action_high, params)
