"""What MBPO's loop costs beyond SAC: branched rollouts vs k, state and checkpoint size,
and the time a checkpoint keeps the run waiting (issue #18, item 4).

Three measurements, each in this one process:

* **rollouts vs k**: one ``branched_rollouts`` call (``mbjax.agents.mbpo``) of ``--starts``
  start states through the preset's ensemble (elite member per sample, the pendulum-sized
  or Hopper-sized model of ``--preset``), at k = 1 .. max_k of the preset's schedule, with
  max_length = max_k. The loop runs only the k steps (``lax.while_loop``), so the time
  should grow ~linearly in k; the old masked scan cost the max_k time at every k. Also the
  same call under ``vmap`` over 2 seeds with a shared k (the runner's layout).
* **state memory per preset**: bytes of the agent's state (``jax.eval_shape`` of ``init``;
  nothing allocated), split into the real buffer, the model buffer and the rest; a
  checkpoint holds the same leaves (uncompressed), minus the model buffer when
  ``checkpoint_model_buffer`` is off.
* **checkpoint wait**: for ``--ckpt-preset`` (a state that fits this machine), the
  seconds a foreground ``save_checkpoint`` blocks, against the seconds
  ``BackgroundCheckpointer.save`` blocks (the copy to host memory) and the time its write
  then takes on the worker thread, with and without the model buffer; the checkpoint's
  size on disk.

Usage:
  python benchmarks/mbpo_costs.py                        # CPU-sized (~2 min)
  python benchmarks/mbpo_costs.py --preset mbpo --starts 100000   # Hopper's 100k rollouts

Writes benchmarks/results/mbpo_costs_<device>.json and .png and prints tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import mbjax  # noqa: F401  (XLA flags before JAX starts)
from mbjax.agents import branched_rollouts, make_agent
from mbjax.agents.mbpo import make_elite_step
from mbjax.checkpoint import BackgroundCheckpointer, save_checkpoint
from mbjax.runner import presets
from mbjax.runner.run import checkpoint_tree
from mbjax.utils.bench import git_state, machine_info

from _output import write_result  # noqa: E402  (sibling module)


def timed(fn, repeats: int) -> tuple[float, float]:
    """(first call s, median of ``repeats`` further calls s) of ``fn()`` (blocking)."""
    t = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return first, statistics.median(times)


def rollout_costs(preset: str, starts: int, repeats: int) -> list[dict]:
    """Seconds per ``branched_rollouts`` call at each k of the preset's schedule."""
    cfg = presets.get(preset)
    agent = make_agent(dataclasses.replace(cfg, buffer_capacity=max(cfg.sac.batch_size, 1000),
                                           init_steps=0))
    env = agent.task_env
    state = agent.init(jax.random.PRNGKey(0))
    step = make_elite_step(agent.model, env.reward_fn, env.termination_fn, env.known_next_obs)
    policy = lambda obs, key: agent.sac.act(state.sac_state, obs, key)  # noqa: E731
    max_k = agent.max_rollout_length
    obs0 = jax.random.normal(jax.random.PRNGKey(1), (starts, env.observation_size)) * 0.1

    one = jax.jit(lambda ms, o, k, key: branched_rollouts(step, ms, policy, o, key, k, max_k))
    two = jax.jit(jax.vmap(lambda ms, o, k, key: branched_rollouts(step, ms, policy, o, key,
                                                                    k, max_k),
                           in_axes=(None, None, 0, 0)))
    rows = []
    ks = sorted({1, max(1, max_k // 4), max(1, max_k // 2), max_k})
    for k in ks:
        key = jax.random.PRNGKey(2)
        _, s1 = timed(lambda: one(state.model_state, obs0, jnp.int32(k), key), repeats)
        _, s2 = timed(lambda: two(state.model_state, obs0, jnp.full(2, k, jnp.int32),
                                  jax.random.split(key)), repeats)
        valid = int(one(state.model_state, obs0, jnp.int32(k), key)[1].sum())
        rows.append({"k": k, "max_k": max_k, "starts": starts, "seconds": s1,
                     "seconds_2_seeds_vmapped": s2, "valid_transitions": valid,
                     "model_steps_per_s": starts * k / s1})
        print(f"  k {k:3d}/{max_k}: {s1 * 1e3:8.1f} ms ({starts * k / s1:,.0f} model steps/s), "
              f"2 seeds vmapped {s2 * 1e3:8.1f} ms")
    return rows


def state_bytes(preset: str) -> dict:
    """Bytes of the agent state's parts (eval_shape: nothing is allocated)."""
    cfg = presets.get(preset)
    agent = make_agent(cfg)
    shape = jax.eval_shape(agent.init, jax.random.PRNGKey(0))
    nbytes = lambda tree: int(sum(np.prod(x.shape) * x.dtype.itemsize  # noqa: E731
                                  for x in jax.tree_util.tree_leaves(tree)))
    total, real = nbytes(shape), nbytes(shape.real_buffer)
    model = nbytes(shape.model_buffer) if shape.model_buffer is not None else 0
    return {"preset": preset, "env": cfg.env.name, "state_bytes": total,
            "real_buffer_bytes": real, "real_buffer_rows": cfg.buffer_capacity,
            "model_buffer_bytes": model,
            "model_buffer_rows": int(jax.tree_util.tree_leaves(shape.model_buffer)[0].shape[0])
            if model else 0,
            "rest_bytes": total - real - model,
            "checkpoint_bytes_with_model_buffer": total,
            "checkpoint_bytes_without_model_buffer": total - model}


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def checkpoint_wait(preset: str, repeats: int) -> list[dict]:
    """Seconds the run blocks per checkpoint: foreground vs background writer."""
    cfg = presets.get(preset)
    rows = []
    for keep_model_buffer in (True, False):
        agent = make_agent(dataclasses.replace(cfg, checkpoint_model_buffer=keep_model_buffer))
        state = jax.block_until_ready(jax.jit(agent.init)(jax.random.PRNGKey(0)))
        tree = checkpoint_tree(agent, state)
        root = Path(tempfile.mkdtemp(prefix="mbjax-ckpt-bench-"))
        try:
            fg, bg_block, bg_total = [], [], []
            for i in range(repeats):
                t = time.perf_counter()
                save_checkpoint(root / "fg", i + 1, tree, {"bench": 1})
                fg.append(time.perf_counter() - t)
                with BackgroundCheckpointer() as writer:
                    t = time.perf_counter()
                    writer.save(root / "bg", i + 1, tree, {"bench": 1})
                    bg_block.append(time.perf_counter() - t)
                    writer.wait()
                    bg_total.append(time.perf_counter() - t)
            size = dir_bytes(sorted((root / "fg").iterdir())[-1])
        finally:
            shutil.rmtree(root, ignore_errors=True)
        rows.append({"preset": preset, "model_buffer_in_checkpoint": keep_model_buffer,
                     "foreground_blocks_s": statistics.median(fg),
                     "background_blocks_s": statistics.median(bg_block),
                     "background_write_s": statistics.median(bg_total),
                     "checkpoint_bytes_on_disk": size})
        r = rows[-1]
        print(f"  model buffer {'kept' if keep_model_buffer else 'left out'}: foreground "
              f"{r['foreground_blocks_s']:.3f} s, background blocks "
              f"{r['background_blocks_s']:.3f} s (write {r['background_write_s']:.3f} s), "
              f"{size / 2**20:.1f} MiB on disk")
    return rows


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rollouts"]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ks = [r["k"] for r in rows]
    ax.plot(ks, [r["seconds"] * 1e3 for r in rows], "o-", label="one call")
    ax.plot(ks, [r["seconds_2_seeds_vmapped"] * 1e3 for r in rows], "s--",
            label="2 seeds vmapped")
    ax.axhline(rows[-1]["seconds"] * 1e3, color="gray", ls=":",
               label=f"max_k = {rows[-1]['max_k']} steps (the old cost at every k)")
    ax.set_xlabel("rollout length k")
    ax.set_ylabel("ms per branched_rollouts call")
    ax.set_title(f"{result['rollout_preset']}: {rows[0]['starts']} starts", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="mbpo-cpu", help="rollout model and schedule")
    p.add_argument("--starts", type=int, default=10_000)
    p.add_argument("--memory-presets", nargs="*",
                   default=["mbpo", "mbpo-halfcheetah", "mbpo-cpu", "sac"])
    p.add_argument("--ckpt-preset", default="mbpo-cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    code, load = git_state(), os.getloadavg()
    print(f"rollouts ({args.preset}):")
    rollouts = rollout_costs(args.preset, args.starts, args.repeats)
    print("state memory:")
    memory = [state_bytes(name) for name in args.memory_presets]
    for m in memory:
        print(f"  {m['preset']:18s} state {m['state_bytes'] / 2**20:9.1f} MiB: real buffer "
              f"{m['real_buffer_bytes'] / 2**20:8.1f}, model buffer "
              f"{m['model_buffer_bytes'] / 2**20:8.1f} ({m['model_buffer_rows']:,} rows), "
              f"rest {m['rest_bytes'] / 2**20:6.1f}")
    print(f"checkpoint wait ({args.ckpt_preset}):")
    waits = checkpoint_wait(args.ckpt_preset, args.repeats)
    result = {"rollout_preset": args.preset, "rollouts": rollouts, "memory": memory,
              "checkpoint_wait": waits, "machine": machine_info(), "code": code,
              "load_average_at_start": load, "load_average_at_end": os.getloadavg()}
    write_result(result, "mbpo_costs", args.out, lambda path: plot(result, path))


if __name__ == "__main__":
    main()
