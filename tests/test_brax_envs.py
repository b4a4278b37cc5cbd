"""Brax tasks: reward_fn/termination_fn reproduce the env on real transitions.

Each rollout test compiles ONE jitted function per env (reset of a small batch, then a
``lax.scan`` of random actions through ``wrap_for_training`` with a short episode so
that truncation and auto-reset happen too) and calls it twice with the same key.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mbjax  # noqa: F401  (sets XLA flags before any JAX computation)
from mbjax import envs

ALL = ["halfcheetah", "hopper", "walker2d", "ant", "reacher", "pusher", "inverted_pendulum"]
TERMINATING = {"hopper", "walker2d", "ant", "inverted_pendulum"}

# name -> (overrides, num_envs, num_steps, episode_length). Overrides of reward weights
# check that they reach brax (reward_fn uses ours). Pusher's MJX step is slow on CPU.
CASES = {
    "halfcheetah": (dict(forward_reward_weight=1.5, ctrl_cost_weight=0.2), 4, 40, 25),
    "hopper": (dict(ctrl_cost_weight=0.01), 4, 40, 25),
    "walker2d": ({}, 4, 40, 25),
    "ant": ({}, 4, 40, 25),
    "reacher": ({}, 4, 40, 25),
    "pusher": ({}, 4, 12, 8),
    "inverted_pendulum": ({}, 4, 40, 8),  # episodes end early: short limit to truncate
}


def _check_step_copies_metrics(env, key):
    """Trace-time check that ``step`` neither mutates nor shares the input metrics."""
    s0 = env.reset(key)
    before = dict(s0.metrics)
    s1 = env.step(s0, jnp.zeros(env.action_size))
    assert s1.metrics is not s0.metrics
    assert s0.metrics.keys() == before.keys()
    assert all(s0.metrics[k] is before[k] for k in before)
    return s1


@pytest.mark.mjx
@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_rollout_matches_reward_and_termination_fns(name):
    overrides, num_envs, num_steps, episode_length = CASES[name]
    env = envs.make(name, **overrides)
    assert env.name == name and env.default_episode_length == 1000
    assert env.action_low.shape == env.action_high.shape == (env.action_size,)
    np.testing.assert_array_equal(env.action_low, -1.0)
    np.testing.assert_array_equal(env.action_high, 1.0)
    wenv = envs.wrap_for_training(
        env, episode_length=episode_length, num_envs=num_envs, reset_mode="cached"
    )
    policy = envs.uniform_random_policy(env)
    traces = []

    @jax.jit
    def run(key):
        traces.append(1)  # runs once per trace (compilation)
        key_reset, key_act = jax.random.split(key)
        state = wenv.reset(key_reset)
        _, tr = envs.rollout(wenv, policy, state, key_act, num_steps)
        per_step = jax.vmap(jax.vmap(env.reward_fn))
        reward = per_step(tr.obs, tr.action, tr.next_obs)
        term = jax.vmap(jax.vmap(env.termination_fn))(tr.obs, tr.action, tr.next_obs)
        return tr, reward, term

    key = jax.random.PRNGKey(0)
    tr, reward, term = jax.device_get(run(key))
    tr2, _, _ = jax.device_get(run(key))
    assert len(traces) == 1  # the second call reused the compiled function

    shape = (num_steps, num_envs)
    assert tr.obs.shape == tr.next_obs.shape == shape + (env.observation_size,)
    assert tr.action.shape == shape + (env.action_size,)
    assert reward.shape == term.shape == tr.reward.shape == tr.done.shape == shape
    assert reward.dtype == term.dtype == np.float32
    for leaf in (tr.obs, tr.next_obs, tr.reward, tr.done):
        assert np.all(np.isfinite(leaf))
    assert np.all((tr.action >= -1.0) & (tr.action <= 1.0))
    # Different envs of the batch start from different (random) states.
    assert not np.allclose(tr.obs[0, 0], tr.obs[0, 1])

    np.testing.assert_allclose(reward, tr.reward, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(term, tr.done)
    assert set(np.unique(tr.done)) <= {0.0, 1.0}
    assert tr.truncated.sum() > 0  # auto-reset after a time limit happened
    if name in TERMINATING:
        assert 0 < tr.done.sum() < tr.done.size, "want terminal and non-terminal steps"
    else:
        assert tr.done.sum() == 0

    # Same key, same trajectory (bit for bit).
    jax.tree.map(np.testing.assert_array_equal, tr, tr2)

    # brax updates metrics in place; the adapter must copy (checked while tracing only).
    jax.eval_shape(lambda k: _check_step_copies_metrics(env, k), key)


@pytest.mark.mjx
@pytest.mark.slow
def test_jit_reset_and_step_unbatched():
    env = envs.make("inverted_pendulum")
    reset, step = jax.jit(env.reset), jax.jit(env.step)
    key = jax.random.PRNGKey(3)
    s0 = reset(key)
    s0_again = reset(key)
    np.testing.assert_array_equal(s0.obs, s0_again.obs)
    assert s0.obs.shape == (env.observation_size,)
    assert s0.reward.shape == s0.done.shape == ()
    assert float(s0.done) == 0.0
    action = jnp.array([0.5], dtype=jnp.float32)
    s1 = step(s0, action)
    assert s1.obs.shape == (env.observation_size,)
    assert "time_out" not in s1.info
    np.testing.assert_allclose(env.reward_fn(s0.obs, action, s1.obs), s1.reward)
    np.testing.assert_array_equal(env.termination_fn(s0.obs, action, s1.obs), s1.done)
    with pytest.raises(envs.EnvError):
        step(s0, jnp.zeros(2))


@pytest.mark.mjx
@pytest.mark.slow
def test_termination_fns_on_constructed_observations():
    """Health checks both ways on hand-made observations (no compilation)."""
    hopper = envs.make("hopper")
    obs = np.zeros(hopper.observation_size, np.float32)
    obs[0] = 1.25  # height; pitch and velocities 0: healthy
    a = jnp.zeros(hopper.action_size)
    assert float(hopper.termination_fn(obs, a, obs)) == 0.0
    for index, value in [(0, 0.6), (1, 0.3), (1, -0.3), (hopper.observation_size - 1, 150.0)]:
        bad = obs.copy()
        bad[index] = value  # too low, tilted, or an unclipped velocity out of range
        assert float(hopper.termination_fn(obs, a, bad)) == 1.0
        assert hopper.termination_fn(obs, a, bad).shape == ()
    # Without termination the healthy bonus is paid only when healthy.
    soft = envs.make("hopper", terminate_when_unhealthy=False)
    bad = obs.copy()
    bad[0] = 0.6
    assert float(soft.termination_fn(obs, a, bad)) == 0.0
    assert float(soft.reward_fn(obs, a, obs) - soft.reward_fn(obs, a, bad)) == 1.0

    walker = envs.make("walker2d")
    obs = np.zeros(walker.observation_size, np.float32)
    obs[0] = 1.25
    a = jnp.zeros(walker.action_size)
    assert float(walker.termination_fn(obs, a, obs)) == 0.0
    for index, value in [(0, 0.7), (0, 2.1), (1, 1.1)]:
        bad = obs.copy()
        bad[index] = value
        assert float(walker.termination_fn(obs, a, bad)) == 1.0

    ant = envs.make("ant")
    obs = np.zeros(ant.observation_size, np.float32)
    obs[-1] = 0.55  # brax's torso height (x.pos), the last appended entry
    a = jnp.zeros(ant.action_size)
    assert float(ant.termination_fn(obs, a, obs)) == 0.0
    for z in (0.1, 1.1):
        bad = obs.copy()
        bad[-1] = z
        assert float(ant.termination_fn(obs, a, bad)) == 1.0

    pendulum = envs.make("inverted_pendulum")
    upright, fallen = np.zeros(4, np.float32), np.array([0, 0.25, 0, 0], np.float32)
    a = jnp.zeros(1)
    assert float(pendulum.termination_fn(upright, a, upright)) == 0.0
    assert float(pendulum.termination_fn(upright, a, fallen)) == 1.0


@pytest.mark.mjx
@pytest.mark.slow
def test_constructor_options():
    """Options reach brax (construction only, no compilation)."""
    reacher = envs.make("reacher")
    assert reacher.dt == pytest.approx(0.02) and reacher.backend == "mjx"
    assert envs.make("reacher", n_frames=4).dt == pytest.approx(0.04)
    with pytest.raises(ValueError, match="n_frames"):
        envs.make("reacher", n_frames=0)
    cheetah = envs.make("halfcheetah", backend="generalized")
    assert cheetah.backend == cheetah.brax_env.backend == "generalized"
    assert (cheetah.observation_size, cheetah.action_size) == (18, 6)
    with pytest.raises(ValueError, match="healthy_z_range"):
        envs.make("walker2d", healthy_z_range=(2.0, 0.8))


def test_brax_tasks_registered():
    assert set(ALL) <= set(envs.names())
    assert envs.override_keys("reacher") == ["backend", "n_frames"]
    assert "healthy_reward" in envs.override_keys("hopper")


def test_unknown_backend_raises():
    with pytest.raises(ValueError, match="valid backends: mjx, generalized, positional, spring"):
        envs.make("halfcheetah", backend="nope")


def test_unknown_override_raises_with_valid_keys():
    with pytest.raises(TypeError, match="not_a_key") as err:
        envs.make("hopper", not_a_key=1)
    assert "valid options: backend, forward_reward_weight, ctrl_cost_weight" in str(err.value)
