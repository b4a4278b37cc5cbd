"""Offscreen pictures of the hand tasks with MuJoCo's renderer (no MJX needed).

The renderer needs an OpenGL backend: set ``MUJOCO_GL=egl`` or ``MUJOCO_GL=osmesa``
before importing mujoco (Debian: ``apt-get install libegl1`` or ``libosmesa6``).
``render_frames`` raises ``RenderUnavailableError`` with that advice when no context
can be made.

Frames come from the joint positions of env states (``State.physics.qpos``) copied into
a native ``MjData``; the target markers (mocap bodies of the scenes) are placed from the
observation: the ball targets of track/Baoding, the cube's target orientation shown
beside the hand.
"""

from __future__ import annotations

import numpy as np

from mbjax.envs.hand.tasks import HandBaoding, HandCube, HandEnv, HandTrack


class RenderUnavailableError(RuntimeError):
    """No OpenGL context (set MUJOCO_GL=egl or osmesa and install the library)."""


def _set_markers(env: HandEnv, model, data, obs: np.ndarray) -> None:
    if isinstance(env, HandTrack):
        data.mocap_pos[0] = np.asarray(env.target(obs[-2], obs[-1]))
    elif isinstance(env, HandBaoding):
        data.mocap_pos[:2] = np.asarray(env.targets(obs[-2], obs[-1]))
    elif isinstance(env, HandCube):
        data.mocap_quat[0] = obs[61:65]


def render_frames(env: HandEnv, qpos: np.ndarray, obs: np.ndarray, camera: str = "diag",
                  width: int = 480, height: int = 360) -> list[np.ndarray]:
    """RGB frames [height, width, 3] uint8, one per row of ``qpos`` [T, nq] / ``obs`` [T, O]."""
    import mujoco

    model = env.mj_model
    data = mujoco.MjData(model)
    try:
        renderer = mujoco.Renderer(model, height=height, width=width)
    except Exception as err:  # mujoco raises various errors without a GL context
        raise RenderUnavailableError(
            f"MuJoCo's offscreen renderer is unavailable ({err}). Install an OpenGL "
            "backend (apt-get install libegl1 or libosmesa6) and set MUJOCO_GL=egl or "
            "MUJOCO_GL=osmesa before starting Python.") from err
    frames = []
    try:
        for q, o in zip(np.asarray(qpos), np.asarray(obs)):
            data.qpos[:] = q
            _set_markers(env, model, data, o)
            mujoco.mj_forward(model, data)
            renderer.update_scene(data, camera=camera)
            frames.append(renderer.render().copy())
    finally:
        renderer.close()
    return frames


def save_gif(frames: list[np.ndarray], path, fps: float = 25.0) -> None:
    """Writes an animated GIF with Pillow."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], loop=0,
                   duration=int(round(1000 / fps)), optimize=True)
