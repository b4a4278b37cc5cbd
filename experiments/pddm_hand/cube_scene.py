"""Does the still hand keep the cube? The same scene on native MuJoCo and on MJX.

  python experiments/pddm_hand/cube_scene.py      # ~1 min, native MuJoCo only

``run.py baselines --task hand_cube`` (MJX) drops the cube in most hold-still episodes.
This script holds the hand still (every actuator at the middle of its control range, as
the action a = 0 does) from the task's own start states, but steps native
``mujoco.mj_step``. If the native scene keeps the cube, the drops come from MJX's contacts
(its box collisions; ``mbjax.envs.hand.native`` already refuses the cube because they
differ from native MuJoCo within one step), not from the scene's masses, friction or pose.
Writes ``results/cube-hold-still-native.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import mujoco
import numpy as np

import mbjax  # noqa: F401  (XLA flags before JAX starts)

sys.path.insert(0, str(Path(__file__).parent))
from run import RESULTS  # noqa: E402

from mbjax.envs.hand import tasks as hand  # noqa: E402
from mbjax.utils.bench import git_state, machine_info  # noqa: E402

EPISODES = 16
STEPS = 100  # control steps (the task's episode length)


def main() -> None:
    env = hand.HandCube()
    model = env.mj_model
    low, high = model.actuator_ctrlrange[:, 0], model.actuator_ctrlrange[:, 1]
    starts = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(123), EPISODES))
    qpos, qvel = np.asarray(starts.physics.qpos), np.asarray(starts.physics.qvel)
    cube_z = model.nq - 7 + 2  # the cube's free joint: x, y, z, quaternion
    substeps = round(env.dt / model.opt.timestep)
    dropped_at, final_shift = [], []
    for i in range(EPISODES):
        data = mujoco.MjData(model)
        data.qpos[:], data.qvel[:], data.ctrl[:] = qpos[i], qvel[i], (low + high) / 2
        start_xy = data.qpos[cube_z - 2:cube_z].copy()
        drop = None
        for t in range(STEPS * substeps):
            mujoco.mj_step(model, data)
            if data.qpos[cube_z] < env.drop_height:
                drop = t // substeps
                break
        dropped_at.append(drop)
        final_shift.append(float(np.linalg.norm(data.qpos[cube_z - 2:cube_z] - start_xy)))
    mjx = json.loads((RESULTS / "baselines-hand_cube.json").read_text())
    out = {"task": "hand_cube", "episodes": EPISODES, "control_steps": STEPS,
           "substeps": substeps, "drop_height": env.drop_height,
           "native_dropped_fraction": float(np.mean([d is not None for d in dropped_at])),
           "native_dropped_at_step": dropped_at,
           "native_final_xy_shift_m": final_shift,
           "mjx_hold_still_dropped_fraction": mjx["hold_still"]["measures"]["dropped"],
           "mjx_source": "results/baselines-hand_cube.json",
           "machine": machine_info(), "code": git_state()}
    path = RESULTS / "cube-hold-still-native.json"
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
