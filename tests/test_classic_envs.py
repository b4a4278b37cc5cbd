"""Pure-JAX classic control tasks: API contract, determinism, reward/termination fns, physics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CLASSIC_ENVS

import mbjax.envs as envs
from mbjax.envs.classic import CartpoleParams


def _random_rollout(name, num_envs=8, steps=120, seed=0):
    env = envs.wrap_for_training(envs.make(name), num_envs=num_envs, episode_length=50)
    policy = envs.uniform_random_policy(env)

    @jax.jit
    def run(key):
        key_reset, key_roll = jax.random.split(key)
        state = env.reset(key_reset)
        return envs.rollout(env, policy, state, key_roll, steps)

    return env, run(jax.random.PRNGKey(seed))


@pytest.mark.parametrize("name", CLASSIC_ENVS)
def test_reset_step_jit_and_vmap(name, key):
    env = envs.make(name)
    state = jax.jit(env.reset)(key)
    assert state.obs.shape == (env.observation_size,)
    action = 0.5 * (env.action_low + env.action_high)
    nstate = jax.jit(env.step)(state, action)
    eager = env.step(env.reset(key), action)
    np.testing.assert_allclose(nstate.obs, eager.obs, rtol=1e-6, atol=1e-6)
    keys = jax.random.split(key, 5)
    bstate = jax.vmap(env.reset)(keys)
    bnext = jax.jit(jax.vmap(env.step))(bstate, jnp.zeros((5, env.action_size)))
    assert bnext.obs.shape == (5, env.observation_size)
    assert bnext.reward.shape == (5,)


@pytest.mark.parametrize("name", CLASSIC_ENVS)
def test_same_key_same_numbers(name):
    _, (s1, tr1) = _random_rollout(name, seed=3)
    _, (s2, tr2) = _random_rollout(name, seed=3)
    _, (_, tr3) = _random_rollout(name, seed=4)
    np.testing.assert_array_equal(tr1.obs, tr2.obs)
    np.testing.assert_array_equal(tr1.reward, tr2.reward)
    assert not np.allclose(tr1.obs, tr3.obs)


@pytest.mark.parametrize("name", CLASSIC_ENVS)
def test_reward_and_termination_fns_match_env(name):
    env, (_, tr) = _random_rollout(name)
    reward = jax.vmap(jax.vmap(env.reward_fn))(tr.obs, tr.action, tr.next_obs)
    done = jax.vmap(jax.vmap(env.termination_fn))(tr.obs, tr.action, tr.next_obs)
    np.testing.assert_allclose(reward, tr.reward, atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(done, tr.done)
    assert np.all(np.isfinite(tr.obs)) and np.all(np.isfinite(tr.reward))
    # Episodes of length 50 were truncated and auto-reset: 2 per env in 120 steps.
    assert tr.truncated.sum() == 2 * 8


def test_pendulum_step_matches_hand_computation():
    env = envs.make("pendulum")
    state = env.reset(jax.random.PRNGKey(0)).replace(physics=jnp.array([0.5, 0.1]))
    nstate = env.step(state, jnp.array([1.0]))
    # theta_dot' = 0.1 + (15 sin 0.5 + 3 * 1) * 0.05, theta' = 0.5 + theta_dot' * 0.05
    thdot = 0.1 + (15 * np.sin(0.5) + 3.0) * 0.05
    np.testing.assert_allclose(nstate.physics, [0.5 + thdot * 0.05, thdot], rtol=1e-6)
    np.testing.assert_allclose(nstate.reward, -(0.25 + 0.1 * 0.01 + 0.001), rtol=1e-6)
    # Torque is clipped to max_torque = 2.
    big = env.step(state, jnp.array([100.0]))
    two = env.step(state, jnp.array([2.0]))
    np.testing.assert_allclose(big.physics, two.physics)


def _cartpole_energy(params: CartpoleParams, x):
    """Kinetic + potential energy (J) of the cart with a uniform rod, theta = 0 upright."""
    mc, mp, l, g = params.cart_mass, params.pole_mass, params.pole_length, params.gravity
    h = l / 2
    _, th, xd, thd = x
    kinetic = 0.5 * (mc + mp) * xd**2 + mp * h * xd * thd * np.cos(th)
    kinetic += 0.5 * (mp * h**2 + mp * l**2 / 12) * thd**2
    return kinetic + mp * g * h * np.cos(th)


def test_cartpole_conserves_energy_without_friction_and_force():
    params = CartpoleParams(cart_friction=0.0)
    env = envs.make("cartpole_swingup", params=params)
    x0 = jnp.array([0.0, 2.0, 0.3, -1.0])

    def body(x, _):
        x = env.dynamics(params, x, jnp.zeros(1))
        return x, x

    _, xs = jax.lax.scan(body, x0, None, length=400)  # 20 s
    e0 = _cartpole_energy(params, np.asarray(x0))
    energies = np.array([_cartpole_energy(params, np.asarray(x)) for x in xs[::20]])
    assert np.max(np.abs(energies - e0)) < 1e-3 * max(1.0, abs(e0))
    # The pole really swings through large angles (not a trivially static test).
    assert np.ptp(np.cos(np.asarray(xs[:, 1]))) > 0.5


def test_cartpole_reward_is_one_when_upright_and_centred():
    env = envs.make("cartpole_swingup")
    up = env.observe(jnp.array([0.0, 0.0, 0.0, 0.0]))
    down = env.observe(jnp.array([0.0, jnp.pi, 0.0, 0.0]))
    zero = jnp.zeros(1)
    np.testing.assert_allclose(env.reward_fn(up, zero, up), 1.0, rtol=1e-6)
    np.testing.assert_allclose(env.reward_fn(up, zero, down), np.exp(-4.0), rtol=1e-5)
    assert env.reset(jax.random.PRNGKey(1)).obs[1] < -0.9  # starts hanging down


def _program(jaxpr) -> list[tuple[str, object]]:
    """(primitive, scan length) of every equation of a jaxpr, sub-jaxprs included."""
    out = []
    for eqn in jaxpr.eqns:
        out.append((eqn.primitive.name, eqn.params.get("length")))
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
                if hasattr(inner, "eqns"):
                    out += _program(inner)
    return out


@pytest.mark.parametrize("name", CLASSIC_ENVS)
def test_classic_batched_step_has_no_per_env_loop(name):
    """VmapWrapper's reset and step trace to the same program for 2 and 4096 envs (only
    array shapes differ): no Python loop (equations growing with N) and no scan or map
    over the envs (a trip count growing with N)."""

    def programs(num_envs):
        env = envs.VmapWrapper(envs.make(name), num_envs)
        key = jax.random.PRNGKey(0)
        state = jax.eval_shape(env.reset, key)
        action = jax.ShapeDtypeStruct((num_envs, env.action_size), jnp.float32)
        out = jax.eval_shape(env.step, state, action)
        assert out.obs.shape == (num_envs, env.observation_size)
        assert out.reward.shape == out.done.shape == (num_envs,)
        return (_program(jax.make_jaxpr(env.reset)(key).jaxpr),
                _program(jax.make_jaxpr(env.step)(state, action).jaxpr))

    small, large = programs(2), programs(4096)
    assert len(small[1]) > 0
    assert small == large
