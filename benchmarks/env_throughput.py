"""Environment throughput: batched env steps/s vs batch size, and MJX wrapper overhead.

For each environment and batch size N, one jitted call runs T steps of N parallel
environments (``VmapWrapper`` over the task, actions given as an input array so no RNG
is timed) in a ``lax.scan``; steps/s = N * T / median wall time of the repeats.
Pure-JAX tasks are also timed with the training wrappers (episode length + fresh
auto-reset).

For MJX-backed brax tasks the overhead of our wrapper is measured at one batch size
against (a) brax's own ``env.step`` and (b) ``mjx.step`` called directly on the same
model with the same number of physics substeps; target: ours <= 1.10 x brax's step.

Usage:
  python benchmarks/env_throughput.py                     # all envs, CPU-sized
  python benchmarks/env_throughput.py --envs pendulum --batch-sizes 1 64 4096

Writes benchmarks/results/env_throughput_<device>.json and .png and prints a table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from _output import write_result

import mbjax  # noqa: F401  (XLA flags before JAX starts)
import mbjax.envs as envs
from mbjax.utils.bench import machine_info, save_figure, style_axes, time_call


def _is_mjx(env) -> bool:
    """MJX-backed (batch sizes capped at --max-mjx-batch, no wrapped variant): the brax
    tasks and the MJX hand."""
    u = env.unwrapped
    return hasattr(u, "brax_env") or hasattr(u, "mjx_model")


def _scan_steps(step, state, actions):
    def body(s, a):
        s = step(s, a)
        return s, s.reward

    return jax.lax.scan(body, state, actions)


def measure(env, batch: int, steps: int, repeats: int, key) -> dict:
    """Steps/s of ``env`` (unbatched task or wrapped) over a batch of ``batch`` envs."""
    benv = envs.VmapWrapper(env, batch)
    state = jax.jit(benv.reset)(key)
    low, high = np.asarray(env.action_low), np.asarray(env.action_high)
    actions = jax.random.uniform(key, (steps, batch, env.action_size), minval=low, maxval=high)
    run = jax.jit(lambda s, a: _scan_steps(benv.step, s, a))
    first, median = time_call(lambda: run(state, actions), repeats)
    return {"batch": batch, "steps": steps, "compile_and_run_s": first, "median_s": median,
            "steps_per_s": batch * steps / median}


def mjx_overhead(env, batch: int, steps: int, repeats: int, key) -> dict:
    """Our step vs brax's env.step vs raw mjx.step (same model, same substeps)."""
    from mujoco import mjx

    brax_env = env.unwrapped.brax_env
    benv = envs.VmapWrapper(env, batch)
    state = jax.jit(benv.reset)(key)
    actions = jnp.zeros((steps, batch, env.action_size))
    ours = jax.jit(lambda s, a: _scan_steps(benv.step, s, a))
    t_ours = time_call(lambda: ours(state, actions), repeats)[1]

    brax_state = jax.jit(jax.vmap(brax_env.reset))(jax.random.split(key, batch))
    brax_run = jax.jit(lambda s, a: _scan_steps(jax.vmap(brax_env.step), s, a))
    t_brax = time_call(lambda: brax_run(brax_state, actions), repeats)[1]

    sys, n_frames = brax_env.sys, brax_env._n_frames
    data = brax_state.pipeline_state

    def raw_step(d, a):
        d = d.replace(ctrl=a)
        d = jax.lax.fori_loop(0, n_frames, lambda _, x: mjx.step(sys, x), d)
        return d, None

    raw = jax.jit(lambda d, a: jax.lax.scan(jax.vmap(raw_step), d, a)[0])

    def raw_run(d, acts):
        def body(d, a):
            d, _ = jax.vmap(raw_step)(d, a)
            return d, None

        return jax.lax.scan(body, d, acts)

    raw = jax.jit(raw_run)
    t_raw = time_call(lambda: raw(data, actions), repeats)[1]
    env_steps = batch * steps
    return {
        "batch": batch,
        "steps": steps,
        "physics_substeps": int(n_frames),
        "ours_steps_per_s": env_steps / t_ours,
        "brax_steps_per_s": env_steps / t_brax,
        "raw_mjx_steps_per_s": env_steps / t_raw,
        "physics_steps_per_s": env_steps * n_frames / t_ours,
        "overhead_vs_brax": t_ours / t_brax,
        "overhead_vs_raw_mjx": t_ours / t_raw,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", nargs="*", default=None, help="default: all registered")
    parser.add_argument("--batch-sizes", nargs="*", type=int,
                        default=[1, 4, 16, 64, 256, 1024, 4096])
    parser.add_argument("--max-mjx-batch", type=int, default=256,
                        help="largest batch for MJX envs (CPU compile/run time)")
    parser.add_argument("--steps", type=int, default=200, help="scan length, pure-JAX envs")
    parser.add_argument("--mjx-steps", type=int, default=20, help="scan length, MJX envs")
    parser.add_argument("--overhead-batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    names = args.envs or envs.names()
    info = machine_info()
    key = jax.random.PRNGKey(0)
    rows, overheads = [], []
    for name in names:
        env = envs.make(name)
        mjx_env = _is_mjx(env)
        steps = args.mjx_steps if mjx_env else args.steps
        batches = [b for b in args.batch_sizes if not mjx_env or b <= args.max_mjx_batch]
        variants = [("task", env)]
        if not mjx_env:
            variants.append(("training-wrapped", envs.EpisodeWrapper(env, 200)))
        for variant, venv in variants:
            for b in batches:
                r = measure(venv, b, steps, args.repeats, key)
                r.update(env=name, variant=variant)
                rows.append(r)
                print(f"{name:18s} {variant:16s} N={b:5d}  {r['steps_per_s']:12.4g} steps/s"
                      f"  (first call {r['compile_and_run_s']:.1f} s)", flush=True)
        if hasattr(env.unwrapped, "brax_env"):  # the wrapper comparison needs brax's step
            o = mjx_overhead(env, args.overhead_batch, steps, args.repeats, key)
            o.update(env=name)
            overheads.append(o)
            print(f"{name:18s} overhead vs brax step {o['overhead_vs_brax']:.3f}x, vs raw mjx "
                  f"{o['overhead_vs_raw_mjx']:.3f}x, {o['physics_steps_per_s']:.4g} physics "
                  "steps/s", flush=True)

    _print_table(rows, overheads, info)
    write_result({"machine": info, "throughput": rows, "mjx_overhead": overheads},
                 "env_throughput", args.out, lambda png: _plot(rows, png, info))


def _print_table(rows, overheads, info) -> None:
    from rich.console import Console
    from rich.table import Table

    batches = sorted({r["batch"] for r in rows})
    table = Table(title=f"env steps/s on {info['device_kind']} ({info['cpu']}, "
                        f"{info['cpu_count']} cores)")
    table.add_column("env")
    table.add_column("variant")
    for b in batches:
        table.add_column(f"N={b}", justify="right")
    for key in dict.fromkeys((r["env"], r["variant"]) for r in rows):
        by_b = {r["batch"]: r["steps_per_s"] for r in rows if (r["env"], r["variant"]) == key}
        table.add_row(*key, *[f"{by_b[b]:.3g}" if b in by_b else "-" for b in batches])
    Console(width=180).print(table)
    if overheads:
        t = Table(title="MJX wrapper overhead (time ratio, lower is better; target <= 1.10)")
        for c in ("env", "N", "ours/brax", "ours/raw mjx", "physics steps/s"):
            t.add_column(c, justify="right")
        for o in overheads:
            t.add_row(o["env"], str(o["batch"]), f"{o['overhead_vs_brax']:.3f}",
                      f"{o['overhead_vs_raw_mjx']:.3f}", f"{o['physics_steps_per_s']:.3g}")
        Console(width=180).print(t)


def _plot(rows, path: Path, info) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key in dict.fromkeys((r["env"], r["variant"]) for r in rows):
        pts = sorted((r["batch"], r["steps_per_s"]) for r in rows
                     if (r["env"], r["variant"]) == key)
        style = "--" if key[1] != "task" else "-"
        label = key[0] if key[1] == "task" else f"{key[0]} ({key[1]})"
        ax.plot(*zip(*pts), style, marker="o", label=label)
    style_axes(ax, xlog=2, ylog=10, xlabel="parallel environments N", ylabel="env steps / s",
               title=f"mbjax env throughput, {info['device_kind']} ({info['cpu_count']} cores)",
               legend=7, legend_cols=2)
    save_figure(fig, path)


if __name__ == "__main__":
    main()
