"""iLQR (mbjax.planners.ilqr): closed-form LQ optima, box-constrained QPs, pendulum swing-up,
vmap, the stepwise problems and clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbjax.envs.classic import Pendulum
from mbjax.models.ensemble import EnsembleConfig, EnsembleModel
from mbjax.planners.cem import CEMConfig
from mbjax.planners.ilqr import (
    ILQRConfig,
    ILQRParams,
    ensemble_mean_problem,
    env_problem,
    ilqr_solve,
    make_ilqr,
    sequence_problem,
    stepwise_objective,
)
from mbjax.planners.objectives import make_env_objective, make_sequence_objective
from mbjax.planners.random_shooting import RandomShootingConfig
from mbjax.planners.registry import planner_kinds, planner_spec, switch_planner

S, A, H, GAMMA = 4, 2, 10, 0.9


def lq_system(seed: int = 0):
    """A random stable x' = A x + B u (spectral radius 0.95), reward -(x'Qx' + u'Ru)."""
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(S, S))
    a = 0.95 * m / np.max(np.abs(np.linalg.eigvals(m)))
    b = rng.normal(size=(S, A))
    q = np.diag(rng.uniform(0.5, 2.0, S))
    r = np.diag(rng.uniform(0.1, 1.0, A))
    x0 = 2.0 * rng.normal(size=S)
    return a, b, q, r, x0


def lq_least_squares(a, b, q, r, x0):
    """The cost u -> X'WX + u'W_r u of the stacked sequence, X = F x0 + G u [H S], and its
    Hessian / linear term (0.5 u'Pu + p'u + const, P = 2(G'WG + W_r), p = 2 G'WF x0)."""
    g = np.zeros((H * S, H * A))
    f = np.zeros((H * S, S))
    for t in range(H):
        f[t * S:(t + 1) * S] = np.linalg.matrix_power(a, t + 1)
        for s in range(t + 1):
            g[t * S:(t + 1) * S, s * A:(s + 1) * A] = np.linalg.matrix_power(a, t - s) @ b
    w = np.kron(np.diag(GAMMA ** np.arange(H)), q)
    w_r = np.kron(np.diag(GAMMA ** np.arange(H)), r)

    def cost(u):
        x = f @ x0 + g @ u
        return x @ w @ x + u @ w_r @ u

    hess = 2.0 * (g.T @ w @ g + w_r)
    lin = 2.0 * g.T @ w @ f @ x0
    return cost, hess, lin


def lq_objective(a, b, q, r):
    aj, bj, qj, rj = (jnp.asarray(m, jnp.float32) for m in (a, b, q, r))
    problem = sequence_problem(lambda p, x, u: aj @ x + bj @ u,
                               lambda x, u, nx: -(nx @ qj @ nx + u @ rj @ u), GAMMA)
    return stepwise_objective(problem)


def plan_once(planner, objective_params, obs, params=None):
    params = planner.default_params if params is None else params
    return jax.jit(planner.plan)(params, objective_params, planner.init(None),
                                 obs, jax.random.key(0))


def test_unconstrained_lq_matches_closed_form_in_two_iterations():
    a, b, q, r, x0 = lq_system()
    cost, hess, lin = lq_least_squares(a, b, q, r, x0)
    u_star = np.linalg.solve(hess, -lin)  # normal equations of the stacked problem
    wide = 100.0 * np.ones(A)
    assert np.abs(u_star).max() < 10.0  # the box does not bind
    planner = make_ilqr(lq_objective(a, b, q, r), -wide, wide,
                        ILQRConfig(horizon=H, iterations=2))
    _, _, info = plan_once(planner, None, jnp.asarray(x0, jnp.float32))
    plan = np.asarray(info["plan"], np.float64).ravel()
    assert np.linalg.norm(plan - u_star) / np.linalg.norm(u_star) < 1e-4
    assert abs(-float(info["best_return"]) - cost(u_star)) / cost(u_star) < 1e-4
    assert int(info["ilqr_iterations_improved"]) >= 1
    assert int(info["num_nonfinite"]) == 0


def test_box_constrained_lq_within_one_percent_of_qp():
    scipy_optimize = pytest.importorskip("scipy.optimize")
    a, b, q, r, x0 = lq_system(1)
    cost, hess, lin = lq_least_squares(a, b, q, r, x0)
    bound = 0.3 * np.abs(np.linalg.solve(hess, -lin)).max()
    ref = scipy_optimize.minimize(cost, np.zeros(H * A), jac=lambda u: hess @ u + lin,
                                  method="L-BFGS-B", bounds=[(-bound, bound)] * (H * A),
                                  options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10000})
    assert ref.success
    assert np.sum(np.isclose(np.abs(ref.x), bound)) >= 2  # the optimum is constrained
    box = bound * np.ones(A)
    planner = make_ilqr(lq_objective(a, b, q, r), -box, box,
                        ILQRConfig(horizon=H, iterations=5))
    _, _, info = plan_once(planner, None, jnp.asarray(x0, jnp.float32))
    plan = np.asarray(info["plan"], np.float64)
    assert np.all(np.abs(plan) <= bound + 1e-6)
    ours = cost(plan.ravel())
    assert abs(-float(info["best_return"]) - ours) / ours < 1e-4  # best_return is J(plan)
    assert ours <= 1.01 * ref.fun


def pendulum_objective():
    env = Pendulum()
    return env, stepwise_objective(sequence_problem(env.dynamics, env.transition_reward))


def test_pendulum_swing_up_beats_random_shooting_at_equal_evaluations():
    env, objective = pendulum_objective()
    horizon, iterations, num_line_search = 60, 20, 8
    x0 = jnp.array([2.5, 0.0])  # 143 degrees from upright, at rest
    planner = make_ilqr(objective, env.action_low, env.action_high,
                        ILQRConfig(horizon=horizon, iterations=iterations,
                                   num_line_search=num_line_search))
    _, _, info = plan_once(planner, env.params, x0)
    plan = info["plan"]
    ours = float(info["best_return"])
    assert ours == pytest.approx(float(objective(env.params, x0, plan[None], None)[0]),
                                 rel=1e-5)
    # The plan swings the pendulum up and holds it: |theta| < 0.1 over its last 10 steps.
    theta = [x0[0]]
    x = x0
    for u in plan:
        x = env.dynamics(env.params, x, u)
        theta.append(x[0])
    assert np.abs(np.asarray(theta[-10:])).max() < 0.1
    # Random shooting with as many rollouts (1 + iterations x line-search steps), 4 seeds.
    shooting = RandomShootingConfig(horizon=horizon,
                                    population=1 + iterations * num_line_search).build(
        objective, env.action_low, env.action_high)
    plan_rs = jax.jit(jax.vmap(shooting.plan, in_axes=(None, None, None, None, 0)))
    _, _, rs_info = plan_rs(shooting.default_params, env.params, shooting.init(None), x0,
                            jax.random.split(jax.random.key(1), 4))
    assert ours > float(rs_info["best_return"].max()) + 20.0


def test_vmap_over_initial_states_equals_separate_calls():
    env, objective = pendulum_objective()
    planner = make_ilqr(objective, env.action_low, env.action_high,
                        ILQRConfig(horizon=15, iterations=4, num_line_search=4))
    x0s = jnp.array([[2.5, 0.0], [1.0, 0.5], [-0.3, -1.0]])
    state = planner.init(None)
    states = jax.tree_util.tree_map(lambda s: jnp.stack([s] * 3), state)
    keys = jax.random.split(jax.random.key(0), 3)
    plan = jax.jit(planner.plan)
    actions, next_states, infos = jax.jit(jax.vmap(planner.plan, in_axes=(None, None, 0, 0, 0)))(
        planner.default_params, env.params, states, x0s, keys)
    for i in range(3):
        a, s, info = plan(planner.default_params, env.params, state, x0s[i], keys[i])
        np.testing.assert_allclose(actions[i], a, atol=1e-5)
        np.testing.assert_allclose(infos["plan"][i], info["plan"], atol=1e-5)
        np.testing.assert_allclose(next_states.plan[i], s.plan, atol=1e-5)
        assert float(infos["best_return"][i]) == pytest.approx(float(info["best_return"]),
                                                               rel=1e-5)
    # The warm start is the solution shifted by one step, the box's middle appended.
    np.testing.assert_allclose(next_states.plan[:, :-1], infos["plan"][:, 1:])
    np.testing.assert_allclose(next_states.plan[:, -1], 0.0)


def test_env_problem_matches_env_objective_and_physics_problem():
    env, objective = pendulum_objective()
    state = env.reset(jax.random.key(3))
    actions = jax.random.uniform(jax.random.key(4), (3, 12, 1), minval=-2.0, maxval=2.0)
    env_j = stepwise_objective(env_problem(env))
    np.testing.assert_allclose(env_j(None, state, actions, None),
                               make_env_objective(env)(None, state, actions, None), rtol=1e-5)
    np.testing.assert_allclose(env_j(None, state, actions, None),
                               objective(env.params, state.physics, actions, None), rtol=1e-5)
    solve = lambda problem, p, obs: ilqr_solve(problem, p, obs, jnp.zeros((12, 1)),
                                               env.action_low, env.action_high, iterations=3)
    on_state = jax.jit(lambda s: solve(env_problem(env), None, s))(state)
    on_physics = jax.jit(lambda x: solve(objective.stepwise, env.params, x))(state.physics)
    np.testing.assert_allclose(on_state.actions, on_physics.actions, atol=1e-4)
    assert float(on_state.value) == pytest.approx(float(on_physics.value), rel=1e-4)


def test_ensemble_mean_problem_and_action_cost():
    model = EnsembleModel(3, 1, EnsembleConfig(num_members=2, num_elites=2,
                                               hidden_sizes=(8,), probabilistic=False))
    model_state = model.init(jax.random.key(0))
    reward_fn = lambda o, a, no: -jnp.sum(no**2)
    problem = ensemble_mean_problem(model, reward_fn, discount=0.95)
    objective = stepwise_objective(problem)
    obs = jnp.array([0.5, -0.2, 0.1])
    actions = jax.random.uniform(jax.random.key(1), (2, 5, 1), minval=-1.0, maxval=1.0)
    expected = []
    for seq in actions:  # the members' mean prediction, step by step
        o, ret = obs, 0.0
        for t, a in enumerate(seq):
            no = model.predict(model_state, o[None], a[None]).next_obs_mean.mean(0)[0]
            ret += 0.95**t * reward_fn(o, a, no)
            o = no
        expected.append(ret)
    np.testing.assert_allclose(objective(model_state, obs, actions, None), expected,
                               rtol=1e-5)
    # The agents' tuple (model_state, hparams, value_params) works too.
    np.testing.assert_allclose(objective((model_state, None, None), obs, actions, None),
                               expected, rtol=1e-5)
    planner = make_ilqr(objective, -jnp.ones(1), jnp.ones(1),
                        ILQRConfig(horizon=5, iterations=3, action_cost=1.0))
    _, _, info = plan_once(planner, model_state, obs)
    start = float(objective(model_state, obs, jnp.zeros((1, 5, 1)), None)[0])
    assert float(info["ilqr_objective"]) >= start - 1e-6  # never worse than the warm start
    penalty = 0.5 * np.sum(0.95 ** np.arange(5) * np.sum(np.asarray(info["plan"])**2, -1))
    assert float(info["ilqr_objective"]) == pytest.approx(
        float(info["best_return"]) - penalty, rel=1e-4, abs=1e-6)


def test_clear_errors():
    a, b, q, r, _ = lq_system()
    black_box = make_sequence_objective(lambda p, x, u: x, lambda x, u, nx: -jnp.sum(x**2))
    with pytest.raises(ValueError, match="stepwise objective.*sequence_problem"):
        make_ilqr(black_box, -jnp.ones(A), jnp.ones(A), ILQRConfig(horizon=H))
    with pytest.raises(ValueError, match="planner.regularization must be > 0"):
        ILQRConfig(regularization=0.0)
    with pytest.raises(ValueError, match="planner.regularization must be > 0"):
        make_ilqr(lq_objective(a, b, q, r), -jnp.ones(A), jnp.ones(A), ILQRConfig(),
                  ILQRParams(regularization=-1.0))
    with pytest.raises(ValueError, match="planner.action_cost must be >= 0"):
        ILQRConfig(action_cost=-0.1)
    with pytest.raises(ValueError, match="planner.kind must be 'ilqr'"):
        ILQRConfig(kind="ilqr2")
    with pytest.raises(KeyError):
        planner_spec("ilqr2")
    with pytest.raises(ValueError, match="parameterization"):
        ILQRConfig(parameterization="cubic", num_knots=4)
    with pytest.raises(ValueError, match="planner.iterations must be >= 1"):
        ILQRConfig(iterations=0)
    with pytest.raises(ValueError, match="discount"):
        sequence_problem(lambda p, x, u: x, lambda x, u, nx: 0.0, discount=0.0)


def test_registered_as_ilqr():
    assert planner_spec("ilqr") is ILQRConfig
    assert "ilqr" in planner_kinds()
    spec = switch_planner(CEMConfig(horizon=12, iterations=3), "ilqr")
    assert isinstance(spec, ILQRConfig)
    assert (spec.horizon, spec.iterations) == (12, 3)
    assert spec.default_params() == ILQRParams(1e-3, 0.0)
