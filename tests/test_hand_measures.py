"""Success measures of the hand tasks (``episode_measures``) on scripted observations.

No physics is stepped: each test writes object positions (and phases / quaternions) into
observation arrays by hand, so the counts are known exactly.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import mbjax  # noqa: F401  (sets XLA flags before any JAX computation)
from mbjax.envs.hand import tasks as hand


@pytest.fixture(scope="module")
def baoding():
    return hand.HandBaoding()


def baoding_obs(env, bearings, centre=(0.0, 0.0), phases=None, offset=0.0):
    """Observations [T, 68] with the ball pair at ``bearings`` [T] (rad: ball 1 seen from
    ball 2) around ``centre``, the target phase at ``phases`` (default: the bearings) and
    ball 1 moved ``offset`` m along +x from its place."""
    bearings = np.asarray(bearings, np.float64)
    phases = bearings if phases is None else np.asarray(phases, np.float64)
    obs = np.zeros((len(bearings), env.observation_size), np.float32)
    r, z = env.radius, hand.BAODING_REST_Z
    for t, (b, ph) in enumerate(zip(bearings, phases)):
        u = r * np.array([np.cos(b), np.sin(b)])
        obs[t, 48:51] = [centre[0] + u[0] + offset, centre[1] + u[1], z]
        obs[t, 57:60] = [centre[0] - u[0], centre[1] - u[1], z]
        obs[t, 66:68] = [np.cos(ph), np.sin(ph)]
    return obs


def measures(env, obs, alive=None):
    """``episode_measures`` of the transitions obs[t] -> obs[t + 1] (actions zero)."""
    o, no = jnp.asarray(obs[:-1]), jnp.asarray(obs[1:])
    alive = jnp.ones(len(o)) if alive is None else jnp.asarray(alive, jnp.float32)
    out = env.episode_measures(o, jnp.zeros((len(o), env.action_size)), no, alive)
    return {k: float(v) for k, v in out.items()}


def test_a_scripted_half_turn_of_the_pair_counts_one_half_turn(baoding):
    m = measures(baoding, baoding_obs(baoding, np.linspace(0.0, np.pi, 21)))
    assert m["rotation"] == pytest.approx(0.5, abs=1e-5)
    assert m["half_turns"] == 1.0
    # 0.9 of a half-turn is not a completed half-turn; 2.2 half-turns complete two.
    assert measures(baoding, baoding_obs(baoding, np.linspace(0, 0.9 * np.pi, 21))
                    )["half_turns"] == 0.0
    m = measures(baoding, baoding_obs(baoding, np.linspace(0, 2.2 * np.pi, 45)))
    assert m["rotation"] == pytest.approx(1.1, abs=1e-5) and m["half_turns"] == 2.0


def test_turns_count_in_the_task_direction_about_each_other(baoding):
    clockwise = baoding_obs(baoding, np.linspace(0.0, -np.pi, 21))
    m = measures(baoding, clockwise)
    assert m["rotation"] == pytest.approx(-0.5, abs=1e-5) and m["half_turns"] == 0.0
    assert measures(hand.HandBaoding(direction=-1), clockwise)["half_turns"] == 1.0
    # The pair turning about each other away from the palm centre still turns.
    off_centre = baoding_obs(baoding, np.linspace(0.0, np.pi, 21), centre=(0.01, -0.008))
    assert measures(baoding, off_centre)["half_turns"] == 1.0
    # Back and forth: net progress counts, not distance travelled.
    there_and_back = np.concatenate([np.linspace(0, 0.8 * np.pi, 17),
                                     np.linspace(0.8 * np.pi, 0.1, 17)])
    m = measures(baoding, baoding_obs(baoding, there_and_back))
    assert m["rotation"] == pytest.approx(0.1 / (2 * np.pi), abs=1e-5)


def test_steps_after_the_episode_ended_do_not_count(baoding):
    obs = baoding_obs(baoding, np.linspace(0.0, np.pi, 21))
    alive = np.r_[np.ones(10), np.zeros(10)]  # half of the motion, then the episode ended
    m = measures(baoding, obs, alive)
    assert m["rotation"] == pytest.approx(0.25, abs=1e-5) and m["half_turns"] == 0.0


def test_on_target_is_the_fraction_of_steps_with_both_balls_within_1_cm(baoding):
    bearings = np.linspace(0.0, np.pi, 21)
    assert measures(baoding, baoding_obs(baoding, bearings))["on_target"] == 1.0
    # Ball 1 9 mm off its target: on target; 11 mm off: not (ball 2 stays on its own).
    assert measures(baoding, baoding_obs(baoding, bearings, offset=0.009))["on_target"] == 1.0
    assert measures(baoding, baoding_obs(baoding, bearings, offset=0.011))["on_target"] == 0.0
    # Targets lagging the balls by 0.5 rad (12 mm at r = 25 mm) for the last 5 of 20 steps.
    phases = bearings.copy()
    phases[-5:] -= 0.5
    assert measures(baoding, baoding_obs(baoding, bearings, phases=phases))["on_target"] \
        == pytest.approx(15 / 20)


def test_a_ball_below_the_drop_line_is_a_drop_only_inside_the_episode(baoding):
    obs = baoding_obs(baoding, np.zeros(11))
    obs[6:, 50] = baoding.drop_height - 0.01  # ball 1 falls at transition 5
    assert measures(baoding, obs)["dropped"] == 1.0
    assert measures(baoding, obs, np.r_[np.ones(5), np.zeros(5)])["dropped"] == 0.0
    assert measures(baoding, baoding_obs(baoding, np.zeros(11)))["dropped"] == 0.0


def test_track_counts_laps_of_the_ball_about_the_palm_centre():
    env = hand.HandTrack()
    angles = np.linspace(0.0, 3 * np.pi, 61)  # 1.5 laps counter-clockwise
    obs = np.zeros((61, env.observation_size), np.float32)
    obs[:, 48] = env.radius * np.cos(angles)
    obs[:, 49] = env.radius * np.sin(angles)
    obs[:, 50] = hand.BALL_REST_Z
    obs[:, 57], obs[:, 58] = np.cos(angles), np.sin(angles)  # the target moves with it
    m = measures(env, obs)
    assert m["rotation"] == pytest.approx(1.5, abs=1e-5) and m["half_turns"] == 3.0
    assert m["on_target"] == 1.0 and m["dropped"] == 0.0


def test_cube_success_is_a_small_final_error_without_a_drop():
    env = hand.HandCube()
    target = np.asarray(hand.quat_from_axis_angle(jnp.array([1.0, 0.0, 0.0]), 1.0))
    angles = np.linspace(0.0, 0.9, 11)  # the cube turns towards the target: 1.0 -> 0.1 rad
    obs = np.zeros((11, env.observation_size), np.float32)
    obs[:, 50] = hand.PALM_TOP_Z + hand.CUBE_HALF
    for t, a in enumerate(angles):
        obs[t, 51:55] = np.asarray(hand.quat_from_axis_angle(jnp.array([1.0, 0.0, 0.0]), a))
    obs[:, 61:65] = target
    m = measures(env, obs)
    assert m["start_error"] == pytest.approx(1.0, abs=1e-4)
    assert m["final_error"] == pytest.approx(0.1, abs=1e-4) and m["success"] == 1.0
    # The episode ended after 5 transitions: its final state is obs[5] (0.55 rad off).
    m = measures(env, obs, np.r_[np.ones(5), np.zeros(5)])
    assert m["final_error"] == pytest.approx(0.55, abs=1e-4) and m["success"] == 0.0
    obs[-1, 50] = 0.05  # dropped on the last step: no success, however close
    m = measures(env, obs)
    assert m["dropped"] == 1.0 and m["success"] == 0.0


def test_turn_reward_pays_for_rotation_in_the_task_direction():
    """reward="turn": 10 per radian the pair turns in the task direction, - 5 per metre the
    pair's midpoint is off the palm centre, - w |q_wrist|; the tracking reward is unchanged."""
    env = hand.HandBaoding(reward="turn", wrist_weight=1.0)
    o = jnp.asarray(baoding_obs(env, [0.0, 0.1, 0.0]))
    r = lambda a, b: float(env.reward_fn(o[a], jnp.zeros(24), o[b]))  # noqa: E731
    assert r(0, 1) == pytest.approx(1.0, abs=1e-5)   # +0.1 rad counter-clockwise
    assert r(1, 2) == pytest.approx(-1.0, abs=1e-5)  # turning back costs the same
    assert float(hand.HandBaoding(reward="turn", wrist_weight=1.0, direction=-1).reward_fn(
        o[1], jnp.zeros(24), o[2])) == pytest.approx(1.0, abs=1e-5)
    shifted = jnp.asarray(baoding_obs(env, [0.1], centre=(0.006, 0.008)))[0]
    tilted = shifted.at[0:2].set(jnp.array([0.3, 0.4]))  # wrist 0.5 rad from neutral
    assert float(env.reward_fn(o[0], jnp.zeros(24), tilted)) == pytest.approx(
        1.0 - 5 * 0.01 - 0.5, abs=1e-5)
    track = hand.HandBaoding()
    assert float(track.reward_fn(o[0], jnp.zeros(24), o[0])) == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="reward must be one of"):
        hand.HandBaoding(reward="spin")


def test_known_next_obs_advances_the_goal_clock_of_the_task_at_hand():
    """A learned model's next observation gets the task's own clock: phi + omega dt in the
    task's direction (the same for circle and figure-eight), through action repeat (k
    steps) and an observation extension (extras kept); the cube keeps its target."""
    from mbjax.envs.wrappers import ActionRepeat, ObservationExtension

    phi = 0.7
    for env in (hand.HandTrack(), hand.HandTrack(direction=-1, period=2.0),
                hand.HandTrack(path="figure8")):
        obs = np.zeros(env.observation_size, np.float32)
        obs[-2:] = [np.cos(phi), np.sin(phi)]
        predicted = jnp.full(env.observation_size, 0.5)
        step = 2 * np.pi / env.period * env.direction * env.dt
        out = np.asarray(env.known_next_obs(jnp.asarray(obs), predicted))
        np.testing.assert_allclose(out[-2:], [np.cos(phi + step), np.sin(phi + step)],
                                   atol=1e-6)
        np.testing.assert_array_equal(out[:-2], 0.5)
        out3 = np.asarray(ActionRepeat(env, 3).known_next_obs(jnp.asarray(obs), predicted))
        np.testing.assert_allclose(out3[-2:], [np.cos(phi + 3 * step),
                                               np.sin(phi + 3 * step)], atol=1e-5)
        extended = ObservationExtension(env, lambda prev, new: jnp.zeros(1), 1)
        out_x = np.asarray(extended.known_next_obs(jnp.append(jnp.asarray(obs), 9.0),
                                                   jnp.append(predicted, 7.0)))
        np.testing.assert_allclose(out_x[:-1], out, atol=1e-6)
        assert out_x[-1] == 7.0
    cube = hand.HandCube()
    obs = jnp.arange(cube.observation_size, dtype=jnp.float32)
    out = np.asarray(cube.known_next_obs(obs, jnp.zeros(cube.observation_size)))
    np.testing.assert_array_equal(out[-4:], np.asarray(obs[-4:]))
    np.testing.assert_array_equal(out[:-4], 0.0)
