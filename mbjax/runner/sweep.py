"""``mbjax sweep SPEC``: a grid over config fields, with seeds and float planner
hyper-parameters vmapped inside one program.

A spec (YAML or JSON)::

    preset: pddm-cpu                 # the base config (any preset)
    overrides:                       # dotted config fields, applied to every point
      env.name: pendulum
      num_iterations: 4
    grid:                            # dotted field -> values; the sweep is their product
      planner.kappa: [1.0, 10.0]     # a planner float: vmapped with the seeds
      planner.horizon: [10, 25]      # changes shapes: a separate program per value
    num_seeds: 2                     # seeds per point (seed, seed + 1, ...)
    name: kappa-horizon              # results under <out_dir>/<name>/
    out_dir: runs

Axes whose field is one of the agent's traced floats (its ``traced_fields``, e.g.
``planner.kappa``, ``objective.discount``, ``model_train.learning_rate`` for every agent,
``sac.actor_learning_rate`` or ``real_ratio`` for MBPO/SAC) live in the agent's hparams
pytree, so all their combinations x seeds are the vmapped members of ONE
``mbjax.runner.run`` (one compilation); every other axis (horizon, population, widths,
env, ...) changes shapes and gets its own run. Any preset's agent can be swept. The
run's config records, for each vmapped axis, the value of largest magnitude (it decides
static switches such as computing the ensemble disagreement for
``objective.uncertainty_penalty``); each member's own values are in its metric rows.
Each run is an ordinary run directory (resumable with ``mbjax train --resume``). At the
end ``<name>/sweep.{json,csv,md,png}`` hold the final return of every point, mean +- std
over its seeds.

Many machines: ``mbjax sweep SPEC --wandb`` writes ``<name>/wandb_sweep.yaml``, a wandb
sweep config (method grid, metric ``return_last_mean``) whose program is ``mbjax agent``:
``wandb sweep <name>/wandb_sweep.yaml`` registers it, and ``wandb agent <sweep id>`` on
each machine runs one grid point per wandb run (the spec's seeds vmapped inside it;
float axes are not vmapped across points here, each point is its own run). ``mbjax agent
--preset P --field=value ...`` is an ordinary command too: it applies the dotted
``--field=value`` arguments (wandb's ``${args}``) to the preset, trains, and logs to wandb
(online unless ``WANDB_MODE`` says ``offline``/``disabled``).

Separate programs run one after another, each on every device it is given
(``--devices``), or with ``mbjax sweep SPEC --workers W`` W at a time in worker
processes that split the machine's GPUs round-robin (on a CPU they share it). What is not
here: spreading programs over the processes of a multi-host job (launch one sweep per
host with a spec each, or use the wandb sweep).
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mbjax.agents import RunConfig, agent_spec, make_agent
from mbjax.runner import presets
from mbjax.runner.run import SeedBatch, read_metrics, run


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A grid sweep; see the module docstring."""

    grid: dict[str, list]
    preset: str = presets.DEFAULT_PRESET
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    num_seeds: int = 2
    seed: int = 0
    name: str = "sweep"
    out_dir: str = "runs"

    def __post_init__(self):
        if not self.grid:
            raise ValueError("a sweep needs at least one grid axis")
        for field, values in self.grid.items():
            if not isinstance(values, (list, tuple)) or not values:
                raise ValueError(f"grid axis {field!r} needs a non-empty list of values, "
                                 f"got {values!r}")
        if self.num_seeds < 1:
            raise ValueError(f"num_seeds must be >= 1, got {self.num_seeds}")
        presets.get(self.preset)  # unknown presets fail here


def load_spec(path: str | Path) -> SweepSpec:
    """Reads a YAML (.yaml/.yml) or JSON spec; unknown keys are an error."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"sweep spec {path} does not exist")
    data = yaml.safe_load(path.read_text()) if path.suffix in (".yaml", ".yml") else \
        json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a sweep spec is a mapping, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(SweepSpec)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown spec keys {unknown}; valid: {sorted(known)}")
    return SweepSpec(**data)


def apply_overrides(config, overrides: dict[str, Any], _prefix: str = ""):
    """``config`` with the (nested, dotted) fields of ``overrides`` replaced, each nested
    dataclass in ONE ``replace`` so that coupled fields (e.g. num_members and
    num_elites) are validated together. Unknown names are an error."""
    names = [f.name for f in dataclasses.fields(config)]
    direct, nested = {}, {}
    for dotted, value in overrides.items():
        head, _, rest = dotted.partition(".")
        if head not in names:
            raise KeyError(f"unknown config field {_prefix + dotted!r} "
                           f"({type(config).__name__} has {', '.join(names)})")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            current = getattr(config, head)
            direct[head] = tuple(value) if isinstance(current, tuple) and isinstance(
                value, list) else value
    for head, sub in nested.items():
        direct[head] = apply_overrides(getattr(config, head), sub, f"{_prefix}{head}.")
    return dataclasses.replace(config, **direct)


def set_field(config, dotted: str, value):
    """``config`` with the one (nested) field ``a.b.c`` replaced."""
    return apply_overrides(config, {dotted: value})


def _label(point: dict) -> str:
    return ",".join(f"{k.split('.')[-1]}={v}" for k, v in point.items()) or "base"


def programs(spec: SweepSpec) -> list[tuple[RunConfig, list[dict], list[dict]]]:
    """Splits the grid into runs: [(config, shape_point, float_points)], where the run's
    members are float_points x seeds."""
    base = apply_overrides(presets.get(spec.preset), spec.overrides)
    vmapped = set(agent_spec(base).traced_fields(base))
    float_axes = {k: v for k, v in spec.grid.items() if k in vmapped}
    base = apply_overrides(base, {k: max(v, key=abs) for k, v in float_axes.items()})
    shape_axes = {k: v for k, v in spec.grid.items() if k not in vmapped}
    float_points = [dict(zip(float_axes, vals))
                    for vals in itertools.product(*float_axes.values())]
    out = []
    for vals in itertools.product(*shape_axes.values()):
        shape_point = dict(zip(shape_axes, vals))
        config = apply_overrides(base, shape_point)
        config = dataclasses.replace(
            config, num_seeds=len(float_points) * spec.num_seeds, seed=spec.seed,
            out_dir=str(Path(spec.out_dir) / spec.name), run_name=_label(shape_point))
        out.append((config, shape_point, float_points))
    return out


def program_batch(spec: SweepSpec, config, shape_point: dict, float_points: list[dict]
                  ) -> SeedBatch:
    """The vmapped members of one program: float points x seeds, each with its labels
    and the hparams of its config (``make_agent(point).default_hparams``), stacked."""
    seeds, labels, params = [], [], []
    for fp in float_points:
        point = {**shape_point, **fp}
        hparams = make_agent(apply_overrides(config, fp)).default_hparams
        for i in range(spec.num_seeds):
            seeds.append(spec.seed + i)
            labels.append({"point": _label(point), **point})
            params.append(hparams)
    stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *params)
    return SeedBatch(tuple(seeds), tuple(labels), stacked)


def run_program(spec: SweepSpec, index: int, console=None) -> None:
    """Trains program ``index`` of ``programs(spec)`` (resuming its run directory if it
    exists): what ``run_sweep`` does for each program, in this process or a worker."""
    config, shape_point, float_points = programs(spec)[index]
    if console is not None:
        console.rule(f"sweep {spec.name}: {_label(shape_point)} "
                     f"({len(float_points)} vmapped point(s) x {spec.num_seeds} seeds)")
    run_dir = Path(config.out_dir) / config.run_name
    run(config, resume=run_dir if (run_dir / "config.json").exists() else None,
        console=console, batch=program_batch(spec, config, shape_point, float_points))


def worker_environments(workers: int) -> list[dict]:
    """Environment variables of ``workers`` processes that split this machine's GPUs
    round-robin (``CUDA_VISIBLE_DEVICES``); on CPU every worker sees the CPU."""
    devices = jax.local_devices()
    base = {k: v for k, v in os.environ.items()}
    if devices[0].platform != "gpu":
        return [dict(base) for _ in range(workers)]
    ids = [str(d.local_hardware_id if d.local_hardware_id is not None else d.id)
           for d in devices]
    if len(ids) < workers:
        raise ValueError(f"workers ({workers}) must be <= the number of GPUs ({len(ids)})")
    return [dict(base, CUDA_VISIBLE_DEVICES=",".join(ids[w::workers]))
            for w in range(workers)]


def run_programs_in_workers(spec: SweepSpec, num_programs: int, workers: int,
                            console) -> None:
    """Runs the programs in ``workers`` processes at once (``python -m
    mbjax.runner.sweep SPEC.json INDEX``), each on its share of the GPUs; a failed
    program is an error naming its log file. The planners, models and envs a sweep uses
    must be importable by the workers (the built-in ones are)."""
    root = Path(spec.out_dir) / spec.name
    root.mkdir(parents=True, exist_ok=True)
    spec_file = root / "spec.json"
    spec_file.write_text(json.dumps(dataclasses.asdict(spec)))
    envs_ = worker_environments(workers)
    pending, running, failed = list(range(num_programs)), {}, []
    while pending or running:
        free = [w for w in range(workers) if w not in running.values()]
        while pending and free:
            index, w = pending.pop(0), free.pop(0)
            log = (root / f"program_{index}.log").open("w")
            proc = subprocess.Popen([sys.executable, "-m", "mbjax.runner.sweep",
                                     str(spec_file), str(index)], env=envs_[w],
                                    stdout=log, stderr=subprocess.STDOUT)
            running[proc] = w
            console.print(f"sweep {spec.name}: program {index} -> worker {w} "
                          f"(log {log.name})")
        time.sleep(0.5)
        for proc in [p for p in running if p.poll() is not None]:
            del running[proc]
            if proc.returncode:
                failed.append(proc.args[-1])
    if failed:
        raise RuntimeError(f"sweep {spec.name}: program(s) {', '.join(failed)} failed; "
                           f"see {root}/program_<index>.log")


def run_sweep(spec: SweepSpec, console=None, workers: int = 1) -> list[dict]:
    """Runs every program of the sweep (``workers`` > 1: that many at once, in worker
    processes over the GPUs) and writes the sweep table and plot."""
    from rich.console import Console

    console = console or Console()
    todo = programs(spec)
    for config, _, _ in todo:  # validate every point before compiling anything
        dataclasses.replace(config)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers > 1 and len(todo) > 1:
        run_programs_in_workers(spec, len(todo), min(workers, len(todo)), console)
    else:
        for index in range(len(todo)):
            run_program(spec, index, console)
    results = []
    for config, shape_point, float_points in todo:
        run_dir = Path(config.out_dir) / config.run_name
        rows = read_metrics(run_dir)
        last = max(r["iteration"] for r in rows)
        for fp in float_points:
            point = {**shape_point, **fp}
            final = [r["return_mean"] for r in rows
                     if r["iteration"] == last and r["point"] == _label(point)]
            results.append({**point, "point": _label(point), "run_dir": str(run_dir),
                            "iteration": last, "return_mean": float(np.mean(final)),
                            "return_std": float(np.std(final)), "returns": final})
    _write(spec, results, console)
    return results


AGENT_METRIC = "return_last_mean"


def wandb_sweep_config(spec: SweepSpec) -> dict:
    """A wandb sweep config for ``spec``: every grid point is one ``mbjax agent`` run."""
    fixed = {**spec.overrides, "num_seeds": spec.num_seeds, "seed": spec.seed,
             "out_dir": str(Path(spec.out_dir) / spec.name / "agent")}
    return {
        "name": spec.name,
        "method": "grid",
        "metric": {"name": AGENT_METRIC, "goal": "maximize"},
        "parameters": {k: {"values": list(v)} for k, v in spec.grid.items()},
        "command": ["${env}", "mbjax", "agent", f"--preset={spec.preset}",
                    f"--grid={','.join(spec.grid)}"]
                   + [f"--{k}={json.dumps(v)}" for k, v in fixed.items()] + ["${args}"],
    }


def write_wandb_sweep(spec: SweepSpec, console=None) -> Path:
    """Writes ``<out_dir>/<name>/wandb_sweep.yaml`` (no network) and says how to launch it."""
    import yaml
    from rich.console import Console

    console = console or Console()
    programs(spec)  # every point is a valid config
    root = Path(spec.out_dir) / spec.name
    root.mkdir(parents=True, exist_ok=True)
    path = root / "wandb_sweep.yaml"
    path.write_text(yaml.safe_dump(wandb_sweep_config(spec), sort_keys=False))
    console.print(f"wrote {path}\nlaunch: wandb sweep {path}   (prints SWEEP_ID)\n"
                  "then on each machine: wandb agent ENTITY/PROJECT/SWEEP_ID")
    return path


def parse_agent_args(argv: list[str]) -> tuple[str, list[str], dict[str, Any]]:
    """(preset, grid axes, {dotted field: value}) from ``--preset=P --grid=a.b,c
    --a.b=v ...`` (values parsed as YAML)."""
    import yaml

    preset, grid, overrides = presets.DEFAULT_PRESET, [], {}
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            raise ValueError(f"mbjax agent takes --field=value arguments (as wandb agent "
                             f"passes them), got {arg!r}")
        key, value = arg[2:].split("=", 1)
        if key == "preset":
            preset = value
        elif key == "grid":
            grid = [k for k in value.split(",") if k]
        else:
            overrides[key.replace("-", "_")] = yaml.safe_load(value)
    return preset, grid, overrides


def run_agent(argv: list[str], console=None) -> dict:
    """``mbjax agent``: one wandb-sweep run (see the module docstring); the summary."""
    import os


    preset, grid, overrides = parse_agent_args(argv)
    config = apply_overrides(presets.get(preset), overrides)
    if "wandb.mode" not in overrides:
        mode = os.environ.get("WANDB_MODE", "online")
        mode = "offline" if mode == "dryrun" else mode
        config = set_field(config, "wandb.mode", mode)
    if not config.run_name:  # the grid point (and the wandb run id under wandb agent)
        point = {k: overrides[k] for k in grid if k in overrides}
        run_id = os.environ.get("WANDB_RUN_ID", "")
        config = dataclasses.replace(
            config, run_name=_label(point).replace("/", "_") + (f"-{run_id}" if run_id else ""))
    return run(config, console=console)


def _write(spec: SweepSpec, results: list[dict], console) -> None:
    from mbjax.utils.bench import machine_info

    root = Path(spec.out_dir) / spec.name
    root.mkdir(parents=True, exist_ok=True)
    (root / "sweep.json").write_text(json.dumps(
        {"spec": dataclasses.asdict(spec), "machine": machine_info(), "results": results},
        indent=2))
    axes = list(spec.grid)
    with (root / "sweep.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(axes + ["return_mean", "return_std", "num_seeds"])
        for r in results:
            w.writerow([r[a] for a in axes] + [r["return_mean"], r["return_std"],
                                                len(r["returns"])])
    lines = ["| " + " | ".join(axes) + " | final return (mean ± std over seeds) |",
             "|" + "---|" * (len(axes) + 1)]
    lines += ["| " + " | ".join(str(r[a]) for a in axes)
              + f" | {r['return_mean']:.1f} ± {r['return_std']:.1f} |" for r in results]
    (root / "sweep.md").write_text("\n".join(lines) + "\n")
    _plot(spec, results, root / "sweep.png")
    console.print("\n".join(lines))
    console.print(f"wrote {root}/sweep.{{json,csv,md,png}}")


def _plot(spec: SweepSpec, results: list[dict], path: Path) -> None:
    """Final return vs the first axis, one line per combination of the other axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_axis, others = list(spec.grid)[0], list(spec.grid)[1:]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    groups = dict.fromkeys(tuple(r[o] for o in others) for r in results)
    for g in groups:
        rs = [r for r in results if tuple(r[o] for o in others) == g]
        xs = list(range(len(rs))) if any(isinstance(r[x_axis], str) for r in rs) else \
            [r[x_axis] for r in rs]
        mean = np.array([r["return_mean"] for r in rs])
        std = np.array([r["return_std"] for r in rs])
        label = ", ".join(f"{o.split('.')[-1]}={v}" for o, v in zip(others, g)) or "mean"
        ax.errorbar(xs, mean, yerr=std, marker="o", capsize=3, label=label)
        if isinstance(rs[0][x_axis], str):
            ax.set_xticks(xs, [r[x_axis] for r in rs])
    ax.set_xlabel(x_axis)
    ax.set_ylabel("final episode return (mean ± std over seeds)")
    ax.set_title(f"sweep {spec.name} ({spec.preset})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":  # a worker of run_sweep(..., workers > 1): SPEC.json INDEX
    with open(sys.argv[1]) as f:
        run_program(SweepSpec(**json.load(f)), int(sys.argv[2]))
