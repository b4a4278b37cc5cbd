"""Known and almost-known dynamics: the true simulator as a model, and system identification."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbjax import sysid
from mbjax.envs.classic import CartpoleParams, CartpoleSwingup, Pendulum, PendulumParams
from mbjax.envs.wrappers import EpisodeWrapper
from mbjax.models.true_dynamics import TrueDynamicsModel, simulate

H, B = 6, 3

# ----------------------------------------------------------------------------------------
# The true simulator as a model
# ----------------------------------------------------------------------------------------


def make_env(name):
    return Pendulum() if name == "pendulum" else CartpoleSwingup()


def random_actions(env, key, shape):
    return jax.random.uniform(key, shape + (env.action_size,), minval=env.action_low,
                              maxval=env.action_high)


def by_hand(env, state, actions):
    """Steps the env one action at a time: obs [H+1, O], reward [H], done [H]."""
    obs, rew, done = [state.obs], [], []
    step = jax.jit(env.step)
    for a in actions:
        state = step(state, a)
        obs.append(state.obs)
        rew.append(state.reward)
        done.append(state.done)
    return np.stack(obs), np.stack(rew), np.stack(done)


@pytest.mark.parametrize("name", ["pendulum", "cartpole_swingup"])
def test_simulate_equals_stepping_by_hand(name):
    env = make_env(name)
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    state = env.reset(k1)
    actions = random_actions(env, k2, (B, H))
    out = jax.jit(lambda s, a: simulate(env, s, a))(state, actions)
    assert out.obs.shape == (B, H + 1, env.observation_size)
    assert out.reward.shape == out.terminated.shape == out.disagreement.shape == (B, H)
    for b in range(B):
        obs, rew, done = by_hand(env, state, actions[b])
        np.testing.assert_allclose(out.obs[b], obs, atol=1e-5)
        np.testing.assert_allclose(out.reward[b], rew, atol=1e-5)
        np.testing.assert_array_equal(out.terminated[b], done)
    np.testing.assert_array_equal(out.disagreement, 0.0)
    # One sequence [H, A]: outputs without the batch axis, same numbers.
    one = simulate(env, state, actions[1])
    assert one.obs.shape == (H + 1, env.observation_size)
    np.testing.assert_allclose(one.obs, out.obs[1], atol=1e-5)


def test_true_model_batched_states_vmap_and_reward_fn():
    env = Pendulum()
    model = TrueDynamicsModel(env)
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    states = jax.vmap(env.reset)(jax.random.split(k1, B))  # one start state per sequence
    actions = random_actions(env, k2, (B, H))
    out = jax.jit(lambda s, a: model.rollout_particles(s, a, None))(states, actions)
    for b in range(B):
        state_b = jax.tree_util.tree_map(lambda x, b=b: x[b], states)
        obs, rew, _ = by_hand(env, state_b, actions[b])
        np.testing.assert_allclose(out.obs[b], obs, atol=1e-5)
        np.testing.assert_allclose(out.reward[b], rew, atol=1e-5)
    # The pendulum's reward_fn reproduces its reward from observations.
    via_fn = model.rollout_particles(states, actions, None, reward_fn=env.reward_fn)
    np.testing.assert_allclose(via_fn.reward, out.reward, atol=1e-4)
    # vmap over a batch of planning problems (e.g. several envs planned at once).
    many = jax.vmap(lambda s, a: simulate(env, s, a))(states, actions[:, None])
    np.testing.assert_allclose(many.obs[:, 0], out.obs, atol=1e-5)
    # rollout(): one sequence from one state as P identical particles.
    state0 = jax.tree_util.tree_map(lambda x: x[0], states)
    parts = model.rollout(state0, actions[0], None, num_particles=4)
    assert parts.obs.shape == (4, H + 1, 3)
    np.testing.assert_allclose(parts.obs[3], out.obs[0], atol=1e-5)


def test_simulate_termination_is_sticky():
    env = Pendulum()
    k1, k2 = jax.random.split(jax.random.PRNGKey(2))
    state = env.reset(k1)
    actions = random_actions(env, k2, (4, 12))
    speeds = simulate(env, state, actions).obs[:, 1:, 2]
    # A threshold that no first step but some later step exceeds.
    thr = 0.5 * (float(speeds[:, 0].max()) + float(speeds.max()))
    flag = lambda obs, a, next_obs: (next_obs[2] > thr).astype(jnp.float32)
    out = simulate(env, state, actions, termination_fn=flag)
    raw = (out.obs[:, 1:, 2] > thr).astype(np.float32)
    np.testing.assert_array_equal(out.terminated, np.maximum.accumulate(raw, axis=1))
    assert 0 < float(out.terminated.mean()) < 1  # the check is not vacuous


@pytest.mark.mjx
@pytest.mark.slow
def test_simulate_brax_mjx_env_equals_stepping_by_hand():
    """The same code simulates an MJX env (State.physics = brax pipeline state)."""
    from mbjax.envs.brax_envs import InvertedPendulum

    env = InvertedPendulum(backend="mjx")
    state = jax.jit(env.reset)(jax.random.PRNGKey(0))
    horizon = 25
    pushes = jnp.stack([jnp.ones((horizon, 1)), -jnp.ones((horizon, 1)),
                        random_actions(env, jax.random.PRNGKey(1), (horizon,))])
    out = jax.jit(lambda s, a: simulate(env, s, a))(state, pushes)
    for b in range(3):
        obs, rew, done = by_hand(env, state, pushes[b])
        np.testing.assert_allclose(out.obs[b], obs, atol=1e-4)
        np.testing.assert_allclose(out.reward[b], rew, atol=1e-5)
        np.testing.assert_array_equal(out.terminated[b], np.maximum.accumulate(done))
    assert float(out.terminated[:2, -1].min()) == 1.0  # pushing for 1 s drops the pole


def test_true_model_errors():
    env = Pendulum()
    state = env.reset(jax.random.PRNGKey(0))
    with pytest.raises(TypeError, match="State"):
        simulate(env, state.obs, jnp.zeros((2, 3, 1)))
    with pytest.raises(ValueError, match=r"\(B, H, 1\)"):
        simulate(env, state, jnp.zeros((2, 3, 2)))
    states = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), 2))
    with pytest.raises(ValueError, match="2 start states for 3 action sequences"):
        simulate(env, states, jnp.zeros((3, 4, 1)))
    with pytest.raises(ValueError, match=r"\(B, H, A\)"):
        TrueDynamicsModel(env).rollout_particles(state, jnp.zeros((4, 1)))


# ----------------------------------------------------------------------------------------
# System identification
# ----------------------------------------------------------------------------------------

CARTPOLE_TRUE = CartpoleParams(cart_mass=0.7, pole_mass=0.3, pole_length=0.8,
                               cart_friction=0.2)
CARTPOLE_FREE = ("cart_mass", "pole_mass", "pole_length", "cart_friction")
# Every free parameter starts 30-50 % off.
CARTPOLE_INIT = CartpoleParams(cart_mass=0.7 * 1.4, pole_mass=0.3 * 0.6,
                               pole_length=0.8 * 1.5, cart_friction=0.2 * 0.65)
PENDULUM_TRUE = PendulumParams(mass=1.3, length=0.8, damping=0.1)
PENDULUM_INIT = PendulumParams(mass=1.3 * 0.6, length=0.8 * 1.4, damping=0.1 * 1.5)


def collect(env, key, num_envs=20, num_steps=100):
    """2k transitions of random actions (20 episodes x 100 steps, no resets)."""
    return jax.jit(lambda k: sysid.collect_trajectories(env, num_envs, num_steps, k))(key)


@pytest.fixture(scope="module")
def cartpole_data():
    env = CartpoleSwingup(params=CARTPOLE_TRUE)
    traj = collect(env, jax.random.PRNGKey(0))
    return env, sysid.one_step_data(traj)


@pytest.fixture(scope="module")
def pendulum_traj():
    env = Pendulum(params=PENDULUM_TRUE)
    return env, collect(env, jax.random.PRNGKey(1))


def max_rel_error(rep):
    return max(row["rel_error"] for row in rep.values())


def test_collect_and_cut_data_shapes(pendulum_traj):
    env, traj = pendulum_traj
    assert traj.states.shape == (20, 101, 2) and traj.actions.shape == (20, 100, 1)
    s, a, ns = sysid.one_step_data(traj)
    assert s.shape == ns.shape == (2000, 2) and a.shape == (2000, 1)
    np.testing.assert_allclose(jax.vmap(env.dynamics, (None, 0, 0))(env.params, s, a), ns,
                               atol=1e-5)
    s3, a3, ns3 = sysid.multi_step_data(traj, 3)
    assert s3.shape == (20 * 98, 2) and a3.shape == (20 * 98, 3, 1)
    assert ns3.shape == (20 * 98, 3, 2)
    np.testing.assert_allclose(ns3[:, 0], jax.vmap(env.dynamics, (None, 0, 0))(
        env.params, s3, a3[:, 0]), atol=1e-5)
    with pytest.raises(ValueError, match="auto-resets"):
        sysid.collect_trajectories(EpisodeWrapper(env, 50), 2, 3, jax.random.PRNGKey(0))


def test_gradient_sysid_recovers_cartpole_parameters(cartpole_data):
    env, (s, a, ns) = cartpole_data
    cfg = sysid.SysIdConfig(free=CARTPOLE_FREE, num_steps=400)
    fit = jax.jit(lambda s, a, ns: sysid.fit_parameters(env.dynamics, CARTPOLE_INIT, s, a,
                                                        ns, cfg))
    params, info = fit(s, a, ns)
    rep = sysid.report(CARTPOLE_TRUE, params, CARTPOLE_FREE)
    assert max(sysid.report(CARTPOLE_TRUE, CARTPOLE_INIT, CARTPOLE_FREE)[n]["rel_error"]
               for n in CARTPOLE_FREE) >= 0.3
    assert max_rel_error(rep) < 0.05, sysid.format_report(rep)
    assert params.gravity == CARTPOLE_TRUE.gravity  # fixed fields are untouched
    assert float(info["final_loss"]) < 1e-3 * float(info["initial_loss"])
    assert info["loss_history"].shape == (400,)
    assert not bool(info["data_nonfinite"]) and not bool(info["loss_nonfinite"])


def test_cem_sysid_recovers_cartpole_parameters(cartpole_data):
    env, (s, a, ns) = cartpole_data
    cfg = sysid.CEMSysIdConfig(free=CARTPOLE_FREE, population=64, num_elites=8,
                               iterations=30)
    params, info = jax.jit(lambda k: sysid.fit_parameters_cem(
        env.dynamics, CARTPOLE_INIT, s, a, ns, cfg, k))(jax.random.PRNGKey(3))
    rep = sysid.report(CARTPOLE_TRUE, params, CARTPOLE_FREE)
    assert max_rel_error(rep) < 0.05, sysid.format_report(rep)
    assert float(info["final_loss"]) < 1e-2 * float(info["initial_loss"])
    assert float(info["best_loss"]) <= float(info["initial_loss"])
    assert int(info["num_nonfinite"]) == 0


def test_pendulum_with_known_gravity_recovers_mass_length_damping(pendulum_traj):
    env, traj = pendulum_traj
    s, a, ns = sysid.one_step_data(traj)
    free = ("mass", "length", "damping")
    # Damping starts at 0 (the default pendulum's value), so it is fitted linearly.
    init = dataclasses.replace(PENDULUM_INIT, damping=0.0)
    cfg = sysid.SysIdConfig(free=free, linear=("damping",), angle_dims=(0,), num_steps=400)
    params, _ = sysid.fit_parameters(env.dynamics, init, s, a, ns, cfg)
    rep = sysid.report(PENDULUM_TRUE, params, free)
    assert max_rel_error(rep) < 0.05, sysid.format_report(rep)
    assert params.gravity == PENDULUM_TRUE.gravity


def test_pendulum_with_free_gravity_recovers_only_identifiable_combinations(pendulum_traj):
    """(c g, c l, m / c^2, b) fit every transition: only g/l, m l^2 and b are determined."""
    env, traj = pendulum_traj
    s, a, ns = sysid.one_step_data(traj)
    init = dataclasses.replace(PENDULUM_INIT, gravity=12.0)
    cfg = sysid.SysIdConfig(free=("mass", "length", "damping", "gravity"), angle_dims=(0,),
                            num_steps=400)
    params, info = sysid.fit_parameters(env.dynamics, init, s, a, ns, cfg)
    combos = lambda p: {"g_over_l": p.gravity / p.length, "m_l2": p.mass * p.length**2,
                        "damping": p.damping}
    rep = sysid.report(combos(PENDULUM_TRUE), combos(params))
    assert max_rel_error(rep) < 0.05, sysid.format_report(rep)
    assert float(info["final_loss"]) < 1e-3 * float(info["initial_loss"])
    # The same data are fitted exactly by a rescaled pendulum (c = 1.5).
    c = 1.5
    twin = dataclasses.replace(PENDULUM_TRUE, gravity=c * 10.0, length=c * 0.8,
                               mass=1.3 / c**2)
    step = jax.vmap(env.dynamics, (None, 0, 0))
    np.testing.assert_allclose(step(twin, s, a), step(PENDULUM_TRUE, s, a), atol=1e-4)


def test_multi_step_minibatch_fit(pendulum_traj):
    env, traj = pendulum_traj
    s, a, ns = sysid.multi_step_data(traj, 3)
    cfg = sysid.SysIdConfig(free=("mass", "length"), angle_dims=(0,), num_steps=300,
                            batch_size=256)
    init = dataclasses.replace(PENDULUM_TRUE, mass=1.3 * 1.5, length=0.8 * 0.7)
    params, info = sysid.fit_parameters(env.dynamics, init, s, a, ns, cfg,
                                        jax.random.PRNGKey(0))
    rep = sysid.report(PENDULUM_TRUE, params, ("mass", "length"))
    assert max_rel_error(rep) < 0.05, sysid.format_report(rep)
    assert params.damping == PENDULUM_TRUE.damping


def test_report_relative_errors():
    true = CartpoleParams(cart_mass=2.0, pole_mass=0.5, cart_friction=0.0)
    fitted = CartpoleParams(cart_mass=2.2, pole_mass=0.45, cart_friction=0.1)
    rep = sysid.report(true, fitted)
    assert set(rep) == {"cart_mass", "pole_mass", "pole_length", "cart_friction", "gravity"}
    assert rep["cart_mass"]["rel_error"] == pytest.approx(0.1)
    assert rep["pole_mass"]["rel_error"] == pytest.approx(0.1)
    assert rep["pole_mass"]["fitted"] == pytest.approx(0.45)
    assert rep["pole_length"]["rel_error"] == 0.0
    assert rep["cart_friction"]["rel_error"] == np.inf  # true value 0
    assert rep["cart_friction"]["abs_error"] == pytest.approx(0.1)
    arr = sysid.report({"m": jnp.array([1.0, 2.0])}, {"m": jnp.array([1.1, 2.0])})
    np.testing.assert_allclose(arr["m"]["rel_error"], [0.1, 0.0], rtol=1e-6)
    table = sysid.format_report(rep)
    assert "cart_mass" in table and "10.00%" in table
    with pytest.raises(ValueError, match="unknown parameter"):
        sysid.report(true, fitted, ("mass",))


def test_bad_input_gives_clear_errors():
    env = Pendulum()
    dyn = env.dynamics
    p = PendulumParams(damping=0.1)
    s, a, ns = jnp.zeros((10, 2)), jnp.zeros((10, 1)), jnp.zeros((10, 2))
    cfg = sysid.SysIdConfig(free=("mass",), num_steps=2)
    with pytest.raises(ValueError, match="number of transitions N differs"):
        sysid.fit_parameters(dyn, p, s, a[:9], ns, cfg)
    with pytest.raises(ValueError, match=r"next_states contains NaN or inf \(first at row 4"):
        sysid.fit_parameters(dyn, p, s, a, ns.at[4, 1].set(jnp.nan), cfg)
    with pytest.raises(ValueError, match="actions contains NaN"):
        sysid.fit_parameters_cem(dyn, p, s, a.at[0].set(jnp.inf), ns, None,
                                 jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['mas'\].*mass, length"):
        sysid.fit_parameters(dyn, p, s, a, ns, sysid.SysIdConfig(free=("mas",)))
    with pytest.raises(ValueError, match="linear names fields that are not free"):
        sysid.SysIdConfig(free=("mass",), linear=("damping",))
    with pytest.raises(ValueError, match=r"write \('mass',\)"):
        sysid.SysIdConfig(free="mass")
    with pytest.raises(ValueError, match="'damping' starts at 0.0.*linear"):
        sysid.fit_parameters(dyn, PendulumParams(), s, a, ns,
                             sysid.SysIdConfig(free=("damping",)))
    with pytest.raises(ValueError, match="multi-step"):
        sysid.fit_parameters(dyn, p, s, a[:, None], ns, cfg)
    with pytest.raises(ValueError, match="returned shape"):
        sysid.fit_parameters(lambda q, x, u: x[:1], p, s, a, ns, cfg)
    with pytest.raises(ValueError, match="needs a PRNG key"):
        sysid.fit_parameters_cem(dyn, p, s, a, ns, None, None)
    with pytest.raises(ValueError, match="pass a PRNG key"):
        sysid.fit_parameters(dyn, p, s, a, ns, sysid.SysIdConfig(batch_size=4))
    with pytest.raises(ValueError, match="num_elites"):
        sysid.CEMSysIdConfig(population=4, num_elites=8)
    with pytest.raises(ValueError, match="learning_rate"):
        sysid.SysIdConfig(learning_rate=0.0)
    looped = lambda q, x, u: jax.lax.while_loop(lambda c: c[1] < 2, lambda c: (
        c[0] * q.mass, c[1] + 1), (x, 0))[0]
    with pytest.raises(ValueError, match="use fit_parameters_cem"):
        sysid.fit_parameters(looped, p, s, a, ns, cfg)
    with pytest.raises(ValueError, match="angle_dims entry 5"):
        sysid.fit_parameters(dyn, p, s, a, ns, sysid.SysIdConfig(angle_dims=(5,)))


def test_nonfinite_data_under_jit_is_flagged_not_fitted():
    env = Pendulum()
    p = PendulumParams(damping=0.1)
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    s = jax.random.uniform(k1, (32, 2), minval=-1, maxval=1)
    a = jax.random.uniform(k2, (32, 1), minval=-2, maxval=2)
    ns = jax.vmap(env.dynamics, (None, 0, 0))(p, s, a).at[3, 0].set(jnp.nan)
    cfg = sysid.SysIdConfig(free=("mass",), num_steps=3)
    init = dataclasses.replace(p, mass=2.0)
    params, info = jax.jit(lambda s, a, ns: sysid.fit_parameters(env.dynamics, init, s, a,
                                                                 ns, cfg))(s, a, ns)
    assert bool(info["data_nonfinite"])
    assert float(params.mass) == pytest.approx(2.0)
    cem = sysid.CEMSysIdConfig(free=("mass",), iterations=3)
    params, info = jax.jit(lambda s, a, ns: sysid.fit_parameters_cem(
        env.dynamics, init, s, a, ns, cem, jax.random.PRNGKey(0)))(s, a, ns)
    assert bool(info["data_nonfinite"])
    assert float(params.mass) == pytest.approx(2.0)
