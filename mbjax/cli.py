"""The ``mbjax`` command line: ``mbjax envs``, ``mbjax rollout [--env ...]``.

Every config field is a flag (tyro, from the frozen dataclasses); ``--help`` lists them
with defaults and docs.
"""

from __future__ import annotations

import dataclasses
import sys

import tyro

from mbjax.demo import RolloutConfig


@dataclasses.dataclass(frozen=True)
class EnvsCommand:
    """List the registered environments."""


def _envs() -> None:
    import mbjax.envs as envs

    for name, desc in envs.describe().items():
        print(f"{name:20s} {desc}")
    print(f"{'playground/<Name>':20s} any MuJoCo Playground env (extra 'playground'; "
          "learned reward)")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mbjax`` script."""
    commands = {
        "rollout": RolloutConfig,
        "envs": EnvsCommand,
    }
    descriptions = {
        "rollout": "Random-policy rollout report of an environment (writes JSON + PNG).",
        "envs": "List the registered environments.",
    }
    cfg = tyro.extras.subcommand_cli_from_dict(
        commands,
        args=sys.argv[1:] if argv is None else argv,
        description="mbjax: model-based RL in JAX. " + " ".join(
            f"[{k}] {v}" for k, v in descriptions.items()),
    )
    if isinstance(cfg, EnvsCommand):
        _envs()
        return 0
    try:
        if isinstance(cfg, RolloutConfig):
            from mbjax.demo import run_rollout_report

            run_rollout_report(cfg)
    except (ValueError, KeyError, TypeError) as err:
        print(f"mbjax: error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
