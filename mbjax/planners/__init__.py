"""Planners over action sequences: random shooting, CEM, PDDM's filtered MPPI, iCEM,
gradient-based and CEM -> gradient, plus objectives and MPC execution.

>>> objective = make_model_objective(model, env.reward_fn, num_particles=20)
>>> planner = make_cem(objective, env.action_low, env.action_high, CEMConfig(horizon=30))
>>> state = planner.init(key)
>>> action, state, info = planner.plan(planner.default_params, model_state, state, obs, key)
"""

from mbjax.planners.base import Objective, Planner, batch, sanitize_returns, shift
from mbjax.planners.cem import CEMConfig, CEMParams, CEMState, make_cem
from mbjax.planners.gradient import (
    CEMGradientParams,
    GradientConfig,
    GradientParams,
    make_cem_gradient,
    make_gradient_planner,
)
from mbjax.planners.icem import ICEMConfig, ICEMParams, colored_noise, make_icem
from mbjax.planners.mpc import mpc, open_loop
from mbjax.planners.mppi import MPPIConfig, MPPIParams, make_mppi
from mbjax.planners.objectives import (
    action_costs,
    discounted_return,
    make_env_objective,
    make_model_objective,
    make_sequence_objective,
)
from mbjax.planners.random_shooting import (
    RandomShootingConfig,
    RandomShootingParams,
    make_random_shooting,
)


def pddm_mppi_config() -> tuple[MPPIConfig, MPPIParams]:
    """PDDM's Baoding preset (Nagabandi et al. 2019): N = 700, H = 7, beta = 0.6,
    kappa = 20, sigma = 0.9, one iteration."""
    return MPPIConfig(horizon=7, population=700, iterations=1), MPPIParams(
        kappa=20.0, beta=0.6, sigma=0.9)


__all__ = [
    "CEMConfig", "CEMGradientParams", "CEMParams", "CEMState", "GradientConfig",
    "GradientParams", "ICEMConfig", "ICEMParams", "MPPIConfig", "MPPIParams", "Objective",
    "Planner", "RandomShootingConfig", "RandomShootingParams", "action_costs", "batch",
    "colored_noise", "discounted_return", "make_cem", "make_cem_gradient",
    "make_env_objective", "make_gradient_planner", "make_icem", "make_model_objective", "make_mppi",
    "make_random_shooting", "make_sequence_objective", "mpc", "open_loop",
    "pddm_mppi_config", "sanitize_returns", "shift",
]
