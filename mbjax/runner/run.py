"""The host side of a training run (any registered agent): run directory, progress,
logging, checkpoint/resume.

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
import re
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mbjax import distributed as dist
from mbjax.agents import (
    RUNTIME_FIELDS,
    ConfigError,
    RunConfig,
    agent_spec,
    config_to_dict,
    dataclass_from_dict,
    make_agent,
    make_task,
    upgrade_legacy_config,
)
from mbjax.checkpoint import BackgroundCheckpointer, list_checkpoints, load_latest
from mbjax.models.training import raise_if_failed
from mbjax.rundir import RunDirLock, check_fresh_run_dir
from mbjax.sharding import jit_over_seeds, place, seed_sharding, vmap_over_seeds
from mbjax.utils.bench import git_state, machine_info
from mbjax.utils.memory import available_bytes, check_fits, program_memory


def _mesh_text(mesh) -> str:
    return " x ".join(f"{n} {name}" for name, n in dict(mesh.shape).items())


def comparable_config(config: RunConfig) -> dict:
    """The config as a dict without ``RUNTIME_FIELDS`` (what checkpoints must match)."""
    return {k: v for k, v in config_to_dict(config).items() if k not in RUNTIME_FIELDS}


def checkpoint_tree(agent, state):
    """What a run's checkpoint holds: the agent's state without the fields the agent
    regenerates (``agent.checkpoint_leaves_out``, e.g. MBPO's model buffer when
    ``checkpoint_model_buffer`` is off); those are stored as None."""
    fields = tuple(getattr(agent, "checkpoint_leaves_out", ()))
    return state.replace(**dict.fromkeys(fields)) if fields else state


def state_from_checkpoint(agent, saved, template):
    """Inverse of ``checkpoint_tree``: the left-out fields filled with zeros shaped like
    ``template``'s (for a buffer state: an empty buffer)."""
    fields = tuple(getattr(agent, "checkpoint_leaves_out", ()))
    zeros = lambda s: jnp.zeros(s.shape, s.dtype)  # noqa: E731
    return saved.replace(**{f: jax.tree_util.tree_map(zeros, getattr(template, f))
                            for f in fields}) if fields else saved


def config_from_dict(d: dict) -> RunConfig:
    """Inverse of ``config_to_dict``: the agent's config class from the ``algorithm`` tag
    (older files without it are MPC runs, ``upgrade_legacy_config``)."""
    if not isinstance(d, dict):
        raise ConfigError(f"expected a mapping, got {type(d).__name__}")
    d = upgrade_legacy_config(d)
    try:
        spec = agent_spec(d["algorithm"])
    except KeyError as err:
        raise ConfigError(f"algorithm: {err.args[0]}") from None
    return dataclass_from_dict(spec.config_type, d)


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The config a run directory was started with (its config.json); a missing,
    truncated or hand-edited file is an error that names the file and the field."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.json)")
    try:
        return config_from_dict(json.loads(path.read_text()))
    except json.JSONDecodeError as err:
        raise ConfigError(f"config.json in {run_dir} is invalid: not JSON ({err})") from None
    except ConfigError as err:
        raise ConfigError(f"config.json in {run_dir} is invalid: {err}") from None


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


def _start_wandb(config: RunConfig, run_dir: Path):
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
    ``point`` string names its sweep point); hparams: the agent's hparams pytree with a
    leading [S] axis (None: the config's for all members).
    """

    seeds: tuple[int, ...]
    labels: tuple[dict, ...]
    hparams: object = None


def resolve_run(config: RunConfig | None, resume: str | Path | None
                ) -> tuple[RunConfig, Path]:
    """(config to run, run directory): a new run's, or the stored config of ``resume``
    with the caller's runtime fields (devices, ...); other differences are an error."""
    if resume is None:
        if config is None:
            raise ValueError("run() needs a config or a run directory to resume")
        return config, Path(config.out_dir) / config.default_run_name
    run_dir = Path(resume)
    stored = load_run_config(run_dir)
    if config is not None and comparable_config(config) != comparable_config(stored):
        diff = _config_diff(comparable_config(stored), comparable_config(config))
        raise ValueError(f"--resume {run_dir}: the given config differs from the run's:"
                         f"\n{diff}\nDrop the overrides to resume, or start a new run.")
    if config is not None:  # runtime fields (devices...) come from the caller
        runtime = {f: getattr(config, f) for f in RUNTIME_FIELDS}
    else:  # a stored multi-process setup must be passed again
        runtime = {"distributed": type(stored.distributed)()}
    return dataclasses.replace(stored, **runtime), run_dir


def start_run_dir(config: RunConfig, run_dir: Path, resume: bool, overwrite: bool,
                  console) -> None:
    """Checks (and for a new run writes) the run directory; the caller holds its lock.

    A new run over an old one is refused unless ``overwrite``; resuming a run whose
    checkpoints are gone while it has metric rows is refused (it would discard them)."""
    primary = dist.is_primary()
    if resume:
        rows = read_metrics(run_dir) if (run_dir / "metrics.jsonl").exists() else []
        if not list_checkpoints(run_dir) and rows:
            raise FileExistsError(
                f"--resume {run_dir}: the run has {len(rows)} metric rows but no checkpoint "
                "to resume from; starting again would discard them. Start a new run with "
                "--overwrite (or another --run-name).")
        return
    check_fresh_run_dir(run_dir, overwrite=overwrite, console=console)
    dist.sync("mbjax-run-checked")  # every process looked before anyone writes
    if primary:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(config_to_dict(config), indent=2))
        (run_dir / "metrics.jsonl").write_text("")


def run(config: RunConfig | None = None, resume: str | Path | None = None,
        console=None, stop_after: int | None = None, batch: SeedBatch | None = None,
        overwrite: bool = False) -> dict:
    """Trains ``config`` (or resumes the run directory ``resume``); returns the summary.

    ``stop_after`` ends the host loop after that many iterations in this call (used to
    test resuming; the run directory stays resumable). ``batch`` sets per-member seeds,
    metric labels and hyper-parameters (saved as ``batch.json``; resuming reloads it and
    takes the hyper-parameters from the checkpoint). ``overwrite`` replaces an old run in
    the same directory. Any registered agent's config runs. The run directory is locked
    for the duration (``mbjax.rundir``): a second run into it fails at once.
    """
    from rich.console import Console

    # Several processes: connect them before anything touches a device (mbjax.distributed).
    dist.initialize(config.distributed if config is not None else None)
    console = console or Console(quiet=not dist.is_primary())
    config, run_dir = resolve_run(config, resume)
    if dist.is_primary():
        run_dir.mkdir(parents=True, exist_ok=True)
    with RunDirLock(run_dir, console):
        start_run_dir(config, run_dir, resume is not None, overwrite, console)
        return train_in(config, run_dir, resume is not None, console, stop_after, batch)


def seed_batch(config: RunConfig, run_dir: Path, resume: bool,
               batch: SeedBatch | None) -> SeedBatch:
    """The run's members: ``batch`` (written to batch.json), the stored batch.json of a
    resumed run, or seeds seed .. seed + num_seeds - 1 with the config's hparams."""
    batch_file = run_dir / "batch.json"
    if batch is not None:
        if len(batch.seeds) != config.num_seeds or len(batch.labels) != config.num_seeds:
            raise ValueError(f"a SeedBatch needs num_seeds ({config.num_seeds}) seeds and "
                             f"labels, got {len(batch.seeds)} and {len(batch.labels)}")
        if dist.is_primary():
            batch_file.write_text(json.dumps({"seeds": list(batch.seeds),
                                              "labels": list(batch.labels)}))
        return batch
    if resume and batch_file.exists():
        stored = json.loads(batch_file.read_text())
        return SeedBatch(tuple(stored["seeds"]), tuple(stored["labels"]))
    seeds = tuple(config.seed + i for i in range(config.num_seeds))
    return SeedBatch(seeds, tuple({} for _ in seeds))


MEMORY_ADVICE = ("Lower num_envs, num_seeds or the planner's population, plan the envs in "
                 "chunks (--planner-chunk-size, where the agent has it), spread the seeds "
                 "over more devices (--devices), or pass --no-check-memory to try anyway.")


def train_in(config: RunConfig, run_dir: Path, resume: bool, console,
             stop_after: int | None, batch: SeedBatch | None) -> dict:
    """Compiles the agent over the seeds, restores or initialises, runs the host loop."""
    primary = dist.is_primary()
    agent = make_agent(config)
    batch = seed_batch(config, run_dir, resume, batch)
    seeds, labels = list(batch.seeds), list(batch.labels)
    sharding = seed_sharding(len(seeds), config.devices, config.data_parallel)
    keys = place(jnp.stack([jax.random.PRNGKey(s) for s in seeds]), sharding)
    over_seeds = lambda fn: vmap_over_seeds(fn, sharding)  # noqa: E731
    if batch.hparams is not None:
        params = place(batch.hparams, sharding)
        init = jit_over_seeds(lambda k: over_seeds(agent.init)(k, params), sharding)
    else:
        init = jit_over_seeds(over_seeds(agent.init), sharding)
    step = jit_over_seeds(over_seeds(agent.train_iteration), sharding, donate=True)
    metadata = {"config": comparable_config(config)}

    t0, code = time.perf_counter(), git_state()  # the code this call imported
    resuming = bool(resume and list_checkpoints(run_dir))
    template = jax.eval_shape(init, keys)
    if sharding is not None:  # restore each shard straight onto its device / process
        template = jax.tree_util.tree_map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), template)
    with console.status("compiling..."):
        # Compiled ahead of the first call, so the memory the programs need is known
        # before any of it is allocated; the compiled programs are the ones that run.
        compiled = {"train_iteration": step.lower(template).compile()}
        if not resuming:
            compiled["init"] = init.lower(keys).compile()
    if config.check_memory:
        check_fits({k: program_memory(c) for k, c in compiled.items()}, available_bytes(),
                   MEMORY_ADVICE)
    step = compiled["train_iteration"]
    if resuming:
        saved = load_latest(run_dir, checkpoint_tree(agent, template), metadata, console)
        state = place(state_from_checkpoint(agent, saved, template), sharding)
        start = int(dist.gather(state.iteration)[0])
        console.print(f"resumed {run_dir} at iteration {start}")
    else:
        with console.status("prefilling..."):
            state = jax.block_until_ready(compiled["init"](keys))
        start = 0
    if primary:
        _truncate_metrics(run_dir / "metrics.jsonl", start)
    console.print(f"[bold]mbjax train[/] {config.preset}: {config.env.name}, "
                  f"{config.description}, {len(seeds)} seed(s), "
                  f"{config.num_envs} env(s), on {jax.devices()[0].device_kind}"
                  + (f" x {sharding.mesh.size} devices ({_mesh_text(sharding.mesh)})"
                     if sharding is not None else "")
                  + f" -> {run_dir}")
    end = config.num_iterations if stop_after is None else min(config.num_iterations,
                                                                 start + stop_after)
    host_loop(config, run_dir, step, state, metadata, seeds, labels, start, end, console,
              keep=lambda st: checkpoint_tree(agent, st))
    dist.sync("mbjax-run-end")  # process 0 has written every metric line
    all_rows = read_metrics(run_dir)
    summary = _summarise(config, all_rows, time.perf_counter() - t0, run_dir)
    summary.update(machine=machine_info(), code=code)
    if primary:
        if all_rows:
            plot_learning_curve(all_rows, run_dir / "learning_curve.png",
                                f"{config.preset} on {config.env.name}")
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    _print_summary(console, summary)
    return summary


def host_loop(config: RunConfig, run_dir: Path, step, state, metadata: dict, seeds: list,
              labels: list, start: int, end: int, console, keep=lambda state: state) -> None:
    """Iterations ``start`` .. ``end``: step, metric rows (jsonl, wandb), checkpoints of
    ``keep(state)``."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    primary = dist.is_primary()
    wb = _start_wandb(config, run_dir) if primary else None
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                        TextColumn("{task.fields[status]}"), console=console)
    log_path = run_dir / "metrics.jsonl" if primary else Path(os.devnull)
    writer = BackgroundCheckpointer(config.checkpoint_async)
    with writer, progress, log_path.open("a") as log:
        task = progress.add_task("iterations", total=config.num_iterations, completed=start,
                                 status="")
        for it in range(start, end):
            t_it = time.perf_counter()
            state, metrics = step(state)
            rows = _host_metrics(metrics, len(seeds))
            dt = time.perf_counter() - t_it
            for row in rows:  # check every seed before any row of this iteration is written
                if "model/data_nonfinite" in row:  # a model was trained this iteration
                    raise_if_failed({k: np.asarray(v) for k, v in row.items()}, it + 1)
            for seed, label, row in zip(seeds, labels, rows):
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
                writer.save(run_dir / "checkpoints", it + 1, keep(state), metadata,
                            console=console)
    if wb is not None:  # the sweep metric (return_last_mean) and the rest of the table
        summary = _summarise(config, read_metrics(run_dir), 0.0, run_dir)
        wb.summary.update({k: v for k, v in summary.items()
                           if isinstance(v, (int, float)) and not isinstance(v, bool)})
        wb.finish()


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


def _summarise(config: RunConfig, rows: list[dict], wall_s: float, run_dir: Path) -> dict:
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
        if not isinstance(v, dict):  # the machine record stays in summary.json
            table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    console.print(table)


def load_trained(run_dir: str | Path, env_options: str | None = None, console=None):
    """(config, agent, state) of a run's latest checkpoint: the agent built for the run's
    task, or with ``env_options`` (``EnvConfig.options`` syntax) for the task built with
    those options (another goal; the observation size must stay the same), and the state
    of all its seeds (leading axis = seed)."""
    from rich.console import Console

    console = console or Console()
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    eval_config = config
    if env_options is not None:
        eval_config = dataclasses.replace(
            config, env=dataclasses.replace(config.env, options=env_options))
        sizes = [make_task(c).env.observation_size for c in (config, eval_config)]
        if sizes[0] != sizes[1]:
            raise ValueError(f"env options {env_options!r} change the observation size of "
                             f"{config.env.name} from {sizes[0]} to {sizes[1]}: the run's "
                             "model cannot be evaluated on that task")
    trainer = make_agent(eval_config)
    keys = jnp.stack([jax.random.PRNGKey(config.seed + i) for i in range(config.num_seeds)])
    template = jax.eval_shape(jax.vmap(trainer.init), keys)
    saved = load_latest(run_dir, checkpoint_tree(trainer, template),
                        {"config": comparable_config(config)}, console)
    return eval_config, trainer, state_from_checkpoint(trainer, saved, template)


def evaluate(run_dir: str | Path, seed: int = 1234, console=None,
             env_options: str | None = None) -> dict:
    """Loads a run's checkpoint and runs ``episodes_per_iteration`` MPC episodes per env
    and seed with its model (nothing is added to the buffer); writes eval.json.

    ``env_options`` (``EnvConfig.options`` syntax, e.g. "path='figure8'") evaluates the
    trained agent on the task built with those options instead of the run's own, with no
    retraining (another goal or reward; "" = the task's defaults). The observation size
    must stay the same. The result goes to eval-<options>.json."""
    from rich.console import Console

    console = console or Console()
    run_dir = Path(run_dir)
    config, trainer, state = load_trained(run_dir, env_options, console)
    eval_keys = jax.random.split(jax.random.PRNGKey(seed), config.num_seeds)
    episodes = getattr(trainer, "evaluate_episodes", None)  # distillation has none
    if episodes is None:
        returns, measures = jax.jit(jax.vmap(trainer.evaluate))(state, eval_keys), {}
    else:
        returns, measures = jax.jit(jax.vmap(episodes))(state, eval_keys)
    returns = np.asarray(returns)
    result = {"run_dir": str(run_dir), "iteration": int(np.asarray(state.iteration)[0]),
              "env_options": config.env.options,
              "return_mean": float(returns.mean()), "return_std": float(returns.std()),
              "returns_per_seed": returns.reshape(config.num_seeds, -1).mean(1).tolist(),
              "measures": {k: float(np.mean(v)) for k, v in measures.items()},
              "device": jax.devices()[0].device_kind, "machine": machine_info(),
              "code": git_state()}
    name = "eval.json" if env_options is None else (
        "eval-" + (re.sub(r"[^A-Za-z0-9_.-]+", "_", env_options) or "defaults") + ".json")
    (run_dir / name).write_text(json.dumps(result, indent=2))
    console.print(result)
    return result
