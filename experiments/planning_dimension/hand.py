"""The same planners on the 24-DoF hand: true simulator (``hand_track``), matched budgets.

Search dimension H x |a| = 7 x 24 = 168 (PDDM's horizon; 3 linear knots: 72 with
``+spline``). There is no known optimum, so each planner's plan is scored by its true
H-step return from ``STARTS`` reset states (vmapped, one ``plan`` call each, cold start),
and summarised as the *gap to the best*:

    gap(s) = (J_best(s) - J(s)) / (J_best(s) - J_hold(s))

with J_best(s) the best return any planner found from start s at any budget and J_hold(s)
the return of holding the mid-range pose (a = 0, every planner's warm start): 0 = the
best found, 1 = no better than holding still, > 1 worse than that.

The planners and budget allocations are ``run.planner_specs`` (the LQ study's), with
MPPI's PDDM settings (kappa 20, beta 0.6, sigma 0.9: ``pddm_mppi_config``). The gradient
planners (Adam through the simulator, CEM -> gradient) cannot differentiate the task
itself: MJX's constraint solver loops in a ``lax.while_loop``; they plan on
``env.with_solver_iterations(1)`` (one Newton iteration, differentiable) and their plans
are scored on the true env like every other. iLQR is not run: its Jacobians are taken
over the whole MJX state (S floats, counted in the file), so one iteration costs
3 H (S + |a|) step evaluations, tens of times the largest budget here (``ilqr_cost``).

    python experiments/planning_dimension/hand.py          # ~30 min on 2 CPU cores
    python experiments/planning_dimension/hand.py --quick  # 3 planners, 1 budget

Writes ``results/hand_track.json`` (machine, code state) and ``results/hand_track.png``;
the README table is rendered from the JSON by ``experiments/tables.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import mbjax.planners as P
from mbjax import envs
from mbjax.utils.bench import git_state, machine_info

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import GRADIENT_COST, num_knots, planner_specs  # noqa: E402

HERE = Path(__file__).resolve().parent
TASK = "hand_track"
HORIZON = 7
STARTS = 4
BUDGETS = (128, 1024)
RANDOM_SEQUENCES = 256
#: Planners that plan on the differentiable surrogate (one solver iteration).
ON_SURROGATE = ("gradient", "cem_gradient")


def start_states(env, key):
    """``STARTS`` reset states of ``env``, stacked on a leading axis."""
    return jax.vmap(env.reset)(jax.random.split(key, STARTS))


def true_returns(env, states, plans) -> np.ndarray:
    """The true H-step return of plans [STARTS, H, A] from ``states`` [STARTS]."""
    objective = P.make_env_objective(env)
    returns = jax.jit(jax.vmap(lambda s, u: objective(None, s, u[None], None)[0]))(
        states, plans)
    return np.asarray(returns, np.float64)


def solve(spec, objective, env, states, key) -> tuple[np.ndarray, float]:
    """One cold-start ``plan`` call per start state (vmapped): plans [STARTS, H, A] and the
    seconds of the first call (compile included)."""
    low, high = -jnp.ones(env.action_size), jnp.ones(env.action_size)
    planner = P.make_planner(spec, objective, low, high)

    @jax.jit
    def run(states, keys):
        def one(s, k):
            _, _, info = planner.plan(planner.default_params, None, planner.init(k), s, k)
            return info["plan"]

        return jax.vmap(one)(states, keys)

    t0 = time.perf_counter()
    plans = jax.block_until_ready(run(states, jax.random.split(key, STARTS)))
    return np.asarray(plans), time.perf_counter() - t0


def references(env, states, key) -> dict:
    """Holding still (a = 0) and ``RANDOM_SEQUENCES`` uniform random sequences per start."""
    hold = true_returns(env, states, jnp.zeros((STARTS, HORIZON, env.action_size)))
    objective = P.make_env_objective(env)
    rand = jax.random.uniform(key, (STARTS, RANDOM_SEQUENCES, HORIZON, env.action_size),
                              minval=-1.0, maxval=1.0)
    rand_returns = np.asarray(jax.jit(jax.vmap(
        lambda s, u: objective(None, s, u, None)))(states, rand), np.float64)
    return {"hold_still": hold.tolist(), "random_mean": rand_returns.mean(1).tolist(),
            "random_best": rand_returns.max(1).tolist()}


def ilqr_cost(env, states) -> dict:
    """The size S of the MJX state iLQR differentiates and one iteration's cost in step
    evaluations: 3 H (S + |a|) Jacobian columns (``run.ilqr_spec``'s accounting, without
    the line search)."""
    one = jax.tree.map(lambda x: x[0], states)
    size = sum(int(x.size) for x in jax.tree.leaves(one)
               if jnp.issubdtype(x.dtype, jnp.floating))
    return {"state_floats": size,
            "step_evaluations_per_iteration": GRADIENT_COST * HORIZON
            * (size + env.action_size)}


def run(budgets, names=None, seed: int = 0) -> tuple[list[dict], dict]:
    env = envs.make(TASK)
    surrogate = env.with_solver_iterations(1)
    states = start_states(env, jax.random.PRNGKey(seed))
    objectives = {False: P.make_env_objective(env), True: P.make_env_objective(surrogate)}
    rows = []
    for budget in budgets:
        pddm, _ = P.pddm_mppi_config()
        specs = planner_specs(HORIZON, budget, kappa=float(pddm.kappa),
                              sigma=float(pddm.sigma), beta=float(pddm.beta))
        for name, spec in specs.items():
            if names and name not in names:
                continue
            on_surrogate = name in ON_SURROGATE
            plans, first_s = solve(spec, objectives[on_surrogate], env, states,
                                   jax.random.PRNGKey(seed + 1))
            returns = true_returns(env, states, plans)
            if not np.all(np.isfinite(returns)):
                raise FloatingPointError(f"{name}: non-finite return at N={budget}")
            rows.append({"planner": name, "budget_sequences": budget,
                         "model_evaluations": budget * HORIZON,
                         "on_surrogate": on_surrogate, "returns": returns.tolist(),
                         "return_mean": float(returns.mean()), "first_call_s": first_s})
            print(f"N={budget:5d} {name:22s} return {returns.mean():8.3f} "
                  f"({first_s:.0f} s incl. compile)", flush=True)
    refs = references(env, states, jax.random.PRNGKey(seed + 2))
    refs["ilqr"] = ilqr_cost(env, states)
    return rows, refs


def add_gaps(rows: list[dict], refs: dict) -> None:
    """Adds ``gap_mean`` (module docstring) to every row and ``best`` to ``refs``."""
    best = np.max([r["returns"] for r in rows], axis=0)
    hold = np.asarray(refs["hold_still"])
    refs["best"] = best.tolist()
    for r in rows:
        r["gap_mean"] = float(np.mean((best - np.asarray(r["returns"])) / (best - hold)))


def plot(rows: list[dict], refs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mbjax.utils.bench import style_axes

    fig, ax = plt.subplots(figsize=(8, 5))
    for i, name in enumerate(dict.fromkeys(r["planner"] for r in rows)):
        pts = sorted((r["model_evaluations"], r["return_mean"]) for r in rows
                     if r["planner"] == name)
        ax.plot(*zip(*pts, strict=True), marker="o", ls="--" if "spline" in name else "-",
                color=plt.cm.tab20(i % 20), label=name)
    for label, key, ls in (("hold still (a = 0)", "hold_still", ":"),
                           (f"random (mean of {RANDOM_SEQUENCES})", "random_mean", "-.")):
        ax.axhline(float(np.mean(refs[key])), color="k", ls=ls, lw=1, label=label)
    style_axes(ax, xlabel="model evaluations (simulator steps)",
               ylabel=f"true {HORIZON}-step return (mean of {STARTS} starts)", xlog=10,
               title=f"{TASK}: 24-DoF hand, dimension {HORIZON * 24}", legend=7,
               legend_cols=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="random shooting, CEM and MPPI at the smallest budget")
    parser.add_argument("--out", type=Path, default=HERE / "results" / f"{TASK}.json")
    parser.add_argument("--plot-only", action="store_true",
                        help="redraw the PNG from the JSON at --out; run nothing")
    args = parser.parse_args(argv)
    if args.plot_only:
        d = json.loads(args.out.read_text())
        plot(d["rows"], d["references"], args.out.with_suffix(".png"))
        return 0
    t0, code = time.perf_counter(), git_state()  # the code imported now is the code run
    budgets, names = ((BUDGETS[:1], ("random_shooting", "cem", "mppi")) if args.quick
                      else (BUDGETS, None))
    rows, refs = run(budgets, names)
    pddm, _ = P.pddm_mppi_config()
    add_gaps(rows, refs)
    result = {"machine": dict(machine_info(), git=code), "task": TASK,
              "horizon": HORIZON, "action_size": 24, "num_knots": num_knots(HORIZON),
              "starts": STARTS, "gradient_cost": GRADIENT_COST,
              "mppi": {k: float(getattr(pddm, k)) for k in ("kappa", "beta", "sigma")},
              "references": refs, "total_s": time.perf_counter() - t0, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    plot(rows, refs, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
