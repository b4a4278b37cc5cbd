"""Policy proposals: fraction 0 is the plain planner (same key, same numbers); the optimal
LQR policy's proposals bring a planner within 1 % of the known optimal cost x0' P x0;
the fraction is traced; splicing replaces exactly round(fraction N) rows; knot planners
get the proposals fitted to their knots."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mbjax.planners as P
from mbjax.planners.proposals import ProposalInputs, make_proposal_objective, splice

S, A, H = 3, 2, 8
RNG = np.random.default_rng(0)
A_MAT = np.eye(S) + 0.1 * RNG.standard_normal((S, S))
B_MAT = 0.3 * RNG.standard_normal((S, A))
Q, R = np.eye(S), 0.5 * np.eye(A)
X0 = jnp.array([0.8, -0.5, 0.3], jnp.float32)
LOW, HIGH = -4.0 * jnp.ones(A), 4.0 * jnp.ones(A)


def riccati():
    """Infinite-horizon DARE solution P and gain K (u = -K x), by fixed-point iteration."""
    p = Q.copy()
    for _ in range(2000):
        k = np.linalg.solve(R + B_MAT.T @ p @ B_MAT, B_MAT.T @ p @ A_MAT)
        p = Q + A_MAT.T @ p @ (A_MAT - B_MAT @ k)
    return p, k


P_MAT, K_GAIN = riccati()


def step(objective_params, x, a):
    del objective_params
    return jnp.asarray(A_MAT, jnp.float32) @ x + jnp.asarray(B_MAT, jnp.float32) @ a


def lq_objective(objective_params, x0, actions, key):
    """J(u) = -(sum_t x_t'Q x_t + u_t'R u_t + x_H'P x_H): with the DARE's P as terminal
    cost the stationary LQR policy is optimal for every H, and the optimum is -x0'P x0."""
    del key

    def one(u):
        def body(x, a):
            cost = x @ jnp.asarray(Q, jnp.float32) @ x + a @ jnp.asarray(R, jnp.float32) @ a
            return step(None, x, a), cost

        x_h, costs = jax.lax.scan(body, x0, u)
        return -(costs.sum() + x_h @ jnp.asarray(P_MAT, jnp.float32) @ x_h)

    return jax.vmap(one)(actions)


def lqr_policy(policy_params, x):
    return -policy_params @ x


PROPOSING = make_proposal_objective(lq_objective, step, lqr_policy, LOW, HIGH,
                                    noise_scale=0.02)
SPECS = {
    "random_shooting": P.RandomShootingConfig(horizon=H, population=64),
    "cem": P.CEMConfig(horizon=H, population=64, num_elites=8, iterations=2),
    "mppi": P.MPPIConfig(horizon=H, population=64, iterations=2),
    "icem": P.ICEMConfig(horizon=H, population=64, num_elites=8, iterations=2),
    "cem_gradient": P.CEMGradientConfig(horizon=H, population=32, num_elites=4,
                                        iterations=2, num_refine=2, refine_iterations=2),
}
OPTIMAL_COST = float(X0 @ P_MAT @ X0)


def plan_once(planner, objective_params, seed: int = 4):
    key = jax.random.PRNGKey(seed)
    return jax.jit(planner.plan)(planner.default_params, objective_params,
                                 planner.init(key), X0, key)


def inputs(fraction, gain=K_GAIN):
    return ProposalInputs(None, jnp.asarray(gain, jnp.float32), jnp.float32(fraction))


def test_splice_replaces_the_last_round_fraction_n_rows():
    samples, proposals = jnp.zeros((8, 2)), jnp.ones((8, 2))
    for fraction, rows in ((0.0, 0), (0.25, 2), (0.3, 2), (1.0, 8)):
        out = splice(samples, proposals, fraction)
        np.testing.assert_array_equal(out[:, 0], [0.0] * (8 - rows) + [1.0] * rows)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_fraction_zero_is_the_plain_planner(name):
    plain = P.make_planner(SPECS[name], lq_objective, LOW, HIGH)
    proposing = P.make_planner(SPECS[name], PROPOSING, LOW, HIGH)
    a_plain, s_plain, i_plain = plan_once(plain, None)
    a_prop, s_prop, i_prop = plan_once(proposing, inputs(0.0))
    np.testing.assert_allclose(a_prop, a_plain, atol=1e-6)
    np.testing.assert_allclose(i_prop["plan"], i_plain["plan"], atol=1e-6)
    np.testing.assert_allclose(i_prop["best_return"], i_plain["best_return"], rtol=1e-6)


@pytest.mark.parametrize("name", ["cem", "mppi", "icem"])
def test_optimal_policy_proposals_reach_the_lq_optimum(name):
    """fraction 1 with the optimal policy: within 1 % of x0'P x0; the plain planner with
    the same samples is far off (what the proposals buy)."""
    costs = {}
    for fraction in (0.0, 1.0):
        planner = P.make_planner(SPECS[name], PROPOSING, LOW, HIGH)
        _, _, info = plan_once(planner, inputs(fraction))
        costs[fraction] = -float(lq_objective(None, X0, info["plan"][None], None)[0])
    assert costs[1.0] <= 1.01 * OPTIMAL_COST, (costs, OPTIMAL_COST)
    assert costs[0.0] > 1.2 * OPTIMAL_COST, (costs, OPTIMAL_COST)


def test_fraction_is_traced():
    planner = P.make_planner(SPECS["cem"], PROPOSING, LOW, HIGH)
    fractions = jnp.array([0.0, 0.5, 1.0])

    def plan_with(fraction):
        return plan_once(planner, inputs(fraction))[2]["plan"]

    batched = jax.vmap(plan_with)(fractions)
    for i, f in enumerate(fractions):
        np.testing.assert_allclose(batched[i], plan_with(f), atol=1e-5)
    assert float(jnp.abs(batched[0] - batched[2]).max()) > 1e-2  # the fraction matters


def test_knot_planners_get_proposals_fitted_to_their_knots():
    """One knot per step with zero-order hold: the same numbers as per-step proposals; a
    linear 4-knot planner with fraction 1 plans the least-squares knot fit of the LQR
    rollout (its best is within 10 % of the optimum; the knots cannot represent it)."""
    spec = SPECS["cem"]
    per_step = plan_once(P.make_planner(spec, PROPOSING, LOW, HIGH), inputs(0.5))[2]
    held = plan_once(P.make_planner(dataclasses.replace(spec, parameterization="zero"),
                                    PROPOSING, LOW, HIGH), inputs(0.5))[2]
    np.testing.assert_allclose(held["plan"], per_step["plan"], atol=1e-5)
    knots = dataclasses.replace(spec, parameterization="linear", num_knots=4)
    info = plan_once(P.make_planner(knots, PROPOSING, LOW, HIGH), inputs(1.0))[2]
    cost = -float(lq_objective(None, X0, info["plan"][None], None)[0])
    assert cost <= 1.1 * OPTIMAL_COST, (cost, OPTIMAL_COST)


def test_bad_noise_scale_is_rejected():
    with pytest.raises(ValueError, match="noise_scale must be >= 0"):
        make_proposal_objective(lq_objective, step, lqr_policy, LOW, HIGH, noise_scale=-1.0)


def test_distill_teacher_with_student_proposals():
    """DAgger's teacher with proposal_fraction = 1 plans among the student's own rollouts:
    its action is within the proposals' noise of the student's (fraction 0: far from it);
    the fraction is a traced hyper-parameter; a population-free planner is rejected."""
    from mbjax.agents.distill import DistillConfig, make_distill_agent

    config = DistillConfig(planner=P.MPPIConfig(horizon=10, population=64, kappa=1.0,
                                                beta=0.7, sigma=1.0),
                           proposal_fraction=1.0, proposal_noise=0.05)
    agent = make_distill_agent(config)
    ts = agent.init(jax.random.PRNGKey(0))
    env_state = jax.tree_util.tree_map(lambda x: x[0], agent.env.reset(jax.random.PRNGKey(1)))
    planner_state = agent.planner.init(jax.random.PRNGKey(2))
    student_action = agent.student_act(ts.student, env_state.obs)
    half = (agent.task_env.action_high - agent.task_env.action_low) / 2
    gaps = {}
    for fraction in (0.0, 1.0):
        hparams = ts.hparams.replace(proposal_fraction=jnp.float32(fraction))
        action, _ = jax.jit(agent.teacher_plan)(ts.replace(hparams=hparams), env_state,
                                                planner_state, jax.random.PRNGKey(3))
        gaps[fraction] = float(jnp.max(jnp.abs(action - student_action) / half))
    assert gaps[1.0] < 0.1, gaps  # 2 sigma of the proposals' noise
    assert gaps[0.0] > 0.2, gaps
    assert "proposal_fraction" in agent.config.__dataclass_fields__
    with pytest.raises(ValueError, match="draws no candidate population"):
        DistillConfig(planner=P.GradientConfig(horizon=5), proposal_fraction=0.5)
    with pytest.raises(ValueError, match=r"proposal_fraction must be in \[0, 1\]"):
        DistillConfig(proposal_fraction=1.5)


def test_mbpo_mpc_with_actor_proposals():
    """acting='mpc' with proposal_fraction = 1: the planner's action is within the
    proposals' noise of the SAC actor's mean action, and much nearer it than the plain
    planner's (the untrained actor acts near the middle of the bounds, as does a plain
    planner's first plan, so "far" is relative here)."""
    from mbjax.agents.mbpo import make_mbpo_agent
    from mbjax.runner import presets

    base_config = presets.get("mpc-value-cpu")
    config = dataclasses.replace(base_config, proposal_fraction=1.0, proposal_noise=0.05,
                                 init_steps=0)
    agent = make_mbpo_agent(config)
    ts = agent.init(jax.random.PRNGKey(0))
    obs = ts.env_state.obs[0]
    actor_action = agent.sac.act(ts.sac_state, obs, jax.random.PRNGKey(0), True)
    half = (agent.task_env.action_high - agent.task_env.action_low) / 2
    gaps = {}
    for fraction in (0.0, 1.0):
        inputs = P.ProposalInputs((ts.model_state, ts.hparams.objective, ts.sac_state),
                                  ts.sac_state, jnp.float32(fraction))
        action, _, _ = jax.jit(agent.planner.plan)(
            ts.hparams.planner, inputs, agent.planner.init(jax.random.PRNGKey(1)), obs,
            jax.random.PRNGKey(2))
        gaps[fraction] = float(jnp.max(jnp.abs(action - actor_action) / half))
    assert gaps[1.0] < 0.1 and gaps[1.0] < 0.25 * gaps[0.0], gaps
    with pytest.raises(ValueError, match="acting='policy' there is no planner"):
        dataclasses.replace(base_config, acting="policy", proposal_fraction=0.5)
