"""The dexterous-hand case study: a 24-DoF five-fingered hand in MJX and PDDM's tasks.

``hand.xml`` (the hand and the floor) and the task scenes ``track.xml``, ``baoding.xml``
and ``cube.xml`` ship with the package; ``tasks`` holds the environments, registered
here as ``hand_track``, ``hand_baoding`` and ``hand_cube``.
"""

from mbjax.envs.hand.tasks import (
    ASSET_DIR,
    JOINTS,
    HandBaoding,
    HandCube,
    HandEnv,
    HandTrack,
    load_mj_model,
    orientation_distance,
)
from mbjax.envs.registry import register

register("hand_track", HandTrack,
         "24-DoF MJX hand: move a ball along a moving target (circle / figure-eight)")
register("hand_baoding", HandBaoding,
         "24-DoF MJX hand: PDDM Baoding balls, two balls rotating around each other")
register("hand_cube", HandCube,
         "24-DoF MJX hand: in-hand cube reorientation to a random target orientation")

__all__ = ["ASSET_DIR", "JOINTS", "HandBaoding", "HandCube", "HandEnv", "HandTrack",
           "load_mj_model", "orientation_distance"]
