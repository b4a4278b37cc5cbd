"""The ``mbjax`` command line.

  mbjax train [PRESET] [--any.config.field VALUE ...]   train (default preset: pddm-cpu)
  mbjax train PRESET --overwrite ...                    replace an old run of that name
  mbjax train --resume RUN_DIR [--devices 0 ...]        continue a run (runtime flags allowed)
  mbjax eval RUN_DIR                                    MPC episodes with a run's model
  mbjax sweep SPEC.yaml [--workers W]                   grid sweep (floats vmapped), table + plot
  mbjax sweep SPEC.yaml --wandb                         write a wandb sweep (many machines)
  mbjax agent --preset=P --field=value ...              one wandb-sweep run (wandb agent)
  mbjax presets | mbjax envs                            list presets / environments
  mbjax --version                                       the package version
  mbjax rollout [--env ...]                             random-policy rollout report
  mbjax diagnostics [--env ...]                         model error, k-step error, calibration

Every config field is a flag (tyro, from the frozen dataclasses); ``--help`` lists them
with defaults and docs. Invalid values fail before any compilation, naming the field.
"""

from __future__ import annotations

import dataclasses
import sys

import tyro

from mbjax.checkpoint import CheckpointError
from mbjax.demo import RolloutConfig

USAGE = __doc__


def _envs() -> int:
    import mbjax.envs as envs

    for name, desc in envs.describe().items():
        print(f"{name:20s} {desc}")
    print(f"{'playground/<Name>':20s} any MuJoCo Playground env (extra 'playground'; "
          "learned reward)")
    return 0


def _presets() -> int:
    from mbjax.runner import presets

    for name, cfg in presets.PRESETS.items():
        default = "  (default)" if name == presets.DEFAULT_PRESET else ""
        print(f"{name:24s} {cfg.algorithm:8s} {cfg.env.name:18s} {cfg.description:20s} "
              f"{cfg.num_iterations:4d} iterations{default}")
    return 0


def pop_option(argv: list[str], flag: str) -> tuple[str | None, list[str]]:
    """(value of ``flag VALUE`` or ``flag=VALUE`` in argv, argv without it)."""
    for i, arg in enumerate(argv):
        if arg == flag:
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise ValueError(f"{flag} needs a value")
            return argv[i + 1], argv[:i] + argv[i + 2:]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1], argv[:i] + argv[i + 1:]
    return None, argv


def config_cli(default, argv: list[str], prog: str):
    """``default`` with the flags in ``argv`` applied (tyro; every field is a flag).

    ``--planner.kind NAME`` (``--model.kind NAME``) first swaps the planner (model) for
    the registered one named NAME, carrying over the fields both share, so its own flags
    then apply.
    """
    from mbjax.models import switch_model
    from mbjax.planners import switch_planner

    for field, switch in (("planner", switch_planner), ("model", switch_model)):
        kind, argv = pop_option(argv, f"--{field}.kind")
        if kind is None:
            continue
        if not hasattr(default, field):
            raise ValueError(f"{type(default).__name__} has no {field} (--{field}.kind)")
        default = dataclasses.replace(default, **{field: switch(getattr(default, field),
                                                                 kind)})
    config = tyro.cli(type(default), default=default, args=argv, prog=prog)
    return dataclasses.replace(config)  # re-run validation of the top level


def _train(argv: list[str]) -> int:
    from mbjax.runner import presets
    from mbjax.runner.run import load_run_config, run

    resume, argv = pop_option(argv, "--resume")
    overwrite = "--overwrite" in argv
    argv = [a for a in argv if a != "--overwrite"]
    if overwrite and resume is not None:
        raise ValueError("--overwrite starts a new run; it cannot be combined with --resume")
    if resume is not None:
        if not argv:
            run(None, resume=resume)
            return 0
        # Flags on top of the run's own config (e.g. --devices 0 or the --distributed.* of
        # a multi-host resume); changing anything else is refused by run().
        run(config_cli(load_run_config(resume), argv, "mbjax train --resume RUN_DIR"),
            resume=resume)
        return 0
    name = presets.DEFAULT_PRESET
    if argv and not argv[0].startswith("-"):
        name, argv = argv[0], argv[1:]
    config = config_cli(presets.get(name), argv, f"mbjax train {name}")
    import mbjax.envs as envs

    # unknown env names and options fail here, before any compilation
    envs.make(config.env.name, **config.env.parsed_options())
    run(config, overwrite=overwrite)
    return 0


def parse_subcommand(argv: list[str], name: str, description: str, *arguments):
    """argparse for a small subcommand: ``arguments`` are (flags, keyword dict) pairs;
    ``--help`` lists them and exits 0, bad arguments exit 2 with the usage."""
    import argparse

    parser = argparse.ArgumentParser(prog=f"mbjax {name}", description=description)
    for flags, kwargs in arguments:
        parser.add_argument(*flags, **kwargs)
    return parser.parse_args(argv)


def _eval(argv: list[str]) -> int:
    from mbjax.runner.run import evaluate

    args = parse_subcommand(
        argv, "eval", "Evaluation episodes with a run's latest checkpoint (nothing is "
        "trained or stored; writes RUN_DIR/eval.json).",
        (["run_dir"], {"help": "a run directory (runs/<name>)"}),
        (["--seed"], {"type": int, "default": 1234, "help": "key of the episodes"}),
        (["--env-options"], {"default": None, "help": "evaluate on the task built with these "
                             "options instead of the run's (env.options syntax, e.g. "
                             "\"path='figure8'\"; '' = the task's defaults): another goal, "
                             "no retraining; writes eval-<options>.json"}))
    evaluate(args.run_dir, seed=args.seed, env_options=args.env_options)
    return 0


def _sweep(argv: list[str]) -> int:
    from mbjax.runner.sweep import load_spec, run_sweep, write_wandb_sweep

    args = parse_subcommand(
        argv, "sweep", "Grid sweep over config fields; the agent's traced floats are "
        "vmapped with the seeds (format: mbjax.runner.sweep).",
        (["spec"], {"help": "YAML or JSON sweep spec"}),
        (["--wandb"], {"action": "store_true",
                       "help": "only write a wandb sweep config (grid, program mbjax agent)"}),
        (["--workers"], {"type": int, "default": 1,
                         "help": "run this many of the shape-changing programs at once, in "
                         "worker processes that split the GPUs (default 1: in turn)"}))
    if args.wandb:
        write_wandb_sweep(load_spec(args.spec))
    else:
        run_sweep(load_spec(args.spec), workers=args.workers)
    return 0


def _agent(argv: list[str]) -> int:
    from mbjax.runner.sweep import run_agent

    if argv in (["-h"], ["--help"]):
        print("usage: mbjax agent --preset=P [--grid=a.b,c] [--a.b=VALUE ...]\n\n"
              "One wandb-sweep run: the dotted --field=value arguments (as wandb agent "
              "passes them, values parsed as YAML) are applied to the preset, then it "
              "trains and logs to wandb (WANDB_MODE decides online/offline).")
        return 0
    run_agent(argv)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mbjax`` script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv[0] == "--version":
        from importlib.metadata import version

        print(f"mbjax {version('mbjax')}")
        return 0
    command, rest = argv[0], argv[1:]
    try:
        if command == "train":
            return _train(rest)
        if command == "eval":
            return _eval(rest)
        if command == "sweep":
            return _sweep(rest)
        if command == "agent":
            return _agent(rest)
        if command == "presets":
            return _presets()
        if command == "envs":
            return _envs()
        if command == "diagnostics":
            from mbjax.jobs.diagnostics import DiagnosticsConfig, run_diagnostics

            run_diagnostics(tyro.cli(DiagnosticsConfig, args=rest, prog="mbjax diagnostics"))
            return 0
        if command == "rollout":
            from mbjax.demo import run_rollout_report

            cfg = tyro.cli(RolloutConfig, args=rest, prog="mbjax rollout")
            run_rollout_report(cfg)
            return 0
    except (ValueError, KeyError, TypeError, FileNotFoundError, FileExistsError,
            CheckpointError) as err:
        print(f"mbjax: error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    except (PermissionError, NotADirectoryError, IsADirectoryError) as err:
        print(f"mbjax: error: cannot write {err.filename}: {err.strerror} (choose another "
              "--out-dir)", file=sys.stderr)
        return 2
    print(f"mbjax: unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
