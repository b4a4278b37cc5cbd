"""Wrappers: episode length + auto-reset, action repeat, observation extension, vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mbjax.envs as envs


def _step_n(env, state, actions):
    states = []
    for a in actions:
        state = env.step(state, a)
        states.append(state)
    return states


@pytest.mark.parametrize("mode", ["fresh", "cached"])
def test_episode_wrapper_truncates_and_resets(mode):
    base = envs.make("pendulum")
    env = envs.EpisodeWrapper(base, episode_length=3, reset_mode=mode)
    state = env.reset(jax.random.PRNGKey(0))
    first_obs = state.obs
    step = jax.jit(env.step)
    a = jnp.array([1.0])
    s1 = step(state, a)
    s2 = step(s1, a)
    s3 = step(s2, a)
    assert [float(s.done) for s in (s1, s2, s3)] == [0.0, 0.0, 1.0]
    assert float(s3.info["truncation"]) == 1.0
    # The true s_3 is kept in info["next_obs"]; obs is the start of the next episode.
    manual = base.step(base.step(base.step(base.reset(jax.random.split(
        jax.random.PRNGKey(0))[1]), a), a), a)
    np.testing.assert_allclose(s3.info["next_obs"], manual.obs, rtol=1e-6)
    assert float(s3.info["steps"]) == 0.0 and float(s3.info["episode_return"]) == 0.0
    if mode == "cached":
        np.testing.assert_allclose(s3.obs, first_obs)
    else:
        assert not np.allclose(s3.obs, first_obs)
    s4 = step(s3, a)
    assert float(s4.done) == 0.0 and float(s4.info["steps"]) == 1.0
    tr = envs.transition(s2, a, s3)
    np.testing.assert_allclose(tr.next_obs, manual.obs, rtol=1e-6)
    assert float(tr.truncated) == 1.0 and float(tr.done) == 0.0


def _restart_observations(mode: str, num_envs: int, key) -> np.ndarray:
    """The first observation of every env's second episode (auto-reset after 3 steps)."""
    env = envs.VmapWrapper(envs.EpisodeWrapper(envs.make("pendulum"), episode_length=3,
                                               reset_mode=mode), num_envs)
    state = env.reset(key)
    step = jax.jit(env.step)
    for _ in range(3):
        state = step(state, jnp.zeros((num_envs, 1)))
    return np.asarray(state.obs)


def test_cached_and_fresh_restarts_draw_start_states_from_one_distribution():
    """Both auto-reset modes restart from draws of the task's own start-state sampler:
    "fresh" from a new draw, "cached" from the episode's first (itself a draw). Two-sample
    Kolmogorov-Smirnov statistic per observation entry over 4000 restarts each, from
    independent keys, below the 0.1 % critical value 1.95 sqrt(2 / n) (= 0.044)."""
    n = 4000
    fresh = _restart_observations("fresh", n, jax.random.PRNGKey(1))
    cached = _restart_observations("cached", n, jax.random.PRNGKey(2))
    grid = np.sort(np.concatenate([fresh, cached]), axis=0)
    def ks(a, b, j):
        cdf = lambda x: np.searchsorted(np.sort(x[:, j]), grid[:, j], side="right") / n
        return np.max(np.abs(cdf(a) - cdf(b)))

    for j in range(fresh.shape[1]):
        assert ks(fresh, cached, j) < 1.95 * np.sqrt(2 / n), (j, ks(fresh, cached, j))
    # The test can fail: a start state that is not a draw of the sampler (the state after
    # the 3 steps, with the pendulum fallen further) is told apart at once.
    env = envs.VmapWrapper(envs.make("pendulum"), n)
    state = env.reset(jax.random.PRNGKey(3))
    for _ in range(3):
        state = env.step(state, jnp.zeros((n, 1)))
    assert ks(fresh, np.asarray(state.obs), 2) > 1.95 * np.sqrt(2 / n)


def test_episode_return_accumulates():
    env = envs.EpisodeWrapper(envs.make("cartpole_swingup"), episode_length=10)
    state = env.reset(jax.random.PRNGKey(1))
    total = 0.0
    for _ in range(5):
        state = env.step(state, jnp.array([0.3]))
        total += float(state.reward)
    np.testing.assert_allclose(state.info["episode_return"], total, rtol=1e-5)


def test_action_repeat_sums_rewards_and_scales_dt():
    base = envs.make("cartpole_swingup")
    env = envs.ActionRepeat(base, 3)
    assert env.dt == pytest.approx(3 * base.dt)
    assert not env.has_reward_fn
    state = base.reset(jax.random.PRNGKey(0))
    a = jnp.array([0.7])
    rep = env.step(state, a)
    manual = _step_n(base, state, [a] * 3)
    np.testing.assert_allclose(rep.obs, manual[-1].obs, rtol=1e-6)
    np.testing.assert_allclose(rep.reward, sum(float(s.reward) for s in manual), rtol=1e-5)
    with pytest.raises(envs.RewardFnUnavailableError, match="action repeat 3"):
        env.reward_fn(state.obs, a, rep.obs)


def test_observation_extension_appends_features_and_forwards_reward():
    base = envs.make("pendulum")

    def angle_change(prev, new):  # theta' - theta, from the inner physics state
        return (new.physics[:1] - prev.physics[:1])

    env = envs.ObservationExtension(base, angle_change, 1)
    assert env.observation_size == 4
    state = env.reset(jax.random.PRNGKey(0))
    assert state.obs.shape == (4,) and float(state.obs[3]) == 0.0
    a = jnp.array([0.5])
    nstate = env.step(state, a)
    np.testing.assert_allclose(nstate.obs[3], nstate.physics[0] - state.physics[0], atol=1e-6)
    np.testing.assert_allclose(env.reward_fn(state.obs, a, nstate.obs), nstate.reward,
                               rtol=1e-6)


def test_vmap_wrapper_equals_separate_envs():
    base = envs.make("pendulum")
    env = envs.VmapWrapper(base, 4)
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    bstate = env.reset(keys)
    actions = jnp.linspace(-1, 1, 4)[:, None]
    bnext = env.step(bstate, actions)
    for i in range(4):
        single = base.step(base.reset(keys[i]), actions[i])
        np.testing.assert_allclose(bnext.obs[i], single.obs, rtol=1e-6)


def test_wrapper_forwards_task_attributes_and_default_length():
    env = envs.wrap_for_training(envs.make("cartpole_swingup"), num_envs=2)
    assert env.unwrapped.name == "cartpole_swingup"
    assert env.env.episode_length == 200
    assert callable(env.dynamics)  # task attribute reached through the wrappers


def test_invalid_wrapper_arguments():
    base = envs.make("pendulum")
    with pytest.raises(ValueError, match="episode_length"):
        envs.EpisodeWrapper(base, 0)
    with pytest.raises(ValueError, match="reset_mode"):
        envs.EpisodeWrapper(base, 10, reset_mode="sometimes")
    with pytest.raises(ValueError, match="action repeat"):
        envs.ActionRepeat(base, 0)
    with pytest.raises(ValueError, match="num_envs"):
        envs.VmapWrapper(base, 0)


def test_vmap_wrapper_accepts_typed_and_raw_key_batches():
    env = envs.VmapWrapper(envs.make("pendulum"), 3)
    typed = env.reset(jax.random.split(jax.random.key(0), 3))
    raw = env.reset(jax.random.split(jax.random.PRNGKey(0), 3))
    single = env.reset(jax.random.key(1))
    assert typed.obs.shape == raw.obs.shape == single.obs.shape == (3, 3)
