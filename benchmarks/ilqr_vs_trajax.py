"""mbjax's iLQR (``mbjax.planners.ilqr.ilqr_solve``) against trajax's (``trajax.optimizers.ilqr``).

Two problems, each solved for one start state (jit) and for 64 start states (jit of vmap):

* ``lq``: a random stable linear system, S = 4, A = 2, H = 30, reward -(x'Qx + u'Ru), gamma
  = 1, wide bounds for mbjax (the box never binds); the closed-form optimum (normal
  equations of the stacked least-squares problem) is the reference cost.
* ``pendulum``: swing-up with ``Pendulum.dynamics`` (torque clipped at +-2 inside the
  dynamics), H = 60, from theta = 2.5 rad (and 64 random start states); mbjax plans in the
  box [-2, 2], trajax (no box in its iLQR) plans unconstrained.

Both run the same number of iterations (trajax may stop earlier by its own criteria) with
zero initial controls. Times are the median of ``--repeats`` calls after compilation; the
final cost of both is evaluated with the same rollout (-return of the returned controls,
clipped to the box for the pendulum, which is what its dynamics apply).

trajax is google/trajax (Apache-2.0, not on PyPI: the PyPI name ``trajax`` is an unrelated
package). Import it from an installed package or from a source checkout given by
``--trajax-src`` (or $TRAJAX_SRC). Without it the mbjax rows are still measured.

    python benchmarks/ilqr_vs_trajax.py --trajax-src /tmp/trajax_src

writes benchmarks/results/ilqr_vs_trajax.json (``--out`` to change) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mbjax.envs.classic import Pendulum  # noqa: E402
from mbjax.planners.ilqr import ilqr_solve, sequence_problem, stepwise_objective  # noqa: E402

CODE_FILES = ("mbjax/planners/ilqr.py", "benchmarks/ilqr_vs_trajax.py")  # the numbers' code


def import_trajax(src: str | None):
    """(trajax.optimizers or None, description of where it came from or why not)."""
    if src:
        sys.path.insert(0, src)
    try:
        from trajax import optimizers
    except ImportError as e:
        return None, f"not importable: {e}"
    import importlib

    import trajax

    try:
        version = importlib.import_module("trajax.version").__version__
    except (ImportError, AttributeError):
        version = "unknown"
    return optimizers, f"{Path(trajax.__file__).parent} (version {version})"


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"node": platform.node(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else None, "python": platform.python_version(), "jax": jax.__version__,
            "devices": [str(d) for d in jax.devices()]}


def commit() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT,
                              check=True).stdout.strip()

    try:
        changed = git("status", "--porcelain", "--untracked-files=no", "--", "mbjax")
        return {"head": git("rev-parse", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--", *CODE_FILES)),
                "dirty_files_checked": list(CODE_FILES),
                "other_uncommitted_mbjax": [line[3:] for line in changed.splitlines()
                                            if line[3:] not in CODE_FILES]}
    except (OSError, subprocess.CalledProcessError):
        return {"head": "unknown", "dirty": None}


def median_time(fn, args, repeats: int) -> tuple[float, float, object]:
    """(compile + first call s, median of ``repeats`` calls s, output)."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return first, float(np.median(times)), out


# ----------------------------------------------------------------------------------------
# Problems: (problem, objective_params, x0 [S], x0s [64, S], low, high, trajax cost/dynamics)
# ----------------------------------------------------------------------------------------


def lq_case(horizon: int, num_envs: int):
    rng = np.random.default_rng(0)
    s, a = 4, 2
    m = rng.normal(size=(s, s))
    amat = 0.95 * m / np.max(np.abs(np.linalg.eigvals(m)))
    bmat = rng.normal(size=(s, a))
    q = np.diag(rng.uniform(0.5, 2.0, s))
    r = np.diag(rng.uniform(0.1, 1.0, a))
    aj, bj, qj, rj = (jnp.asarray(x, jnp.float32) for x in (amat, bmat, q, r))
    dynamics = lambda x, u: aj @ x + bj @ u
    stage = lambda x, u: x @ qj @ x + u @ rj @ u  # cost of (x_t, u_t), t < H
    problem = sequence_problem(lambda p, x, u: dynamics(x, u), lambda x, u, nx: -stage(x, u))
    x0 = jnp.asarray(2.0 * rng.normal(size=s), jnp.float32)
    x0s = jnp.asarray(2.0 * rng.normal(size=(num_envs, s)), jnp.float32)

    def closed_form(x0):  # min sum_{t<H} x_t'Qx_t + u_t'Ru_t by the normal equations
        g = np.zeros((horizon * s, horizon * a))
        f = np.zeros((horizon * s, s))
        for t in range(horizon):  # rows: x_0 .. x_{H-1}
            f[t * s:(t + 1) * s] = np.linalg.matrix_power(amat, t)
            for k in range(t):
                g[t * s:(t + 1) * s, k * a:(k + 1) * a] = np.linalg.matrix_power(
                    amat, t - 1 - k) @ bmat
        w, w_r = np.kron(np.eye(horizon), q), np.kron(np.eye(horizon), r)
        u = np.linalg.solve(g.T @ w @ g + w_r, -g.T @ w @ f @ x0)
        x = f @ x0 + g @ u
        return float(x @ w @ x + u @ w_r @ u)

    wide = 100.0 * jnp.ones(a)
    trajax_cost = lambda x, u, t: jnp.where(t < horizon, stage(x, u), 0.0)
    trajax_dynamics = lambda x, u, t: dynamics(x, u)
    return dict(problem=problem, params=None, x0=x0, x0s=x0s, low=-wide, high=wide,
                action_size=a, trajax_cost=trajax_cost, trajax_dynamics=trajax_dynamics,
                reference=lambda: {"closed_form_cost": closed_form(np.asarray(x0)),
                                   "closed_form_cost_mean": float(np.mean(
                                       [closed_form(np.asarray(x)) for x in x0s]))})


def pendulum_case(horizon: int, num_envs: int):
    env = Pendulum()
    problem = sequence_problem(env.dynamics, env.transition_reward)
    keys = jax.random.split(jax.random.key(0), num_envs)
    x0s = jax.vmap(env.initial_state)(keys)
    trajax_cost = lambda x, u, t: jnp.where(t < horizon, -env.transition_reward(x, u, x), 0.0)
    trajax_dynamics = lambda x, u, t: env.dynamics(env.params, x, u)
    return dict(problem=problem, params=env.params, x0=jnp.array([2.5, 0.0]), x0s=x0s,
                low=env.action_low, high=env.action_high, action_size=1,
                trajax_cost=trajax_cost, trajax_dynamics=trajax_dynamics,
                reference=lambda: {})


def run_case(name: str, case: dict, horizon: int, iterations: int, num_line_search: int,
             repeats: int, optimizers) -> list[dict]:
    problem, params, low, high = case["problem"], case["params"], case["low"], case["high"]
    zeros = jnp.zeros((horizon, case["action_size"]))
    objective = stepwise_objective(problem)

    def final_cost(x0, actions):  # the same evaluation for both: -return of clip(U)
        return -objective(params, x0, jnp.clip(actions, low, high)[None], None)[0]

    def ours(rounds):
        def solve(x0):  # a fixed number of rounds; reports the rounds that improved
            sol = ilqr_solve(problem, params, x0, zeros, low, high, iterations=rounds,
                             num_line_search=num_line_search)
            return sol.actions, final_cost(x0, sol.actions), jnp.asarray(rounds), \
                sol.improved

        return solve

    def theirs(x0):  # a while loop: stops at its own convergence criteria
        _, u, _, _, _, _, it = optimizers.ilqr(case["trajax_cost"], case["trajax_dynamics"],
                                               x0, zeros, maxiter=iterations)
        return u, final_cost(x0, u), it, it

    rows = []
    reference = case["reference"]()

    def measure(solver, fn):
        for mode, x in (("jit", case["x0"]), (f"vmap{case['x0s'].shape[0]}", case["x0s"])):
            f = jax.jit(fn if mode == "jit" else jax.vmap(fn))
            first, med, (u, cost, its, improved) = median_time(f, (x,), repeats)
            run = int(jnp.max(its))  # a vmapped while loop runs its longest member's
            row = {"problem": name, "solver": solver, "mode": mode, "compile_s": first,
                   "median_s": med, "iterations_run": run,
                   "ms_per_iteration": 1e3 * med / max(run, 1),
                   "iterations_improved_mean": float(jnp.mean(improved)),
                   "final_cost": float(jnp.mean(cost)),
                   "max_abs_action": float(jnp.max(jnp.abs(u))),
                   "bound": float(jnp.max(high))}
            if name == "lq":
                row["reference_cost"] = (reference["closed_form_cost"] if mode == "jit"
                                         else reference["closed_form_cost_mean"])
            rows.append(row)
            print(f"{name:8s} {solver:18s} {mode:6s} compile {first:5.2f} s  median "
                  f"{1e3 * med:8.2f} ms  iters {run:3d} ({row['ms_per_iteration']:6.2f} "
                  f"ms each)  cost {row['final_cost']:9.4f}  max|u| "
                  f"{row['max_abs_action']:6.2f}"
                  + (f"  ref {row['reference_cost']:.4f}" if "reference_cost" in row else ""),
                  flush=True)
        return rows[-2]["iterations_run"]  # the jit row's

    measure(f"mbjax ({iterations} it)", ours(iterations))
    if optimizers is not None:
        their_iterations = measure("trajax", theirs)
        if their_iterations != iterations:  # equal work: as many rounds as trajax ran
            measure(f"mbjax ({their_iterations} it)", ours(max(their_iterations, 1)))
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trajax-src", default=os.environ.get("TRAJAX_SRC"),
                        help="a google/trajax source checkout (the folder holding trajax/)")
    parser.add_argument("--trajax-commit", default=None,
                        help="the commit of that checkout, recorded in the JSON")
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "ilqr_vs_trajax.json")
    args = parser.parse_args(argv)
    optimizers, origin = import_trajax(args.trajax_src)
    print(f"trajax: {origin}")
    settings = {"lq": dict(horizon=30, iterations=10, num_line_search=8),
                "pendulum": dict(horizon=60, iterations=20, num_line_search=8)}
    rows = []
    t0 = time.perf_counter()
    rows += run_case("lq", lq_case(30, args.num_envs), repeats=args.repeats,
                     optimizers=optimizers, **settings["lq"])
    rows += run_case("pendulum", pendulum_case(60, args.num_envs), repeats=args.repeats,
                     optimizers=optimizers, **settings["pendulum"])
    result = {"benchmark": "ilqr_vs_trajax", "machine": machine(), "commit": commit(),
              "trajax": {"origin": origin, "commit": args.trajax_commit},
              "settings": {**settings, "num_envs": args.num_envs, "repeats": args.repeats,
                           "initial_controls": "zeros"},
              "rows": rows, "wall_s": time.perf_counter() - t0}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
