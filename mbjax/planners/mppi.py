"""PDDM's filtered MPPI, the notes' "modified CEM" (Nagabandi et al. 2019, Sec. 4).

Per iteration, N sequences are sampled around the mean mu [H, A] with temporally
filtered noise:
  eps_t ~ N(0, sigma^2),  a_t = beta (mu_t + eps_t) + (1 - beta) a_{t-1}
(a_{-1} = the previously executed action), clipped to the bounds; scored by J; and mu is
replaced by the reward-weighted mean
  mu = sum_i w_i a_i / sum_i w_i,   w_i = exp(kappa (R_i - max_j R_j)).
The executed action is mu[0]; mu is shifted by one step (last step repeated) for the next
call. PDDM's Baoding preset: N = 700, H = 7, beta = 0.6, kappa = 20, sigma = 0.9, one
iteration. Setting beta = 1 removes the filter; a tiny kappa removes the reward weighting
(uniform average) — the ablations of the paper.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from mbjax.planners.base import Objective, Planner, check_bounds, check_positive, sanitize_returns
from mbjax.utils.random import hash_normal


@dataclasses.dataclass(frozen=True)
class MPPIConfig:
    """Static sizes. Defaults: PDDM Baoding (Nagabandi et al. 2019, App.)."""

    horizon: int = 7
    population: int = 700
    iterations: int = 1

    def __post_init__(self):
        check_positive(horizon=self.horizon, population=self.population,
                       iterations=self.iterations)


@struct.dataclass
class MPPIParams:
    kappa: float = 20.0  # reward-weighting temperature
    beta: float = 0.6  # filter coefficient (1 = no filtering)
    sigma: float = 0.9  # noise std


@struct.dataclass
class MPPIState:
    mean: jax.Array  # [H, A]
    prev_action: jax.Array  # [A] last executed action


def check_mppi_params(params: MPPIParams) -> None:
    if float(params.kappa) <= 0:
        raise ValueError(f"MPPI kappa must be > 0, got {params.kappa}")
    if not 0.0 <= float(params.beta) <= 1.0:
        raise ValueError(f"MPPI beta must be in [0, 1], got {params.beta}")
    if float(params.sigma) <= 0:
        raise ValueError(f"MPPI sigma must be > 0, got {params.sigma}")


def filtered_samples(key, mean, prev_action, beta, sigma, population, low, high):
    """a_t = beta (mu_t + eps_t) + (1 - beta) a_{t-1}; returns [N, H, A] clipped."""
    eps = sigma * hash_normal(key, (population,) + mean.shape)

    def step(prev, x):
        mu_t, eps_t = x
        a_t = beta * (mu_t + eps_t) + (1 - beta) * prev
        return a_t, a_t

    prev = jnp.broadcast_to(prev_action, (population, mean.shape[1]))
    _, seq = jax.lax.scan(step, prev, (jnp.broadcast_to(mean, eps.shape).swapaxes(0, 1),
                                       eps.swapaxes(0, 1)))
    return jnp.clip(seq.swapaxes(0, 1), low, high)


def make_mppi(objective: Objective, action_low, action_high, config: MPPIConfig | None = None,
              params: MPPIParams | None = None) -> Planner:
    config = config or MPPIConfig()
    params = params or MPPIParams()
    check_mppi_params(params)
    low, high = check_bounds(action_low, action_high)
    mid = (low + high) / 2.0
    h, a = config.horizon, low.shape[0]

    def init(key):
        del key
        return MPPIState(mean=jnp.broadcast_to(mid, (h, a)), prev_action=mid)

    def plan(params: MPPIParams, objective_params, state: MPPIState, obs, key):
        def iteration(carry, key):
            mean, nbad, _ = carry
            key_s, key_obj = jax.random.split(key)
            samples = filtered_samples(key_s, mean, state.prev_action, params.beta,
                                       params.sigma, config.population, low, high)
            returns, bad = sanitize_returns(objective(objective_params, obs, samples, key_obj))
            w = jax.nn.softmax(params.kappa * (returns - returns.max()))
            mean = jnp.einsum("n,nha->ha", w, samples)
            return (mean, nbad + bad, returns.max()), None

        keys = jax.random.split(key, config.iterations)
        (mean, nbad, best), _ = jax.lax.scan(iteration, (state.mean, jnp.array(0),
                                                         jnp.array(-jnp.inf)), keys)
        action = mean[0]
        new_mean = jnp.concatenate([mean[1:], mean[-1:]], axis=0)
        info = {"plan": mean, "best_return": best, "num_nonfinite": nbad}
        return action, MPPIState(mean=new_mean, prev_action=action), info

    return Planner(init=init, plan=plan, default_params=params, horizon=h, action_size=a)
