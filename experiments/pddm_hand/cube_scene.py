"""Does the still hand keep the cube? Native MuJoCo, and MJX under scene variants.

  python experiments/pddm_hand/cube_scene.py native     # ~1 min, native MuJoCo
  python experiments/pddm_hand/cube_scene.py variants   # ~4 min, MJX, 6 scene variants

``native`` holds the hand still (every actuator at the middle of its control range, as
the action a = 0 does) from the task's own start states on native ``mujoco.mj_step`` and
writes ``results/cube-hold-still-native.json`` beside the MJX baselines' hold-still drops.

``variants`` is the probe that found why MJX used to drop the cube when native MuJoCo did
not: the same still hand on MJX (16 starts x 100 control steps, one vmapped program per
variant) with the solver's Newton iterations at 2 (hand.xml's value), 3, 4 (cube.xml's)
and 8, and with 2 iterations a convex-mesh cube (8 vertices, MJX's ``convex_convex``
instead of ``box_box``) and an elliptic friction cone. Writes
``results/cube-scene-variants.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

import mbjax  # noqa: F401  (XLA flags before JAX starts)

sys.path.insert(0, str(Path(__file__).parent))
from run import RESULTS  # noqa: E402

from mbjax.envs.hand import tasks as hand  # noqa: E402
from mbjax.utils.bench import git_state, machine_info  # noqa: E402

EPISODES = 16
STEPS = 100  # control steps (the task's episode length)


def native() -> None:
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


MESH_CUBE = ('<mesh name="cube_mesh" vertex="' + " ".join(
    f"{x} {y} {z}" for x in (-hand.CUBE_HALF, hand.CUBE_HALF)
    for y in (-hand.CUBE_HALF, hand.CUBE_HALF) for z in (-hand.CUBE_HALF, hand.CUBE_HALF))
    + '"/>')


def variant_model(iterations: int, mesh: bool = False, elliptic: bool = False):
    """The cube scene's MuJoCo model with the variant's solver / cone / cube geometry."""
    import tempfile

    xml = (hand.ASSET_DIR / "cube.xml").read_text()
    if mesh:
        xml = xml.replace('<material name="cube" texture="cube"/>',
                          '<material name="cube" texture="cube"/>' + MESH_CUBE)
        box = f'type="box" size="{hand.CUBE_HALF} {hand.CUBE_HALF} {hand.CUBE_HALF}"'
        assert box in xml, "cube.xml's cube geom changed: update MESH_CUBE's replacement"
        xml = xml.replace(box, 'type="mesh" mesh="cube_mesh"', 1)
    with tempfile.TemporaryDirectory() as tmp:  # hand.xml is included by relative path
        for f in hand.ASSET_DIR.glob("*.xml"):
            (Path(tmp) / f.name).write_text(f.read_text())
        (Path(tmp) / "cube.xml").write_text(xml)
        model = mujoco.MjModel.from_xml_path(str(Path(tmp) / "cube.xml"))
    model.opt.iterations = iterations
    if elliptic:
        model.opt.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    return model


def variants() -> None:
    from mujoco import mjx

    cases = [dict(iterations=2), dict(iterations=3), dict(iterations=4),
             dict(iterations=8), dict(iterations=2, mesh=True),
             dict(iterations=2, elliptic=True)]
    rows, code = [], git_state()
    for case in cases:
        env = hand.HandCube()
        env.mj_model = variant_model(**case)
        env.mjx_model = mjx.put_model(env.mj_model)
        keys = jax.random.split(jax.random.PRNGKey(123), EPISODES)

        def episode(key, env=env):
            def body(s, _):
                s = env.step(s, jnp.zeros(env.action_size))
                return s, env.object_positions(s.obs)[0, 2]

            return jax.lax.scan(body, env.reset(key), None, STEPS)[1]

        z = np.asarray(jax.jit(jax.vmap(episode))(keys))  # [episodes, steps]
        row = {"iterations": case["iterations"], "cube": "mesh" if case.get("mesh") else "box",
               "cone": "elliptic" if case.get("elliptic") else "pyramidal",
               "dropped_fraction": float((z < env.drop_height).any(1).mean()),
               "lowest_centre_m": float(z.min()), "final_centre_median_m":
               float(np.median(z[:, -1]))}
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"task": "hand_cube", "simulator": "mjx", "episodes": EPISODES,
           "control_steps": STEPS, "drop_height": hand.HandCube().drop_height,
           "variants": rows, "machine": machine_info(), "code": code}
    path = RESULTS / "cube-scene-variants.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="?", default="native", choices=["native", "variants"])
    {"native": native, "variants": variants}[parser.parse_args().what]()
