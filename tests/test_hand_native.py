"""Native-MuJoCo rollouts of the hand tasks (``mbjax.envs.hand.native``) against MJX."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

import mbjax  # noqa: F401  (sets XLA flags before any JAX computation)
from mbjax import envs
from mbjax.agents import MPCConfig, ObjectiveConfig, make_agent
from mbjax.envs.hand.native import NativeRollout
from mbjax.envs.hand.tasks import HandBaoding
from mbjax.models.true_dynamics import simulate, simulate_native


@pytest.mark.mjx
@pytest.mark.slow
def test_native_rollouts_match_mjx_and_batch_under_vmap():
    """From 2 reset states, 4 random sequences of 6 actions each: the native rollout's
    observations (to 1e-3 relative: spinning balls differ most), rewards and terminal flags
    equal MJX's (same model,
    float64 vs float32), and the vmapped call equals the per-state call."""
    env = HandBaoding()
    native = NativeRollout(env)
    states = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), 2))
    actions = 0.5 * jax.random.normal(jax.random.PRNGKey(1), (2, 4, 6, 24))
    mjx_out = jax.jit(jax.vmap(lambda s, a: simulate(env, s, a)))(states, actions)
    nat = jax.jit(jax.vmap(lambda s, a: simulate_native(native, s, a)))(states, actions)
    moved = np.abs(np.asarray(mjx_out.obs[:, :, -1, :24] - mjx_out.obs[:, :, 0, :24])).max()
    assert moved > 0.1  # the fingers really moved (rad), so the comparison means something
    np.testing.assert_allclose(nat.obs, mjx_out.obs, rtol=1e-3, atol=2e-5)
    np.testing.assert_allclose(nat.reward, mjx_out.reward, atol=1e-4)
    np.testing.assert_array_equal(nat.terminated, mjx_out.terminated)
    one = jax.jit(lambda s, a: simulate_native(native, s, a))(
        jax.tree.map(lambda x: x[1], states), actions[1])
    np.testing.assert_array_equal(one.obs, nat.obs[1])


def test_native_rollouts_reject_what_they_cannot_run():
    with pytest.raises(TypeError, match="hand task"):
        NativeRollout(envs.make("pendulum"))
    with pytest.raises(ValueError, match="num_threads"):
        NativeRollout(HandBaoding(), num_threads=0.5)
    with pytest.raises(ValueError, match="simulator must be one of"):
        ObjectiveConfig(simulator="bullet")
    with pytest.raises(ValueError, match="num_randomized"):
        ObjectiveConfig(simulator="mujoco", num_randomized=4)
    # A learned-model run would ignore the choice of simulator: rejected, not ignored.
    with pytest.raises(ValueError, match="true_dynamics"):
        MPCConfig(objective=ObjectiveConfig(simulator="mujoco"))
    # On a task that is not a hand, the true-dynamics objective says what is wrong.
    cfg = MPCConfig(true_dynamics=True, objective=ObjectiveConfig(simulator="mujoco"))
    with pytest.raises(TypeError, match="hand task"):
        make_agent(dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, name="pendulum")))
