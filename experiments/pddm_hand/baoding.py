"""Baoding: can this hand turn the two balls, and do the simulator planners find how?

Two measurements, both on the true simulator (native MuJoCo rollouts of the hand model
through ``objective.simulator = "mujoco"``, ``mbjax.envs.hand.native``; every executed
step is an MJX step of the task env):

``probe``  Is a turn physically possible? From ``STARTS`` reset states, mbjax's CEM
           (linear splines, 6 knots over 25 control steps = 1 s, 400 sequences x 10
           iterations) maximises the pair's rotation directly,
               J = rotation (turns, in the task direction) - 10 drop - w mean |q_wrist|,
           and the plan is then executed open loop on the MJX task env, which measures the
           rotation it really achieved (``HandBaoding.episode_measures``). w = 0 lets the
           wrist tilt the palm; w = 5 (turns per rad) makes tilting expensive.
``mpc``    Do the closed-loop planners turn the balls? True-dynamics MPC runs
           (``make_mpc_agent``, ``true_dynamics=True``) with PDDM's filtered MPPI and with
           CEM over a longer spline horizon, on PDDM's tracking reward as defined, without
           its wrist penalty, and on the "turn" reward (``HandBaoding``'s docstring: paid
           per radian of rotation); each reports the task's success measures
           (``task/half_turns``, ``task/on_target``, ``task/dropped``) of 2 hands x 1 episode
           (100 steps = 4 s, i.e. one full turn of the targets).

    python experiments/pddm_hand/baoding.py probe   # ~15 min on 2 CPU cores
    python experiments/pddm_hand/baoding.py mpc     # ~25 min on 2 CPU cores
    MUJOCO_GL=egl python experiments/pddm_hand/baoding.py gif  # media/hand_baoding_turn.gif

Writes ``results/baoding-probe.json`` and ``results/baoding-mpc.json`` (machine, code
state at the start); the README tables are rendered from them by ``experiments/tables.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import mbjax  # noqa: F401  (XLA flags before JAX starts)
import mbjax.planners as P
from mbjax import envs
from mbjax.agents import MPCConfig, make_mpc_agent
from mbjax.agents.config import EnvConfig
from mbjax.envs.hand.native import NativeRollout
from mbjax.models.true_dynamics import simulate_native
from mbjax.runner import presets
from mbjax.utils.bench import git_state, machine_info

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TASK = "hand_baoding"
STARTS = 4
PROBE_STEPS = 25
PROBE_PLANNER = P.CEMConfig(horizon=PROBE_STEPS, population=400, num_elites=40, iterations=10,
                            alpha=0.3, parameterization="linear", num_knots=6)


# -- probe ------------------------------------------------------------------------------
def rotation_objective(env, native, wrist_cost: float):
    """J(params, state, actions [N, H, A], key) -> [N]: the pair's rotation in turns
    (task direction) over the rollout, - 10 if a ball drops, - wrist_cost * mean wrist
    deviation (rad)."""

    def objective(params, state, actions, key):
        del params, key
        out = simulate_native(native, state, actions)
        step = jax.vmap(jax.vmap(env.rotation_angle))
        before, after = step(out.obs[:, :-1]), step(out.obs[:, 1:])
        turn = jnp.mod(after - before + jnp.pi, 2 * jnp.pi) - jnp.pi
        rotation = env.direction * jnp.sum(turn, axis=1) / (2 * jnp.pi)
        wrist = jnp.mean(jnp.linalg.norm(out.obs[:, 1:, 0:2], axis=-1), axis=1)
        return rotation - 10.0 * out.terminated[:, -1] - wrist_cost * wrist

    return objective


def probe_one(direction: int, wrist_cost: float, key) -> dict:
    """Plans one rotation per start state and executes it on the MJX env."""
    env = envs.make(TASK, direction=direction)
    native = NativeRollout(env)
    planner = P.make_planner(PROBE_PLANNER, rotation_objective(env, native, wrist_cost),
                             env.action_low, env.action_high)
    key_reset, key_plan = jax.random.split(key)
    starts = jax.vmap(env.reset)(jax.random.split(key_reset, STARTS))

    @jax.jit
    def solve(state, k):
        """The planner's whole plan [H, A] (``info["plan"]``), cold start."""
        return planner.plan(planner.default_params, None, planner.init(k), state, k)[2]["plan"]

    @jax.jit
    def execute(state, plan):
        def body(s, a):
            ns = env.step(s, a)
            return ns, (s.obs, a, ns.obs, ns.done)

        _, (o, a, no, d) = jax.lax.scan(body, state, plan)
        alive = (jnp.cumsum(d) - d < 0.5).astype(jnp.float32)
        return env.episode_measures(o, a, no, alive)

    t0 = time.perf_counter()
    rows = []
    for i in range(STARTS):
        state = jax.tree.map(lambda x, i=i: x[i], starts)
        plan = solve(state, jax.random.fold_in(key_plan, i))
        m = jax.device_get(execute(state, plan))
        wrist = float(np.mean(np.linalg.norm(np.asarray(plan)[:, :2] * env.ctrl_half[:2],
                                             axis=-1)))
        rows.append({"rotation_turns": float(m["rotation"]), "half_turns": float(m["half_turns"]),
                     "dropped": float(m["dropped"]), "mean_wrist_target_rad": wrist})
        print(f"  direction {direction:+d} w {wrist_cost}: start {i}: {rows[-1]}", flush=True)
    return {"direction": direction, "wrist_cost": wrist_cost, "starts": rows,
            "rotation_mean": float(np.mean([r["rotation_turns"] for r in rows])),
            "wall_s": time.perf_counter() - t0}


def probe(out: Path) -> dict:
    res = {"task": TASK, "machine": machine_info(), "code": git_state(),
           "planner": dataclasses.asdict(PROBE_PLANNER), "steps": PROBE_STEPS,
           "seconds": PROBE_STEPS * 0.04, "starts": STARTS, "variants": []}
    for direction in (1, -1):
        for wrist_cost in (0.0, 5.0):
            res["variants"].append(probe_one(direction, wrist_cost, jax.random.PRNGKey(0)))
    _write(out, res)
    return res


# -- closed-loop MPC ----------------------------------------------------------------------
MPC_PLANNERS = {
    "PDDM MPPI (N 256, H 7)": P.MPPIConfig(horizon=7, population=256, sigma=0.3),
    "CEM, linear splines (N 200 x 4 it., H 20, 5 knots)": P.CEMConfig(
        horizon=20, population=200, num_elites=20, iterations=4, alpha=0.1,
        init_std_scale=1.0, parameterization="linear", num_knots=5),
}
MPC_TASKS = {"track (PDDM's, wrist weight 10)": {},
             "track, no wrist penalty": {"wrist_weight": 0.0},
             "turn (wrist weight 1)": {"reward": "turn", "wrist_weight": 1.0}}


def mpc_config(planner) -> MPCConfig:
    """The CPU true-dynamics Baoding preset with this planner on native rollouts."""
    cfg = presets.get(presets.hand_preset_name("true-dynamics", TASK, True))
    return dataclasses.replace(
        cfg, planner=planner, num_seeds=1, num_iterations=1, prefill_episodes=0,
        objective=dataclasses.replace(cfg.objective, simulator="mujoco"),
        env=EnvConfig(name=TASK, reset_mode="cached"))


def mpc(out: Path) -> dict:
    res = {"task": TASK, "machine": machine_info(), "code": git_state(), "rows": []}
    for task_name, options in MPC_TASKS.items():
        env = envs.make(TASK, **options)
        for planner_name, planner in MPC_PLANNERS.items():
            cfg = mpc_config(planner)
            agent = make_mpc_agent(cfg, task_env=env)
            t0 = time.perf_counter()
            state = jax.jit(agent.init)(jax.random.PRNGKey(0))
            _, m = jax.device_get(jax.jit(agent.train_iteration)(state))
            row = {"task": task_name, "options": options, "planner": planner_name,
                   "spec": dataclasses.asdict(planner), "hands": cfg.num_envs,
                   "return_mean": float(m["return_mean"]),
                   **{k.removeprefix("task/"): float(v) for k, v in m.items()
                      if k.startswith("task/")},
                   "wall_s": time.perf_counter() - t0}
            res["rows"].append(row)
            print(json.dumps(row), flush=True)
    _write(out, res)
    return res


# -- pictures -----------------------------------------------------------------------------
TURN_TASK = MPC_TASKS["turn (wrist weight 1)"]
TURN_PLANNER = MPC_PLANNERS["CEM, linear splines (N 200 x 4 it., H 20, 5 knots)"]


def gif(steps: int, fps: float, key: int) -> dict:
    """A GIF + PNG of CEM on native rollouts turning the balls under the "turn" reward;
    the episode's success measures go to results/baoding-gif.json."""
    import sys

    from mbjax.envs.hand.render import RenderUnavailableError, render_frames, save_gif

    sys.path.insert(0, str(HERE))
    from run import MEDIA, mpc_episode

    env = envs.make(TASK, **TURN_TASK)
    planner = TURN_PLANNER.build(P.make_env_objective(env, simulator="mujoco"),
                                 env.action_low, env.action_high)
    t0, code = time.perf_counter(), git_state()
    q0, o0, (qpos, obs, reward, done) = jax.device_get(
        mpc_episode(env, planner, steps)(jax.random.PRNGKey(key)))
    obs_all = np.concatenate([o0[None], obs])
    alive = (np.cumsum(done) - done < 0.5).astype(np.float32)
    m = jax.device_get(env.episode_measures(jnp.asarray(obs_all[:-1]), jnp.zeros((steps, 24)),
                                            jnp.asarray(obs_all[1:]), jnp.asarray(alive)))
    res = {"task": TASK, "options": TURN_TASK, "planner": dataclasses.asdict(TURN_PLANNER),
           "steps": steps, "key": key, "machine": machine_info(), "code": code,
           "return": float(np.sum(alive * reward)),
           **{k: float(v) for k, v in m.items()}, "wall_s": time.perf_counter() - t0}
    _write(RESULTS / "baoding-gif.json", res)
    last = int(np.flatnonzero(done > 0)[0]) if np.any(done > 0) else steps - 1
    try:
        frames = render_frames(env, np.concatenate([q0[None], qpos])[:last + 2],
                               obs_all[:last + 2], camera="diag")
    except RenderUnavailableError as err:
        print(f"skipping pictures: {err}")
        return res
    MEDIA.mkdir(parents=True, exist_ok=True)
    save_gif(frames, MEDIA / "hand_baoding_turn.gif", fps=fps)
    from PIL import Image

    Image.fromarray(frames[len(frames) // 2]).save(MEDIA / "hand_baoding_turn.png")
    print(f"wrote {MEDIA / 'hand_baoding_turn.gif'} ({len(frames)} frames)")
    return res


def _write(path: Path, res: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2))
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["probe", "mpc", "gif"])
    parser.add_argument("--steps", type=int, default=100, help="gif: control steps")
    parser.add_argument("--fps", type=float, default=25.0, help="gif: frames per second")
    parser.add_argument("--key", type=int, default=7, help="gif: PRNG key of the episode")
    args = parser.parse_args()
    if args.what == "probe":
        probe(RESULTS / "baoding-probe.json")
    elif args.what == "mpc":
        mpc(RESULTS / "baoding-mpc.json")
    else:
        gif(args.steps, args.fps, args.key)


if __name__ == "__main__":
    main()
