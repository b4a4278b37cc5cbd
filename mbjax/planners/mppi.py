"""PDDM's filtered MPPI, the notes' "modified CEM" (Nagabandi et al. 2019, Sec. 4).

Per iteration, N sequences are sampled around the mean mu [H, A] with temporally
filtered noise:
  eps_t ~ N(0, sigma^2),  a_t = beta (mu_t + eps_t) + (1 - beta) a_{t-1}
(a_{-1} = the previously executed action), clipped to the bounds; scored by J; and mu is
replaced by the reward-weighted mean
  mu = sum_i w_i a_i / sum_i w_i,   w_i = exp(kappa (R_i - max_j R_j)).
The executed action is mu[0]; mu is shifted by one step (last step repeated) for the next
call. When k actions of the plan are executed before replanning (``mpc(replan_every=k)``),
``advance`` shifts mu by the k - 1 further steps and sets a_{-1} to the last executed
action mu[k - 1]. PDDM's Baoding preset: N = 700, H = 7, beta = 0.6, kappa = 20,
sigma = 0.9, one iteration. Setting beta = 1 removes the filter; a tiny kappa removes the
reward weighting (uniform average) — the ablations of the paper.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from mbjax.planners.base import (
    Objective,
    Planner,
    check_positive,
    check_range,
)
from mbjax.planners.registry import PlannerSpec, register_planner, spec_kind
from mbjax.planners.sampling import (
    make_sequence_planner,
    no_best,
    sampling_rounds,
    scorer,
    shift_box_sequences,
)
from mbjax.utils.random import hash_normal


@struct.dataclass
class MPPIParams:
    kappa: float = 20.0  # reward-weighting temperature
    beta: float = 0.6  # filter coefficient (1 = no filtering)
    sigma: float = 0.9  # noise std


def check_mppi_params(params) -> None:
    """kappa > 0, beta in [0, 1], sigma > 0 (an ``MPPIParams`` or a spec)."""
    check_range("kappa", params.kappa, 0, include_low=False)
    check_range("beta", params.beta, 0.0, 1.0)
    check_range("sigma", params.sigma, 0, include_low=False)


@register_planner
@dataclasses.dataclass(frozen=True)
class MPPIConfig(PlannerSpec):
    """The filtered-MPPI spec. Defaults: PDDM Baoding (Nagabandi et al. 2019, App.)."""

    horizon: int = 7
    population: int = 700
    iterations: int = 1
    kappa: float = MPPIParams.kappa
    beta: float = MPPIParams.beta
    sigma: float = MPPIParams.sigma
    kind: str = spec_kind("mppi")
    params_type = MPPIParams
    check_params = staticmethod(check_mppi_params)

    def __post_init__(self):
        check_positive(population=self.population, iterations=self.iterations)
        super().__post_init__()

    def build_search(self, objective, action_low, action_high, params=None) -> Planner:
        return _search(objective, action_low, action_high, self, params)


@struct.dataclass
class MPPIState:
    mean: jax.Array  # [H, A]
    prev_action: jax.Array  # [A] last executed action


def mppi_advance(box, state: MPPIState, info, steps: int) -> MPPIState:
    """MPPI's ``advance``: the mean moved on by ``steps`` more executed steps
    (``shift_box_sequences``) and a_{-1} of the next call = the last executed action
    ``info["plan"][steps]`` (of the executed plan [H, A], also under a parameterisation,
    where the mean is over knots)."""
    state = shift_box_sequences(box, state, steps)
    return state.replace(prev_action=info["plan"][steps])


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


def mppi_rounds(objective: Objective, box, params, sigmas, population: int,
                iterations: int, objective_params, state: MPPIState, obs, key):
    """``iterations`` rounds of filtered MPPI from ``state`` (the body of MPPI's and
    annealed MPPI's ``solve``): round i samples ``population`` sequences around the mean
    with noise std ``sigmas[i]`` ([iterations, H]: per round and step; MPPI's is constant),
    filters them with ``params.beta`` and replaces the mean by their softmax(kappa R)
    average. Returns (mean [H, A], best, next MPPIState, {}) as ``solve`` does."""

    def sample(carry, key):
        mean, _, i = carry
        # sigma [H, 1] broadcasts against the noise [N, H, A] of filtered_samples.
        return filtered_samples(key, mean, state.prev_action, params.beta,
                                sigmas[i][:, None], population, box.low, box.high)

    def update(carry, samples, returns):
        w = jax.nn.softmax(params.kappa * (returns - returns.max()))
        return jnp.einsum("n,nha->ha", w, samples), returns.max(), carry[2] + 1

    (mean, last_max, _), best = sampling_rounds(
        scorer(objective, objective_params, obs), sample, update,
        (state.mean, jnp.array(-jnp.inf), jnp.array(0)), no_best(state.mean), key,
        iterations)
    # best_return: the best return of the last iteration's population.
    best = best._replace(value=last_max)
    return mean, best, MPPIState(mean=box.shift(mean, mean[-1]), prev_action=mean[0]), {}


def init_mppi_state(box) -> MPPIState:
    """The cold start: the box's middle sequence, a_{-1} = the middle action."""
    return MPPIState(mean=box.middle(), prev_action=box.mid)


def _search(objective: Objective, action_low, action_high, config: MPPIConfig,
              params: MPPIParams | None = None) -> Planner:
    """The planner of ``config``'s search space (``MPPIConfig.build_search``)."""

    def solve(box, params: MPPIParams, objective_params, state: MPPIState, obs, key):
        sigmas = jnp.broadcast_to(params.sigma, (config.iterations, box.horizon))
        return mppi_rounds(objective, box, params, sigmas, config.population,
                           config.iterations, objective_params, state, obs, key)

    return make_sequence_planner(config, action_low, action_high, params, init_mppi_state,
                                 solve, mppi_advance)


def make_mppi(objective: Objective, action_low, action_high, config: MPPIConfig | None = None,
              params: MPPIParams | None = None) -> Planner:
    """Filtered MPPI over J; see the module docstring (``params=None``:
    ``config.default_params()``).

    Any action parameterisation of ``config`` applies (``MPPIConfig.build``)."""
    return (config or MPPIConfig()).build(objective, action_low, action_high, params)
