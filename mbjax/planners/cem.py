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
    check_bounds,
    check_positive,
    sanitize_returns,
    shift,
)
from mbjax.utils.random import hash_truncated_normal


@dataclasses.dataclass(frozen=True)
class CEMConfig:
    """Static sizes. Defaults: PETS HalfCheetah (Chua et al. 2018, App. A.4)."""

    horizon: int = 30
    population: int = 500
    num_elites: int = 50
    iterations: int = 5
    return_best: bool = False  # execute the best sequence seen instead of the elite mean

    def __post_init__(self):
        check_positive(horizon=self.horizon, population=self.population,
                       num_elites=self.num_elites, iterations=self.iterations)
        if self.num_elites > self.population:
            raise ValueError(f"num_elites ({self.num_elites}) must be <= population "
                             f"({self.population})")


@struct.dataclass
class CEMParams:
    """Tunable floats (vmappable)."""

    alpha: float = 0.1  # PETS / mbrl-lib smoothing
    init_std_scale: float = 1.0  # std0 = scale * (ub - lb) / 4
    min_std: float = 0.0  # early stop once every std is below this (0: never)


@struct.dataclass
class CEMState:
    mean: jax.Array  # [H, A] warm-started solution


def check_cem_params(params: CEMParams) -> None:
    if not 0.0 <= float(params.alpha) < 1.0:
        raise ValueError(f"CEM alpha must be in [0, 1), got {params.alpha}")
    if float(params.init_std_scale) <= 0:
        raise ValueError(f"init_std_scale must be > 0, got {params.init_std_scale}")


def cem_iterations(objective: Objective, config: CEMConfig, low, high, params: CEMParams,
                   objective_params, obs, mean, key):
    """Runs the CEM rounds from ``mean`` [H, A]; returns (mean, best_seq, best_ret, elites,
    num_nonfinite). Shared by CEM and the CEM -> gradient hybrid."""
    h, a = mean.shape
    std0 = params.init_std_scale * (high - low) / 4.0 * jnp.ones((h, a))

    def round_(carry, key):
        mean, std, best_seq, best_ret, active, nbad, _ = carry
        key_eps, key_obj = jax.random.split(key)
        cap = jnp.minimum(jnp.minimum(mean - low, high - mean) / 2.0, std)
        eps = hash_truncated_normal(key_eps, -2.0, 2.0, (config.population, h, a))
        samples = jnp.clip(mean + cap * eps, low, high)
        returns, bad = sanitize_returns(objective(objective_params, obs, samples, key_obj))
        top, idx = jax.lax.top_k(returns, config.num_elites)
        elites = samples[idx]
        new_mean = params.alpha * mean + (1 - params.alpha) * elites.mean(0)
        new_std = jnp.sqrt(params.alpha * std**2 + (1 - params.alpha) * elites.var(0))
        better = top[0] > best_ret
        best_seq = jnp.where(better, elites[0], best_seq)
        best_ret = jnp.maximum(best_ret, top[0])
        mean = jnp.where(active, new_mean, mean)
        std = jnp.where(active, new_std, std)
        active = active & (jnp.max(std) >= params.min_std)
        return (mean, std, best_seq, best_ret, active, nbad + bad, elites), None

    init = (mean, std0, mean, jnp.array(-jnp.inf), jnp.array(True), jnp.array(0),
            jnp.zeros((config.num_elites, h, a)))
    keys = jax.random.split(key, config.iterations)
    (mean, _, best_seq, best_ret, _, nbad, elites), _ = jax.lax.scan(round_, init, keys)
    return mean, best_seq, best_ret, elites, nbad


def make_cem(objective: Objective, action_low, action_high, config: CEMConfig | None = None,
             params: CEMParams | None = None) -> Planner:
    """CEM planner over J; see the module docstring."""
    config = config or CEMConfig()
    params = params or CEMParams()
    check_cem_params(params)
    low, high = check_bounds(action_low, action_high)
    mid = (low + high) / 2.0
    h, a = config.horizon, low.shape[0]

    def init(key):
        del key
        return CEMState(mean=jnp.broadcast_to(mid, (h, a)))

    def plan(params: CEMParams, objective_params, state: CEMState, obs, key):
        mean, best_seq, best_ret, _, nbad = cem_iterations(
            objective, config, low, high, params, objective_params, obs, state.mean, key)
        solution = best_seq if config.return_best else mean
        info = {"plan": solution, "best_return": best_ret, "num_nonfinite": nbad}
        return solution[0], CEMState(mean=shift(solution, mid)), info

    return Planner(init=init, plan=plan, default_params=params, horizon=h, action_size=a)
