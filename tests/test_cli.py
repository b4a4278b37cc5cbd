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


def test_every_subcommand_help_exits_0_and_lists_its_options(capsys):
    import pytest

    for argv, option in ((["eval", "--help"], "--seed"), (["sweep", "--help"], "--workers"),
                         (["train", "--help"], "--planner.horizon")):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0, argv
        assert option in capsys.readouterr().out, argv
    assert main(["agent", "--help"]) == 0
    assert "--preset=P" in capsys.readouterr().out
    assert main(["--version"]) == 0
    from importlib.metadata import version

    assert capsys.readouterr().out.strip() == f"mbjax {version('mbjax')}"


def small_run(tmp_path, name="r"):
    return ["train", "pddm-cpu", "--num-iterations", "1", "--num-seeds", "1",
            "--out-dir", str(tmp_path), "--run-name", name]


def test_runs_refuse_an_occupied_run_directory(tmp_path, capsys):
    """An old run is not overwritten without --overwrite; a directory whose lock another
    process holds is refused; eval and resume of a run without checkpoints say so."""
    import subprocess
    import sys

    old = tmp_path / "r"
    old.mkdir()
    (old / "config.json").write_text(json.dumps({"algorithm": "mpc"}))
    (old / "metrics.jsonl").write_text('{"iteration": 1, "seed": 0}\n')
    assert main(small_run(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--overwrite" in err and "--resume" in err
    assert main(["eval", str(old)]) == 2
    assert "has no checkpoint to load" in capsys.readouterr().err
    assert main(["train", "--resume", str(old)]) == 2  # 1 metric row, no checkpoint
    assert "would discard them" in capsys.readouterr().err
    # Another process holds the run directory's lock.
    busy = tmp_path / "busy"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from mbjax.rundir import RunDirLock; "
        f"lock = RunDirLock({str(busy)!r}).acquire(); print('held', flush=True); "
        "time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(small_run(tmp_path, "busy")) == 2
        assert f"in use by pid {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()


def test_an_unwritable_out_dir_is_one_error_line(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(small_run(blocker / "runs")) == 2
    err = capsys.readouterr().err
    assert err.startswith("mbjax: error: cannot write") and "Traceback" not in err
