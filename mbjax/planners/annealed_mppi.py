"""Annealed MPPI: DIAL-MPC's diffusion-style annealing on PDDM's filtered MPPI.

DIAL-MPC (Xue et al. 2024, "Full-Order Sampling-Based MPC for Torque-Level Locomotion
Control via Diffusion-Style Annealing", arXiv 2409.15610) runs several MPPI refits per
planner call and anneals the sampling noise on two axes: it shrinks over the iterations of
a call (the "trajectory-level" schedule, like the reverse steps of a diffusion model) and
grows along the horizon (the "action-level" schedule: later steps, re-planned again at the
next calls, are searched more widely). Here iteration i = 0 .. N - 1 of a call samples, at
step t = 0 .. H - 1, with the noise std

  sigma_{i,t} = sigma exp(-d_iter i / max(N - 1, 1) - d_hor (H - 1 - t) / max(H - 1, 1))

(``noise_schedule``): d_iter = ``iteration_decay`` >= 0 is the log ratio of the first
iteration's noise to the last one's, d_hor = ``horizon_decay`` >= 0 the log ratio of the
last step's noise to the first step's; both 0 is the flat schedule sigma_{i,t} = sigma.
Each iteration is one round of filtered MPPI (``mbjax.planners.mppi``) around the current
mean mu [H, A]:

  eps_t ~ N(0, sigma_{i,t}^2),  a_t = beta (mu_t + eps_t) + (1 - beta) a_{t-1},

clipped to the bounds (``filtered_samples``), scored by J, and the mean refit as
mu = sum_n w_n a_n with w = softmax(kappa (R - max R)). Across calls the warm start is the
shifted mean and a_{-1} the last executed action, exactly as MPPI (``MPPIState``). With
one iteration and the flat schedule the planner is ``make_mppi`` with the same kappa,
beta, sigma (same samples, action, plan and state for the same key); with N iterations and
the flat schedule it is MPPI with ``iterations = N``.

Under an action parameterisation (``parameterization != "step"``) the search runs over the
K knots, and t, H in the schedule are the knot index and K (DIAL-MPC anneals its spline
nodes the same way).

DIAL-MPC's defaults (its ``DialConfig`` and the Go2 / H1 examples): Nsample = 2048,
Hsample = 16, Ndiffuse = 2 per call (10 on the first call), traj_diffuse_factor = 0.5 per
iteration, horizon_diffuse_factor = 0.9 per node over Hnode = 4 node intervals, actions in
[-1, 1] with noise std 1 at the last node. In the form above those are N = 2,
d_iter = (N - 1) ln 2 = ln 2 and d_hor = 4 ln(1 / 0.9) = 0.421, sigma = 1 (half the width
of DIAL's normalised box; here sigma is in action units, like MPPI's). Not taken from
DIAL-MPC: its temperature acts on returns normalised by their std (here kappa weighs raw
returns, as MPPI), it keeps the first node fixed, adds the mean to the population, and
runs more iterations on the first call.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
from flax import struct

from mbjax.planners.base import Objective, Planner, check_positive, check_range
from mbjax.planners.mppi import (
    MPPIParams,
    MPPIState,
    check_mppi_params,
    init_mppi_state,
    mppi_advance,
    mppi_rounds,
)
from mbjax.planners.registry import PlannerSpec, register_planner, spec_kind
from mbjax.planners.sampling import make_sequence_planner
from mbjax.types import Array

# DIAL-MPC's schedule in the form of the module docstring: traj_diffuse_factor = 0.5 over
# Ndiffuse = 2 iterations, horizon_diffuse_factor = 0.9 per node over 4 node intervals.
DIAL_ITERATION_DECAY = math.log(2.0)
DIAL_HORIZON_DECAY = 4 * math.log(1 / 0.9)


@struct.dataclass
class AnnealedMPPIParams:
    kappa: float = MPPIParams.kappa  # reward-weighting temperature
    beta: float = 1.0  # filter coefficient (1 = no filtering, as DIAL-MPC)
    sigma: float = 1.0  # noise std of the first iteration at the last step
    iteration_decay: float = DIAL_ITERATION_DECAY  # d_iter >= 0 (0: no annealing)
    horizon_decay: float = DIAL_HORIZON_DECAY  # d_hor >= 0 (0: same noise at every step)


def check_annealed_mppi_params(params) -> None:
    """kappa > 0, beta in [0, 1], sigma > 0, both decays >= 0 (an ``AnnealedMPPIParams``
    or a spec)."""
    check_mppi_params(params)
    check_range("iteration_decay", params.iteration_decay, 0.0)
    check_range("horizon_decay", params.horizon_decay, 0.0)


def noise_schedule(sigma, iteration_decay, horizon_decay, iterations: int,
                   horizon: int) -> Array:
    """The noise stds sigma_{i,t} [N, H] of iteration i and step t (module docstring):

      sigma_{i,t} = sigma exp(-d_iter i / max(N - 1, 1) - d_hor (H - 1 - t) / max(H - 1, 1))

    so sigma_{0,H-1} = sigma, sigma_{N-1,H-1} = sigma e^{-d_iter} and
    sigma_{i,0} = sigma_{i,H-1} e^{-d_hor}. Non-increasing in i and non-decreasing in t for
    decays >= 0; exactly ``sigma`` everywhere when both are 0. The floats may be traced;
    ``iterations`` N and ``horizon`` H are static.
    """
    i = jnp.arange(iterations, dtype=jnp.float32)[:, None] / max(iterations - 1, 1)
    t = jnp.arange(horizon - 1, -1, -1, dtype=jnp.float32)[None, :] / max(horizon - 1, 1)
    return sigma * jnp.exp(-iteration_decay * i - horizon_decay * t)


@register_planner
@dataclasses.dataclass(frozen=True)
class AnnealedMPPIConfig(PlannerSpec):
    """The annealed-MPPI spec. Defaults: DIAL-MPC's (``DialConfig``: Nsample = 2048,
    Hsample = 16, Ndiffuse = 2, its two noise schedules; module docstring), PDDM's
    kappa = 20 (DIAL-MPC's temperature is on std-normalised returns)."""

    horizon: int = 16
    population: int = 2048
    iterations: int = 2
    kappa: float = AnnealedMPPIParams.kappa
    beta: float = AnnealedMPPIParams.beta
    sigma: float = AnnealedMPPIParams.sigma
    iteration_decay: float = AnnealedMPPIParams.iteration_decay
    horizon_decay: float = AnnealedMPPIParams.horizon_decay
    kind: str = spec_kind("annealed_mppi")
    params_type = AnnealedMPPIParams
    check_params = staticmethod(check_annealed_mppi_params)

    def __post_init__(self):
        check_positive(population=self.population, iterations=self.iterations)
        super().__post_init__()

    def build_search(self, objective, action_low, action_high, params=None) -> Planner:
        return make_annealed_search(objective, action_low, action_high, self, params)


def make_annealed_search(objective: Objective, action_low, action_high,
                         config: AnnealedMPPIConfig,
                         params: AnnealedMPPIParams | None = None) -> Planner:
    """The planner of ``config``'s search space (``AnnealedMPPIConfig.build_search``):
    ``config.iterations`` rounds of filtered MPPI with the noise of ``noise_schedule``."""

    def solve(box, params: AnnealedMPPIParams, objective_params, state: MPPIState, obs,
              key):
        sigmas = noise_schedule(params.sigma, params.iteration_decay, params.horizon_decay,
                                config.iterations, box.horizon)
        return mppi_rounds(objective, box, params, sigmas, config.population,
                           config.iterations, objective_params, state, obs, key)

    return make_sequence_planner(config, action_low, action_high, params, init_mppi_state,
                                 solve, mppi_advance)


def make_annealed_mppi(objective: Objective, action_low, action_high,
                       config: AnnealedMPPIConfig | None = None,
                       params: AnnealedMPPIParams | None = None) -> Planner:
    """Annealed MPPI over J; see the module docstring (``params=None``:
    ``config.default_params()``).

    Any action parameterisation of ``config`` applies (``AnnealedMPPIConfig.build``)."""
    return (config or AnnealedMPPIConfig()).build(objective, action_low, action_high, params)
