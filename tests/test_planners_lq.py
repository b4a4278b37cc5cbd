"""Planners find the optimum of linear-quadratic problems (known answer by least squares),
and MPC / open-loop execution on the same linear system: warm starts after k executed
actions, re-initialisation after an auto-reset, open-loop returns."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mbjax.envs as envs
import mbjax.planners as P
from mbjax.envs.wrappers import EpisodeWrapper, VmapWrapper

H, S, A = 10, 3, 2
LOW, HIGH = -jnp.full(A, 4.0), jnp.full(A, 4.0)


def lq_system(seed):
    """(F [S, S], G [S, A], x0 [S]) of x' = F x + G u, and the reward
    r(x, u, x') = -(x'^T Q x' + u^T R u) with Q = I, R = 0.1 I."""
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    f = jnp.eye(S) + 0.15 * jax.random.normal(k1, (S, S))
    g = 0.5 * jax.random.normal(k2, (S, A))
    x0 = jax.random.normal(k3, (S,))

    def reward(x, u, nx):
        return -(nx @ nx + 0.1 * u @ u)

    return f, g, x0, reward


def lq_problem(seed):
    """x' = F x + G u; J = -(sum_{t=1..H} x_t' Q x_t + sum_t u_t' R u_t); optimum by LS."""
    f, g, x0, reward = lq_system(seed)
    q, r = jnp.eye(S), 0.1 * jnp.eye(A)

    def step(params, x, u):
        return f @ x + g @ u

    objective = P.make_sequence_objective(step, reward)
    # Stacked prediction x_{1..H} = M u + c, solved in float64 with numpy.
    fn, gn, x0n = (np.asarray(v, np.float64) for v in (f, g, x0))
    m = np.zeros((H * S, H * A))
    c = np.zeros(H * S)
    for t in range(1, H + 1):
        c[(t - 1) * S:t * S] = np.linalg.matrix_power(fn, t) @ x0n
        for s in range(t):
            m[(t - 1) * S:t * S, s * A:(s + 1) * A] = np.linalg.matrix_power(fn, t - 1 - s) @ gn
    qbar = np.kron(np.eye(H), np.asarray(q))
    rbar = np.kron(np.eye(H), np.asarray(r))
    u_opt = -np.linalg.solve(m.T @ qbar @ m + rbar, m.T @ qbar @ c)
    assert np.all(np.abs(u_opt) < 4.0)  # bounds do not bind
    cost = lambda u: float(-objective(None, x0, jnp.asarray(u, jnp.float32).reshape(1, H, A),
                                      None)[0])
    return objective, x0, u_opt.reshape(H, A), cost


def _run(planner, params, x0, seed=0):
    state = planner.init(jax.random.PRNGKey(seed))
    _, _, info = jax.jit(planner.plan)(params, None, state, x0, jax.random.PRNGKey(seed))
    return info["plan"]


SEEDS = [0, 1, 2]


@pytest.mark.parametrize("seed", SEEDS)
def test_gradient_planner_within_1_percent(seed):
    objective, x0, u_opt, cost = lq_problem(seed)
    planner = P.make_gradient_planner(objective, LOW, HIGH, P.GradientConfig(
        horizon=H, num_restarts=4, iterations=1000, bound="projection"),
        P.GradientParams(learning_rate=0.05))
    plan = _run(planner, planner.default_params, x0)
    assert cost(plan) <= 1.01 * cost(u_opt), (cost(plan), cost(u_opt))


def _sampling_planner(name, objective):
    """Settings that converge on 20-D LQ problems (more samples than a 7-step MPC needs)."""
    if name == "cem":
        return P.make_cem(objective, LOW, HIGH, P.CEMConfig(
            horizon=H, population=2000, num_elites=100, iterations=30),
            P.CEMParams(alpha=0.1, init_std_scale=0.5))
    if name == "icem":
        return P.make_icem(objective, LOW, HIGH, P.ICEMConfig(
            horizon=H, population=2000, num_elites=100, iterations=20, population_decay=1.0),
            P.ICEMParams(noise_exponent=0.0, init_std_scale=0.5))
    if name == "mppi":
        return P.make_mppi(objective, LOW, HIGH, P.MPPIConfig(
            horizon=H, population=1000, iterations=30),
            P.MPPIParams(kappa=10.0, beta=1.0, sigma=0.1))
    return P.make_cem_gradient(objective, LOW, HIGH, P.CEMConfig(
        horizon=H, population=200, num_elites=20, iterations=5), num_refine=4,
        refine_iterations=400, params=P.CEMGradientParams(learning_rate=0.05))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", ["cem", pytest.param("icem", marks=pytest.mark.slow),
                                  "mppi", "cem_gradient"])
def test_sampling_planners_within_5_percent(seed, name):
    objective, x0, u_opt, cost = lq_problem(seed)
    planner = _sampling_planner(name, objective)
    plan = _run(planner, planner.default_params, x0)
    zero = cost(np.zeros((H, A)))
    assert cost(plan) <= 1.05 * cost(u_opt), (name, cost(plan), cost(u_opt), zero)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_shooting_beats_zero_sequence(seed):
    objective, x0, u_opt, cost = lq_problem(seed)
    planner = P.make_random_shooting(objective, LOW / 2, HIGH / 2, P.RandomShootingConfig(
        horizon=H, population=2000, distribution="gaussian"))
    plan = _run(planner, planner.default_params, x0)
    assert cost(plan) < cost(np.zeros((H, A)))


# --- executing plans on the linear system ------------------------------------------------


class LinearEnv(envs.Env):
    """The LQ system of ``lq_system(seed)`` as an env: obs = x, physics = (x, t); with
    ``terminate_at`` > 0 the episode terminates at step t = terminate_at."""

    name = "test_linear"
    observation_size = S
    action_size = A
    dt = 0.1

    def __init__(self, seed=0, terminate_at=0):
        self.f, self.g, self.x0, self.reward = lq_system(seed)
        self.terminate_at = terminate_at

    action_low = property(lambda self: LOW)
    action_high = property(lambda self: HIGH)

    def _reset(self, key):
        zero = jnp.zeros(())
        return envs.State(physics={"x": self.x0, "t": zero}, obs=self.x0, reward=zero,
                          done=zero)

    def _step(self, state, u):
        x, t = state.physics["x"], state.physics["t"] + 1
        nx = self.f @ x + self.g @ u
        done = jnp.where((self.terminate_at > 0) & (t >= self.terminate_at), 1.0, 0.0)
        return state.replace(physics={"x": nx, "t": t}, obs=nx, reward=self.reward(x, u, nx),
                             done=done)


def small_planner(name, objective):
    if name == "cem":
        return P.make_cem(objective, LOW, HIGH, P.CEMConfig(
            horizon=H, population=64, num_elites=8, iterations=2))
    return P.make_mppi(objective, LOW, HIGH, P.MPPIConfig(
        horizon=H, population=64, iterations=2, kappa=1.0, beta=0.7, sigma=0.5))


def warm_start_after(name, state, plan, k):
    """The known warm start after executing plan[:k] (plans [..., H, A]): the plan shifted
    by k, the k last steps the middle of the bounds (CEM, 0 here) or plan[H - 1] (MPPI),
    and for MPPI a_{-1} = plan[k - 1], the last executed action."""
    if name == "cem":
        fill = jnp.zeros_like(plan[..., :k, :])
        return state.replace(mean=jnp.concatenate([plan[..., k:, :], fill], axis=-2))
    fill = jnp.repeat(plan[..., -1:, :], k, axis=-2)
    return state.replace(mean=jnp.concatenate([plan[..., k:, :], fill], axis=-2),
                         prev_action=plan[..., k - 1, :])


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("name", ["cem", "mppi"])
def test_mpc_replan_every_k_warm_starts_from_the_plan_shifted_by_k(name, batched):
    k, num_steps, n = 3, 6, 2
    objective = lq_problem(0)[0]
    planner, env = small_planner(name, objective), LinearEnv(0)
    if batched:
        planner, env = P.batch(planner), VmapWrapper(env, n)
    key = jax.random.PRNGKey(0)
    init_keys = jax.random.split(key, n) if batched else key
    env_state = env.reset(key)
    _, pstate, transitions, infos = jax.jit(lambda s, ps, key: P.mpc(
        env, planner, planner.default_params, None, s, ps, key, num_steps,
        replan_every=k))(env_state, planner.init(init_keys), key)
    # By hand: plan, execute k actions, replan from the known warm start.
    plan = jax.jit(planner.plan)
    manual_state, s, actions = planner.init(init_keys), env_state, []
    for i, key_i in enumerate(jax.random.split(key, num_steps // k)):
        _, after, info = plan(planner.default_params, None, manual_state, s.obs,
                              jax.random.split(key_i, n) if batched else key_i)
        np.testing.assert_allclose(infos["plan"][i], info["plan"], rtol=1e-5, atol=1e-5)
        for t in range(k):
            a = info["plan"][..., t, :]
            s = env.step(s, a)
            actions.append(a)
        manual_state = warm_start_after(name, after, info["plan"], k)
    np.testing.assert_allclose(transitions.action, jnp.stack(actions), rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(pstate, manual_state, rtol=1e-5, atol=1e-5)


def run_cem_mpc(env, env_state, num_steps, replan_every, batched=False):
    """(planner, final planner state, transitions, infos) of CEM MPC from env_state."""
    planner = small_planner("cem", lq_problem(0)[0])
    if batched:
        planner = P.batch(planner)
    key = jax.random.PRNGKey(0)
    pstate = planner.init(jax.random.split(key, 2) if batched else key)
    _, pstate, transitions, infos = jax.jit(lambda s, ps, key: P.mpc(
        env, planner, planner.default_params, None, s, ps, key, num_steps,
        replan_every=replan_every))(env_state, pstate, key)
    return planner, pstate, transitions, infos


# (terminate_at, episode_length, num_steps, replan_every): an auto-reset after a
# termination or a truncation, at the end of a replanning block or inside it.
RESETS = [(3, 100, 3, 1), (0, 3, 3, 1), (3, 100, 3, 3), (2, 100, 3, 3)]


@pytest.mark.parametrize("terminate_at,episode_length,num_steps,k", RESETS)
def test_mpc_reinitialises_the_warm_start_after_an_auto_reset(terminate_at, episode_length,
                                                               num_steps, k):
    env = EpisodeWrapper(LinearEnv(0, terminate_at), episode_length)
    env_state = env.reset(jax.random.PRNGKey(1))
    planner, pstate, transitions, _ = run_cem_mpc(env, env_state, num_steps, k)
    assert float(jnp.max(transitions.done + transitions.truncated)) == 1.0  # it ended
    chex.assert_trees_all_equal(pstate, planner.init(jax.random.PRNGKey(2)))  # fresh
    # One step earlier nothing ended: the warm start is the shifted plan, not the init.
    if k == 1:
        _, before, _, infos = run_cem_mpc(env, env_state, num_steps - 1, 1)
        chex.assert_trees_all_close(before, warm_start_after("cem", before,
                                                             infos["plan"][-1], 1))
        assert float(jnp.abs(before.mean).max()) > 0.1


def test_mpc_reinitialises_only_the_envs_that_reset():
    n = 2
    env = VmapWrapper(EpisodeWrapper(LinearEnv(0, terminate_at=3), 100), n)
    env_state = env.reset(jax.random.PRNGKey(1))
    # Env 1 starts 10 steps before the others: it does not terminate within 3 steps.
    physics = dict(env_state.physics, t=jnp.array([0.0, -10.0]))
    env_state = env_state.replace(physics=physics)
    planner, pstate, transitions, infos = run_cem_mpc(env, env_state, 3, 1, batched=True)
    np.testing.assert_array_equal(transitions.done[-1], [1.0, 0.0])
    fresh = planner.init(jax.random.split(jax.random.PRNGKey(2), n))
    np.testing.assert_array_equal(pstate.mean[0], fresh.mean[0])
    kept = warm_start_after("cem", pstate, infos["plan"][-1], 1)
    np.testing.assert_allclose(pstate.mean[1], kept.mean[1])
    assert float(jnp.abs(pstate.mean[1]).max()) > 0.1


def test_open_loop_executes_the_plan_and_earns_its_optimal_return():
    objective, x0, u_opt, cost = lq_problem(0)
    env = LinearEnv(0)
    planner = P.make_gradient_planner(objective, LOW, HIGH, P.GradientConfig(
        horizon=H, num_restarts=2, iterations=400, bound="projection", learning_rate=0.1))
    key = jax.random.PRNGKey(0)
    run = jax.jit(lambda s, key: P.open_loop(env, planner, planner.default_params, None, s,
                                             planner.init(key), key))
    final, transitions, info = run(env.reset(key), key)
    np.testing.assert_array_equal(transitions.action, info["plan"])  # all H actions
    # Deterministic dynamics: the executed return is the predicted one, within 1 % of the
    # least-squares optimum, and the final state is x_H = F^H x0 + sum_t F^(H-1-t) G u_t.
    np.testing.assert_allclose(transitions.reward.sum(), info["best_return"], rtol=1e-5)
    assert -float(transitions.reward.sum()) <= 1.01 * cost(u_opt)
    f, g = (np.asarray(v, np.float64) for v in (env.f, env.g))
    x = np.asarray(x0, np.float64)
    for u in np.asarray(info["plan"], np.float64):
        x = f @ x + g @ u
    np.testing.assert_allclose(final.obs, x, rtol=1e-4, atol=1e-5)
