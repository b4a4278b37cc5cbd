"""The host side of a training run: run directory, progress, logging, checkpoint/resume.

``run(config)`` compiles ``jax.vmap(train_iteration)`` over the seeds once (spread over
``config.devices`` devices, ``config.data_parallel`` per seed, by ``mbjax.sharding``; over
several processes with ``config.distributed``, ``mbjax.distributed``) and loops over
iterations on the host:

    runs/<name>/config.json        the resolved config (what --resume reloads)
    runs/<name>/metrics.jsonl      one line per iteration per seed
    runs/<name>/learning_curve.png mean +- std over seeds of the return vs env steps
    runs/<name>/summary.json       final table
    runs/<name>/checkpoints/iter_000012/  orbax: model, buffer, planner params, keys,
                                          counters (the newest ``keep_checkpoints`` kept)

Checkpoints are written atomically (``mbjax.checkpoint``): a run killed at any point
resumes from the last complete checkpoint with ``--resume runs/<name>``, drops the metric
lines written after it, and produces exactly the metrics of an uninterrupted run (every
random draw comes from the keys in the state). Timing fields (``time/...``) naturally
differ. If the newest checkpoint is corrupt, resuming says so and falls back to the
previous one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mbjax import checkpoint
from mbjax import distributed as dist
from mbjax.models.training import raise_if_failed
from mbjax.sharding import jit_over_seeds, place, seed_sharding, vmap_over_seeds
from mbjax.training.config import TrainConfig
from mbjax.training.loop import make_train


def config_to_dict(config: TrainConfig) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config)))


# Fields that change how a run is computed, not what it computes: a checkpoint may be
# resumed with other values (e.g. on a machine with another number of devices).
RUNTIME_FIELDS = ("devices", "data_parallel", "distributed")


def _mesh_text(mesh) -> str:
    return " x ".join(f"{n} {name}" for name, n in dict(mesh.shape).items())


def comparable_config(config) -> dict:
    """The config as a dict without ``RUNTIME_FIELDS`` (what checkpoints must match)."""
    return {k: v for k, v in config_to_dict(config).items() if k not in RUNTIME_FIELDS}


def config_from_dict(d: dict) -> TrainConfig:
    """Inverse of ``config_to_dict`` (nested dataclasses, tuples restored)."""
    if "algorithm" in d:  # an agent's config (mbjax.agents: MBPO/SAC, distillation)
        from mbjax.agents import agent_config_from_dict

        return agent_config_from_dict(d)
    from mbjax.models.ensemble import EnsembleConfig
    from mbjax.models.training import ModelTrainConfig
    from mbjax.training.config import DistributedConfig, EnvConfig, PlannerConfig, WandbConfig

    def build(cls, values):
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in values:
                v = values[f.name]
                kwargs[f.name] = tuple(v) if isinstance(v, list) else v
        return cls(**kwargs)

    nested = {"env": EnvConfig, "model": EnsembleConfig, "model_train": ModelTrainConfig,
              "planner": PlannerConfig, "wandb": WandbConfig,
              "distributed": DistributedConfig}
    top = {k: v for k, v in d.items() if k not in nested}
    top.update({k: build(cls, d.get(k, {})) for k, cls in nested.items()})
    return build(TrainConfig, top)


def load_run_config(run_dir: str | Path):
    """The config a run directory was started with (its config.json)."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.json)")
    return config_from_dict(json.loads(path.read_text()))


def make_trainer(config):
    """``make_train(config)`` for a ``TrainConfig``; for an agent's config (one with an
    ``algorithm`` field, ``mbjax.agents``) its trainer, which has the same ``init``,
    ``train_iteration``, ``evaluate`` and ``config``."""
    if isinstance(config, TrainConfig):
        return make_train(config)
    from mbjax.agents import make_agent_trainer

    return make_agent_trainer(config)


def _host_metrics(metrics: dict, num_seeds: int) -> list[dict]:
    host = dist.gather(metrics)
    rows = []
    for s in range(num_seeds):
        row = {}
        for k, v in host.items():
            x = np.asarray(v)[s]
            row[k] = int(x) if k in ("iteration", "env_steps") else float(x)
        rows.append(row)
    return rows


def _truncate_metrics(path: Path, iteration: int) -> None:
    """Keeps only metric lines of iterations <= ``iteration`` (after a resume)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line)["iteration"] <= iteration]
    path.write_text("".join(line + "\n" for line in keep))


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_learning_curve(rows: list[dict], path: Path, title: str) -> None:
    """Return vs env steps, mean +- std over seeds; one curve per sweep point (rows of a
    ``SeedBatch`` run carry a ``point`` label), a single curve otherwise."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = sorted({r["iteration"] for r in rows})
    steps = np.array([next(r["env_steps"] for r in rows if r["iteration"] == i) for i in its])
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for point in dict.fromkeys(r.get("point", "") for r in rows):
        mine = [r for r in rows if r.get("point", "") == point]
        seeds = sorted({r["seed"] for r in mine})
        ret = np.array([[next(r["return_mean"] for r in mine
                              if r["seed"] == s and r["iteration"] == i) for s in seeds]
                        for i in its])
        mean, std = ret.mean(1), ret.std(1)
        label = f"{point}, " if point else ""
        ax.plot(steps, mean, marker="o", label=f"{label}mean over {len(seeds)} seed(s)")
        ax.fill_between(steps, mean - std, mean + std, alpha=0.25)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return (MPC)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _start_wandb(config: TrainConfig, run_dir: Path):
    if config.wandb.mode == "disabled":
        return None
    import wandb

    return wandb.init(project=config.wandb.project, entity=config.wandb.entity or None,
                      mode=config.wandb.mode, dir=str(run_dir), name=run_dir.name,
                      config=config_to_dict(config), resume="allow")


@dataclasses.dataclass(frozen=True)
class SeedBatch:
    """What the S vmapped members of a run are, when not just seeds seed .. seed + S - 1
    with the config's planner floats (``mbjax sweep`` uses it).

    seeds: the S seeds; labels: S dicts merged into each member's metric rows (a
    ``point`` string names its sweep point); planner_params: the planner's params
    pytree with a leading [S] axis (None: the config's for all members).
    """

    seeds: tuple[int, ...]
    labels: tuple[dict, ...]
    planner_params: object = None


def run(config: TrainConfig | None = None, resume: str | Path | None = None,
        console=None, stop_after: int | None = None, batch: SeedBatch | None = None) -> dict:
    """Trains ``config`` (or resumes the run directory ``resume``); returns the summary.

    ``stop_after`` ends the host loop after that many iterations in this call (used to
    test resuming; the run directory stays resumable). ``batch`` sets per-member seeds,
    metric labels and planner floats (saved as ``batch.json``; resuming reloads it and
    takes the floats from the checkpoint).
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    # Several processes: connect them before anything touches a device (mbjax.distributed).
    dist.initialize(getattr(config, "distributed", None))
    primary = dist.is_primary()
    console = console or Console(quiet=not primary)
    if resume is not None:
        run_dir = Path(resume)
        stored = load_run_config(run_dir)
        if config is not None and comparable_config(config) != comparable_config(stored):
            diff = _config_diff(comparable_config(stored), comparable_config(config))
            raise ValueError(f"--resume {run_dir}: the given config differs from the run's:"
                             f"\n{diff}\nDrop the overrides to resume, or start a new run.")
        if config is not None:  # runtime fields (devices...) come from the caller
            runtime = {f: getattr(config, f) for f in RUNTIME_FIELDS
                       if hasattr(stored, f) and hasattr(config, f)}
        elif hasattr(stored, "distributed"):  # a stored multi-process setup: pass it again
            runtime = {"distributed": type(stored.distributed)()}
        else:
            runtime = {}
        config = dataclasses.replace(stored, **runtime)
    else:
        config = config or TrainConfig()
        run_dir = Path(config.out_dir) / config.default_run_name
        if list_checkpoints(run_dir):
            raise FileExistsError(f"{run_dir} already holds a run; resume it with --resume "
                                  f"{run_dir} or choose another --run-name")
        dist.sync("mbjax-run-checked")  # every process looked before anyone writes
        if primary:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.json").write_text(json.dumps(config_to_dict(config),
                                                            indent=2))
            (run_dir / "metrics.jsonl").write_text("")

    trainer = make_trainer(config)
    batch_file = run_dir / "batch.json"
    if batch is not None:
        if len(batch.seeds) != config.num_seeds or len(batch.labels) != config.num_seeds:
            raise ValueError(f"a SeedBatch needs num_seeds ({config.num_seeds}) seeds and "
                             f"labels, got {len(batch.seeds)} and {len(batch.labels)}")
        if primary:
            batch_file.write_text(json.dumps({"seeds": list(batch.seeds),
                                              "labels": list(batch.labels)}))
    elif resume is not None and batch_file.exists():
        stored_batch = json.loads(batch_file.read_text())
        batch = SeedBatch(tuple(stored_batch["seeds"]), tuple(stored_batch["labels"]))
    seeds = list(batch.seeds) if batch else [config.seed + i for i in range(config.num_seeds)]
    labels = list(batch.labels) if batch else [{} for _ in seeds]
    sharding = seed_sharding(len(seeds), getattr(config, "devices", 1),
                             getattr(config, "data_parallel", 1))
    keys = place(jnp.stack([jax.random.PRNGKey(s) for s in seeds]), sharding)
    over_seeds = lambda fn: vmap_over_seeds(fn, sharding)  # noqa: E731
    if batch is not None and batch.planner_params is not None:
        params = place(batch.planner_params, sharding)
        init = jit_over_seeds(lambda k: over_seeds(trainer.init)(k, params), sharding)
    else:
        init = jit_over_seeds(over_seeds(trainer.init), sharding)
    step = jit_over_seeds(over_seeds(trainer.train_iteration), sharding, donate=True)
    metadata = {"config": comparable_config(config)}
    ckpt_root = run_dir / "checkpoints"

    t0 = time.perf_counter()
    if resume is not None and list_checkpoints(run_dir):
        template = jax.eval_shape(init, keys)
        if sharding is not None:  # restore each shard straight onto its device / process
            template = jax.tree_util.tree_map(
                lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), template)
        state = place(load_latest(run_dir, template, metadata, console), sharding)
        start = int(dist.gather(state.iteration)[0])
        console.print(f"resumed {run_dir} at iteration {start}")
    else:
        with console.status("compiling and prefilling..."):
            state = jax.block_until_ready(init(keys))
        start = 0
    if primary:
        _truncate_metrics(run_dir / "metrics.jsonl", start)
    wb = _start_wandb(config, run_dir) if primary else None
    console.print(f"[bold]mbjax train[/] {config.preset}: {config.env.name}, "
                  f"{getattr(config, 'description', config.planner.kind + ' planner')}, "
                  f"{len(seeds)} seed(s), "
                  f"{config.num_envs} env(s), on {jax.devices()[0].device_kind}"
                  + (f" x {sharding.mesh.size} devices ({_mesh_text(sharding.mesh)})"
                     if sharding is not None else "")
                  + f" -> {run_dir}")

    end = config.num_iterations if stop_after is None else min(config.num_iterations,
                                                                 start + stop_after)
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                        TextColumn("{task.fields[status]}"), console=console)
    log_path = run_dir / "metrics.jsonl" if primary else Path(os.devnull)
    with progress, log_path.open("a") as log:
        task = progress.add_task("iterations", total=config.num_iterations, completed=start,
                                 status="")
        for it in range(start, end):
            t_it = time.perf_counter()
            state, metrics = step(state)
            rows = _host_metrics(metrics, len(seeds))
            dt = time.perf_counter() - t_it
            for seed, label, row in zip(seeds, labels, rows):
                if "model/data_nonfinite" in row:  # a model was trained this iteration
                    raise_if_failed({k: np.asarray(v) for k, v in row.items()}, it + 1)
                row.update(seed=seed, **label, **{"time/iteration_s": dt})
                log.write(json.dumps(row) + "\n")
            log.flush()
            ret = np.mean([r["return_mean"] for r in rows])
            progress.update(task, advance=1, status=f"return {ret:.1f}")
            if wb is not None:
                wb.log({k: float(np.mean([r[k] for r in rows])) for k in rows[0]
                        if k != "seed" and isinstance(rows[0][k], (int, float))},
                       step=rows[0]["env_steps"])
            last = it + 1 == config.num_iterations
            if last or (config.checkpoint_every and (it + 1) % config.checkpoint_every == 0):
                save_checkpoint(ckpt_root, it + 1, state, metadata)
    dist.sync("mbjax-run-end")  # process 0 has written every metric line
    all_rows = read_metrics(run_dir)
    summary = _summarise(config, all_rows, time.perf_counter() - t0, run_dir)
    if wb is not None:  # the sweep metric (return_last_mean) and the rest of the table
        wb.summary.update({k: v for k, v in summary.items()
                           if isinstance(v, (int, float)) and not isinstance(v, bool)})
        wb.finish()
    if primary:
        if all_rows:
            plot_learning_curve(all_rows, run_dir / "learning_curve.png",
                                f"{config.preset} on {config.env.name}")
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    _print_summary(console, summary)
    return summary


KEEP_CHECKPOINTS = 2


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint directories of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("iter_"))


def save_checkpoint(root: Path, iteration: int, state, metadata: dict,
                    keep: int = KEEP_CHECKPOINTS) -> Path:
    """Writes checkpoints/iter_<iteration> atomically and keeps the newest ``keep``."""
    import shutil

    path = checkpoint.save(root / f"iter_{iteration:06d}", state,
                           dict(metadata, iteration=iteration))
    if dist.is_primary():
        for old in list_checkpoints(root.parent)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    dist.sync("mbjax-checkpoint-pruned")
    return path


def load_latest(run_dir: str | Path, template, metadata: dict, console=None):
    """Loads the newest checkpoint of a run that matches; a corrupt newest one is reported
    and the previous one is used. A config mismatch is an error (it would not help to
    fall back)."""
    candidates = list_checkpoints(run_dir)
    if not candidates:
        raise checkpoint.CheckpointError(f"{run_dir} has no checkpoint to resume from")
    errors = []
    for path in reversed(candidates):
        try:
            record = checkpoint.read_metadata(path)
            expected = dict(metadata, iteration=record.get("metadata", {}).get("iteration"))
            state = checkpoint.load(path, template, expected)
        except checkpoint.CheckpointError as err:
            if "different configuration" in str(err) or "does not match" in str(err):
                raise
            errors.append(str(err))
            if console is not None:
                console.print(f"[yellow]warning:[/] {err}; trying an older checkpoint")
            continue
        return state
    raise checkpoint.CheckpointError("no usable checkpoint in {}:\n{}".format(
        run_dir, "\n".join(errors)))


def _config_diff(a: dict, b: dict, prefix: str = "") -> str:
    lines = []
    for k in sorted(set(a) | set(b)):
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            sub = _config_diff(a[k], b[k], f"{prefix}{k}.")
            if sub:
                lines.append(sub)
        elif a.get(k) != b.get(k):
            lines.append(f"  {prefix}{k}: run has {a.get(k)!r}, given {b.get(k)!r}")
    return "\n".join(lines)


def _summarise(config: TrainConfig, rows: list[dict], wall_s: float, run_dir: Path) -> dict:
    if not rows:
        return {"run_dir": str(run_dir), "iterations": 0}
    last_it = max(r["iteration"] for r in rows)
    first = [r["return_mean"] for r in rows if r["iteration"] == 1]
    last = [r["return_mean"] for r in rows if r["iteration"] == last_it]
    best = {}
    for r in rows:
        who = (r.get("point", ""), r["seed"])
        best[who] = max(best.get(who, -np.inf), r["return_mean"])
    return {
        "run_dir": str(run_dir),
        "preset": config.preset,
        "env": config.env.name,
        "device": jax.devices()[0].device_kind,
        "seeds": sorted({seed for _, seed in best}),
        "iterations": last_it,
        "env_steps": max(r["env_steps"] for r in rows),
        "return_first_iteration": float(np.mean(first)) if first else None,
        "return_last_mean": float(np.mean(last)),
        "return_last_std": float(np.std(last)),
        "return_best_mean": float(np.mean(list(best.values()))),
        "wall_time_s_this_call": wall_s,
    }


def _print_summary(console, summary: dict) -> None:
    from rich.table import Table

    table = Table(title=f"mbjax train: {summary.get('preset')} on {summary.get('env')}")
    table.add_column("")
    table.add_column("value", justify="right")
    for k, v in summary.items():
        table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    console.print(table)


def evaluate(run_dir: str | Path, seed: int = 1234, console=None) -> dict:
    """Loads a run's checkpoint and runs ``episodes_per_iteration`` MPC episodes per env
    and seed with its model (nothing is added to the buffer); writes eval.json."""
    from rich.console import Console

    console = console or Console()
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    trainer = make_trainer(config)
    keys = jnp.stack([jax.random.PRNGKey(config.seed + i) for i in range(config.num_seeds)])
    template = jax.eval_shape(jax.vmap(trainer.init), keys)
    state = load_latest(run_dir, template, {"config": comparable_config(config)}, console)
    eval_keys = jax.random.split(jax.random.PRNGKey(seed), config.num_seeds)
    returns = np.asarray(jax.jit(jax.vmap(trainer.evaluate))(state, eval_keys))
    result = {"run_dir": str(run_dir), "iteration": int(np.asarray(state.iteration)[0]),
              "return_mean": float(returns.mean()), "return_std": float(returns.std()),
              "returns_per_seed": returns.reshape(config.num_seeds, -1).mean(1).tolist(),
              "device": jax.devices()[0].device_kind}
    (run_dir / "eval.json").write_text(json.dumps(result, indent=2))
    console.print(result)
    return result
