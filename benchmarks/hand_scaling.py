"""Hand scaling: MJX hand env steps/s and true-dynamics planning calls/s vs parallel hands.

For each number N of parallel hands:

* env stepping: one jitted call runs T control steps of N hands (``VmapWrapper`` over
  the task, actions given as an input array) in a ``lax.scan``;
  env steps/s = N T / wall time, physics steps/s = env steps/s x substeps (8);
* planning: one call of PDDM's filtered MPPI on the true simulator
  (``make_env_objective``): N candidate sequences of H control steps, simulated from
  one env ``State`` in N parallel MJX hands; planning calls/s = 1 / wall time,
  physics steps/s = N H substeps / wall time; and the same calls with the candidates
  rolled out on native MuJoCo threads (``--native-plan-sizes``, ``objective.simulator``
  "mujoco": ``mbjax.envs.hand.native``), the ratio being what that option buys on a CPU.

Both report the first call (compile + run) and the median and best of the repeats (the
best is the least disturbed by other processes on a shared machine; the load average is
recorded beside every row). Contacts: the candidate contact slots MJX evaluates every
physics step (all pairs, active or not) and the mean number of active (penetrating)
contacts per step. Native MuJoCo (``mujoco.mj_step``, C, one thread) is timed on the
same scenes beside MJX.

Usage:
  python benchmarks/hand_scaling.py                               # CPU-sized
  python benchmarks/hand_scaling.py --batch-sizes --compare-tasks --plan-sizes 64 256 \
      --native-plan-sizes 64 256 --out benchmarks/results/hand_native_planning_cpu.json
  python benchmarks/hand_scaling.py --batch-sizes 1 16 256 1024 4096 --plan-sizes 64 700 4096

Writes benchmarks/results/hand_scaling_<device>.json and .png and prints a table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import jax
import numpy as np
from _output import write_result

import mbjax  # noqa: F401  (XLA flags before JAX starts)
import mbjax.envs as envs
import mbjax.planners as P
from mbjax.utils.bench import git_state, machine_info, save_figure, style_axes


def _timed(fn, repeats: int) -> dict:
    """First call (compile + run), median and best of ``repeats`` further calls."""
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return {"first_call_s": first, "median_s": statistics.median(times),
            "best_s": min(times), "loadavg_1min": load, "_out": out}


def native_steps_per_s(env, seconds: float = 3.0) -> dict:
    """mujoco.mj_step steps/s on the env's scene (hand at mid range, objects resting)."""
    import mujoco

    m = env.mj_model
    d = mujoco.MjData(m)
    key = jax.random.PRNGKey(0)
    state = jax.jit(env.reset)(key)
    d.qpos[:] = np.asarray(state.physics.qpos)
    d.ctrl[:] = np.asarray(state.physics.ctrl)
    for _ in range(200):  # let the objects settle
        mujoco.mj_step(m, d)
    n, t0 = 0, time.perf_counter()
    ncon = 0
    while time.perf_counter() - t0 < seconds:
        for _ in range(100):
            mujoco.mj_step(m, d)
        n += 100
        ncon += d.ncon
    dt = time.perf_counter() - t0
    return {"native_physics_steps_per_s": n / dt, "native_contacts": ncon / (n / 100)}


def env_stepping(env, batch: int, steps: int, repeats: int, key) -> dict:
    benv = envs.VmapWrapper(env, batch)
    state = jax.jit(benv.reset)(key)
    actions = 0.1 * jax.random.uniform(key, (steps, batch, env.action_size), minval=-1,
                                       maxval=1)

    def run(s, acts):
        def body(s, a):
            s = benv.step(s, a)
            return s, s.metrics["active_contacts"]

        return jax.lax.scan(body, s, acts)

    run = jax.jit(run)
    r = _timed(lambda: run(state, actions), repeats)
    contacts = float(np.mean(np.asarray(r.pop("_out")[1])))
    env_steps = batch * steps
    return dict(r, batch=batch, steps=steps, active_contacts=contacts,
                env_steps_per_s=env_steps / r["median_s"],
                physics_steps_per_s=env_steps * env.substeps / r["median_s"],
                best_physics_steps_per_s=env_steps * env.substeps / r["best_s"])


def planning(env, population: int, horizon: int, repeats: int, key,
             simulator: str = "jax") -> dict:
    objective = P.make_env_objective(env, simulator=simulator)
    planner = P.make_mppi(objective, env.action_low, env.action_high,
                          P.MPPIConfig(horizon=horizon, population=population),
                          P.pddm_mppi_config()[1])
    state = jax.jit(env.reset)(key)
    pstate = planner.init(key)
    plan = jax.jit(lambda s, ps, k: planner.plan(planner.default_params, None, ps, s, k))
    r = _timed(lambda: plan(state, pstate, key), repeats)
    r.pop("_out")
    sim = population * horizon
    return dict(r, population=population, horizon=horizon, simulator=simulator,
                plan_calls_per_s=1.0 / r["median_s"],
                physics_steps_per_s=sim * env.substeps / r["median_s"],
                best_physics_steps_per_s=sim * env.substeps / r["best_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="hand_baoding", help="task of the sweeps")
    parser.add_argument("--batch-sizes", nargs="*", type=int,
                        default=[1, 4, 16, 64, 256, 512])
    parser.add_argument("--plan-sizes", nargs="*", type=int, default=[16, 64, 256, 512],
                        help="MPPI population N (= parallel MJX hands per planning call)")
    parser.add_argument("--native-plan-sizes", nargs="*", type=int, default=[64, 256, 512],
                        help="the same planning calls with the candidates rolled out on "
                             "native MuJoCo threads (objective.simulator 'mujoco')")
    parser.add_argument("--horizon", type=int, default=7, help="planning horizon (PDDM: 7)")
    parser.add_argument("--compare-tasks", nargs="*", default=["hand_track", "hand_cube"],
                        help="other tasks, timed at --compare-batch only")
    parser.add_argument("--compare-batch", type=int, default=256)
    parser.add_argument("--env-work", type=int, default=2048,
                        help="env steps per timed call: T = max(5, work / N)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from mujoco import mjx

    info = machine_info()
    key = jax.random.PRNGKey(0)
    result = {"machine": info, "code": git_state(), "task": args.task, "env": [],
              "planning": [], "native": [], "compare": []}

    tasks = [args.task] + [t for t in args.compare_tasks if t != args.task]
    for name in tasks:
        env = envs.make(name)
        nat = native_steps_per_s(env)
        nat.update(task=name, contact_slots=env.max_contacts,
                   efc_rows=int(jax.eval_shape(mjx.make_data, env.mjx_model)._impl.nefc))
        result["native"].append(nat)
        print(f"{name:14s} native mj_step {nat['native_physics_steps_per_s']:9.0f} physics "
              f"steps/s, {nat['native_contacts']:.1f} contacts; MJX: {nat['contact_slots']} "
              f"contact slots, {nat['efc_rows']} constraint rows", flush=True)

    env = envs.make(args.task)
    for b in args.batch_sizes:
        steps = max(5, args.env_work // b)
        r = env_stepping(env, b, steps, args.repeats, key)
        r.update(task=args.task)
        result["env"].append(r)
        print(f"{args.task} env    N={b:5d}: {r['env_steps_per_s']:9.0f} env steps/s "
              f"{r['physics_steps_per_s']:9.0f} physics steps/s (best "
              f"{r['best_physics_steps_per_s']:.0f}), compile+run {r['first_call_s']:.0f} s, "
              f"{r['active_contacts']:.1f} active contacts, load {r['loadavg_1min']:.1f}",
              flush=True)
    plans = [(n, "jax") for n in args.plan_sizes] + [(n, "mujoco")
                                                    for n in args.native_plan_sizes]
    for n, simulator in plans:
        r = planning(env, n, args.horizon, args.repeats, key, simulator)
        r.update(task=args.task)
        result["planning"].append(r)
        print(f"{args.task} plan {simulator:6s} N={n:5d}: {r['plan_calls_per_s']:9.2f} calls/s "
              f"{r['physics_steps_per_s']:9.0f} physics steps/s (best "
              f"{r['best_physics_steps_per_s']:.0f}), compile+run {r['first_call_s']:.0f} s, "
              f"load {r['loadavg_1min']:.1f}", flush=True)
    for name in args.compare_tasks:
        if name == args.task:
            continue
        cenv = envs.make(name)
        b = args.compare_batch
        r = env_stepping(cenv, b, max(5, args.env_work // b), args.repeats, key)
        r.update(task=name)
        result["compare"].append(r)
        print(f"{name} env    N={b:5d}: {r['env_steps_per_s']:9.0f} env steps/s "
              f"{r['physics_steps_per_s']:9.0f} physics steps/s (best "
              f"{r['best_physics_steps_per_s']:.0f}), compile+run {r['first_call_s']:.0f} s",
              flush=True)

    _print_table(result)
    write_result(result, "hand_scaling", args.out, lambda png: _plot(result, png))


def _print_table(result) -> None:
    from rich.console import Console
    from rich.table import Table

    info = result["machine"]
    console = Console(width=160)
    t = Table(title=f"{result['task']}: MJX env stepping on {info['device_kind']} "
                    f"({info['cpu']}, {info['cpu_count']} cores)")
    for c in ("N hands", "env steps/s", "physics steps/s", "best physics steps/s",
              "compile+run s", "active contacts", "load avg"):
        t.add_column(c, justify="right")
    for r in result["env"] + result["compare"]:
        label = str(r["batch"]) if r["task"] == result["task"] else f"{r['batch']} ({r['task']})"
        t.add_row(label, f"{r['env_steps_per_s']:.0f}", f"{r['physics_steps_per_s']:.0f}",
                  f"{r['best_physics_steps_per_s']:.0f}", f"{r['first_call_s']:.0f}",
                  f"{r['active_contacts']:.1f}", f"{r['loadavg_1min']:.1f}")
    console.print(t)
    t = Table(title=f"{result['task']}: true-dynamics MPPI planning (N candidates = N MJX "
                    "hands, or N native MuJoCo rollouts; one call)")
    for c in ("simulator", "N", "H", "calls/s", "physics steps/s", "best physics steps/s",
              "compile+run s", "load avg"):
        t.add_column(c, justify="right")
    for r in result["planning"]:
        t.add_row(r.get("simulator", "jax"), str(r["population"]), str(r["horizon"]),
                  f"{r['plan_calls_per_s']:.2f}",
                  f"{r['physics_steps_per_s']:.0f}", f"{r['best_physics_steps_per_s']:.0f}",
                  f"{r['first_call_s']:.0f}", f"{r['loadavg_1min']:.1f}")
    console.print(t)
    t = Table(title="native MuJoCo (mj_step, C, one thread) beside MJX")
    for c in ("task", "native physics steps/s", "native contacts", "MJX contact slots",
              "MJX constraint rows"):
        t.add_column(c, justify="right")
    for r in result["native"]:
        t.add_row(r["task"], f"{r['native_physics_steps_per_s']:.0f}",
                  f"{r['native_contacts']:.1f}", str(r["contact_slots"]), str(r["efc_rows"]))
    console.print(t)


def _plot(result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    info = result["machine"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    ax = axes[0]
    env_rows = result["env"]
    nb = [r["batch"] for r in env_rows]
    ax.plot(nb, [r["physics_steps_per_s"] for r in env_rows], "o-", label="MJX env stepping")
    ax.plot(nb, [r["best_physics_steps_per_s"] for r in env_rows], "o:", alpha=0.6,
            label="MJX env stepping (best repeat)")
    pl = [r for r in result["planning"] if r.get("simulator", "jax") == "jax"]
    ax.plot([r["population"] for r in pl], [r["physics_steps_per_s"] for r in pl], "s-",
            label=f"MJX in MPPI planning (H={pl[0]['horizon'] if pl else '-'})")
    native_pl = [r for r in result["planning"] if r.get("simulator") == "mujoco"]
    if native_pl:
        ax.plot([r["population"] for r in native_pl],
                [r["physics_steps_per_s"] for r in native_pl], "^-",
                label="native MuJoCo threads in MPPI planning")
    nat = next(r for r in result["native"] if r["task"] == result["task"])
    ax.axhline(nat["native_physics_steps_per_s"], color="k", ls="--",
               label="native mj_step (1 thread)")
    style_axes(ax, xlog=2, ylog=10, xlabel="parallel hands N", ylabel="physics steps / s",
               title=f"{result['task']}: physics throughput", legend=7)
    ax = axes[1]
    ax.plot(nb, [r["env_steps_per_s"] for r in env_rows], "o-", label="env steps/s (40 ms)")
    ax.plot([r["population"] for r in pl], [r["plan_calls_per_s"] for r in pl], "s-",
            label="MPPI planning calls/s")
    style_axes(ax, xlog=2, ylog=10, xlabel="parallel hands N (batch or MPPI population)",
               title="control-rate throughput", legend=7)
    ax = axes[2]
    ax.plot(nb, [r["first_call_s"] for r in env_rows], "o-", label="env scan")
    ax.plot([r["population"] for r in pl], [r["first_call_s"] for r in pl], "s-",
            label="planning call")
    style_axes(ax, xlog=2, xlabel="parallel hands N", ylabel="first call (compile + run), s",
               title="compile time", legend=7)
    save_figure(fig, path, f"mbjax 24-DoF MJX hand on {info['device_kind']} ({info['cpu']}, "
                           f"{info['cpu_count']} cores)")


if __name__ == "__main__":
    main()
