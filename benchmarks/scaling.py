"""Scaling over devices: the training iteration sharded by ``mbjax.sharding``.

For D = 1, 2, 4, ... up to the local device count, times one compiled
``jax.vmap(train_iteration)`` over S seeds on D devices:

* strong scaling: S fixed (``--seeds``, default 8) split over D devices -> efficiency
  t(1) / (D t(D));
* weak scaling: S = ``--seeds-per-device`` x D -> efficiency t(1) / t(D);
* data: ``--data-seeds`` (default 1) seed(s) whose planner candidates and model
  minibatches are split over D devices (``data_parallel`` = D; gradients all-reduced)
  -> strong-scaling efficiency t(1) / (D t(D)) of one seed.

Env steps/s counts every seed's env steps in the iteration. On a CPU the script asks XLA
for ``--host-devices`` (default 8) host devices before JAX starts; those share the
machine's cores, so a 2-core CPU cannot scale past 2 devices — the table shows where
the cores run out. On GPUs it uses the real devices.

    python benchmarks/scaling.py [--preset pddm-cpu] [--seeds 8] [--host-devices 8]

Prints a table and writes benchmarks/results/scaling_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="pddm-cpu")
    parser.add_argument("--env", default="pendulum")
    parser.add_argument("--seeds", type=int, default=8, help="strong scaling: total seeds")
    parser.add_argument("--seeds-per-device", type=int, default=2, help="weak scaling")
    parser.add_argument("--data-seeds", type=int, default=1,
                        help="data mode: seeds whose data are split over the devices")
    parser.add_argument("--host-devices", type=int, default=8,
                        help="CPU only: host devices XLA creates (set before JAX starts)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if "jax" in sys.modules:
        raise RuntimeError("run this script directly: XLA_FLAGS must be set before JAX")
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " --xla_force_host_platform_device_count="
                                   f"{args.host_devices}").strip()

    import dataclasses

    import jax
    import jax.numpy as jnp

    from mbjax.agents import make_agent
    from mbjax.runner import presets
    from mbjax.sharding import jit_over_seeds, place, seed_sharding, vmap_over_seeds
    from mbjax.utils.bench import machine_info

    base = dataclasses.replace(presets.get(args.preset),
                               env=dataclasses.replace(presets.get(args.preset).env,
                                                       name=args.env))
    num_devices = jax.local_device_count()
    counts = [d for d in (1, 2, 4, 8, 16, 32) if d <= num_devices]

    def time_iteration(seeds: int, devices: int, data_parallel: int = 1) -> dict:
        config = dataclasses.replace(base, num_seeds=seeds, devices=devices,
                                     data_parallel=data_parallel)
        agent = make_agent(config)
        sharding = seed_sharding(seeds, devices, data_parallel)
        keys = place(jnp.stack([jax.random.PRNGKey(i) for i in range(seeds)]), sharding)
        init = jit_over_seeds(vmap_over_seeds(agent.init, sharding), sharding)
        step = jit_over_seeds(vmap_over_seeds(agent.train_iteration, sharding), sharding)
        state = jax.block_until_ready(init(keys))
        t0 = time.perf_counter()
        state, metrics = jax.block_until_ready(step(state))  # compile + first iteration
        compile_s = time.perf_counter() - t0
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            new_steps = metrics["env_steps"]
            state, metrics = jax.block_until_ready(step(state))
            times.append(time.perf_counter() - t0)
        per_iteration = sorted(times)[len(times) // 2]
        steps = int(jnp.sum(metrics["env_steps"] - new_steps))
        return {"seeds": seeds, "devices": devices, "data_parallel": data_parallel,
                "iteration_s": per_iteration,
                "first_iteration_s": compile_s, "env_steps_per_s": steps / per_iteration}

    rows = []
    for mode, seeds_of in (("strong", lambda d: args.seeds),
                           ("weak", lambda d: args.seeds_per_device * d),
                           ("data", lambda d: args.data_seeds)):
        for d in counts:
            data_parallel = d if mode == "data" else 1
            if seeds_of(d) % (d // data_parallel):
                continue
            r = {"mode": mode, **time_iteration(seeds_of(d), d, data_parallel)}
            ref = next((x for x in rows if x["mode"] == mode and x["devices"] == 1), r)
            r["efficiency"] = (ref["iteration_s"] / r["iteration_s"] if mode == "weak"
                               else ref["iteration_s"] / (d * r["iteration_s"]))
            rows.append(r)
            print(f"{mode:6s} D={d:2d} S={r['seeds']:3d}: {r['iteration_s']:.2f} s/iteration, "
                  f"{r['env_steps_per_s']:.0f} env steps/s, efficiency {r['efficiency']:.2f}",
                  flush=True)
    info = machine_info()
    info["loadavg"] = os.getloadavg()
    print(f"\n{args.preset} on {args.env}, {info['device_kind']} x {num_devices} "
          f"({info['cpu']}, {info['cpu_count']} cores)")
    print(f"{'mode':6s} {'D':>3s} {'S':>4s} {'s/iter':>8s} {'steps/s':>9s} {'eff.':>6s}")
    for r in rows:
        print(f"{r['mode']:6s} {r['devices']:3d} {r['seeds']:4d} {r['iteration_s']:8.2f} "
              f"{r['env_steps_per_s']:9.0f} {r['efficiency']:6.2f}")
    tag = info["device_kind"].replace(" ", "_").lower()
    out = Path(__file__).parent / "results" / f"scaling_{tag}.json"
    out.write_text(json.dumps({"machine": info, "preset": args.preset, "env": args.env,
                               "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
