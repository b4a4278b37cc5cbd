"""Where a planning call's time goes: the planner_throughput settings split into parts.

For one setting and N environments (default: ``small`` at N = 16, the per-call-overhead
case) this times, each as its own jitted call (medians of repeats):

* ``plan``             the whole batched CEM/MPPI call (as in planner_throughput.py);
* ``plan_no_noise``    the same with ``sample=False`` (no Gaussian noise on the states);
* ``objective``        the model objective alone on all candidates, x iterations;
* ``model_forward``    the ensemble forward (mean + std) at the rollout's shape, scanned
                       over horizon x iterations steps;
* ``mlp_only``         the bare ensemble MLP at the same shape;
* ``noise_hash``       ``mbjax.utils.random.hash_normal`` for the rollout's noise count;
* ``noise_threefry``   ``jax.random.normal`` for the same count (the generator before);
* ``matmul_ceiling``   the dense ensemble-matmul FLOP/s of planner_throughput.py.

    python benchmarks/planner_profile.py [--setting small] [--num-envs 16]

Prints a table and writes benchmarks/results/planner_profile_<setting>_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import jax.numpy as jnp
from _output import RESULTS
from planner_throughput import (  # noqa: E402  (run as a script from the repo root)
    ACT,
    OBS,
    SETTINGS,
    build,
    flops_per_forward,
    matmul_ceiling,
    model_evals,
)

import mbjax.planners as P
from mbjax.networks.mlp import ensemble_mlp_apply
from mbjax.utils.bench import machine_info, time_call
from mbjax.utils.random import hash_normal


def timed(repeats: int, fn, *args) -> float:
    """Median seconds of fn(*args) after a compile-and-warm-up call."""
    return time_call(lambda: fn(*args), repeats)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setting", default="small", choices=sorted(SETTINGS))
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    s, n, reps = SETTINGS[args.setting], args.num_envs, args.repeats
    info = machine_info()
    info["loadavg_start"] = os.getloadavg()
    keys = jax.random.split(jax.random.PRNGKey(1), n)
    obs = jnp.zeros((n, OBS))
    times = {}

    for label, sample in (("plan", True), ("plan_no_noise", False)):
        model, state, objective, planner = build(s, sample)
        batched = P.batch(planner)
        pstate = jax.jit(batched.init)(keys)
        plan = jax.jit(batched.plan)
        times[label] = timed(reps, plan, planner.default_params, state, pstate, obs, keys)
        if sample:
            acts = jnp.zeros((n, s["population"], s["horizon"], ACT))
            obj = jax.jit(jax.vmap(objective, in_axes=(None, 0, 0, 0)))
            times["objective"] = s["iterations"] * timed(reps, obj, state, obs, acts, keys)

    # The rollout's per-step shape: [E, B / E, ...] with B = N x population x particles.
    steps = s["horizon"] * s["iterations"]
    per_member = n * s["population"] * s["particles"] // s["members"]
    x0 = jax.random.normal(jax.random.PRNGKey(2), (s["members"], per_member, OBS))
    act = jnp.zeros((s["members"], per_member, ACT))

    def scanned(f):
        def run(x):
            return jax.lax.scan(lambda o, _: (f(o), None), x, None, length=steps)[0]
        return jax.jit(run)

    def forward(o):
        pred = model.predict(state, o, act)
        return pred.next_obs_mean + 1e-3 * pred.next_obs_std

    layers = state.params.layers
    mlp = lambda o: ensemble_mlp_apply(layers, jnp.concatenate([o, act], -1))[..., :OBS]
    for label, f in (("model_forward", forward), ("mlp_only", mlp)):
        times[label] = timed(reps, scanned(f), x0)

    noise_shape = (steps * s["members"] * per_member, OBS)
    for label, f in (("noise_hash", hash_normal), ("noise_threefry", jax.random.normal)):
        g = jax.jit(lambda k, f=f: f(k, noise_shape))
        times[label] = timed(reps, g, jax.random.PRNGKey(0))
    ceiling = matmul_ceiling(reps)

    flops = n * flops_per_forward(s) * model_evals(s)
    rows = []
    for label, t in times.items():
        row = {"part": label, "s": t, "ms_per_env": t / n * 1e3,
               "share_of_plan": t / times["plan"]}
        if label in ("plan", "plan_no_noise", "objective", "model_forward", "mlp_only"):
            row["gflop_per_s"] = flops / t / 1e9
            row["ceiling_fraction"] = flops / t / ceiling
        rows.append(row)
    info["loadavg_end"] = os.getloadavg()

    print(f"{args.setting} at N = {n} on {info['device_kind']} ({info['cpu']}, "
          f"{info['cpu_count']} cores); matmul ceiling {ceiling / 1e9:.0f} GFLOP/s; "
          f"{noise_shape[0] * noise_shape[1] / 1e6:.1f} M noise samples per call")
    print(f"{'part':16s} {'s':>8s} {'ms/env':>8s} {'of plan':>8s} {'GFLOP/s':>8s} {'ceiling':>8s}")
    for r in rows:
        extra = (f" {r['gflop_per_s']:8.1f} {r['ceiling_fraction']:8.0%}"
                 if "gflop_per_s" in r else "")
        print(f"{r['part']:16s} {r['s']:8.3f} {r['ms_per_env']:8.2f} "
              f"{r['share_of_plan']:8.0%}{extra}")
    tag = info["device_kind"].replace(" ", "_").lower()
    out = RESULTS / f"planner_profile_{args.setting}_{tag}.json"
    out.write_text(json.dumps({"machine": info, "setting": args.setting, "num_envs": n,
                               "settings": s, "ceiling_gflop_per_s": ceiling / 1e9,
                               "noise_samples_per_call": noise_shape[0] * noise_shape[1],
                               "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
