"""The notes' claim measured: sampling planners scale poorly with the search dimension
H x |a|, gradient planners scale better.

Linear-quadratic problems with known optima (``lq_problem``): x_{t+1} = A x_t + B u_t,
cost sum_{t<H} (x_t' x_t + u_t' u_t) + x_H' x_H, S = |a| states, the box [-1, 1]
with x_0 scaled so the unconstrained optimum u* (least squares over the stacked
sequence) has max |u*| = 0.6, i.e. lies inside the box. Sizes (H, |a|) from (5, 2) to
(20, 20): search dimension 10 to 400. For each planner and budget, one ``plan`` call from
the middle of the box on 4 random instances (vmapped), and the relative gap
cost(plan) / cost(u*) - 1.

Budget = sequence evaluations N (model evaluations = N H steps, reported). Allocations:
random shooting N samples; CEM 5 rounds of N / 5; MPPI and annealed MPPI 4 rounds of
N / 4 (kappa, sigma from a grid, ``tune_mppi``, recorded in the file); iCEM 4 rounds
with its decaying populations summing to ~N; each also with ``linear`` splines over
K = max(3, H / 4) knots (the file also records each size's spline floor: the gap of the
best sequence the knots can represent, as the optimum is not piecewise linear);
gradient (Adam, 4 restarts) N / (3 * 4) steps, a gradient step counted as 3 evaluations
(forward + backward); CEM -> gradient half and half; iLQR at its own cost per
iteration, H (S + |a|) Jacobian columns x 3 + line-search rollouts, counted in the file.

    python experiments/planning_dimension/run.py            # ~10 min on 2 CPU cores
    python experiments/planning_dimension/run.py --quick    # 2 sizes, 1 budget

Writes ``results/lq_gap.json`` (machine, code state) and ``results/lq_gap.png``; the
README table is rendered from the JSON by ``experiments/tables.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import mbjax.planners as P
from mbjax.utils.bench import git_state, machine_info

HERE = Path(__file__).resolve().parent
SIZES = ((5, 2), (8, 4), (12, 8), (16, 12), (20, 20))
BUDGETS = (256, 2048, 16384)
INSTANCES = 4
GRADIENT_COST = 3  # a gradient step of J ~ 3 evaluations (forward + backward)
# MPPI's temperature and noise: the best of ``tune_mppi``'s grid at dimension 96, N = 2048
# (the run records the grid); the planner's PDDM defaults (kappa 20, sigma 0.9) are tuned
# for rewards of another scale.
MPPI_KAPPA, MPPI_SIGMA = 1.0, 0.3
MPPI_GRID = {"kappa": (1.0, 5.0, 20.0, 100.0), "sigma": (0.1, 0.3, 0.5)}


@dataclasses.dataclass(frozen=True)
class LQ:
    """Stacked LQ instances [I, ...] and their optima."""

    a: np.ndarray  # [I, S, S]
    b: np.ndarray  # [I, S, A]
    x0: np.ndarray  # [I, S]
    u_star: np.ndarray  # [I, H, A]
    cost_star: np.ndarray  # [I]
    r: float


def rollout_cost(a, b, x0, u, r: float) -> np.ndarray:
    """cost of u [H, A] (numpy float64, Q = I on every state incl. x_H, R = r I)."""
    x, cost = x0, 0.0
    for t in range(u.shape[0]):
        cost += x @ x + r * u[t] @ u[t]
        x = a @ x + b @ u[t]
    return cost + x @ x


def optimum(a, b, x0, horizon: int, r: float, interpolation=None) -> np.ndarray:
    """u* [H, A]: states x = G x0 + F u stacked over t = 1..H, cost = |x0|^2 +
    |G x0 + F u|^2 + r |u|^2, so u* = -(F'F + r I)^{-1} F' G x0. With ``interpolation``
    W [H, K] the best sequence u = W k of K knots: the same least squares in k
    (u = (W kron I) k), the floor a spline planner can reach."""
    s, m = b.shape
    f = np.zeros((horizon * s, horizon * m))
    g = np.zeros((horizon * s, s))
    power = np.eye(s)
    for t in range(horizon):
        power = a @ power
        g[t * s:(t + 1) * s] = power
        for k in range(t + 1):
            f[t * s:(t + 1) * s, k * m:(k + 1) * m] = np.linalg.matrix_power(a, t - k) @ b
    if interpolation is None:
        u = -np.linalg.solve(f.T @ f + r * np.eye(horizon * m), f.T @ g @ x0)
        return u.reshape(horizon, m)
    lift = np.kron(interpolation, np.eye(m))  # [H m, K m]
    fk = f @ lift
    k = -np.linalg.solve(fk.T @ fk + r * lift.T @ lift, fk.T @ g @ x0)
    return (lift @ k).reshape(horizon, m)


def lq_problem(horizon: int, action_size: int, seed: int, r: float = 1.0) -> LQ:
    """``INSTANCES`` random instances of a slow, weakly actuated system (a physical one
    at a small time step): A = 0.99 expm(0.2 (M - M') / 2) (lightly damped slow
    rotations, M ~ N(0, 1)), B ~ N(0, 0.01 / |a|), R = I, x_0 scaled so max |u*| = 0.6."""
    from scipy.linalg import expm  # a dependency of jax

    rng = np.random.default_rng(seed)
    s = action_size
    out = {k: [] for k in ("a", "b", "x0", "u_star", "cost_star")}
    for _ in range(INSTANCES):
        m = rng.standard_normal((s, s))
        a = 0.99 * expm(0.2 * (m - m.T) / 2)
        b = 0.1 * rng.standard_normal((s, action_size)) / np.sqrt(action_size)
        x0 = rng.standard_normal(s)
        u = optimum(a, b, x0, horizon, r)
        scale = 0.6 / np.abs(u).max()
        x0, u = x0 * scale, u * scale
        for k, v in zip(out, (a, b, x0, u, rollout_cost(a, b, x0, u, r)), strict=True):
            out[k].append(v)
    return LQ(**{k: np.stack(v) for k, v in out.items()}, r=r)


def lq_objective(r: float):
    """J((A, B), x0, actions [N, H, A], key) -> -cost [N] (float32, in jax)."""

    def objective(params, x0, actions, key):
        del key
        a, b = params

        def one(u):
            def body(x, u_t):
                return a @ x + b @ u_t, x @ x + r * u_t @ u_t

            x_h, costs = jax.lax.scan(body, x0, u)
            return -(costs.sum() + x_h @ x_h)

        return jax.vmap(one)(actions)

    return objective


def icem_population(budget: int, iterations: int, decay: float, elites_frac=0.1) -> int:
    """The iCEM initial population whose decaying rounds sum to about ``budget``."""
    weights = sum(decay ** (-i) for i in range(iterations))
    return max(int(budget / weights), 8)


def num_knots(horizon: int) -> int:
    """K = max(3, round(H / 4)) linear knots (hydrax's 4 knots over H = 16, at least 3)."""
    return min(max(3, round(horizon / 4)), horizon)


def spline_floor(problem: LQ, horizon: int) -> float:
    """The mean gap of the best sequence the knots can represent (clipped to the box):
    what a spline planner reaches at best."""
    from mbjax.planners.splines import make_spline

    w = np.asarray(make_spline("linear", num_knots(horizon), horizon).interpolation,
                   np.float64)
    gaps = []
    for i in range(INSTANCES):
        u = np.clip(optimum(problem.a[i], problem.b[i], problem.x0[i], horizon, problem.r, w),
                    -1.0, 1.0)
        gaps.append(rollout_cost(problem.a[i], problem.b[i], problem.x0[i], u, problem.r)
                    / problem.cost_star[i] - 1.0)
    return float(np.mean(gaps))


def planner_specs(horizon: int, budget: int, kappa: float = MPPI_KAPPA,
                  sigma: float = MPPI_SIGMA, beta: float = 1.0) -> dict[str, P.PlannerSpec]:
    """The compared planners at a budget of ``budget`` sequence evaluations (MPPI's and
    annealed MPPI's temperature ``kappa``, noise ``sigma`` and filter ``beta`` given)."""
    knots = num_knots(horizon)
    spline = {"parameterization": "linear", "num_knots": knots}
    cem_pop = budget // 5
    cem = P.CEMConfig(horizon=horizon, population=cem_pop, num_elites=max(cem_pop // 10, 2),
                      iterations=5)
    mppi = P.MPPIConfig(horizon=horizon, population=budget // 4, iterations=4,
                        kappa=kappa, beta=beta, sigma=sigma)
    annealed = P.AnnealedMPPIConfig(horizon=horizon, population=budget // 4, iterations=4,
                                    kappa=kappa, beta=beta, sigma=sigma)
    icem_pop = icem_population(budget, 4, 1.25)
    icem = P.ICEMConfig(horizon=horizon, population=icem_pop,
                        num_elites=max(icem_pop // 10, 2), iterations=4)
    rs = P.RandomShootingConfig(horizon=horizon, population=budget)
    restarts = 4
    grad = P.GradientConfig(horizon=horizon, num_restarts=restarts,
                            iterations=max(budget // (GRADIENT_COST * restarts), 1))
    half_pop = budget // 2 // 3
    refine = max(budget // 2 // (GRADIENT_COST * 5), 1)
    cem_grad = P.CEMGradientConfig(horizon=horizon, population=half_pop,
                                   num_elites=max(half_pop // 10, 4), iterations=3,
                                   num_refine=4, refine_iterations=refine)
    specs = {}
    for name, spec in (("random_shooting", rs), ("cem", cem), ("mppi", mppi),
                       ("annealed_mppi", annealed), ("icem", icem)):
        specs[name] = spec
        specs[f"{name}+spline"] = dataclasses.replace(spec, **spline)
    specs["gradient"] = grad
    specs["cem_gradient"] = cem_grad
    return specs


def ilqr_spec(horizon: int, budget: int, state_size: int, action_size: int):
    """iLQR with as many iterations as ``budget`` pays for (None if not installed), and
    the evaluations one iteration costs."""
    if importlib.util.find_spec("mbjax.planners.ilqr") is None:
        return None, 0
    from mbjax.planners import ilqr

    spec = ilqr.ILQRConfig(horizon=horizon, iterations=1)
    per_iteration = (GRADIENT_COST * (state_size + action_size) + spec.num_line_search)
    iterations = max(min(budget // per_iteration, 50), 1)
    return dataclasses.replace(spec, iterations=iterations), per_iteration * iterations


def solve_all(spec, objective, problem: LQ, key) -> tuple[np.ndarray, float]:
    """One plan per instance (vmapped): plans [I, H, A] and the wall time after compile."""
    low, high = -jnp.ones(problem.b.shape[-1]), jnp.ones(problem.b.shape[-1])
    planner = P.make_planner(spec, objective, low, high)
    params = (jnp.asarray(problem.a, jnp.float32), jnp.asarray(problem.b, jnp.float32))
    x0 = jnp.asarray(problem.x0, jnp.float32)
    keys = jax.random.split(key, INSTANCES)

    @jax.jit
    def run(params, x0, keys):
        def one(p, x, k):
            _, _, info = planner.plan(planner.default_params, p, planner.init(k), x, k)
            return info["plan"]

        return jax.vmap(one)(params, x0, keys)

    jax.block_until_ready(run(params, x0, keys))
    t0 = time.perf_counter()
    plans = jax.block_until_ready(run(params, x0, keys))
    return np.asarray(plans, np.float64), time.perf_counter() - t0


def stepwise_ilqr_objective(r: float):
    """The LQ as an iLQR ``StepwiseProblem``-backed objective (x = state, obs = x0)."""
    from mbjax.planners import ilqr

    def step(params, x, u):
        a, b = params
        return a @ x + b @ u

    def reward(x, u, x_next):  # cost - |x0|^2 = sum_t |x_{t+1}|^2 + r |u_t|^2
        return -(x_next @ x_next + r * u @ u)

    problem = ilqr.sequence_problem(step, reward)
    return ilqr.stepwise_objective(problem), problem


def tune_mppi(horizon: int = 12, action_size: int = 8, budget: int = 2048,
              seed: int = 0) -> list[dict]:
    """MPPI's gap over ``MPPI_GRID`` at one size and budget (4 rounds of N / 4)."""
    problem = lq_problem(horizon, action_size, seed)
    objective = lq_objective(problem.r)
    rows = []
    for kappa in MPPI_GRID["kappa"]:
        for sigma in MPPI_GRID["sigma"]:
            spec = P.MPPIConfig(horizon=horizon, population=budget // 4, iterations=4,
                                kappa=kappa, beta=1.0, sigma=sigma)
            row = measure("mppi", spec, objective, problem, horizon, action_size, budget,
                          budget * horizon, seed)
            rows.append({**row, "kappa": kappa, "sigma": sigma})
    return rows


def run(sizes, budgets, seed: int = 0, with_ilqr: bool = True
        ) -> tuple[list[dict], list[dict]]:
    rows, floors = [], []
    for horizon, action_size in sizes:
        problem = lq_problem(horizon, action_size, seed)
        objective = lq_objective(problem.r)
        floors.append({"horizon": horizon, "action_size": action_size,
                       "dimension": horizon * action_size, "num_knots": num_knots(horizon),
                       "spline_floor_gap": spline_floor(problem, horizon)})
        for budget in budgets:
            specs = dict(planner_specs(horizon, budget))
            evals = {name: budget * horizon for name in specs}
            ilqr, ilqr_evals = (ilqr_spec(horizon, budget, action_size, action_size)
                                if with_ilqr else (None, 0))
            for name, spec in specs.items():
                rows.append(measure(name, spec, objective, problem, horizon, action_size,
                                    budget, evals[name], seed))
            if ilqr is not None:
                rows.append(measure("ilqr", ilqr, None, problem, horizon, action_size,
                                    budget, ilqr_evals * horizon, seed))
    return rows, floors


def measure(name, spec, objective, problem, horizon, action_size, budget, model_evals,
            seed) -> dict:
    if name == "ilqr":
        objective, _ = stepwise_ilqr_objective(problem.r)
    plans, wall = solve_all(spec, objective, problem, jax.random.PRNGKey(seed))
    if not np.all(np.isfinite(plans)):
        raise FloatingPointError(f"{name}: non-finite plan at H={horizon}, |a|={action_size}")
    costs = np.array([rollout_cost(problem.a[i], problem.b[i], problem.x0[i], plans[i],
                                   problem.r) for i in range(INSTANCES)])
    gaps = costs / problem.cost_star - 1.0
    row = {"planner": name, "horizon": horizon, "action_size": action_size,
           "dimension": horizon * action_size, "budget_sequences": budget,
           "model_evaluations": int(model_evals), "gap_mean": float(gaps.mean()),
           "gap_max": float(gaps.max()), "wall_s": wall}
    print(f"H={horizon:2d} |a|={action_size:2d} dim={horizon * action_size:3d} "
          f"N={budget:5d} {name:22s} gap {gaps.mean():9.4f} ({wall * 1e3:.0f} ms)",
          flush=True)
    return row


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mbjax.utils.bench import style_axes

    budgets = sorted({r["budget_sequences"] for r in rows})
    dims = sorted({r["dimension"] for r in rows})
    names = list(dict.fromkeys(r["planner"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    top = budgets[-1]
    for i, name in enumerate(names):
        style = dict(ls="--" if "spline" in name else "-", marker="o",
                     color=plt.cm.tab20(i % 20), label=name)
        pts = sorted((r["dimension"], r["gap_mean"]) for r in rows
                     if r["planner"] == name and r["budget_sequences"] == top)
        axes[0].plot(*zip(*pts, strict=True), **style)
        pts = sorted((r["model_evaluations"], r["gap_mean"]) for r in rows
                     if r["planner"] == name and r["dimension"] == dims[-1])
        axes[1].plot(*zip(*pts, strict=True), **style)
    style_axes(axes[0], xlabel="search dimension H x |a|",
               ylabel="relative gap cost / cost* - 1", xlog=10, ylog=10,
               title=f"gap vs dimension ({top} sequence evaluations)")
    style_axes(axes[1], xlabel="model evaluations (steps)", ylog=10, xlog=10,
               title=f"gap vs budget (dimension {dims[-1]})", legend=7, legend_cols=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 sizes, 1 budget")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "lq_gap.json")
    parser.add_argument("--without-ilqr", action="store_true",
                        help="leave iLQR out (e.g. while mbjax.planners.ilqr is absent)")
    parser.add_argument("--plot-only", action="store_true",
                        help="redraw the PNG from the JSON at --out; run nothing")
    args = parser.parse_args(argv)
    if args.plot_only:
        plot(json.loads(args.out.read_text())["rows"], args.out.with_suffix(".png"))
        return 0
    sizes, budgets = (SIZES[:2], BUDGETS[:1]) if args.quick else (SIZES, BUDGETS)
    t0 = time.perf_counter()
    mppi_grid = tune_mppi()
    rows, floors = run(sizes, budgets, with_ilqr=not args.without_ilqr)
    result = {"machine": dict(machine_info(), git=git_state()), "mppi_grid": mppi_grid,
              "mppi_kappa": MPPI_KAPPA, "mppi_sigma": MPPI_SIGMA,
              "instances": INSTANCES, "gradient_cost": GRADIENT_COST,
              "spline_floors": floors,
              "total_s": time.perf_counter() - t0, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    plot(rows, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
