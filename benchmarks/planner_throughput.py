"""Planner throughput: time per planning call, model evaluations/s and FLOP/s vs a
matmul ceiling measured in the same run, batched over N environments, against mbrl-lib.

Settings (the issue's):
* ``pets``: ensemble 5 x 4x200 SiLU Gaussian, obs 18, action 6, CEM population 500,
  50 elites, 5 iterations, horizon 30, 20 particles TS-inf (PETS HalfCheetah).
* ``pddm``: 3 x 2x500 deterministic, filtered MPPI N 700, H 7, 1 iteration, 3 particles.
* ``small``: 5 x 2x64 SiLU Gaussian, CEM population 200, 20 elites, horizon 15,
  5 iterations, 5 particles (1.2 GFLOP per call; per-call overhead matters).

For each setting and N (parallel environments; ``planners.batch``), one jitted call plans
for all N environments (on a CPU also with ``chunk_size``: C envs at a time); time per
call and per environment-call are medians of repeats.
model evaluations/s = N x population x particles x horizon x iterations / time.
FLOPs count the multiply-adds of the MLP layers (2 per MAC); the ceiling is the FLOP/s of
an ensemble-shaped batched matmul [E, B, h] x [E, h, h] measured in the same run.

mbrl-lib (PyPI ``mbrl`` 0.2.0, torch CPU, optional ``bench`` extra) runs in a subprocess
(``benchmarks/_mbrl_planner.py``) as installed and with tuned glibc malloc; for N
environments it would run N calls, so its per-environment time is its per-call time.

``--kinds``: every registered planner kind (``mbjax.planners.planner_kinds()``, iLQR on
the ensemble's mean model) and each over 4 cubic knots, on the ``small`` model at N = 1
and 16 (sizes ``KIND_SIZES`` where a spec has the field); time per call and per env.

Writes benchmarks/results/planner_throughput_<device>.json and .png (``--kinds`` alone:
planner_kinds_<device>.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
from _output import write_result

import mbjax.planners as P
from mbjax.models import EnsembleConfig, EnsembleModel
from mbjax.utils.bench import machine_info, save_figure, style_axes, time_call

MALLOC_TUNED = {"MALLOC_MMAP_THRESHOLD_": "33554432",
                "MALLOC_TRIM_THRESHOLD_": "17179869184", "MALLOC_TOP_PAD_": "536870912"}

SETTINGS = {
    "pets": dict(members=5, hidden=(200,) * 4, prob=True, planner="cem", population=500,
                 elites=50, iterations=5, horizon=30, particles=20),
    "pddm": dict(members=3, hidden=(500, 500), prob=False, planner="mppi", population=700,
                 elites=1, iterations=1, horizon=7, particles=3),
    "small": dict(members=5, hidden=(64, 64), prob=True, planner="cem", population=200,
                  elites=20, iterations=5, horizon=15, particles=5),
}
OBS, ACT = 18, 6
# CPU rows for N > C are measured twice: one vmapped batch, and P.batch(chunk_size=C)
# (C environments at a time; chosen by a sweep over 1, 4, 16 on the 2-core CPU).
CPU_CHUNK = {"pets": 1, "pddm": 1, "small": 16}


def flops_per_forward(s) -> float:
    sizes = (OBS + ACT, *s["hidden"], (2 if s["prob"] else 1) * OBS)
    return 2.0 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def model_evals(s) -> int:
    return s["population"] * s["particles"] * s["horizon"] * s["iterations"]


def build(s, sample: bool = True):
    """(model, model_state, objective, planner) of a setting; ``sample=False`` uses the
    members' means instead of sampling the Gaussian head (planner_profile.py)."""
    model = EnsembleModel(OBS, ACT, EnsembleConfig(
        num_members=s["members"], num_elites=s["members"], hidden_sizes=s["hidden"],
        probabilistic=s["prob"], weight_decay=()))
    state = model.init(jax.random.PRNGKey(0))
    reward_fn = lambda o, a, n: n[0] - 0.1 * jnp.sum(a**2)
    objective = P.make_model_objective(model, reward_fn, num_particles=s["particles"],
                                       sample=sample)
    low, high = -jnp.ones(ACT), jnp.ones(ACT)
    if s["planner"] == "cem":
        planner = P.make_cem(objective, low, high, P.CEMConfig(
            horizon=s["horizon"], population=s["population"], num_elites=s["elites"],
            iterations=s["iterations"]))
    else:
        planner = P.make_mppi(objective, low, high, P.MPPIConfig(
            horizon=s["horizon"], population=s["population"], iterations=s["iterations"]))
    return model, state, objective, planner


def time_batched(planner, model_state, n: int, repeats: int, chunk: int | None = None
                 ) -> dict:
    """Compile-and-first-call and median seconds of one jitted call of ``planner`` batched
    over ``n`` environments (zero observations, one key each)."""
    batched = P.batch(planner, chunk_size=chunk)
    keys = jax.random.split(jax.random.PRNGKey(1), n)
    pstate = jax.jit(batched.init)(keys)
    obs = jnp.zeros((n, OBS))
    plan = jax.jit(batched.plan)
    first, median = time_call(
        lambda: plan(planner.default_params, model_state, pstate, obs, keys)[0], repeats)
    return {"compile_and_first_s": first, "median_s": median}


def time_ours(s, n: int, repeats: int, chunk: int | None = None) -> dict:
    _, state, _, planner = build(s)
    return time_batched(planner, state, n, repeats, chunk)


KIND_SIZES = dict(horizon=15, population=200, num_elites=20, iterations=3, num_restarts=8,
                  num_refine=4, refine_iterations=5)


def kind_specs():
    """(label, spec) of every registered planner kind at ``KIND_SIZES`` (where the spec
    has the field), plain and over 4 cubic knots."""
    import importlib.util

    if importlib.util.find_spec("mbjax.planners.ilqr") is not None:
        import mbjax.planners.ilqr  # noqa: F401  (registers "ilqr")
    for kind in P.planner_kinds():
        cls = P.planner_spec(kind)
        names = {f.name for f in dataclasses.fields(cls)}
        spec = cls(**{k: v for k, v in KIND_SIZES.items() if k in names})
        yield kind, spec
        try:
            yield f"{kind}+cubic4", dataclasses.replace(spec, parameterization="cubic",
                                                        num_knots=4)
        except ValueError as e:  # a planner over per-step actions only (ilqr)
            print(f"{kind}: no cubic knots ({e})")


def time_kind(spec, n: int, repeats: int) -> dict:
    """Time per call of ``spec`` on the ``small`` model for N environments (iLQR plans on
    the members' mean model through its stepwise problem)."""
    s = SETTINGS["small"]
    model, state, objective, _ = build(s)
    if spec.kind == "ilqr":
        from mbjax.planners import ilqr

        reward_fn = lambda o, a, n: n[0] - 0.1 * jnp.sum(a**2)
        objective = ilqr.stepwise_objective(ilqr.ensemble_mean_problem(model, reward_fn))
    planner = P.make_planner(spec, objective, -jnp.ones(ACT), jnp.ones(ACT))
    timing = time_batched(planner, state, n, repeats)
    return {**timing, "per_env_call_s": timing["median_s"] / n}


def time_kinds(repeats: int, num_envs=(1, 16)) -> list[dict]:
    rows = []
    for label, spec in kind_specs():
        for n in num_envs:
            r = time_kind(spec, n, repeats)
            rows.append({"planner": label, "num_envs": n, **r})
            print(f"{label:24s} N={n:3d} {r['median_s'] * 1e3:8.1f} ms/call "
                  f"{r['per_env_call_s'] * 1e3:8.2f} ms/env", flush=True)
    return rows


def matmul_ceiling(repeats: int) -> float:
    """FLOP/s of [5, B, 200] x [5, 200, 200] (the ensemble layer shape), B = 8192 on a CPU
    and 2^20 on an accelerator (a small matmul only measures launch latency there; the
    2026-11-26 H200 run used B = 8192, so its "ceiling fraction" column exceeds 100 %).
    The best of max(20, repeats) calls: a ceiling is what the device can reach, and on a
    shared machine the median drifts with other load (106-168 GFLOP/s in two runs here)."""
    import time

    b = 8192 if jax.devices()[0].platform == "cpu" else 1 << 20
    a = jax.random.normal(jax.random.PRNGKey(0), (5, b, 200))
    w = jax.random.normal(jax.random.PRNGKey(1), (5, 200, 200))
    f = jax.jit(lambda a, w: jnp.einsum("ebi,eio->ebo", a, w))
    jax.block_until_ready(f(a, w))
    best = float("inf")
    for _ in range(max(20, repeats)):
        t0 = time.perf_counter()
        jax.block_until_ready(f(a, w))
        best = min(best, time.perf_counter() - t0)
    return 2 * 5 * b * 200 * 200 / best


def time_mbrl(s, tuned: bool, calls: int) -> dict | None:
    try:
        import mbrl  # noqa: F401
    except ImportError:
        return None
    env = dict(os.environ, OMP_NUM_THREADS="2", **(MALLOC_TUNED if tuned else {}))
    cmd = [sys.executable, str(Path(__file__).parent / "_mbrl_planner.py"),
           "--optimizer", s["planner"], "--members", str(s["members"]),
           "--layers", str(len(s["hidden"])), "--hidden", str(s["hidden"][0]),
           "--population", str(s["population"]), "--elites", str(max(s["elites"], 1)),
           "--iterations", str(s["iterations"]), "--horizon", str(s["horizon"]),
           "--particles", str(s["particles"]), "--calls", str(calls)]
    if not s["prob"]:
        cmd.append("--deterministic")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        print(out.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS))
    parser.add_argument("--num-envs", nargs="*", type=int, default=None,
                        help="default: pets 1; pddm 1 16; small 1 16 256 (CPU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mbrl", action=argparse.BooleanOptionalAction, default=True,
                        help="run the mbrl-lib baseline when installed")
    parser.add_argument("--mbrl-calls", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--kinds", action="store_true",
                        help="only time every registered planner kind (+ cubic knots)")
    args = parser.parse_args()

    info = machine_info()
    info["loadavg_start"] = os.getloadavg()
    if args.kinds:
        from mbjax.utils.bench import git_state

        rows = time_kinds(args.repeats)
        info.update(loadavg_end=os.getloadavg(), git=git_state())
        write_result({"machine": info, "sizes": KIND_SIZES, "rows": rows}, "planner_kinds",
                     args.out, lambda png: _plot_kinds(rows, png, info))
        return
    gpu = info["platform"] != "cpu"
    defaults = {"pets": [1, 16, 256] if gpu else [1],
                "pddm": [1, 16, 256, 1024] if gpu else [1, 16, 256],
                "small": [1, 16, 256, 4096] if gpu else [1, 16, 256]}
    ceiling = matmul_ceiling(args.repeats)
    print(f"matmul ceiling: {ceiling / 1e9:.1f} GFLOP/s on {info['device_kind']}", flush=True)
    rows = []
    for name in args.settings:
        s = SETTINGS[name]
        flops_call = flops_per_forward(s) * model_evals(s)
        baseline = {}
        if args.mbrl:
            for tuned in (False, True):
                r = time_mbrl(s, tuned, args.mbrl_calls)
                if r is not None:
                    baseline["tuned" if tuned else "as_installed"] = r["median_s"]
                    print(f"{name:6s} mbrl-lib ({'tuned' if tuned else 'as installed'}): "
                          f"{r['median_s']:.3f} s/call", flush=True)
        runs = [(n, None) for n in args.num_envs or defaults[name]]
        if not gpu:  # chunked batching keeps each chunk's particles in cache
            runs += [(n, CPU_CHUNK[name]) for n, _ in runs if n > CPU_CHUNK[name]]
            runs.sort(key=lambda nc: (nc[0], nc[1] or 0))
        for n, chunk in runs:
            r = time_ours(s, n, args.repeats, chunk)
            per_env = r["median_s"] / n
            row = {
                "setting": name, "num_envs": n, "chunk_size": chunk, **r,
                "per_env_call_s": per_env,
                "model_evals_per_s": n * model_evals(s) / r["median_s"],
                "gflop_per_call_per_env": flops_call / 1e9,
                "gflop_per_s": n * flops_call / r["median_s"] / 1e9,
                "ceiling_gflop_per_s": ceiling / 1e9,
                "ceiling_fraction": n * flops_call / r["median_s"] / ceiling,
                "mbrl_s_per_call": baseline.get("as_installed"),
                "mbrl_tuned_s_per_call": baseline.get("tuned"),
            }
            for k, key in (("speedup_vs_mbrl", "as_installed"), ("speedup_vs_mbrl_tuned", "tuned")):
                row[k] = baseline[key] / per_env if key in baseline else None
            rows.append(row)
            print(f"{name:6s} N={n:5d} chunk {chunk or '-'} {r['median_s']:.3f} s/call, "
                  f"{per_env * 1e3:.1f} ms/env, "
                  f"{row['gflop_per_s']:.1f} GFLOP/s ({row['ceiling_fraction']:.0%} of ceiling)"
                  + (f", {row['speedup_vs_mbrl']:.2f}x mbrl-lib" if row["speedup_vs_mbrl"]
                     else ""), flush=True)
    info["loadavg_end"] = os.getloadavg()
    _table(rows, info)
    write_result({"machine": info, "settings": SETTINGS, "rows": rows}, "planner_throughput",
                 args.out, lambda png: _plot(rows, png, info))


def _table(rows, info) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"planner throughput on {info['device_kind']} ({info['cpu']}, "
                    f"{info['cpu_count']} cores)")
    cols = ("setting", "N", "chunk", "s/call", "ms/env", "Meval/s", "GFLOP/s", "ceiling",
            "mbrl s/call", "x mbrl", "x mbrl tuned")
    for c in cols:
        t.add_column(c, justify="right")
    f = lambda v, fmt: "-" if v is None else format(v, fmt)
    for r in rows:
        t.add_row(r["setting"], str(r["num_envs"]), str(r.get("chunk_size") or "-"),
                  f(r["median_s"], ".3f"),
                  f(r["per_env_call_s"] * 1e3, ".1f"), f(r["model_evals_per_s"] / 1e6, ".2f"),
                  f(r["gflop_per_s"], ".1f"), f(r["ceiling_fraction"], ".0%"),
                  f(r["mbrl_s_per_call"], ".3f"), f(r["speedup_vs_mbrl"], ".2f"),
                  f(r["speedup_vs_mbrl_tuned"], ".2f"))
    Console(width=180).print(t)


def _plot(rows, path: Path, info) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name in dict.fromkeys(r["setting"] for r in rows):
        for chunked in (False, True):
            pts = [(r["num_envs"], r["per_env_call_s"] * 1e3) for r in rows
                   if r["setting"] == name and bool(r.get("chunk_size")) == chunked]
            if pts:
                ax.plot(*zip(*pts), marker="o", ls="--" if chunked else "-",
                        label=f"mbjax {name}" + (" (chunked)" if chunked else ""))
        mb = next((r["mbrl_s_per_call"] for r in rows if r["setting"] == name), None)
        if mb:
            ax.axhline(mb * 1e3, ls="--", lw=1, color=ax.lines[-1].get_color(),
                       label=f"mbrl-lib {name} (per call)")
    style_axes(ax, xlog=2, ylog=10, xlabel="parallel environments N",
               ylabel="ms per environment-call",
               title=f"planning time per env, {info['device_kind']}", legend=7)
    save_figure(fig, path)


def _plot_kinds(rows, path: Path, info) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(r["planner"] for r in rows))
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, n in enumerate(sorted({r["num_envs"] for r in rows})):
        ms = [next(r["per_env_call_s"] for r in rows if r["planner"] == lab
                   and r["num_envs"] == n) * 1e3 for lab in labels]
        ax.bar([j + 0.4 * i for j in range(len(labels))], ms, width=0.4, label=f"N = {n}")
    ax.set_xticks([j + 0.2 for j in range(len(labels))], labels, rotation=60, ha="right",
                  fontsize=7)
    style_axes(ax, ylog=10, ylabel="ms per environment-call",
               title=f"planner kinds, small model, {info['device_kind']}", legend=7)
    save_figure(fig, path)


if __name__ == "__main__":
    main()
