"""Bad input to environments and the registry gets clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mbjax.envs as envs


def test_unknown_env_name_lists_valid_names():
    with pytest.raises(KeyError) as info:
        envs.make("pendulumm")
    msg = str(info.value)
    assert "pendulumm" in msg and "pendulum" in msg and "cartpole_swingup" in msg
    assert "Did you mean 'pendulum'" in msg


def test_unknown_override_lists_valid_keys():
    with pytest.raises(TypeError) as info:
        envs.make("pendulum", max_torqe=1.0)
    msg = str(info.value)
    assert "max_torqe" in msg and "max_torque" in msg and "timestep" in msg


def test_override_is_applied():
    env = envs.make("pendulum", max_torque=1.0)
    assert float(env.action_high[0]) == 1.0


def test_nonsense_config_value():
    with pytest.raises(ValueError, match="must be > 0"):
        envs.make("pendulum", timestep=-0.1)


@pytest.mark.parametrize("name", ["pendulum", "cartpole_swingup"])
def test_wrong_action_shape(name):
    env = envs.make(name)
    state = env.reset(jax.random.PRNGKey(0))
    with pytest.raises(envs.EnvError, match=r"expected \(1,\)"):
        env.step(state, jnp.zeros(3))
    with pytest.raises(envs.EnvError, match="VmapWrapper"):
        jax.jit(env.step)(state, jnp.zeros((4, 1)))


def test_wrong_batched_action_shape():
    env = envs.VmapWrapper(envs.make("pendulum"), 4)
    state = env.reset(jax.random.PRNGKey(0))
    with pytest.raises(envs.EnvError, match=r"expected \(4, 1\)"):
        env.step(state, jnp.zeros((3, 1)))


def test_integer_action_dtype():
    env = envs.make("pendulum")
    state = env.reset(jax.random.PRNGKey(0))
    with pytest.raises(envs.EnvError, match="floating dtype"):
        env.step(state, jnp.zeros(1, dtype=jnp.int32))


def test_nan_action_eager_raises():
    env = envs.make("cartpole_swingup")
    state = env.reset(jax.random.PRNGKey(0))
    with pytest.raises(envs.EnvError, match="NaN or inf"):
        env.step(state, jnp.array([jnp.nan]))
    benv = envs.VmapWrapper(env, 2)
    bstate = benv.reset(jax.random.PRNGKey(0))
    with pytest.raises(envs.EnvError, match="NaN or inf"):
        benv.step(bstate, jnp.array([[0.0], [jnp.inf]]))


def test_nan_action_under_jit_raises_when_checked():
    env = envs.wrap_for_training(envs.make("pendulum"), num_envs=3)
    state = env.reset(jax.random.PRNGKey(0))
    step = envs.checked(jax.jit(env.step))
    ok = step(state, jnp.zeros((3, 1)))
    assert ok.obs.shape == (3, 3)
    with pytest.raises(envs.EnvError, match="NaN or inf"):
        step(state, jnp.array([[0.0], [jnp.nan], [0.0]]))


@pytest.mark.parametrize("num_envs", [None, 3])
def test_checked_inside_jit_runs_like_the_unchecked_step(num_envs):
    """``jax.jit(checked(step))``: shapes are checked while tracing, values are not."""
    env = envs.wrap_for_training(envs.make("pendulum"), num_envs=num_envs)
    state = env.reset(jax.random.PRNGKey(0))
    shape = (env.action_size,) if num_envs is None else (num_envs, env.action_size)
    action = jnp.full(shape, 0.7)
    step = jax.jit(envs.checked(env.step))
    jax.tree.map(np.testing.assert_array_equal, step(state, action),
                 jax.jit(env.step)(state, action))
    with pytest.raises(envs.EnvError, match="expected"):
        step(state, jnp.zeros(shape[:-1] + (2,)))
    nan_out = step(state, jnp.full(shape, jnp.nan))  # documented: not checked under jit
    assert np.all(np.isnan(nan_out.obs))
    # The same wrapper called eagerly checks the values.
    with pytest.raises(envs.EnvError, match="NaN or inf"):
        envs.checked(env.step)(state, jnp.full(shape, jnp.nan))


def test_reset_with_batch_of_keys_on_unbatched_env():
    env = envs.make("pendulum")
    with pytest.raises(envs.EnvError, match="VmapWrapper"):
        env.reset(jax.random.split(jax.random.PRNGKey(0), 4))
