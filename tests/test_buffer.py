"""Tests of mbjax.buffers: the ring replay buffer, window sampling and save/load."""

from __future__ import annotations

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbjax.buffers import (
    BufferFileError,
    ReplayBufferError,
    load,
    make_replay_buffer,
    no_episode_ends,
    save,
)
from mbjax.types import Transition

OBS_DIM, ACT_DIM = 3, 2


def example(obs_dim: int = OBS_DIM) -> Transition:
    return Transition(
        obs=jnp.zeros(obs_dim),
        action=jnp.zeros(ACT_DIM),
        reward=jnp.zeros(()),
        next_obs=jnp.zeros(obs_dim),
        done=jnp.zeros(()),
        truncated=jnp.zeros(()),
    )


def _np_steps(t0: int, steps: int, num_envs: int, done=None, truncated=None) -> Transition:
    """Steps t0 .. t0 + steps - 1 of ``num_envs`` envs, built in NumPy: leaves [T, N, ...].

    Values are recognisable: obs = [t, e, 1], next_obs = [t + 1, e, 1], action = [t, -e],
    reward = 1000 t + e + 1 (a unique nonzero id per (t, e)).
    """
    t, e = np.meshgrid(
        np.arange(t0, t0 + steps, dtype=np.float32),
        np.arange(num_envs, dtype=np.float32),
        indexing="ij",
    )
    ones = np.ones_like(t)
    flags = lambda x: (
        np.zeros_like(t) if x is None else np.broadcast_to(np.asarray(x, np.float32), t.shape)
    )
    return Transition(
        obs=np.stack([t, e, ones], axis=-1),
        action=np.stack([t, -e], axis=-1),
        reward=1000.0 * t + e + 1.0,
        next_obs=np.stack([t + 1, e, ones], axis=-1),
        done=flags(done),
        truncated=flags(truncated),
    )


def step_batch(t: int, num_envs: int, done=None, truncated=None) -> Transition:
    """One step of ``num_envs`` envs at global time ``t``: leaves [N, ...]."""
    steps = _np_steps(t, 1, num_envs, done, truncated)
    return jax.tree.map(lambda x: jnp.asarray(x[0]), steps)


def chunk_batch(t0: int, steps: int, num_envs: int, done=None, truncated=None) -> Transition:
    """Steps t0 .. t0 + steps - 1 stacked on a leading time axis: leaves [T, N, ...]."""
    return jax.tree.map(jnp.asarray, _np_steps(t0, steps, num_envs, done, truncated))


def fill(buffer, steps: int, t0: int = 0, done=None, truncated=None):
    state = buffer.init(example())
    return buffer.add(state, chunk_batch(t0, steps, buffer.num_envs, done, truncated))


def assert_trees_equal(a, b):
    chex.assert_trees_all_equal_structs(a, b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ------------------------------------------------------------------------------------
# Construction and add.


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(capacity=3, num_envs=4), r"`capacity` \(3\) must be >= `num_envs` \(4\)"),
        (dict(capacity=0, num_envs=1), r"`capacity` must be >= 1"),
        (dict(capacity=8, num_envs=0), r"`num_envs` must be >= 1"),
        (dict(capacity=8.0, num_envs=2), r"`capacity` must be a Python int"),
        (dict(capacity=8, num_envs=True), r"`num_envs` must be a Python int"),
    ],
)
def test_make_validates_sizes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_replay_buffer(**kwargs)


def test_init_shapes_and_sizes():
    buffer = make_replay_buffer(capacity=11, num_envs=3)  # remainder dropped
    assert (buffer.capacity_per_env, buffer.num_envs, buffer.capacity) == (3, 3, 9)
    state = buffer.init(example())
    assert state.data.obs.shape == (3, 3, OBS_DIM)
    assert state.data.reward.shape == (3, 3)
    assert state.episode_end.shape == (3, 3)
    assert int(state.size) == 0 and int(state.insert_pos) == 0


def test_wraparound_keeps_exactly_newest_rows():
    buffer = make_replay_buffer(capacity=10, num_envs=2)  # C = 5
    state = buffer.init(example())
    add = jax.jit(buffer.add)
    for t in range(13):
        state = add(state, step_batch(t, 2))
    assert int(state.size) == 5 and int(state.insert_pos) == 13 % 5
    obs = np.asarray(state.data.obs)
    for e in range(2):
        times = sorted(obs[:, e, 0].astype(int).tolist())
        assert times == [8, 9, 10, 11, 12]
        np.testing.assert_array_equal(obs[:, e, 1], e)
        for row in range(5):  # step t lives in row t mod C
            assert int(obs[row, e, 0]) % 5 == row
    np.testing.assert_array_equal(
        np.asarray(state.data.reward), 1000.0 * obs[..., 0] + obs[..., 1] + 1.0
    )


@pytest.mark.parametrize("prefill, chunk_len", [(0, 3), (2, 4), (3, 5), (1, 12), (4, 17)])
def test_chunk_add_equals_single_adds(prefill, chunk_len):
    buffer = make_replay_buffer(capacity=15, num_envs=3)  # C = 5
    n = 3
    done = np.zeros((prefill + chunk_len, n))
    done[::4, 1] = 1.0
    trunc = np.zeros((prefill + chunk_len, n))
    trunc[2::3, 2] = 1.0
    state = buffer.init(example())
    for t in range(prefill):
        state = buffer.add(state, step_batch(t, n, done[t], trunc[t]))
    single = state
    for t in range(prefill, prefill + chunk_len):
        single = buffer.add(single, step_batch(t, n, done[t], trunc[t]))
    chunk = chunk_batch(prefill, chunk_len, n, done[prefill:], trunc[prefill:])
    chunked = jax.jit(buffer.add)(state, chunk)
    assert_trees_equal(chunked, single)


def test_add_shape_and_dtype_mismatch_errors():
    buffer = make_replay_buffer(capacity=8, num_envs=2)
    state = buffer.init(example())
    good = step_batch(0, 2)
    with pytest.raises(
        ReplayBufferError, match=r"leaf `\.obs` has shape \(2, 4\); expected \(2, 3\)"
    ):
        buffer.add(state, good.replace(obs=jnp.zeros((2, 4))))
    with pytest.raises(ReplayBufferError, match=r"leaf `\.obs` has shape \(3, 3\)"):
        buffer.add(state, step_batch(0, 3))
    with pytest.raises(
        ReplayBufferError, match=r"leaf `\.reward` has dtype int32, expected float32"
    ):
        buffer.add(state, good.replace(reward=jnp.zeros(2, jnp.int32)))
    with pytest.raises(ReplayBufferError, match=r"structure does not match"):
        buffer.add(state, {"obs": good.obs})
    # Mixed step / chunk leaves, and chunks with different T.
    with pytest.raises(
        ReplayBufferError, match=r"leaf `\.action`.*earlier leaves were given as a step"
    ):
        buffer.add(state, good.replace(action=jnp.zeros((4, 2, ACT_DIM))))
    chunk = chunk_batch(0, 3, 2)
    with pytest.raises(
        ReplayBufferError, match=r"leaf `\.action` has 4 steps but earlier leaves have 3"
    ):
        buffer.add(state, chunk.replace(action=jnp.zeros((4, 2, ACT_DIM))))
    # Raised at trace time under jit too.
    with pytest.raises(ReplayBufferError, match=r"leaf `\.obs` has shape \(2, 4\)"):
        jax.jit(buffer.add)(state, good.replace(obs=jnp.zeros((2, 4))))
    # A state from another buffer.
    other = make_replay_buffer(capacity=6, num_envs=2).init(example())
    with pytest.raises(ReplayBufferError, match=r"made by a different buffer"):
        buffer.add(other, good)


# ------------------------------------------------------------------------------------
# Uniform sampling.


@pytest.mark.parametrize("steps", [7, 33])  # partial fill, and after wrap-around
def test_sample_only_valid_rows_and_uniform(steps):
    n, c = 3, 20
    buffer = make_replay_buffer(capacity=c * n, num_envs=n)
    state = fill(buffer, steps)
    stored = {1000 * t + e + 1 for t in range(max(0, steps - c), steps) for e in range(n)}
    num_valid = min(steps, c) * n
    draws = 300 * num_valid
    sample = jax.jit(buffer.sample, static_argnums=2)
    batch = sample(state, jax.random.key(0), draws)
    ids = np.asarray(batch.reward).astype(int)
    assert set(ids.tolist()) == stored  # only valid rows, and every one of them
    # Rows are returned whole: obs, action, next_obs belong to the same (t, e).
    t, e = np.asarray(batch.obs[:, 0]), np.asarray(batch.obs[:, 1])
    np.testing.assert_array_equal(ids, 1000 * t + e + 1)
    np.testing.assert_array_equal(np.asarray(batch.next_obs[:, 0]), t + 1)
    # Uniformity: each count ~ Binomial(draws, 1/num_valid), mean 300, std ~17.
    _, counts = np.unique(ids, return_counts=True)
    assert counts.min() > 300 - 6 * 17 and counts.max() < 300 + 6 * 17
    chi2 = np.sum((counts - 300.0) ** 2 / 300.0)  # ~ chi2(num_valid - 1)
    assert chi2 < num_valid - 1 + 6 * np.sqrt(2 * (num_valid - 1))


def test_sample_empty_buffer_and_can_sample():
    buffer = make_replay_buffer(capacity=8, num_envs=2)
    state = buffer.init(example())
    assert not bool(buffer.can_sample(state))
    with pytest.raises(ReplayBufferError, match=r"buffer is empty"):
        buffer.sample(state, jax.random.key(0), 4)
    # Under jit emptiness is not checkable: documented zero-filled placeholder rows.
    batch = jax.jit(buffer.sample, static_argnums=2)(state, jax.random.key(0), 4)
    assert batch.obs.shape == (4, OBS_DIM)
    np.testing.assert_array_equal(np.asarray(batch.obs), 0.0)
    state = buffer.add(state, step_batch(0, 2))
    assert bool(buffer.can_sample(state)) and bool(buffer.can_sample(state, 2))
    assert not bool(buffer.can_sample(state, 3))


def test_sample_is_deterministic_given_key():
    buffer = make_replay_buffer(capacity=40, num_envs=4)
    state = fill(buffer, 9)
    sample = jax.jit(buffer.sample, static_argnums=2)
    a = sample(state, jax.random.key(3), 64)
    b = sample(state, jax.random.key(3), 64)
    c = sample(state, jax.random.key(4), 64)
    assert_trees_equal(a, b)
    assert not np.array_equal(np.asarray(a.reward), np.asarray(c.reward))
    w1 = buffer.sample_windows(state, jax.random.key(5), 16, 3)
    w2 = buffer.sample_windows(state, jax.random.key(5), 16, 3)
    assert_trees_equal(w1, w2)


@pytest.mark.parametrize("batch_size", [0, 2.0, None])
def test_sample_validates_batch_size(batch_size):
    buffer = make_replay_buffer(capacity=8, num_envs=2)
    state = fill(buffer, 3)
    with pytest.raises(ReplayBufferError, match=r"`batch_size`"):
        buffer.sample(state, jax.random.key(0), batch_size)


# ------------------------------------------------------------------------------------
# Window sampling.


def valid_window_starts(global_times, ends, length):
    """Brute force: {(t_start, e)} over the chronological stream of each env."""
    starts = set()
    for e in range(ends.shape[1]):
        for i in range(len(global_times) - length + 1):
            if not ends[i : i + length - 1, e].any():
                starts.add((global_times[i], e))
    return starts


def check_windows(windows, length, valid_starts):
    obs = np.asarray(windows.obs)
    t, e = obs[..., 0].astype(int), obs[..., 1].astype(int)
    np.testing.assert_array_equal(np.diff(t, axis=1), 1)  # consecutive steps
    assert (e == e[:, :1]).all()  # one env
    ends = np.maximum(np.asarray(windows.done), np.asarray(windows.truncated))
    assert not ends[:, : length - 1].any()  # only the last step may end an episode
    sampled = set(zip(t[:, 0].tolist(), e[:, 0].tolist(), strict=True))
    assert sampled <= valid_starts
    return t[:, 0], e[:, 0]


@pytest.mark.parametrize("length", [1, 2, 4])
def test_windows_never_cross_episode_ends(length):
    n, c, steps = 3, 30, 24
    rng = np.random.default_rng(0)
    done = (rng.random((steps, n)) < 0.08).astype(np.float32)
    trunc = np.zeros((steps, n), np.float32)
    trunc[[5, 11, 17, 23], :] = 1.0  # time-limit truncation every 6 steps
    trunc[3, 0] = 1.0
    buffer = make_replay_buffer(capacity=c * n, num_envs=n)
    state = fill(buffer, steps, done=done, truncated=trunc)

    valid = valid_window_starts(list(range(steps)), np.maximum(done, trunc) > 0, length)
    assert int(buffer.num_windows(state, length)) == len(valid)
    draws = 200 * len(valid)
    sample = jax.jit(buffer.sample_windows, static_argnums=(2, 3))
    windows = sample(state, jax.random.key(1), draws, length)
    assert windows.obs.shape == (draws, length, OBS_DIM)
    assert windows.reward.shape == (draws, length)
    t0, e0 = check_windows(windows, length, valid)
    # Every valid start is drawn, about equally often (mean 200, std ~14).
    starts, counts = np.unique(np.stack([t0, e0], axis=1), axis=0, return_counts=True)
    assert len(starts) == len(valid)
    assert counts.min() > 200 - 6 * 14 and counts.max() < 200 + 6 * 14
    if length > 1:  # some windows do end with an episode end
        ends = np.maximum(np.asarray(windows.done), np.asarray(windows.truncated))
        assert ends[:, -1].any()


@pytest.mark.parametrize("steps", [8, 19, 21])
def test_windows_never_cross_the_seam(steps):
    n, c, length = 2, 8, 3
    buffer = make_replay_buffer(capacity=c * n, num_envs=n)
    state = fill(buffer, steps, t0=100)
    kept = list(range(100 + steps - c, 100 + steps))
    valid = valid_window_starts(kept, np.zeros((c, n), bool), length)
    assert int(buffer.num_windows(state, length)) == len(valid) == (c - length + 1) * n
    windows = buffer.sample_windows(state, jax.random.key(2), 400, length)
    t0, e0 = check_windows(windows, length, valid)
    assert len(set(zip(t0.tolist(), e0.tolist(), strict=True))) == len(valid)


def test_windows_partial_fill_and_no_valid_window():
    n, c = 2, 10
    buffer = make_replay_buffer(capacity=c * n, num_envs=n)
    state = fill(buffer, 3)
    assert int(buffer.num_windows(state, 3)) == 2 and int(buffer.num_windows(state, 4)) == 0
    with pytest.raises(ReplayBufferError, match=r"no valid window of length 4"):
        buffer.sample_windows(state, jax.random.key(0), 5, 4)
    with pytest.raises(ReplayBufferError, match=r"`length` \(11\) exceeds capacity_per_env \(10\)"):
        buffer.sample_windows(state, jax.random.key(0), 5, 11)
    # Every step ends an episode: only length-1 windows exist.
    state = fill(buffer, 6, done=np.ones((6, n)))
    assert int(buffer.num_windows(state, 1)) == 12 and int(buffer.num_windows(state, 2)) == 0
    # Under jit: placeholders of the right shape, flagged by num_windows == 0.
    out = jax.jit(buffer.sample_windows, static_argnums=(2, 3))(state, jax.random.key(0), 5, 2)
    assert out.obs.shape == (5, 2, OBS_DIM)


def test_windows_for_other_pytrees():
    n = 2
    ex = {"x": jnp.zeros(()), "done": jnp.zeros(())}
    batch = lambda t, d: {"x": jnp.full((n,), float(t)), "done": jnp.full((n,), float(d))}
    buffer = make_replay_buffer(capacity=10 * n, num_envs=n)
    state = buffer.init(ex)
    for t in range(6):
        state = buffer.add(state, batch(t, t == 2))  # dict with "done": used as episode end
    assert int(buffer.num_windows(state, 2)) == 4 * n  # starts 0, 1, 3, 4

    plain = make_replay_buffer(capacity=10 * n, num_envs=n)
    pstate = plain.add(plain.init({"x": jnp.zeros(())}), {"x": jnp.zeros(n)})
    with pytest.raises(ReplayBufferError, match=r"no episode-end information"):
        plain.sample_windows(pstate, jax.random.key(0), 4, 1)
    continuous = make_replay_buffer(capacity=10 * n, num_envs=n, episode_end_fn=no_episode_ends)
    cstate = continuous.init({"x": jnp.zeros(())})
    for t in range(4):
        cstate = continuous.add(cstate, {"x": jnp.full((n,), float(t))})
    w = continuous.sample_windows(cstate, jax.random.key(0), 8, 4)
    np.testing.assert_array_equal(np.asarray(w["x"]), np.broadcast_to(np.arange(4.0), (8, 4)))


def test_windows_from_a_rollout():
    """Transitions from envs.rollout (auto-reset by EpisodeWrapper): windows stay in one
    episode, so obs[k + 1] == next_obs[k] inside every window."""
    import mbjax.envs as envs

    n, episode_length, steps = 3, 5, 17
    env = envs.wrap_for_training(envs.make("pendulum"), episode_length=episode_length, num_envs=n)
    key_reset, key_roll = jax.random.split(jax.random.key(0))

    @jax.jit
    def collect(key_reset, key_roll):
        env_state = env.reset(key_reset)
        policy = envs.uniform_random_policy(env)
        return envs.rollout(env, policy, env_state, key_roll, steps)[1]

    transitions = collect(key_reset, key_roll)
    assert transitions.obs.shape[:2] == (steps, n)
    ex = jax.tree.map(lambda x: x[0, 0], transitions)
    buffer = make_replay_buffer(capacity=12 * n, num_envs=n)
    state = buffer.add(buffer.init(ex), transitions)
    length = 4
    # 12 kept steps (5..16); truncations after steps 9 and 14 -> starts 5, 6, 10, 11.
    assert int(buffer.num_windows(state, length)) == 4 * n
    w = buffer.sample_windows(state, jax.random.key(1), 64, length)
    np.testing.assert_allclose(np.asarray(w.obs[:, 1:]), np.asarray(w.next_obs[:, :-1]))
    assert not np.asarray(w.episode_end[:, :-1]).any()


# ------------------------------------------------------------------------------------
# Compilation: shapes never change, so add / sample trace once.


def test_add_and_sample_trace_once_in_scan():
    chex.clear_trace_counter()
    n = 2
    buffer = make_replay_buffer(capacity=12, num_envs=n)
    add = chex.assert_max_traces(buffer.add, n=1)

    @chex.assert_max_traces(n=1)
    def sample(state, key):
        return buffer.sample(state, key, 4)

    @chex.assert_max_traces(n=1)
    def windows(state, key):
        return buffer.sample_windows(state, key, 4, 2)

    @jax.jit
    def run(state, t0, key):
        def body(state, k):
            t = t0 + k
            batch = step_batch(0, n).replace(reward=jnp.full((n,), t, jnp.float32))
            state = add(state, batch)
            key_k = jax.random.fold_in(key, k)
            return state, (sample(state, key_k).reward, windows(state, key_k).reward)

        return jax.lax.scan(body, state, jnp.arange(5))

    state = buffer.init(example())
    for i in range(4):  # 20 steps: empty, partial, full and wrapped fills, one trace
        state, (rewards, window_rewards) = run(state, 5 * i, jax.random.key(i))
        assert rewards.shape == (5, 4) and window_rewards.shape == (5, 4, 2)
        # Every sample at step k comes from rewards added at or before it.
        assert (np.asarray(rewards) <= (5 * i + np.arange(5))[:, None]).all()
    assert int(state.size) == 6


def test_jitted_add_and_sample_trace_once_across_fills():
    chex.clear_trace_counter()
    n = 2
    buffer = make_replay_buffer(capacity=10, num_envs=n)
    add = jax.jit(chex.assert_max_traces(buffer.add, n=1))

    @chex.assert_max_traces(n=1)
    def add_chunk_fn(state, chunk):
        return buffer.add(state, chunk)

    add_chunk = jax.jit(add_chunk_fn)
    sample = jax.jit(chex.assert_max_traces(buffer.sample, n=1), static_argnums=2)
    state = buffer.init(example())
    for t in range(12):
        state = add(state, step_batch(t, n))
        sample(state, jax.random.key(t), 8)
    for t in range(3):
        state = add_chunk(state, chunk_batch(12 + 3 * t, 3, n))
    assert int(state.insert_pos) == (12 + 9) % 5


# ------------------------------------------------------------------------------------
# Save / load.


def test_save_load_round_trip(tmp_path):
    buffer = make_replay_buffer(capacity=12, num_envs=3)
    done = np.zeros((7, 3))
    done[2, 1] = 1
    state = fill(buffer, 7, done=done)
    path = tmp_path / "buffer.npz"
    save(path, state)
    loaded = load(path, jax.eval_shape(buffer.init, example()))
    assert_trees_equal(loaded, state)
    assert_trees_equal(buffer.load(str(path), example()), state)
    # Loaded state keeps working: same samples as the original.
    assert_trees_equal(
        buffer.sample_windows(loaded, jax.random.key(0), 8, 2),
        buffer.sample_windows(state, jax.random.key(0), 8, 2),
    )
    # Overwrite in place, no temporary files left behind.
    state2 = buffer.add(state, step_batch(7, 3))
    buffer.save(path, state2)
    assert_trees_equal(buffer.load(path, example()), state2)
    assert os.listdir(tmp_path) == ["buffer.npz"]


def test_save_load_other_dtypes(tmp_path):
    ex = {
        "img": jnp.zeros((2, 2), jnp.uint8),
        "h": jnp.zeros((3,), jnp.bfloat16),
        "i": jnp.zeros((), jnp.int32),
        "flag": jnp.zeros((), bool),
    }
    buffer = make_replay_buffer(capacity=4, num_envs=2)
    state = buffer.init(ex)
    batch = {
        "img": jnp.arange(8, dtype=jnp.uint8).reshape(2, 2, 2),
        "h": jnp.array([[1.5, -2.0, 3.25], [0.5, 7.0, -1.0]], jnp.bfloat16),
        "i": jnp.array([3, 4], jnp.int32),
        "flag": jnp.array([True, False]),
    }
    state = buffer.add(state, batch)
    save(tmp_path / "b", state)
    loaded = buffer.load(tmp_path / "b", ex)
    assert loaded.data["h"].dtype == jnp.bfloat16
    assert_trees_equal(loaded, state)


def test_load_mismatch_errors(tmp_path):
    buffer = make_replay_buffer(capacity=12, num_envs=3)
    path = tmp_path / "buffer.npz"
    save(path, fill(buffer, 5))
    with pytest.raises(
        BufferFileError,
        match=r"field `\.data\.obs` shape mismatch: .* has \(4, 3, 3\), the buffer expects "
        r"\(4, 3, 5\) \(per transition \(3,\) vs \(5,\)\)",
    ):
        buffer.load(path, example(obs_dim=5))
    with pytest.raises(
        BufferFileError,
        match=r"capacity mismatch: .* holds capacity_per_env=4, num_envs=3 \(capacity 12\) but "
        r"the buffer has capacity_per_env=6, num_envs=3 \(capacity 18\)",
    ):
        make_replay_buffer(capacity=18, num_envs=3).load(path, example())
    with pytest.raises(BufferFileError, match=r"num_envs=3 .* num_envs=2"):
        make_replay_buffer(capacity=8, num_envs=2).load(path, example())
    with pytest.raises(BufferFileError, match=r"field `\.data\.reward` dtype mismatch: .* has "
                       r"float32, the buffer expects int32"):
        buffer.load(path, example().replace(reward=jnp.zeros((), jnp.int32)))
    with pytest.raises(BufferFileError, match=r"different fields"):
        buffer.load(path, {"obs": jnp.zeros(3), "done": jnp.zeros(())})


def test_load_missing_and_corrupt_files(tmp_path):
    buffer = make_replay_buffer(capacity=8, num_envs=2)
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        buffer.load(tmp_path / "nope.npz", example())
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip file")
    with pytest.raises(BufferFileError, match=r"corrupt or not an npz file"):
        buffer.load(garbage, example())
    good = tmp_path / "good.npz"
    save(good, fill(buffer, 3))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:-200])
    with pytest.raises(BufferFileError, match=r"corrupt"):
        buffer.load(truncated, example())
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    with pytest.raises(BufferFileError, match=r"not a replay buffer file"):
        buffer.load(other, example())
    with pytest.raises(FileNotFoundError, match=r"directory"):
        save(tmp_path / "missing_dir" / "b.npz", fill(buffer, 1))


def test_as_dataset_puts_valid_rows_first():
    import mbjax.buffers as B
    from mbjax.types import Transition

    buf = B.make_replay_buffer(capacity=12, num_envs=3)
    ex = Transition(obs=jnp.zeros(2), action=jnp.zeros(1), reward=jnp.zeros(()),
                    next_obs=jnp.zeros(2), done=jnp.zeros(()), truncated=jnp.zeros(()))
    state = buf.init(ex)
    chunk = jax.tree_util.tree_map(lambda x: jnp.ones((2, 3) + x.shape), ex)
    state = buf.add(state, chunk)
    data, n = B.as_dataset(state)
    assert data.obs.shape == (12, 2) and int(n) == 6
    assert float(data.obs[:6].min()) == 1.0 and float(jnp.abs(data.obs[6:]).max()) == 0.0
