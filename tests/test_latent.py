"""Pixel pendulum and the latent dynamics model (lecture notes case 3B): rendering, env API,
joint training of encoder / latent transition / decoder / reward head, latent-space MPC."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mbjax.envs as envs
from mbjax.envs.base import RewardFnUnavailableError
from mbjax.envs.classic import Pendulum
from mbjax.envs.pixel import PixelPendulum, render_rod
from mbjax.models.latent import (
    LatentConfig,
    LatentModel,
    concat_episodes,
    episodes_from_transitions,
    make_latent_objective,
    split_episodes,
    symexp,
    symlog,
)
from mbjax.planners import MPPIConfig, MPPIParams, make_mppi, mpc


def com_angle(image):
    """Angle (0 = up, counter-clockwise) of the intensity centre of mass of [S, S] images."""
    s = image.shape[-1]
    c = -1.0 + 2.0 / s * (jnp.arange(s) + 0.5)
    x, y = c[None, :], c[::-1][:, None]
    w = image.sum((-1, -2))
    xc, yc = (image * x).sum((-1, -2)) / w, (image * y).sum((-1, -2)) / w
    return jnp.arctan2(-xc, yc)


def wrap(a):
    return (a + np.pi) % (2 * np.pi) - np.pi


def random_episodes(env, key, num, steps):
    """``num`` uniform-random-policy episodes of ``steps`` steps (no resets inside)."""
    policy = envs.uniform_random_policy(env)

    def one(k):
        k_reset, k_roll = jax.random.split(k)
        return envs.rollout(env, policy, env.reset(k_reset), k_roll, steps)[1]

    return episodes_from_transitions(jax.jit(jax.vmap(one))(jax.random.split(key, num)))


# ----------------------------------------------------------------------------------------
# Pixel pendulum
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 64])
def test_rod_centre_of_mass_follows_theta(size):
    thetas = jnp.linspace(-np.pi, np.pi, 25, endpoint=False)
    images = jax.vmap(lambda t: render_rod(t, size))(thetas)
    assert images.shape == (25, size, size)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    err = np.abs(wrap(np.asarray(com_angle(images)) - np.asarray(thetas)))
    assert err.max() < 0.01, err.max()
    # Anti-aliasing: the lit area is the rod's area, whatever the angle (+-3 %).
    area = np.asarray(images.sum((-1, -2))) * (2.0 / size) ** 2
    rod_area = 2 * 0.1 * 0.8 + np.pi * 0.1**2
    np.testing.assert_allclose(area, rod_area, rtol=0.03)
    # theta = 0 points up: the top half is lit; below the pivot's rounded cap
    # (radius 0.1 half-widths, so rows with y < -0.2) everything is dark.
    up = np.asarray(render_rod(jnp.zeros(()), size))
    assert up[: size // 2].sum() > 10 and up[int(0.6 * size):].sum() == 0


def test_pixel_env_reset_step_jit_vmap_and_frames(key):
    env = PixelPendulum()
    state = jax.jit(env.reset)(key)
    assert state.obs.shape == (2 * 32 * 32,) == (env.observation_size,)
    action = jnp.array([0.7])
    nstate = jax.jit(env.step)(state, action)
    eager = env.step(env.reset(key), action)
    np.testing.assert_allclose(nstate.obs, eager.obs, atol=1e-6)
    # Frames: [previous, current]; the step shifts the current frame into the previous.
    frames = env.frames(nstate.obs)
    assert frames.shape == (2, 32, 32)
    np.testing.assert_allclose(frames[0], env.frames(state.obs)[1], atol=1e-6)
    angles = com_angle(frames)
    np.testing.assert_allclose(wrap(np.asarray(angles) - np.asarray(nstate.physics)[[2, 0]]), 0,
                               atol=0.02)
    # On reset theta_prev = theta - theta_dot dt: the first observation shows the velocity.
    x = state.physics
    np.testing.assert_allclose(wrap(x[0] - x[2]), x[1] * env.dt, atol=1e-5)
    bstate = jax.vmap(env.reset)(jax.random.split(key, 5))
    bnext = jax.jit(jax.vmap(env.step))(bstate, jnp.zeros((5, 1)))
    assert bnext.obs.shape == (5, 2048) and bnext.reward.shape == (5,)
    assert PixelPendulum(image_size=64).reset(key).obs.shape == (2 * 64 * 64,)


def test_pixel_env_has_pendulum_dynamics_and_reward(key):
    pix, ref = PixelPendulum(), Pendulum()
    actions = jax.random.uniform(key, (60, 1), minval=-2.5, maxval=2.5)

    def run(env, k):
        def body(s, a):
            s = env.step(s, a)
            return s, (s.physics, s.reward)

        return jax.lax.scan(body, env.reset(k), actions)[1]

    (x_pix, r_pix), (x_ref, r_ref) = run(pix, key), run(ref, key)
    np.testing.assert_allclose(x_pix[:, :2], x_ref, atol=1e-5)
    np.testing.assert_allclose(r_pix, r_ref, atol=1e-5)
    assert not pix.has_reward_fn
    with pytest.raises(RewardFnUnavailableError):
        pix.reward_fn(jnp.zeros(2048), jnp.zeros(1), jnp.zeros(2048))
    with pytest.raises(ValueError):
        PixelPendulum(image_size=4)


def test_pixel_env_determinism_and_wrappers():
    env = envs.wrap_for_training(PixelPendulum(), episode_length=20, num_envs=4)
    policy = envs.uniform_random_policy(env)

    @jax.jit
    def run(key):
        k1, k2 = jax.random.split(key)
        return envs.rollout(env, policy, env.reset(k1), k2, 30)[1]

    a, b, c = run(jax.random.PRNGKey(3)), run(jax.random.PRNGKey(3)), run(jax.random.PRNGKey(4))
    assert a.obs.shape == (30, 4, 2048)
    np.testing.assert_array_equal(a.obs, b.obs)
    np.testing.assert_array_equal(a.reward, b.reward)
    assert not np.allclose(a.obs, c.obs)
    assert float(a.truncated.sum()) == 4.0  # every env truncated once at step 20
    assert np.all(np.isfinite(a.obs)) and np.all(np.isfinite(a.reward))


# ----------------------------------------------------------------------------------------
# Latent model: API
# ----------------------------------------------------------------------------------------


def tiny_model(obs_size=2 * 16 * 16, **overrides):
    cfg = dict(latent_size=4, encoder_sizes=(32,), decoder_sizes=(32,),
               transition_sizes=(32,), reward_sizes=(32,), horizon=3, batch_size=8,
               num_steps=5)
    cfg.update(overrides)
    return LatentModel(obs_size, 1, LatentConfig(**cfg))


@pytest.mark.parametrize("bad", [dict(latent_size=0), dict(horizon=0), dict(batch_size=0),
                                 dict(encoder_sizes=(0,)), dict(activation="nope"),
                                 dict(recon_weight=0.0, pred_weight=0.0),
                                 dict(reward_weight=-1.0), dict(learning_rate=0.0),
                                 dict(final_lr_fraction=2.0)])
def test_config_validation(bad):
    with pytest.raises(ValueError):
        LatentConfig(**bad)


def test_episode_utilities_and_window_sampling():
    env = PixelPendulum(image_size=16)
    eps = random_episodes(env, jax.random.PRNGKey(0), 3, 12)
    assert eps.obs.shape == (3, 13, 512) and eps.action.shape == (3, 12, 1)
    pieces = split_episodes(eps, 4)
    assert pieces.obs.shape == (9, 5, 512) and pieces.reward.shape == (9, 4)
    np.testing.assert_array_equal(pieces.obs[1, 0], eps.obs[0, 4])  # shared boundary frame
    np.testing.assert_array_equal(pieces.reward[5], eps.reward[1, 8:12])
    both = concat_episodes(pieces, pieces)
    assert both.obs.shape[0] == 18
    model = tiny_model(512)
    # Windows only come from valid episodes.
    masked = pieces.replace(valid=jnp.zeros(9).at[4].set(1.0))
    obs, action, reward = model.sample_windows(masked, 16, jax.random.PRNGKey(1))
    assert obs.shape == (16, 4, 512) and action.shape == (16, 3, 1) and reward.shape == (16, 3)
    piece = np.asarray(pieces.obs[4])
    for w in np.asarray(obs):
        assert any(np.array_equal(w, piece[t:t + 4]) for t in range(2))
    np.testing.assert_allclose(symexp(symlog(jnp.array([-16.0, -0.01, 0.0, 3.0]))),
                               [-16.0, -0.01, 0.0, 3.0], rtol=1e-5, atol=1e-7)


@pytest.mark.slow  # > 8 s: kept out of the quick loop (CI runs it)
def test_predict_shapes_and_determinism():
    env = PixelPendulum(image_size=16)
    eps = random_episodes(env, jax.random.PRNGKey(0), 4, 10)
    model = tiny_model(512)
    state = model.init(jax.random.PRNGKey(1))
    train = jax.jit(model.train)
    s1, m1 = train(state, eps, jax.random.PRNGKey(2))
    s2, m2 = train(state, eps, jax.random.PRNGKey(2))
    for a, b in zip(jax.tree_util.tree_leaves(s1), jax.tree_util.tree_leaves(s2)):
        np.testing.assert_array_equal(a, b)
    assert m1["latent/loss"].shape == (5,) and int(s1.step) == 5
    assert not bool(m1["latent/loss_nonfinite"].any())
    z = model.encode(s1, eps.obs[:, 0])  # [4, L]
    assert z.shape == (4, 4) and model.decode(s1, z).shape == (4, 512)
    z_seq, rewards = model.predict(s1, z, eps.action[:, :6])
    assert z_seq.shape == (4, 6, 4) and rewards.shape == (4, 6)
    # predict is step + reward, composed.
    np.testing.assert_allclose(z_seq[:, 0], model.step(s1, z, eps.action[:, 0]), atol=1e-5)
    np.testing.assert_allclose(rewards[:, 0], model.reward(s1, z, eps.action[:, 0]),
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError):
        model.encode(s1, jnp.zeros((2, 100)))
    # The planner objective: encode once, sum the (discounted) predicted rewards.
    objective = make_latent_objective(model, discount=0.9)
    returns = objective(s1, eps.obs[0, 0], eps.action[:, :6], None)
    _, r = model.predict(s1, jnp.broadcast_to(z[0], (4, 4)), eps.action[:, :6])
    np.testing.assert_allclose(returns, (r * 0.9 ** jnp.arange(6)).sum(-1), rtol=1e-5)


def test_nonfinite_loss_skips_update_and_is_reported():
    env = PixelPendulum(image_size=16)
    eps = random_episodes(env, jax.random.PRNGKey(0), 2, 10)
    eps = eps.replace(reward=eps.reward.at[:, :].set(jnp.nan))
    model = tiny_model(512)
    state = model.init(jax.random.PRNGKey(1))
    new, metrics = jax.jit(model.train)(state, eps, jax.random.PRNGKey(2))
    assert bool(metrics["latent/loss_nonfinite"].all())
    for a, b in zip(jax.tree_util.tree_leaves(new.params),
                    jax.tree_util.tree_leaves(state.params)):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------------------
# Latent model: learning
# ----------------------------------------------------------------------------------------


@pytest.mark.slow  # > 8 s: kept out of the quick loop (CI runs it)
def test_training_reduces_reconstruction_error_and_bounds_multistep_error():
    """A short run on 32 x 32 frames: the autoencoder and the K-step latent rollout learn."""
    env = PixelPendulum()
    data = random_episodes(env, jax.random.PRNGKey(0), 32, 40)
    held_out = random_episodes(env, jax.random.PRNGKey(1), 8, 40)
    cfg = LatentConfig(encoder_sizes=(128, 128), decoder_sizes=(128, 128), horizon=5,
                       batch_size=16, num_steps=400)
    model = LatentModel(env.observation_size, 1, cfg)
    state, metrics = jax.jit(model.train)(model.init(jax.random.PRNGKey(2)), data,
                                          jax.random.PRNGKey(3))
    recon = np.asarray(metrics["latent/recon_mse"])
    first, last = recon[:20].mean(), recon[-20:].mean()
    assert last < first / 3, (first, last)
    ev = model.evaluate(state, held_out, jax.random.PRNGKey(4), num_windows=128)
    # Held-out frames: reconstructions and K-step open-loop predictions beat the mean
    # frame (pixel variance) by a wide margin, and the latent error stays bounded.
    assert float(ev["recon_mse"]) < 0.3 * float(ev["mean_image_mse"]), ev
    pred = np.asarray(ev["pred_mse"])
    assert np.all(pred < 0.5 * float(ev["mean_image_mse"])), pred
    latent_error = np.asarray(ev["latent_error"])
    assert np.all(np.isfinite(latent_error)) and latent_error[-1] < 0.5, latent_error


@pytest.mark.slow
def test_latent_mpc_swings_up_pixel_pendulum():
    """Train on random-policy pixels, then the project's filtered MPPI planning in latent
    space (``make_latent_objective`` + ``mbjax.planners.mpc``) swings the pendulum up.

    Data: 128 random-policy episodes of 50 steps (2.5 s) from initial states uniform in
    theta in [-pi, pi) and theta_dot in [-8, 8] (so the upright region is visited).
    """
    data_env = PixelPendulum(init_speed_range=8.0)
    env = PixelPendulum()
    data = random_episodes(data_env, jax.random.PRNGKey(0), 128, 50)
    model = LatentModel(env.observation_size, 1, LatentConfig(num_steps=1000))
    state, metrics = jax.jit(model.train)(model.init(jax.random.PRNGKey(1)), data,
                                          jax.random.PRNGKey(2))
    recon = np.asarray(metrics["latent/recon_mse"])
    assert recon[-50:].mean() < recon[:50].mean() / 3, (recon[:50].mean(), recon[-50:].mean())

    planner = make_mppi(make_latent_objective(model), env.action_low, env.action_high,
                        MPPIConfig(horizon=15, population=200, iterations=2),
                        MPPIParams(kappa=10.0, beta=0.7, sigma=1.0))
    starts = jnp.array([np.pi, 2.5, -2.0])  # at rest, hanging (theta = pi) or near it

    def start_state(theta, key):
        x = jnp.array([theta, 0.0, theta])
        return env.reset(key).replace(physics=x, obs=env.observe(x))

    @jax.jit
    def run_mpc(latent_state, key):
        def one(theta, k):
            s0 = start_state(theta, k)
            _, _, transitions, _ = mpc(env, planner, planner.default_params, latent_state,
                                       s0, planner.init(k), k, 200)
            return transitions

        return jax.vmap(one)(starts, jax.random.split(key, starts.shape[0]))

    transitions = run_mpc(state, jax.random.PRNGKey(3))

    # Baseline: the random policy from the same starts.
    policy = envs.uniform_random_policy(env)

    def random_run(theta, k):
        return envs.rollout(env, policy, start_state(theta, k), k, 200)[1].reward

    random_rewards = jax.vmap(random_run)(starts, jax.random.split(jax.random.PRNGKey(6), 3))
    random_last = float(random_rewards[:, -100:].mean())  # about -6 per step

    last_reward = np.asarray(transitions.reward[:, -100:].mean(-1))
    # The angle as the camera sees it: the centre of mass of the current frame.
    theta = np.asarray(com_angle(env.frames(transitions.next_obs[:, -100:])[..., 1, :, :]))
    upright = np.cos(theta) > 0.9
    # Over the last 100 steps (5 s) the episodes stay upright (cos theta > 0.9, i.e.
    # |theta| < 26 deg): 80 % of the steps on average and at least half in each episode
    # (one fall-and-recover is allowed: the model is learnt from 128 random episodes and
    # the exact float numbers, hence which start falls once, differ between CPUs; measured
    # on an Intel Xeon and an AMD EPYC: 0.7-1.0 per episode, mean >= 0.9). Holding the
    # pendulum costs ~0.02-0.1 per step; one fall-and-recover ~1.3 per step in that
    # episode; a run that spins or swings through the top costs 2-8 (the random policy
    # ~6). Requiring a mean above 10 % of the random policy's (-0.6) separates holding
    # from spinning.
    assert random_last < -3.0, random_last
    assert upright.mean() >= 0.8 and np.all(upright.mean(-1) >= 0.5), (upright.mean(-1),
                                                                       last_reward)
    assert last_reward.mean() > 0.1 * random_last, (last_reward, random_last)
