"""The ``mbjax`` command line.

  mbjax train [PRESET] [--any.config.field VALUE ...]   train (default preset: pddm-cpu)
  mbjax train --resume RUN_DIR [--devices 0 ...]        continue a run (runtime flags allowed)
  mbjax eval RUN_DIR                                    MPC episodes with a run's model
  mbjax sweep SPEC.yaml                                 grid sweep (floats vmapped), table + plot
  mbjax sweep SPEC.yaml --wandb                         write a wandb sweep (many machines)
  mbjax agent --preset=P --field=value ...              one wandb-sweep run (wandb agent)
  mbjax presets | mbjax envs                            list presets / environments
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
    from mbjax.training import presets

    for name, cfg in presets.PRESETS.items():
        default = "  (default)" if name == presets.DEFAULT_PRESET else ""
        kind = getattr(cfg, "description", cfg.planner.kind)
        print(f"{name:24s} {cfg.env.name:18s} {kind:16s} "
              f"{cfg.num_iterations:4d} iterations{default}")
    return 0


def _train(argv: list[str]) -> int:
    from mbjax.training import presets
    from mbjax.training.run import run

    resume = None
    if "--resume" in argv:
        i = argv.index("--resume")
        if i + 1 >= len(argv):
            raise ValueError("--resume needs a run directory")
        resume = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
        if not argv:
            run(None, resume=resume)
            return 0
        if argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
            # Flags on top of the run's own config (e.g. --devices 0 or the
            # --distributed.* of a multi-host resume); changing anything else is refused.
            from mbjax.training.run import load_run_config

            stored = load_run_config(resume)
            config = tyro.cli(type(stored), default=stored, args=argv,
                              prog="mbjax train --resume RUN_DIR")
            run(config, resume=resume)
            return 0
    if not argv or argv[0] not in presets.PRESETS and argv[0] not in ("-h", "--help"):
        if argv and not argv[0].startswith("-"):
            raise KeyError(f"unknown preset {argv[0]!r}; valid presets: "
                           f"{', '.join(presets.PRESETS)}")
        argv = [presets.DEFAULT_PRESET] + argv
    config = tyro.extras.overridable_config_cli(
        {name: (f"{cfg.env.name} / {getattr(cfg, 'description', cfg.planner.kind)}", cfg)
         for name, cfg in presets.PRESETS.items()},
        args=argv, prog="mbjax train",
        description="Model-based RL: prefill, then fit model -> MPC episodes -> aggregate.")
    config = dataclasses.replace(config)  # re-run validation of the top level
    import mbjax.envs as envs

    envs.make(config.env.name)  # unknown env names fail here, before any compilation
    run(config, resume=resume)
    return 0


def _eval(argv: list[str]) -> int:
    from mbjax.training.run import evaluate

    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: mbjax eval RUN_DIR", file=sys.stderr)
        return 2
    evaluate(argv[0])
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mbjax`` script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    try:
        if command == "train":
            return _train(rest)
        if command == "eval":
            return _eval(rest)
        if command == "sweep":
            wandb = "--wandb" in rest
            rest = [a for a in rest if a != "--wandb"]
            if len(rest) != 1 or rest[0].startswith("-"):
                print("usage: mbjax sweep SPEC.yaml [--wandb]  (see mbjax.training.sweep "
                      "for the format)", file=sys.stderr)
                return 2
            from mbjax.training.sweep import load_spec, run_sweep, write_wandb_sweep

            (write_wandb_sweep if wandb else run_sweep)(load_spec(rest[0]))
            return 0
        if command == "agent":
            from mbjax.training.sweep import run_agent

            run_agent(rest)
            return 0
        if command == "presets":
            return _presets()
        if command == "envs":
            return _envs()
        if command == "diagnostics":
            from mbjax.models.diagnostics import DiagnosticsConfig, run_diagnostics

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
    print(f"mbjax: unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
