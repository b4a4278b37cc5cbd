"""Hand-task rollouts on native MuJoCo, callable from jitted JAX code.

A planner on the true simulator scores N action sequences of H steps from the current
state. On a CPU, MJX steps the hand at ~700 control steps/s (2 cores, batched); the same
model on native MuJoCo (``mujoco.rollout``, one C thread per core) runs ~10x faster. This
module offers that speed to every mbjax planner without leaving ``jit``:
``NativeRollout(env).next_obs(state, actions)`` is a ``jax.pure_callback`` that copies the
MJX state (qpos, qvel, the servo targets, the solver's warm start) to MuJoCo, rolls every
sequence out with ``substeps`` physics steps per action, and returns the observations the
task env would have produced. ``mbjax.models.true_dynamics.simulate_native`` turns them
into a rollout with rewards, and ``ObjectiveConfig.simulator = "mujoco"`` plans with it.

The physics is the same model (``env.mj_model``), but not bitwise the same numbers: MJX
computes in float32 with its own collision routines, native MuJoCo in float64. On the
ball tasks (``hand_track``, ``hand_baoding``: sphere-capsule and sphere-box contacts) the
two agree to 1e-3 relative over 6 random control steps. On ``hand_cube`` MJX's box-box
collision routine places the cube-palm contacts differently from native MuJoCo's: after
one random control step the cube's velocity already differs by ~1e-2 m/s (~30 %
relative), with the scene's 4 solver iterations as with 2, so the cube is refused (``tests/test_hand.py::test_rewards_match_on_random_rollouts``
measures both). Plans made on one are executed on the other (the closed loop still steps
the task env), so this is a planning model, close to the truth, not the truth itself.

Gradients do not pass through the callback (gradient planners and iLQR need the MJX
simulator). Under ``vmap`` (the planner batched over envs) the callback is called once with
all the batch's sequences, so one ``mujoco.rollout`` call runs them all on the threads.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mbjax.envs.base import State
from mbjax.types import Array

#: Tasks whose native rollouts match MJX (ball-hand contacts: spheres and capsules).
SUPPORTED_TASKS = ("hand_track", "hand_baoding")


class _Kinematics(NamedTuple):
    """The two ``mjx.Data`` fields a hand observation reads (``HandEnv._obs``)."""

    qpos: Array
    qvel: Array


class NativeRollout:
    """Rolls a hand task's action sequences out on native MuJoCo (see the module docstring).

    Args:
      env: a ball task of the hand (``SUPPORTED_TASKS``), unwrapped.
      num_threads: MuJoCo threads (default: the CPU count).
      strict: refuse the tasks whose native rollouts do not match MJX (the cube);
        ``False`` builds them anyway, to measure the mismatch.
    """

    def __init__(self, env, num_threads: int | None = None, strict: bool = True):
        import mujoco

        from mbjax.envs.hand.tasks import HandEnv

        if not isinstance(env, HandEnv):
            raise TypeError(f"native MuJoCo rollouts need a hand task (HandEnv), got "
                            f"{type(env).__name__} {getattr(env, 'name', '')!r}; plan on the "
                            "JAX simulator instead (objective.simulator 'jax')")
        if strict and env.name not in SUPPORTED_TASKS:
            raise ValueError(f"native MuJoCo rollouts are not a faithful model of "
                             f"{env.name!r}: MJX's box-box contacts differ from native MuJoCo's, "
                             "so the cube's velocity parts by ~1e-2 m/s within one control "
                             "step "
                             "(tests/test_hand.py measures it); plan on MJX "
                             "(objective.simulator 'jax'). Supported: "
                             f"{', '.join(SUPPORTED_TASKS)}")
        threads = num_threads or os.cpu_count() or 1
        if int(threads) != threads or threads < 1:
            raise ValueError(f"num_threads must be an integer >= 1, got {num_threads}")
        self.env = env
        self.num_threads = int(threads)
        self._mujoco = mujoco
        model = env.mj_model
        self._spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
        self._state_size = mujoco.mj_stateSize(model, self._spec)
        self._nq, self._nv = model.nq, model.nv
        # FULLPHYSICS layout: [time, qpos (nq), qvel (nv), act (na), plugin state].
        if self._state_size != 1 + model.nq + model.nv + model.na + model.nplugin:
            raise RuntimeError(f"{env.scene}.xml: unexpected MuJoCo state layout "
                               f"({self._state_size} entries)")
        self._datas = None  # one MjData per thread, made on first use

    # -- host side ------------------------------------------------------------------------
    def _rollout_host(self, qpos, qvel, ctrl, warmstart):
        """numpy: qpos [..., nq], qvel [..., nv], warmstart [..., nv], ctrl [..., B, H, nu]
        (leading axes broadcast) -> qpos, qvel after each action: [..., B, H, nq / nv]."""
        from mujoco import rollout

        mujoco = self._mujoco
        if self._datas is None:
            self._datas = [mujoco.MjData(self.env.mj_model) for _ in range(self.num_threads)]
        ctrl = np.asarray(ctrl, np.float64)
        lead, (num_seq, horizon, nu) = ctrl.shape[:-3], ctrl.shape[-3:]
        batch = int(np.prod(lead, dtype=np.int64)) * num_seq
        start = np.zeros((batch, self._state_size))
        per_seq = lambda x: np.broadcast_to(
            np.asarray(x, np.float64)[..., None, :], lead + (num_seq, x.shape[-1])
        ).reshape(batch, -1)
        start[:, 1:1 + self._nq] = per_seq(qpos)
        start[:, 1 + self._nq:1 + self._nq + self._nv] = per_seq(qvel)
        sub = self.env.substeps
        control = np.repeat(ctrl.reshape(batch, horizon, nu), sub, axis=1)
        states, _ = rollout.rollout(self.env.mj_model, self._datas, start, control,
                                    initial_warmstart=per_seq(warmstart),
                                    persistent_pool=True)
        after = states[:, sub - 1::sub]  # the state after each action's last substep
        shape = lead + (num_seq, horizon)
        return (after[..., 1:1 + self._nq].reshape(shape + (self._nq,)).astype(np.float32),
                after[..., 1 + self._nq:1 + self._nq + self._nv].reshape(
                    shape + (self._nv,)).astype(np.float32))

    # -- JAX side -------------------------------------------------------------------------
    def physics_after(self, state: State, actions: Array) -> tuple[Array, Array]:
        """qpos [B, H, nq] and qvel [B, H, nv] after each action of actions [B, H, A]
        (clipped to [-1, 1]) from the unbatched task ``state``; a host callback."""
        env = self.env
        if actions.ndim != 3 or actions.shape[-1] != env.action_size:
            raise ValueError(f"{env.name}: actions have shape {actions.shape}; expected "
                             f"(B, H, {env.action_size})")
        data = state.physics
        impl = getattr(data, "_impl", data)
        warmstart = getattr(impl, "qacc_warmstart", jnp.zeros_like(data.qvel))
        shape = actions.shape[:2]
        out = (jax.ShapeDtypeStruct(shape + (self._nq,), jnp.float32),
               jax.ShapeDtypeStruct(shape + (self._nv,), jnp.float32))
        return jax.pure_callback(self._rollout_host, out, data.qpos, data.qvel,
                                 env.action_to_ctrl(actions), warmstart,
                                 vmap_method="broadcast_all")

    def next_obs(self, state: State, actions: Array) -> Array:
        """The task's observation after each action: [B, H, obs_size] for actions
        [B, H, A] from the unbatched ``state`` (the task entries, e.g. the target phase,
        advance from ``state.obs`` step by step, as in ``env.step``)."""
        env = self.env
        qpos, qvel = self.physics_after(state, actions)

        def one(q_seq, v_seq):
            def body(prev_obs, qv):
                obs = env.observation(_Kinematics(*qv), env.next_task_obs(prev_obs))
                return obs, obs

            return jax.lax.scan(body, state.obs, (q_seq, v_seq))[1]

        return jax.vmap(one)(qpos, qvel)
