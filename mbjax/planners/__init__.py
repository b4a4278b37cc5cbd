"""Planners over action sequences: random shooting, CEM, PDDM's filtered MPPI, annealed
MPPI (DIAL-MPC), iCEM, gradient-based, CEM -> gradient and iLQR (on stepwise objectives);
the sampling ones also over spline knots (``splines``) and with policy proposals
(``proposals``); plus objectives, risk measures and MPC execution.

>>> objective = make_model_objective(model, env.reward_fn, num_particles=20)
>>> planner = make_cem(objective, env.action_low, env.action_high, CEMConfig(horizon=30))
>>> state = planner.init(key)
>>> action, state, info = planner.plan(planner.default_params, model_state, state, obs, key)

Each planner is described by one frozen spec (``CEMConfig``, ``MPPIConfig``, ...: sizes
and tunable floats) registered by its ``kind``; ``make_planner(planner_spec("cem")(),
objective, low, high)`` builds one by name (see ``mbjax.planners.registry``).
"""

from mbjax.planners.annealed_mppi import (
    AnnealedMPPIConfig,
    AnnealedMPPIParams,
    make_annealed_mppi,
    noise_schedule,
)
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
from mbjax.planners.ilqr import (
    ILQRConfig,
    ILQRParams,
    StepwiseProblem,
    ensemble_mean_problem,
    env_problem,
    make_ilqr,
    sequence_problem,
    stepwise_objective,
)
from mbjax.planners.mpc import episode_restarted, mpc, open_loop
from mbjax.planners.mppi import MPPIConfig, MPPIParams, make_mppi, mppi_advance
from mbjax.planners.objectives import (
    action_costs,
    discounted_return,
    make_env_objective,
    make_model_objective,
    make_randomized_env_objective,
    make_randomized_task_objective,
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
from mbjax.planners.risk import (
    RISK_MEASURES,
    aggregate,
    check_risk,
    cvar_weights,
    env_with_params,
    physical_params,
    randomize_params,
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
    "ActionBox", "AnnealedMPPIConfig", "AnnealedMPPIParams", "Best", "CEMConfig",
    "CEMGradientConfig", "CEMGradientParams", "CEMParams", "CEMState", "GradientConfig",
    "GradientParams", "ICEMConfig", "ICEMParams", "ILQRConfig", "ILQRParams", "MPPIConfig",
    "MPPIParams", "Objective", "PARAMETERIZATIONS", "Planner", "PlannerSpec", "ProposalInputs",
    "ProposalScore", "RISK_MEASURES", "RandomShootingConfig", "RandomShootingParams", "Spline",
    "StepwiseProblem", "action_costs", "aggregate", "batch", "check_proposals", "check_risk",
    "colored_noise", "cvar_weights", "discounted_return", "ensemble_mean_problem",
    "env_problem", "env_step", "env_with_params", "episode_restarted", "evaluate",
    "make_annealed_mppi", "make_cem", "make_cem_gradient", "make_env_objective",
    "make_gradient_planner", "make_icem", "make_ilqr", "make_model_objective", "make_mppi",
    "make_planner", "make_proposal_objective", "make_random_shooting",
    "make_randomized_env_objective", "make_randomized_task_objective",
    "make_sequence_objective", "make_sequence_planner", "make_spline", "model_mean_step", "mpc",
    "mppi_advance", "no_best", "noise_schedule", "open_loop", "parameterized",
    "pddm_mppi_config", "physical_params", "planner_advance", "planner_kinds", "planner_spec",
    "randomize_params", "register_planner", "sampling_round", "sampling_rounds",
    "sanitize_returns", "scorer", "sequence_problem", "shift", "shift_box_sequences",
    "shift_sequences", "spec_box", "spec_kind", "stepwise_objective", "switch_planner",
    "traced_fields", "track_best", "unregister_planner",
]
