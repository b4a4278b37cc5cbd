"""Planners over action sequences: random shooting, CEM, PDDM's filtered MPPI, iCEM,
gradient-based and CEM -> gradient, plus objectives and MPC execution.

>>> objective = make_model_objective(model, env.reward_fn, num_particles=20)
>>> planner = make_cem(objective, env.action_low, env.action_high, CEMConfig(horizon=30))
>>> state = planner.init(key)
>>> action, state, info = planner.plan(planner.default_params, model_state, state, obs, key)

Each planner is described by one frozen spec (``CEMConfig``, ``MPPIConfig``, ...: sizes
and tunable floats) registered by its ``kind``; ``make_planner(planner_spec("cem")(),
objective, low, high)`` builds one by name (see ``mbjax.planners.registry``).
"""

from mbjax.planners.base import (
    Objective,
    Planner,
    batch,
    planner_advance,
    sanitize_returns,
    shift,
    shift_sequences,
)
from mbjax.planners.cem import CEMConfig, CEMParams, CEMState, make_cem
from mbjax.planners.gradient import (
    CEMGradientConfig,
    CEMGradientParams,
    GradientConfig,
    GradientParams,
    make_cem_gradient,
    make_gradient_planner,
)
from mbjax.planners.icem import ICEMConfig, ICEMParams, colored_noise, make_icem
from mbjax.planners.mpc import episode_restarted, mpc, open_loop
from mbjax.planners.mppi import MPPIConfig, MPPIParams, make_mppi
from mbjax.planners.objectives import (
    action_costs,
    discounted_return,
    make_env_objective,
    make_model_objective,
    make_sequence_objective,
)
from mbjax.planners.proposals import (
    ProposalInputs,
    check_proposals,
    env_step,
    make_proposal_objective,
    model_mean_step,
)
from mbjax.planners.random_shooting import (
    RandomShootingConfig,
    RandomShootingParams,
    make_random_shooting,
)
from mbjax.planners.registry import (
    PlannerSpec,
    make_planner,
    parameterized,
    planner_kinds,
    planner_spec,
    register_planner,
    spec_kind,
    switch_planner,
    traced_fields,
    unregister_planner,
)
from mbjax.planners.sampling import (
    ActionBox,
    Best,
    ProposalScore,
    evaluate,
    make_sequence_planner,
    no_best,
    sampling_round,
    sampling_rounds,
    scorer,
    shift_box_sequences,
    spec_box,
    track_best,
)
from mbjax.planners.splines import PARAMETERIZATIONS, Spline, make_spline


def pddm_mppi_config() -> tuple[MPPIConfig, MPPIParams]:
    """PDDM's Baoding preset (Nagabandi et al. 2019): N = 700, H = 7, beta = 0.6,
    kappa = 20, sigma = 0.9, one iteration. Returns (spec, its default params)."""
    spec = MPPIConfig(horizon=7, population=700, iterations=1, kappa=20.0, beta=0.6,
                      sigma=0.9)
    return spec, spec.default_params()


__all__ = [
    "ActionBox", "Best", "CEMConfig", "CEMGradientConfig", "CEMGradientParams", "CEMParams",
    "CEMState", "GradientConfig", "GradientParams", "ICEMConfig", "ICEMParams", "MPPIConfig",
    "MPPIParams", "Objective", "PARAMETERIZATIONS", "Planner", "PlannerSpec", "ProposalInputs",
    "ProposalScore", "RandomShootingConfig", "RandomShootingParams", "Spline", "action_costs",
    "batch", "check_proposals", "colored_noise", "discounted_return", "env_step",
    "episode_restarted", "evaluate", "make_cem", "make_cem_gradient", "make_env_objective",
    "make_gradient_planner", "make_icem", "make_model_objective", "make_mppi", "make_planner",
    "make_proposal_objective", "make_random_shooting", "make_sequence_objective",
    "make_sequence_planner", "make_spline", "model_mean_step", "mpc", "no_best", "open_loop",
    "parameterized", "pddm_mppi_config", "planner_advance", "planner_kinds", "planner_spec",
    "register_planner", "sampling_round", "sampling_rounds", "sanitize_returns", "scorer",
    "shift", "shift_box_sequences", "shift_sequences", "spec_box", "spec_kind",
    "switch_planner", "traced_fields", "track_best", "unregister_planner",
]
