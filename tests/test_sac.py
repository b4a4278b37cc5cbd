"""SAC: the soft TD target by hand, log-probabilities, one update's bookkeeping, and
(slow) solving the pendulum swing-up model-free."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbjax.agents import EnvConfig, MBPOConfig, SACConfig, make_mbpo_agent, make_sac, td_target
from mbjax.agents.sac import tanh_gaussian_log_prob
from mbjax.types import Transition

OBS, ACT = 3, 2
LOW, HIGH = jnp.array([-2.0, 0.0]), jnp.array([2.0, 1.0])
SMALL = SACConfig(hidden_sizes=(16, 16), discount=0.9, tau=0.1, init_alpha=0.3)


def _batch(key, n=8):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    return Transition(obs=jax.random.normal(k1, (n, OBS)),
                      action=jax.random.uniform(k2, (n, ACT), minval=LOW, maxval=HIGH),
                      reward=jax.random.normal(k3, (n,)),
                      next_obs=jax.random.normal(k4, (n, OBS)),
                      done=(jnp.arange(n) % 3 == 0).astype(jnp.float32),
                      truncated=jnp.zeros(n))


def test_td_target_hand_computed():
    # y = r + gamma (1 - d) (min(Q1', Q2') - alpha log pi(a'|s'))
    # row 0: 1 + 0.9 * (min(2, 3) - 0.2 * (-0.5)) = 1 + 0.9 * 2.1 = 2.89
    # row 1: terminal, y = r = -1;  row 2: 0.5 + 0.9 * (-4 - 0.2 * 1.5) = -3.37
    y = td_target(reward=jnp.array([1.0, -1.0, 0.5]), done=jnp.array([0.0, 1.0, 0.0]),
                  next_q1=jnp.array([2.0, 5.0, -1.0]), next_q2=jnp.array([3.0, 7.0, -4.0]),
                  next_log_prob=jnp.array([-0.5, 0.3, 1.5]), alpha=0.2, discount=0.9)
    np.testing.assert_allclose(y, [2.89, -1.0, -3.37], rtol=1e-6)


def test_critic_target_uses_target_twins_min_and_entropy(key):
    sac = make_sac(OBS, ACT, LOW, HIGH, SMALL)
    state = sac.init(key)
    # Make the target critic differ from the critic so a mix-up would show.
    state = state.replace(target_critic=jax.tree_util.tree_map(lambda x: 1.3 * x + 0.01,
                                                               state.critic))
    batch = _batch(jax.random.PRNGKey(1))
    key_t = jax.random.PRNGKey(2)

    @jax.jit
    def both(state, batch, key_t):
        y = sac.critic_target(state, batch, key_t)
        # By hand: a' ~ pi(.|s') (same key), Q' of both target members, numpy formula.
        a_unit, logp = sac.sample(state.actor, batch.next_obs, key_t)
        a_env = (LOW + HIGH) / 2 + (HIGH - LOW) / 2 * a_unit
        return y, logp, sac.q_values(state.target_critic, batch.next_obs, a_env)

    y, logp, q = both(state, batch, key_t)
    q = np.asarray(q)
    alpha = 0.3
    expected = np.asarray(batch.reward) + 0.9 * (1 - np.asarray(batch.done)) * (
        np.minimum(q[0], q[1]) - alpha * np.asarray(logp))
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(q[0], q[1])


def test_tanh_gaussian_log_prob_is_the_change_of_variables():
    u = jnp.array([[-1.5, 0.2], [0.7, 2.0]])
    mean, log_std = jnp.array([[0.1, -0.3]]), jnp.array([[-0.5, 0.4]])
    std = np.exp(log_std)
    gauss = -0.5 * ((u - mean) / std) ** 2 - np.log(std) - 0.5 * math.log(2 * math.pi)
    expected = np.sum(gauss - np.log(1 - np.tanh(u) ** 2), axis=-1)
    np.testing.assert_allclose(tanh_gaussian_log_prob(u, mean, log_std), expected,
                               rtol=1e-5)


def test_update_polyak_target_alpha_and_actions_in_bounds(key):
    sac = make_sac(OBS, ACT, LOW, HIGH, SMALL)
    state = sac.init(key)
    batch = _batch(jax.random.PRNGKey(3), 32)
    new, metrics = jax.jit(sac.update)(state, batch, jax.random.PRNGKey(4))
    # Target after one update: (1 - tau) old target + tau new critic.
    expected = jax.tree_util.tree_map(lambda t, c: 0.9 * t + 0.1 * c, state.target_critic,
                                      new.critic)
    for a, b in zip(jax.tree_util.tree_leaves(new.target_critic),
                    jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert int(new.steps) == 1 and np.isfinite(float(metrics["sac/critic_loss"]))
    # The entropy of a fresh policy is above the target -|A| = -2, so alpha decreases.
    assert float(new.log_alpha) < float(state.log_alpha)
    assert sac.target_entropy == -ACT
    # Fitting one fixed batch: the critic loss goes down over a scan of updates.
    batches = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (200,) + x.shape), batch)
    fitted, _ = jax.jit(sac.update_many)(state, batches, jax.random.PRNGKey(5))
    _, m = jax.jit(sac.update)(fitted, batch, jax.random.PRNGKey(6))
    assert float(m["sac/critic_loss"]) < 0.9 * float(metrics["sac/critic_loss"])
    obs = jax.random.normal(key, (100, OBS))
    act = jax.jit(sac.act, static_argnames="deterministic")
    for det in (False, True):
        a = act(new, obs, jax.random.PRNGKey(7), deterministic=det)
        assert a.shape == (100, ACT)
        assert bool(jnp.all((a >= LOW) & (a <= HIGH)))
    assert jax.eval_shape(sac.value, new, obs).shape == (100,)


@pytest.mark.slow
def test_sac_solves_pendulum_swing_up():
    """Model-free SAC, 2 updates per step, 4000 env steps after 400 random ones.

    Pendulum returns over 200 steps from random starts: a uniform-random policy ~ -1200
    (here the first evaluation of a barely trained actor, < -700); the hand-designed
    swing-up expert of tests/test_planners.py -120..-400 depending on the start. SAC gets
    within that band (-100..-250) after ~3000-4000 steps; we require > -400 on average
    over the last 3 evaluations (5 episodes each).
    """
    cfg = MBPOConfig(preset="sac-test", env=EnvConfig(name="pendulum"),
                     sac=SACConfig(hidden_sizes=(64, 64)), model_based=False,
                     steps_per_iteration=200, num_iterations=20, init_steps=400,
                     updates_per_step=2, model_train_every=200, buffer_capacity=10_000,
                     eval_envs=5)
    trainer = make_mbpo_agent(cfg)
    _, metrics = jax.jit(trainer.train)(jax.random.PRNGKey(0))
    returns = np.asarray(metrics["return_mean"])
    assert returns[0] < -700, returns
    assert returns[-3:].mean() > -400, returns
