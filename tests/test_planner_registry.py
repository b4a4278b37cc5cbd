"""Planner specs and the registry: a planner of one's own registered from this file (no
edit inside mbjax/), lookup errors, registration errors, kind switching, defaults."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

import mbjax.planners as P

# --- a planner defined entirely outside mbjax/ ------------------------------------------


@struct.dataclass
class GridParams:
    scale: float = 1.0  # grid spans mid +- scale * half-range


@dataclasses.dataclass(frozen=True)
class GridSpec(P.PlannerSpec):
    """Scores the constant sequences a_t = v for v on a grid of ``num_points`` values."""

    horizon: int = 3
    num_points: int = 9
    scale: float = GridParams.scale
    kind: str = P.spec_kind("test_grid")
    params_type = GridParams

    def build_search(self, objective, action_low, action_high, params=None):
        return make_grid_planner(objective, action_low, action_high, self, params)


def make_grid_planner(objective, action_low, action_high, spec: GridSpec, params=None):
    def solve(box, params, objective_params, state, obs, key):
        half = (box.high - box.low) / 2.0
        values = box.mid + params.scale * half * jnp.linspace(-1.0, 1.0, spec.num_points
                                                               )[:, None]  # [G, A]
        candidates = jnp.broadcast_to(values[:, None, :], (spec.num_points,) + state.shape)
        best, _ = P.evaluate(P.scorer(objective, objective_params, obs), candidates, key,
                             P.no_best(state))
        return best.sequence, best, P.shift(best.sequence, box.mid), {}

    return P.make_sequence_planner(spec, action_low, action_high, params,
                                   lambda box: box.middle(), solve)


def quadratic(target):
    """J(a) = -sum_t |a_t - target|^2 (obs, key unused)."""
    return lambda params, obs, actions, key: -jnp.sum((actions - target) ** 2, axis=(1, 2))


@pytest.fixture
def grid_kind():
    P.register_planner(GridSpec)
    yield "test_grid"
    P.unregister_planner("test_grid")


def test_user_planner_registered_from_outside_plans_the_known_optimum(grid_kind):
    assert grid_kind in P.planner_kinds()
    spec = P.planner_spec(grid_kind)(horizon=4)
    low, high = -jnp.array([1.0, 2.0]), jnp.array([1.0, 2.0])
    planner = P.make_planner(spec, quadratic(jnp.array([0.25, 0.5])), low, high)
    assert planner.default_params == GridParams(scale=1.0) == spec.default_params()
    action, state, info = planner.plan(planner.default_params, None,
                                       planner.init(jax.random.PRNGKey(0)), None,
                                       jax.random.PRNGKey(1))
    # Candidates (v, 2 v), v on linspace(-1, 1, 9): v = 0.25 is the optimum, J = 0.
    np.testing.assert_allclose(info["plan"], np.tile([0.25, 0.5], (4, 1)), atol=1e-6)
    np.testing.assert_allclose(action, [0.25, 0.5], atol=1e-6)
    assert float(info["best_return"]) == pytest.approx(0.0, abs=1e-10)
    assert int(info["num_nonfinite"]) == 0
    np.testing.assert_allclose(state[:-1], info["plan"][1:])  # warm start: shifted,
    np.testing.assert_allclose(state[-1], [0.0, 0.0])  # the middle appended
    # Its traced float: scale 0.2 spans (0.2 v, 0.4 v); the best is the edge v = 1.
    _, _, narrow = planner.plan(GridParams(scale=0.2), None, planner.init(None), None, None)
    np.testing.assert_allclose(narrow["plan"][0], [0.2, 0.4], atol=1e-6)
    assert P.traced_fields(GridSpec) == ("scale",)


def test_unknown_kind_lists_registered_kinds_with_did_you_mean():
    with pytest.raises(KeyError, match=r"unknown planner 'cme'\. Did you mean 'cem'.*"
                                       r"Registered: .*mppi"):
        P.planner_spec("cme")


def test_duplicate_registration_is_an_error(grid_kind):
    with pytest.raises(ValueError, match="planner 'test_grid' is already registered"):
        P.register_planner(GridSpec)
    with pytest.raises(ValueError, match="planner 'cem' is already registered"):
        P.register_planner(P.CEMConfig)
    P.register_planner(GridSpec, replace=True)  # on purpose
    assert P.planner_spec("test_grid") is GridSpec


def test_spec_missing_a_params_field_or_build_is_rejected():
    @struct.dataclass
    class TempParams:
        scale: float = 1.0
        temperature: float = 2.0

    @dataclasses.dataclass(frozen=True)
    class NoTemperature(GridSpec):
        kind: str = P.spec_kind("test_no_temperature")
        params_type = TempParams

    with pytest.raises(ValueError, match="has field 'temperature' that NoTemperature lacks"):
        P.register_planner(NoTemperature)

    @dataclasses.dataclass(frozen=True)
    class NoBuild(P.PlannerSpec):
        scale: float = 1.0
        kind: str = P.spec_kind("test_no_build")
        params_type = GridParams

    with pytest.raises(TypeError, match="NoBuild defines no build"):
        P.register_planner(NoBuild)
    with pytest.raises(TypeError, match="subclassing PlannerSpec"):
        P.register_planner(GridParams)
    assert not {"test_no_temperature", "test_no_build"} & set(P.planner_kinds())


def test_spec_validation_names_field_and_value():
    with pytest.raises(ValueError, match=r"^planner\.sigma must be > 0, got -1\.0$"):
        P.MPPIConfig(sigma=-1.0)
    with pytest.raises(ValueError, match=r"^planner\.num_elites \(60\) must be <= "
                                         r"planner\.population \(50\)$"):
        P.CEMConfig(population=50, num_elites=60)
    with pytest.raises(ValueError, match=r"planner\.alpha must be in \[0\.0, 1\.0\), got 1\.0"):
        P.ICEMConfig(alpha=1.0)
    with pytest.raises(ValueError, match=r"planner\.num_refine \(8\) must be <= "
                                         r"planner\.num_elites \(4\)"):
        P.CEMGradientConfig(num_elites=4, num_refine=8)
    with pytest.raises(ValueError, match=r"planner\.learning_rate must be > 0, got 0\.0"):
        P.GradientConfig(learning_rate=0.0)
    with pytest.raises(ValueError, match=r"planner\.optimizer must be the name of an optax"):
        P.GradientConfig(optimizer="adamw_typo")
    with pytest.raises(ValueError, match=r"planner\.kind must be 'mppi' for MPPIConfig, got "
                                         r"'cem': use --planner\.kind cem"):
        P.MPPIConfig(kind="cem")
    with pytest.raises(ValueError, match=r"planner\.horizon must be >= 1, got 0"):
        dataclasses.replace(P.RandomShootingConfig(), horizon=0)


def test_switch_planner_carries_shared_fields():
    mppi = P.MPPIConfig(horizon=9, population=120, iterations=2, sigma=0.5)
    cem = P.switch_planner(mppi, "cem")
    assert cem == P.CEMConfig(horizon=9, population=120, iterations=2)
    assert cem.kind == "cem" and cem.num_elites == 50  # CEM's own default
    assert P.switch_planner(cem, "cem") is cem
    hybrid = P.switch_planner(P.CEMConfig(horizon=5, num_elites=8, alpha=0.3), "cem_gradient")
    assert (hybrid.horizon, hybrid.num_elites, hybrid.alpha) == (5, 8, 0.3)
    assert hybrid.default_params() == P.CEMGradientParams(cem=P.CEMParams(alpha=0.3))
    with pytest.raises(KeyError, match="Did you mean 'mppi'"):
        P.switch_planner(cem, "mpi")


OLD_DEFAULTS = {
    "cem": P.CEMParams(), "mppi": P.MPPIParams(), "icem": P.ICEMParams(),
    "random_shooting": P.RandomShootingParams(), "gradient": P.GradientParams(),
    "cem_gradient": P.CEMGradientParams(),
}


def test_builtin_kinds_registered_and_default_params_equal_old_defaults():
    assert set(OLD_DEFAULTS) <= set(P.planner_kinds())
    for kind, old in OLD_DEFAULTS.items():
        spec_cls = P.planner_spec(kind)
        spec = spec_cls()
        assert spec.kind == kind
        assert spec.default_params() == old, kind
        assert isinstance(old, spec_cls.params_type)
        assert set(P.traced_fields(spec_cls)) <= {f.name for f in dataclasses.fields(spec)}
    assert P.traced_fields(P.MPPIConfig) == ("kappa", "beta", "sigma")
    assert P.traced_fields(P.CEMGradientConfig) == ("alpha", "init_std_scale", "min_std",
                                                    "learning_rate")
    # The PDDM preset is the MPPI spec with its own floats.
    spec, params = P.pddm_mppi_config()
    assert params == P.MPPIParams(kappa=20.0, beta=0.6, sigma=0.9) == spec.default_params()


@pytest.mark.parametrize("kind", sorted(OLD_DEFAULTS))
def test_build_uses_spec_floats_and_equals_functional_constructor(kind):
    spec_cls = P.planner_spec(kind)
    small = {"horizon": 4}
    for name, value in (("population", 16), ("num_elites", 4), ("iterations", 2),
                        ("num_restarts", 2), ("num_refine", 2), ("refine_iterations", 2)):
        if name in {f.name for f in dataclasses.fields(spec_cls)}:
            small[name] = value
    floats = {"alpha": 0.3, "kappa": 2.0, "sigma": 0.4, "std_scale": 0.5,
              "learning_rate": 0.1, "noise_exponent": 1.0}
    small.update({k: v for k, v in floats.items() if k in P.traced_fields(spec_cls)})
    spec = spec_cls(**small)
    low, high = -jnp.ones(2), jnp.ones(2)
    objective = quadratic(jnp.array([0.3, -0.2]))
    planner = P.make_planner(spec, objective, low, high)
    assert planner.default_params == spec.default_params() == spec.build(
        objective, low, high).default_params
    leaves = dataclasses.asdict(planner.default_params)
    flat = {**leaves, **leaves.get("cem", {})}  # cem_gradient nests CEMParams
    assert {k: flat[k] for k in floats if k in flat} == {k: v for k, v in small.items()
                                                          if k in floats}
    # Same plan as the functional constructor with the same spec (a known equality).
    make = {"cem": P.make_cem, "mppi": P.make_mppi, "icem": P.make_icem,
            "random_shooting": P.make_random_shooting, "gradient": P.make_gradient_planner,
            "cem_gradient": P.make_cem_gradient}[kind]
    direct = make(objective, low, high, spec)
    key = jax.random.PRNGKey(0)
    a1, _, _ = planner.plan(planner.default_params, None, planner.init(key), None, key)
    a2, _, _ = direct.plan(direct.default_params, None, direct.init(key), None, key)
    np.testing.assert_array_equal(a1, a2)
