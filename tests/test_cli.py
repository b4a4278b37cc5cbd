"""The ``mbjax`` command line."""

import json

from mbjax.cli import main


def test_help_lists_subcommands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "rollout" in out and "envs" in out and "train" in out and "eval" in out
    assert main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_envs_lists_registered(capsys):
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    assert "pendulum" in out and "cartpole_swingup" in out


def test_rollout_writes_report(tmp_path):
    rc = main(["rollout", "--env", "pendulum", "--num-envs", "4", "--num-steps", "250",
               "--out-dir", str(tmp_path)])
    assert rc == 0
    run_dir = tmp_path / "rollout-pendulum-seed0"
    report = json.loads((run_dir / "report.json").read_text())
    assert (run_dir / "rewards.png").stat().st_size > 1000
    assert report["episodes_completed"] == 4  # 200-step episodes, 250 steps, 4 envs
    assert report["reward_fn_max_abs_error"] < 1e-5
    # A random policy on the pendulum scores far below the upright optimum (0).
    assert -1800 < report["episode_return_mean"] < -600


def test_rollout_bad_values_fail_with_field_name(capsys):
    assert main(["rollout", "--num-envs", "0"]) == 2
    assert "num_envs" in capsys.readouterr().err
    assert main(["rollout", "--env", "nope"]) == 2
    assert "unknown environment 'nope'" in capsys.readouterr().err
