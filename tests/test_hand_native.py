"""Native-MuJoCo rollouts of the hand tasks (``mbjax.envs.hand.native``): what they reject.

Their agreement with MJX is checked where an MJX rollout is compiled anyway:
``tests/test_hand.py::test_rewards_match_on_random_rollouts``.
"""

from __future__ import annotations

import dataclasses

import pytest

import mbjax  # noqa: F401  (sets XLA flags before any JAX computation)
from mbjax import envs
from mbjax.agents import MPCConfig, ObjectiveConfig, make_agent
from mbjax.envs.hand.native import NativeRollout
from mbjax.envs.hand.tasks import HandBaoding


def test_native_rollouts_reject_what_they_cannot_run():
    with pytest.raises(TypeError, match="hand task"):
        NativeRollout(envs.make("pendulum"))
    with pytest.raises(ValueError, match="box contacts"):
        NativeRollout(envs.make("hand_cube"))
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
