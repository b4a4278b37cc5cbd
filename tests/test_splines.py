"""Action parameterisations: spline bases against closed forms, K = H zero-order hold equal
to the plain planners, piecewise-linear plans through the knots, warm starts re-sampled
in time, a lower-dimensional search finding a smooth optimum, config/CLI wiring, errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mbjax.planners as P
from mbjax.planners.splines import basis, knot_times, make_spline, retiming

H, A = 9, 2
LOW, HIGH = -jnp.ones(A), jnp.ones(A)


def quadratic_objective(target):
    """J(a) = -sum_t |a_t - target_t|^2; optimum a = target (obs unused)."""

    def objective(params, obs, actions, key):
        del params, obs, key
        return -jnp.sum((actions - target) ** 2, axis=(1, 2))

    return objective


SPECS = {
    "random_shooting": P.RandomShootingConfig(horizon=H, population=32),
    "cem": P.CEMConfig(horizon=H, population=32, num_elites=4, iterations=2),
    "mppi": P.MPPIConfig(horizon=H, population=32),
    "icem": P.ICEMConfig(horizon=H, population=32, num_elites=4, iterations=2),
    "gradient": P.GradientConfig(horizon=H, num_restarts=2, iterations=3),
    "cem_gradient": P.CEMGradientConfig(horizon=H, population=16, num_elites=4,
                                        iterations=2, num_refine=2, refine_iterations=2),
}
TARGET = 0.5 * jnp.sin(jnp.arange(H * A, dtype=jnp.float32)).reshape(H, A)


def test_bases_match_closed_forms():
    times = knot_times(4, 10)
    np.testing.assert_allclose(times, [0.0, 3.0, 6.0, 9.0])
    query = np.arange(10.0)
    # Every basis interpolates the knots: B(tau_j) = e_j.
    for kind in ("zero", "linear", "cubic"):
        np.testing.assert_allclose(basis(kind, times, times), np.eye(4), atol=1e-12)
    # Zero-order hold: a_t = knot_j for tau_j <= t < tau_{j+1}.
    zero = basis("zero", times, query)
    np.testing.assert_array_equal(zero.argmax(1), [0, 0, 0, 1, 1, 1, 2, 2, 2, 3])
    # Linear and natural cubic reproduce a straight line exactly.
    line = 2.0 - 0.5 * times
    for kind in ("linear", "cubic"):
        np.testing.assert_allclose(basis(kind, times, query) @ line, 2.0 - 0.5 * query,
                                   atol=1e-12)
    # Natural cubic spline through y: compare with scipy's (bc_type="natural").
    scipy_interp = pytest.importorskip("scipy.interpolate")
    y = np.array([0.3, -1.0, 0.8, 0.1])
    expected = scipy_interp.CubicSpline(times, y, bc_type="natural")(query)
    np.testing.assert_allclose(basis("cubic", times, query) @ y, expected, atol=1e-12)
    # K = H zero-order hold and linear are the identity: one knot per executed step.
    for kind in ("zero", "linear"):
        np.testing.assert_allclose(make_spline(kind, None, 7).interpolation, np.eye(7))


@pytest.mark.parametrize("kind", ["linear", "cubic"])
def test_warm_start_resamples_the_curve_later_in_time(kind):
    """The shift by s steps re-samples the curve at tau_j + s: exact for a straight line
    (both bases reproduce it), the fill value past the last knot."""
    spline = make_spline(kind, 4, 10)  # knots at 0, 3, 6, 9
    slope = jnp.array([0.1, -0.2])
    knots = jnp.asarray(knot_times(4, 10), jnp.float32)[:, None] * slope + 0.3
    fill = jnp.array([5.0, -5.0])
    for steps, inside in ((1, 3), (3, 3), (4, 2)):
        moved = spline.shift(knots, fill, steps)
        shifted_times = knot_times(4, 10)[:inside] + steps
        np.testing.assert_allclose(moved[:inside], shifted_times[:, None] * slope + 0.3,
                                   atol=1e-6)
        np.testing.assert_allclose(moved[inside:], jnp.broadcast_to(fill, (4 - inside, A)))
    # One knot per step with zero-order hold: the plain one-step shift.
    plain = make_spline("zero", None, 5)
    seq = jnp.arange(10.0).reshape(5, 2)
    np.testing.assert_allclose(plain.shift(seq, fill, 2), P.shift(seq, fill, 2))
    assert retiming("cubic", 4, 10, 1)[0].dtype == np.float32


@pytest.mark.parametrize("name", sorted(SPECS))
def test_one_knot_per_step_zero_order_hold_equals_the_plain_planner(name):
    """K = H with zero-order hold: the same key gives the same plans over two calls."""
    objective = quadratic_objective(TARGET)
    plain = P.make_planner(SPECS[name], objective, LOW, HIGH)
    held = P.make_planner(dataclasses.replace(SPECS[name], parameterization="zero"),
                          objective, LOW, HIGH)
    key = jax.random.PRNGKey(3)
    s_plain, s_held = plain.init(key), held.init(key)
    for step in range(2):
        k = jax.random.fold_in(key, step)
        a_p, s_plain, info_p = plain.plan(plain.default_params, None, s_plain, None, k)
        a_h, s_held, info_h = held.plan(held.default_params, None, s_held, None, k)
        np.testing.assert_allclose(a_h, a_p, atol=1e-6)
        np.testing.assert_allclose(info_h["plan"], info_p["plan"], atol=1e-6)
        np.testing.assert_allclose(info_h["knots"], info_p["plan"], atol=1e-6)
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6),
                           s_held, s_plain)


def test_linear_plan_is_piecewise_linear_through_the_knots():
    spec = P.CEMConfig(horizon=H, population=32, num_elites=4, iterations=2,
                       parameterization="linear", num_knots=3)  # knots at t = 0, 4, 8
    planner = P.make_planner(spec, quadratic_objective(TARGET), LOW, HIGH)
    assert planner.horizon == H
    action, state, info = planner.plan(planner.default_params, None,
                                       planner.init(jax.random.PRNGKey(0)), None,
                                       jax.random.PRNGKey(1))
    plan, knots = np.asarray(info["plan"]), np.asarray(info["knots"])
    assert plan.shape == (H, A) and knots.shape == (3, A)
    np.testing.assert_allclose(plan[[0, 4, 8]], knots, atol=1e-6)
    np.testing.assert_allclose(action, plan[0])
    second_difference = plan[2:] - 2 * plan[1:-1] + plan[:-2]  # zero inside each segment
    inside = np.array([t not in (4,) for t in range(1, H - 1)])
    np.testing.assert_allclose(second_difference[inside], 0.0, atol=1e-5)
    assert np.abs(second_difference[~inside]).max() > 1e-3  # a real kink at the knot
    # The warm start is the knot curve re-sampled one step later (the middle past the end).
    expected = make_spline("linear", 3, H).shift(knots, np.zeros(A), 1)
    np.testing.assert_allclose(state.mean, expected, atol=1e-6)


def test_few_knots_find_a_smooth_optimum_the_per_step_search_misses():
    """A linear target a*_t = c + d t is exactly representable by 2 linear knots: CEM over
    the 2 x 2 knots gets within 1e-2 (squared error) of it, CEM over the 9 x 2 steps with the same
    samples stays far (the search-dimension argument of the module docstring)."""
    t = jnp.arange(H, dtype=jnp.float32)[:, None]
    target = -0.6 + 0.15 * t * jnp.array([1.0, 0.5])
    objective = quadratic_objective(target)
    spec = P.CEMConfig(horizon=H, population=64, num_elites=6, iterations=6)
    errors = {}
    for name, s in (("steps", spec),
                    ("knots", dataclasses.replace(spec, parameterization="linear",
                                                  num_knots=2))):
        planner = P.make_planner(s, objective, LOW, HIGH)
        _, _, info = jax.jit(planner.plan)(planner.default_params, None,
                                           planner.init(jax.random.PRNGKey(0)), None,
                                           jax.random.PRNGKey(0))
        errors[name] = float(jnp.sum((info["plan"] - target) ** 2))
    assert errors["knots"] < 1e-2, errors
    assert errors["steps"] > 30 * errors["knots"], errors


def test_cubic_overshoot_is_clipped_to_the_bounds():
    spline_spec = P.RandomShootingConfig(horizon=H, population=64, parameterization="cubic",
                                         num_knots=4)
    seen = []

    def objective(params, obs, actions, key):
        seen.append(actions)
        return -jnp.sum(actions**2, axis=(1, 2))

    planner = P.make_planner(spline_spec, objective, LOW, HIGH)
    _, _, info = planner.plan(planner.default_params, None,
                              planner.init(jax.random.PRNGKey(0)), None,
                              jax.random.PRNGKey(0))
    scored = np.asarray(seen[0])
    assert scored.shape == (64, H, A)
    assert scored.min() >= -1.0 and scored.max() <= 1.0
    # Unclipped cubic curves through uniform knots in [-1, 1] do overshoot.
    knots = jax.random.uniform(jax.random.PRNGKey(1), (64, 4, A), minval=-1, maxval=1)
    assert float(jnp.abs(make_spline("cubic", 4, H).expand(knots)).max()) > 1.0


def test_advance_resamples_the_knots_and_keeps_mppi_last_action():
    """``advance`` (what ``mpc(replan_every=3)`` calls after a plan) moves MPPI's knot mean
    on by re-sampling it in time, and sets a_{-1} to the last executed action."""
    spec = P.MPPIConfig(horizon=H, population=64, parameterization="linear", num_knots=4)
    planner = P.make_planner(spec, quadratic_objective(TARGET), LOW, HIGH)
    _, state, info = planner.plan(planner.default_params, None,
                                  planner.init(jax.random.PRNGKey(0)), None,
                                  jax.random.PRNGKey(0))
    advanced = P.planner_advance(planner)(state, info, 2)
    spline = make_spline("linear", 4, H)
    np.testing.assert_allclose(advanced.mean, spline.shift(state.mean, state.mean[-1], 2),
                               atol=1e-6)
    # a_{-1} of the next call is the last executed action, as for plain MPPI.
    np.testing.assert_allclose(advanced.prev_action, info["plan"][2])


def test_config_and_cli_select_a_parameterisation():
    from mbjax.cli import config_cli
    from mbjax.runner import presets

    config = config_cli(presets.get("pets-cpu"),
                        ["--planner.parameterization", "cubic", "--planner.num-knots", "4"],
                        "test")
    assert (config.planner.parameterization, config.planner.num_knots) == ("cubic", 4)
    planner = config.planner.build(quadratic_objective(0.0), LOW, HIGH)
    assert planner.horizon == config.planner.horizon
    _, _, info = planner.plan(planner.default_params, None,
                              planner.init(jax.random.PRNGKey(0)), None,
                              jax.random.PRNGKey(0))
    spline = make_spline("cubic", 4, config.planner.horizon)
    np.testing.assert_allclose(info["plan"], jnp.clip(spline.expand(info["knots"]), -1, 1),
                               atol=1e-6)
    # switching the planner kind keeps the parameterisation
    switched = config_cli(presets.get("pets-cpu"),
                          ["--planner.kind", "mppi", "--planner.parameterization", "linear",
                           "--planner.num-knots", "3"], "test")
    assert switched.planner.kind == "mppi" and switched.planner.num_knots == 3


def test_bad_parameterisations_are_rejected_with_the_field_named():
    with pytest.raises(ValueError, match="parameterization must be one of"):
        P.CEMConfig(horizon=8, parameterization="bspline")
    with pytest.raises(ValueError, match="num_knots .* needs a parameterization"):
        P.CEMConfig(horizon=8, num_knots=3)
    with pytest.raises(ValueError, match=r"num_knots must be in \[1, horizon=8\]"):
        P.CEMConfig(horizon=8, parameterization="zero", num_knots=9)
    with pytest.raises(ValueError, match=r"num_knots must be in \[2, horizon=8\]"):
        P.CEMConfig(horizon=8, parameterization="linear", num_knots=1)


def test_a_planner_that_ignores_the_knot_box_is_rejected():
    """A spec whose build_search always searches H steps cannot be parameterised: a clear
    error, not a planner silently searching the wrong space."""

    @dataclasses.dataclass(frozen=True)
    class FixedHorizon(P.CEMConfig):
        kind: str = P.spec_kind("test_fixed_horizon")

        def build_search(self, objective, action_low, action_high, params=None):
            plain = P.CEMConfig(horizon=self.horizon, population=self.population,
                                num_elites=self.num_elites, iterations=self.iterations)
            return P.make_cem(objective, action_low, action_high, plain, params)

    spec = FixedHorizon(horizon=8, population=8, num_elites=2, iterations=1,
                        parameterization="linear", num_knots=3)
    with pytest.raises(ValueError, match="does not support parameterization 'linear'"):
        spec.build(quadratic_objective(0.0), LOW, HIGH)


def test_a_spec_overriding_build_is_rejected_at_registration():
    @dataclasses.dataclass(frozen=True)
    class Overrides(P.CEMConfig):
        kind: str = P.spec_kind("test_overrides_build")

        def build(self, objective, action_low, action_high, params=None):
            return P.make_cem(objective, action_low, action_high, self, params)

    with pytest.raises(TypeError, match="implement build_search"):
        P.register_planner(Overrides)
    assert "test_overrides_build" not in P.planner_kinds()
