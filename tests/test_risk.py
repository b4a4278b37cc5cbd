"""Risk measures (mbjax.planners.risk) over particles and randomised simulators."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mbjax.envs as envs
from mbjax.agents import base
from mbjax.agents.config import ObjectiveConfig
from mbjax.envs.classic import Pendulum, PendulumParams
from mbjax.envs.wrappers import ActionRepeat
from mbjax.models import EnsembleConfig, EnsembleModel
from mbjax.models.rollout import rollout_particles
from mbjax.planners.objectives import (
    ObjectiveParams,
    discounted_return,
    make_env_objective,
    make_randomized_env_objective,
    make_randomized_task_objective,
    make_tunable_model_objective,
)
from mbjax.planners.risk import (
    RISK_MEASURES,
    aggregate,
    check_risk,
    env_with_params,
    physical_params,
    randomize_params,
)


def _brute_cvar(r, alpha):
    """CVaR of the empirical distribution by the Rockafellar-Uryasev formula
    max_z z - E[(z - R)_+] / alpha (the maximum is at one of the returns)."""
    r = np.asarray(r, np.float64)
    return max(z - np.mean(np.maximum(z - r, 0.0)) / alpha for z in r)


# --- aggregate ---------------------------------------------------------------------------


def test_aggregate_mean_worst_mean_std():
    r = jnp.array([[3.0, -1.0, 2.0, 0.5], [1.0, 1.0, 1.0, 1.0]])
    np.testing.assert_allclose(aggregate(r, "mean"), [1.125, 1.0])
    np.testing.assert_allclose(aggregate(r, "worst"), [-1.0, 1.0])
    same = jnp.full((5,), 2.5)
    np.testing.assert_allclose(aggregate(same, "worst"), aggregate(same, "mean"))
    k = 0.7
    expected = r.mean(-1) - k * np.asarray(r).std(-1)
    np.testing.assert_allclose(aggregate(r, "mean_std", std_weight=k), expected, rtol=1e-6)
    np.testing.assert_allclose(aggregate(r, "mean_std"), r.mean(-1))


def test_cvar_limits_and_fractional_weights():
    r = jnp.array([3.0, -1.0, 2.0, 0.5])
    m = r.shape[0]
    np.testing.assert_allclose(aggregate(r, "cvar", alpha=1.0), r.mean(), rtol=1e-6)
    for alpha in (1e-6, 1.0 / m):
        np.testing.assert_allclose(aggregate(r, "cvar", alpha=alpha), -1.0, rtol=1e-6)
    # alpha M = 1.2: the worst return and 0.2 of the second worst, over 1.2.
    np.testing.assert_allclose(aggregate(r, "cvar", alpha=0.3), (-1.0 + 0.2 * 0.5) / 1.2,
                               rtol=1e-6)
    rng = np.random.default_rng(0)
    for alpha in (0.05, 0.3, 0.5, 0.77, 1.0):
        x = rng.normal(size=7)
        np.testing.assert_allclose(aggregate(jnp.asarray(x, jnp.float32), "cvar", alpha),
                                   _brute_cvar(x, alpha), rtol=1e-5, atol=1e-6)


def test_traced_alpha_and_std_weight_under_jit_and_vmap():
    r = jnp.array([3.0, -1.0, 2.0, 0.5])
    alphas = jnp.array([0.25, 0.3, 1.0])
    cvar = jax.jit(jax.vmap(lambda a: aggregate(r, "cvar", alpha=a)))(alphas)
    np.testing.assert_allclose(cvar, [-1.0, (-1.0 + 0.2 * 0.5) / 1.2, r.mean()], rtol=1e-6)
    ks = jnp.array([0.0, 1.0])
    ms = jax.jit(jax.vmap(lambda k: aggregate(r, "mean_std", std_weight=k)))(ks)
    np.testing.assert_allclose(ms, [r.mean(), r.mean() - r.std()], rtol=1e-6)


def test_risk_errors():
    with pytest.raises(ValueError, match="mean, worst, cvar, mean_std"):
        check_risk("median")
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\]"):
        aggregate(jnp.zeros(3), "cvar", alpha=0.0)
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\]"):
        check_risk("cvar", alpha=1.5)
    with pytest.raises(ValueError, match="std_weight"):
        check_risk("mean_std", std_weight=-1.0)
    assert RISK_MEASURES == ("mean", "worst", "cvar", "mean_std")


# --- learned ensembles: risk over particles ----------------------------------------------


def _ensemble():
    model = EnsembleModel(3, 1, EnsembleConfig(num_members=2, num_elites=2, hidden_sizes=(8,),
                                               weight_decay=()))
    return model, model.init(jax.random.PRNGKey(1))


def _particle_returns(model, state, reward_fn, obs, actions, key, p, discount):
    n = actions.shape[0]
    obs0 = jnp.broadcast_to(obs, (n * p,) + obs.shape)
    acts = jnp.repeat(actions, p, axis=0)
    out = rollout_particles(model, state, obs0, acts, key, reward_fn, None, "ts_inf", True,
                            False)
    return discounted_return(out.reward, out.terminated, discount).reshape(n, p)


def test_model_objective_risk_over_particles():
    model, state = _ensemble()
    reward_fn = lambda o, a, n: n[0] - 0.1 * a[0] ** 2
    obs = jnp.array([0.1, -0.2, 0.3])
    actions = jax.random.uniform(jax.random.PRNGKey(2), (3, 4, 1), minval=-1, maxval=1)
    key = jax.random.PRNGKey(3)
    p = 4
    hp = ObjectiveParams(0.9, 0.0, 0.5)  # positional, as before cvar_alpha was added
    assert hp.cvar_alpha == 1.0
    ret = _particle_returns(model, state, reward_fn, obs, actions, key, p, 0.9)
    assert float(ret.std(-1).min()) > 0  # particles really differ
    default = make_tunable_model_objective(model, reward_fn, num_particles=p)
    np.testing.assert_allclose(default((state, hp, None), obs, actions, key),
                               ret.mean(-1) - 0.5 * ret.std(-1), rtol=1e-6)
    plain = make_tunable_model_objective(model, reward_fn, num_particles=p, with_risk=False)
    np.testing.assert_allclose(plain((state, hp, None), obs, actions, key), ret.mean(-1),
                               rtol=1e-6)
    worst = make_tunable_model_objective(model, reward_fn, num_particles=p, risk="worst")
    np.testing.assert_allclose(worst((state, hp, None), obs, actions, key), ret.min(-1),
                               rtol=1e-6)
    cvar = make_tunable_model_objective(model, reward_fn, num_particles=p, risk="cvar")
    got = cvar((state, ObjectiveParams(0.9, 0.0, 0.0, 0.5), None), obs, actions, key)
    np.testing.assert_allclose(got, [_brute_cvar(r, 0.5) for r in ret], rtol=1e-5)
    with pytest.raises(ValueError, match="unknown risk measure"):
        make_tunable_model_objective(model, reward_fn, num_particles=p, risk="max")


# --- randomised simulators ---------------------------------------------------------------


def _candidates(n=4, h=6):
    return 2.0 * jax.random.uniform(jax.random.PRNGKey(5), (n, h, 1), minval=-1, maxval=1)


def test_randomized_objective_without_randomisation_is_the_env_objective():
    env = Pendulum()
    state = env.reset(jax.random.PRNGKey(0))
    actions = _candidates()
    expected = make_env_objective(env, discount=0.95)(None, state, actions, None)
    for risk in RISK_MEASURES:
        objective = make_randomized_env_objective(
            lambda p: Pendulum(params=p), PendulumParams(), 3, 0.0, jax.random.PRNGKey(0),
            risk=risk, discount=0.95, cvar_alpha=0.4, std_weight=1.0)
        np.testing.assert_allclose(objective(None, state, actions, None), expected,
                                   rtol=1e-5, atol=1e-5)


def test_randomized_pendulum_worst_mean_best_and_the_draws():
    nominal = PendulumParams()
    scale, m = 0.3, 5
    key = jax.random.PRNGKey(7)
    drawn = randomize_params(nominal, m, scale, key, fields=("mass", "length"))
    assert set(drawn) == {"mass", "length"}
    for name in drawn:
        v, p0 = np.asarray(drawn[name]), getattr(nominal, name)
        assert v.shape == (m,) and len(set(v.tolist())) == m  # the masses differ
        assert np.all(v >= p0 * (1 - scale)) and np.all(v <= p0 * (1 + scale))
    env = Pendulum()
    state = env.reset(jax.random.PRNGKey(1))
    actions = _candidates()
    kw = dict(risk="mean", fields=("mass", "length"))
    by = {risk: make_randomized_env_objective(lambda p: Pendulum(params=p), nominal, m, scale,
                                              key, **{**kw, "risk": risk})
          for risk in RISK_MEASURES}
    np.testing.assert_allclose(by["mean"].simulator_params["mass"], drawn["mass"])
    mean = by["mean"](None, state, actions, None)
    worst = by["worst"](None, state, actions, None)
    # Per simulator, by hand: the env rebuilt with draw i.
    per_sim = np.stack([make_env_objective(Pendulum(params=dataclasses.replace(
        nominal, mass=drawn["mass"][i], length=drawn["length"][i])))(None, state, actions, None)
        for i in range(m)], axis=-1)
    assert np.ptp(per_sim, axis=-1).min() > 0  # the simulators disagree
    np.testing.assert_allclose(mean, per_sim.mean(-1), rtol=1e-5)
    np.testing.assert_allclose(worst, per_sim.min(-1), rtol=1e-5)
    assert np.all(worst <= mean + 1e-6) and np.all(mean <= per_sim.max(-1) + 1e-6)
    # Traced risk parameters from ObjectiveParams (cvar_alpha, risk_aversion as k).
    hp = ObjectiveParams(discount=1.0, risk_aversion=0.5, cvar_alpha=0.2)
    np.testing.assert_allclose(by["cvar"](hp, state, actions, None), per_sim.min(-1),
                               rtol=1e-5)  # alpha = 1/M
    np.testing.assert_allclose(by["mean_std"](hp, state, actions, None),
                               per_sim.mean(-1) - 0.5 * per_sim.std(-1), rtol=1e-5, atol=1e-4)


def test_task_objective_through_wrappers_and_errors():
    env = ActionRepeat(Pendulum(), 2)
    assert physical_params(env) == PendulumParams()
    heavier = env_with_params(env, PendulumParams(mass=2.0))
    assert heavier.repeat == 2 and physical_params(heavier).mass == 2.0
    assert physical_params(env).mass == 1.0  # the original is unchanged
    objective = make_randomized_task_objective(env, 3, 0.0, jax.random.PRNGKey(0))
    state = env.reset(jax.random.PRNGKey(0))
    np.testing.assert_allclose(objective(None, state, _candidates(), None),
                               make_env_objective(env)(None, state, _candidates(), None),
                               rtol=1e-5, atol=1e-5)

    class NoParams(Pendulum):
        pass

    bare = NoParams()
    del bare.params
    with pytest.raises(ValueError, match="num_randomized > 0.*supported for envs with "
                                         "physical parameters"):
        make_randomized_task_objective(bare, 3, 0.1, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="unknown parameter field 'mas'"):
        randomize_params(PendulumParams(), 3, 0.1, jax.random.PRNGKey(0), fields=("mas",))
    with pytest.raises(ValueError, match=r"scale .* must be in \[0, 1\)"):
        randomize_params(PendulumParams(), 3, 1.5, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="must be >= 1"):
        randomize_params(PendulumParams(), 0, 0.1, jax.random.PRNGKey(0))


# --- the config ----------------------------------------------------------------------------


def test_objective_config_validation():
    for kwargs, match in [
        (dict(risk="median"), "objective.risk must be one of mean, worst, cvar, mean_std"),
        (dict(risk="cvar", cvar_alpha=0.0), r"objective.cvar_alpha must be in \(0, 1\]"),
        (dict(risk="cvar", cvar_alpha=1.5), r"objective.cvar_alpha must be in \(0, 1\]"),
        (dict(num_randomized=-1), "objective.num_randomized must be >= 0"),
        (dict(randomization_scale=1.0), r"objective.randomization_scale must be in \[0, 1\)"),
        (dict(risk="worst", risk_aversion=1.0), "risk_aversion is the k of risk mean_std"),
        (dict(cvar_alpha=0.5), "cvar_alpha is the level of risk cvar"),
    ]:
        with pytest.raises(ValueError, match=match):
            ObjectiveConfig(**kwargs)
    assert not ObjectiveConfig().with_risk and ObjectiveConfig(risk="worst").with_risk
    with pytest.raises(ValueError, match="true-dynamics planning .* only"):
        ObjectiveConfig(num_randomized=2).check_planning_on(3)
    with pytest.raises(ValueError, match="need a learned model or objective.num_randomized"):
        ObjectiveConfig(risk="cvar", cvar_alpha=0.5).check_planning_on(None)
    ObjectiveConfig(risk="cvar", cvar_alpha=0.5, num_randomized=4).check_planning_on(None)
    ObjectiveConfig(risk="worst").check_planning_on(3)


def test_simulator_objective_honours_num_randomized():
    task = base.Task(envs.make("pendulum"), 200)
    state = task.env.reset(jax.random.PRNGKey(0))
    actions = _candidates()
    config = ObjectiveConfig(risk="worst", num_randomized=4, randomization_scale=0.3)
    hp = base.objective_params(config)
    assert hp.cvar_alpha == 1.0
    worst = base.simulator_objective(task, config)((None, hp, None), state, actions, None)
    mean = base.simulator_objective(task, dataclasses.replace(config, risk="mean"))(
        (None, hp, None), state, actions, None)
    nominal = base.simulator_objective(task)((None, hp, None), state, actions, None)
    assert np.all(worst <= mean + 1e-6) and np.any(worst < mean - 1e-3)
    assert not np.allclose(mean, nominal)
    with pytest.raises(ValueError, match="num_randomized > 0 is supported for true-dynamics"):
        base.model_objective(*_ensemble()[:1], task, None, dataclasses.replace(
            config, num_particles=2), "pendulum")
