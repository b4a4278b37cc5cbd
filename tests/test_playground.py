"""MuJoCo Playground adapter (``playground/<EnvName>``); needs the ``playground`` extra.

The fast tests build envs (MJX model upload + shape tracing, no XLA compile) or use a
tiny stand-in playground env; the ``mjx``/``slow`` tests compile CartpoleSwingup.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip(
    "mujoco_playground",
    reason="the 'playground' extra is not installed (pip install 'mbjax[playground]'; "
    "it needs Python >= 3.11)")

import mbjax.envs as envs  # noqa: E402
from mbjax.envs import playground as pg_adapter  # noqa: E402
from mbjax.envs.base import RewardFnUnavailableError  # noqa: E402

ENV_NAME = "playground/CartpoleSwingup"
NUM_ENVS = 3
NUM_STEPS = 20


@pytest.fixture(scope="module")
def env() -> pg_adapter.PlaygroundEnv:
    return envs.make(ENV_NAME)


# ----------------------------------------------------------------------------------------
# Construction and errors (no compile)
# ----------------------------------------------------------------------------------------


def test_cartpole_sizes_and_config(env):
    assert isinstance(env, pg_adapter.PlaygroundEnv)
    assert isinstance(env, envs.Env)
    assert env.name == ENV_NAME
    assert env.observation_size == 5
    assert env.action_size == 1
    assert env.dt == pytest.approx(0.01)
    assert env.default_episode_length == 1000
    np.testing.assert_array_equal(env.action_low, -np.ones(1))
    np.testing.assert_array_equal(env.action_high, np.ones(1))
    assert not env.has_reward_fn
    # Physics runs on MJX's JAX backend, never MuJoCo Warp.
    assert env.pg_env.mjx_model.impl.value == "jax"


def test_override_keys_are_config_fields():
    keys = envs.override_keys(ENV_NAME)
    assert {"ctrl_dt", "sim_dt", "episode_length", "action_repeat"} <= set(keys)
    # Warp-only and vision fields are not offered.
    assert not {"impl", "naconmax", "njmax", "vision", "vision_config"} & set(keys)


def test_overrides_applied():
    env = envs.make(ENV_NAME, ctrl_dt=0.02, sim_dt=0.01, episode_length=500, action_repeat=2)
    assert env.pg_env.dt == pytest.approx(0.02)
    assert env.pg_env.n_substeps == 2
    assert env.dt == pytest.approx(0.04)
    assert env.default_episode_length == 250


def test_bad_override_key_lists_valid_ones():
    with pytest.raises(TypeError, match="bogus") as info:
        envs.make(ENV_NAME, bogus=1)
    assert "ctrl_dt" in str(info.value) and "episode_length" in str(info.value)
    # The factory itself validates too (its signature is only metadata).
    factory = pg_adapter.make_playground_factory("CartpoleSwingup")
    with pytest.raises(TypeError, match="valid options: .*ctrl_dt"):
        factory(impl="warp")


def test_bad_override_values():
    with pytest.raises(ValueError, match="whole multiple of sim_dt"):
        envs.make(ENV_NAME, ctrl_dt=0.015)
    with pytest.raises(ValueError, match="action_repeat"):
        envs.make(ENV_NAME, action_repeat=0)


def test_unknown_name_lists_available():
    with pytest.raises(KeyError, match="CartpoleSwingup") as info:
        envs.make("playground/CartpoleSwingupp")
    msg = str(info.value)
    assert "Did you mean" in msg and "CheetahRun" in msg and "ReacherEasy" in msg


def test_menagerie_env_is_not_downloaded():
    if pg_adapter._menagerie_present():
        pytest.skip("mujoco_menagerie is on disk, so menagerie envs are allowed")
    import mujoco_playground

    name = mujoco_playground.locomotion.ALL_ENVS[0]
    with pytest.raises(KeyError, match="mujoco_menagerie"):
        envs.make(f"playground/{name}")
    assert name not in pg_adapter.available_names()


def test_missing_extra_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "mujoco_playground", None)  # import now fails
    with pytest.raises(ImportError, match=r'pip install "mbjax\[playground\]"'):
        pg_adapter.make_playground_factory("CartpoleSwingup")


def test_reward_and_termination_fn_raise(env):
    obs = jnp.zeros(env.observation_size)
    action = jnp.zeros(env.action_size)
    with pytest.raises(RewardFnUnavailableError, match="learned reward"):
        env.reward_fn(obs, action, obs)
    with pytest.raises(RewardFnUnavailableError, match="learned reward"):
        env.termination_fn(obs, action, obs)
    wrapped = envs.wrap_for_training(env, num_envs=2)
    assert not wrapped.has_reward_fn
    with pytest.raises(RewardFnUnavailableError):
        wrapped.reward_fn(obs, action, obs)


# ----------------------------------------------------------------------------------------
# Adapter logic on a stand-in playground env (no MJX)
# ----------------------------------------------------------------------------------------


class _FakePlaygroundEnv:
    """``data`` = u + steps with u ~ U[0, 1); reward = steps + sum(action); done from
    step 2 on; writes into ``state.metrics`` in place like playground's envs do."""

    action_size = 2
    dt = 0.05

    def __init__(self, dict_obs: bool = False):
        self.dict_obs = dict_obs

    def _obs(self, data):
        obs = jnp.stack([data, 2.0 * data, -data])
        return {"state": obs, "privileged_state": obs} if self.dict_obs else obs

    def reset(self, rng):
        import mujoco_playground

        data = jax.random.uniform(rng, ())
        return mujoco_playground.State(
            data, self._obs(data), jnp.zeros(()), jnp.zeros(()), {"m": jnp.zeros(())},
            {"rng": rng},
        )

    def step(self, state, action):
        data = state.data + 1.0
        state.metrics["m"] = data  # in-place, as playground does
        done = (data >= 2.0).astype(jnp.float32)
        reward = jnp.floor(data) + jnp.sum(action)
        return state.replace(data=data, obs=self._obs(data), reward=reward, done=done)


def test_adapter_delegates_without_mutating_input():
    env = pg_adapter.PlaygroundEnv(_FakePlaygroundEnv(), name="fake")
    assert (env.observation_size, env.action_size, env.dt) == (3, 2, 0.05)
    s0 = env.reset(jax.random.PRNGKey(0))
    s0 = s0.replace(info={"mine": jnp.ones(())})
    s1 = env.step(s0, jnp.ones(2))
    assert float(s0.physics.metrics["m"]) == 0.0  # caller's state untouched
    assert float(s1.metrics["m"]) == pytest.approx(float(s0.physics.data) + 1.0)
    assert float(s1.reward) == pytest.approx(1.0 + 2.0)
    assert s1.info == {"mine": s0.info["mine"]}  # wrapper info passes through
    np.testing.assert_allclose(s1.obs, s1.physics.obs)


def test_adapter_action_repeat_sums_until_done():
    env = pg_adapter.PlaygroundEnv(_FakePlaygroundEnv(), name="fake", action_repeat=3,
                                   episode_length=10)
    assert env.dt == pytest.approx(0.15)
    assert env.default_episode_length == 4  # ceil(10 / 3)
    s0 = env.reset(jax.random.PRNGKey(0))
    s1 = jax.jit(env.step)(s0, jnp.zeros(2))
    # Inner rewards 1, 2, (3 after done at inner step 2 is dropped).
    assert float(s1.reward) == pytest.approx(3.0)
    assert float(s1.done) == 1.0
    assert float(s1.physics.data) == pytest.approx(float(s0.physics.data) + 3.0)


def test_adapter_rejects_dict_observation_naming_keys():
    with pytest.raises(ValueError, match="privileged_state") as info:
        pg_adapter.PlaygroundEnv(_FakePlaygroundEnv(dict_obs=True), name="fake")
    assert "'state'" in str(info.value)


# ----------------------------------------------------------------------------------------
# Compiled MJX runs (CartpoleSwingup)
# ----------------------------------------------------------------------------------------


@pytest.mark.mjx
@pytest.mark.slow
def test_jit_reset_step_matches_playground(env):
    pg_env = env.pg_env

    @jax.jit
    def one_step(key, action):
        state = env.reset(key)
        ours = env.step(state, action)
        theirs = pg_env.step(pg_env.reset(key), action)
        return state, ours, theirs

    key, action = jax.random.PRNGKey(0), jnp.array([0.7])
    state, ours, theirs = one_step(key, action)
    assert state.obs.shape == (env.observation_size,)
    assert ours.obs.shape == (env.observation_size,)
    assert ours.reward.shape == () and ours.done.shape == ()
    assert ours.reward.dtype == jnp.float32 and ours.done.dtype == jnp.float32
    assert np.all(np.isfinite(ours.obs)) and float(ours.done) == 0.0
    np.testing.assert_allclose(ours.reward, theirs.reward, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ours.obs, theirs.obs, rtol=1e-6, atol=1e-7)
    assert set(ours.metrics) == set(theirs.metrics)
    assert isinstance(ours.physics.data.qpos, jax.Array)  # physics = playground State


@pytest.mark.mjx
@pytest.mark.slow
def test_vmapped_scan_matches_playground_and_is_deterministic(env):
    pg_env = env.pg_env
    batched = envs.VmapWrapper(env, NUM_ENVS)

    @jax.jit
    def run(key):
        key_reset, key_act = jax.random.split(key)
        actions = jax.random.uniform(key_act, (NUM_STEPS, NUM_ENVS, env.action_size),
                                     minval=-1.0, maxval=1.0)
        keys = jax.random.split(key_reset, NUM_ENVS)

        def body(carry, action):
            ours, theirs = carry
            ours = batched.step(ours, action)
            theirs = jax.vmap(pg_env.step)(theirs, action)
            return (ours, theirs), (ours.obs, ours.reward, ours.done, theirs.obs,
                                    theirs.reward)

        init = (batched.reset(keys), jax.vmap(pg_env.reset)(keys))
        _, out = jax.lax.scan(body, init, actions)
        return out

    obs, reward, done, pg_obs, pg_reward = run(jax.random.PRNGKey(1))
    assert obs.shape == (NUM_STEPS, NUM_ENVS, env.observation_size)
    assert reward.shape == done.shape == (NUM_STEPS, NUM_ENVS)
    assert np.all(np.isfinite(obs)) and np.all(np.isfinite(reward))
    assert not np.any(done)
    assert np.all((reward >= 0.0) & (reward <= 1.0))  # dm_control rewards are in [0, 1]
    np.testing.assert_allclose(reward, pg_reward, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(obs, pg_obs, rtol=1e-6, atol=1e-7)
    # Environments in the batch differ; the same key reproduces the run exactly.
    assert not np.allclose(obs[:, 0], obs[:, 1])
    again = run(jax.random.PRNGKey(1))
    for a, b in zip((obs, reward, done), again[:3], strict=True):
        np.testing.assert_array_equal(a, b)
    other = run(jax.random.PRNGKey(2))
    assert not np.allclose(obs, other[0])


@pytest.mark.mjx
@pytest.mark.slow
def test_training_wrappers_auto_reset(env):
    length = 8
    wrapped = envs.wrap_for_training(env, episode_length=length, num_envs=NUM_ENVS)
    policy = envs.uniform_random_policy(wrapped)

    @jax.jit
    def run(key):
        key_reset, key_roll = jax.random.split(key)
        return envs.rollout(wrapped, policy, wrapped.reset(key_reset), key_roll, NUM_STEPS)

    final, tr = run(jax.random.PRNGKey(3))
    assert tr.obs.shape == (NUM_STEPS, NUM_ENVS, env.observation_size)
    assert np.all(np.isfinite(tr.obs)) and np.all(np.isfinite(tr.next_obs))
    ends = np.zeros(NUM_STEPS)
    ends[length - 1 :: length] = 1.0
    np.testing.assert_array_equal(tr.truncated, np.broadcast_to(ends[:, None], tr.done.shape))
    np.testing.assert_array_equal(tr.done, np.zeros_like(tr.done))
    np.testing.assert_array_equal(final.info["steps"], NUM_STEPS % length)
    # After an auto-reset the cart is back near the centre with the pole hanging down.
    reset_obs = tr.obs[length]
    assert np.all(np.abs(reset_obs[:, 0]) < 0.1) and np.all(reset_obs[:, 1] < -0.9)
