"""Run directories are owned: one lock holder at a time (a dead holder's lock is taken over),
and a new run does not start over an old one without --overwrite."""

import fcntl
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys

import pytest
from rich.console import Console

from mbjax.rundir import (
    RunDirLock,
    RunDirLocked,
    check_fresh_run_dir,
    held_by_this_process,
    owned_or_free,
)

HOLD = """
import sys, time
from mbjax.rundir import RunDirLock
RunDirLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(120)
"""


def test_second_lock_in_the_same_process_is_refused_then_released(tmp_path):
    run_dir = tmp_path / "run"
    with RunDirLock(run_dir) as lock:
        assert lock.held and held_by_this_process(run_dir) and lock.stale is None
        record = json.loads((run_dir / "run.lock").read_text())
        assert (record["pid"], record["host"]) == (os.getpid(), socket.gethostname())
        with pytest.raises(RunDirLocked, match=re.escape(
                f"{run_dir} is in use by pid {os.getpid()} on host {socket.gethostname()} "
                f"(started {record['started']}): another `mbjax train` is writing this run. "
                f"Wait for it to finish or stop it (kill {os.getpid()}), or choose another "
                "--run-name.")):
            RunDirLock(run_dir, wait_s=0).acquire()
    assert not (run_dir / "run.lock").exists() and not held_by_this_process(run_dir)
    console_out = io.StringIO()
    with RunDirLock(run_dir, console=Console(file=console_out)) as again:
        assert again.held and again.stale is None
    assert console_out.getvalue() == ""  # a cleanly released lock is not "stale"


def test_lock_of_another_process_is_refused_and_taken_over_once_it_is_killed(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(RunDirLocked, match=f"in use by pid {holder.pid} on host "
                                               f"{re.escape(socket.gethostname())} "):
            RunDirLock(run_dir, wait_s=0).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (run_dir / "run.lock").exists()  # left behind, but no longer locked
    out = io.StringIO()
    with RunDirLock(run_dir, console=Console(file=out, width=80)) as lock:
        assert lock.stale["pid"] == holder.pid
        assert json.loads((run_dir / "run.lock").read_text())["pid"] == os.getpid()
    assert out.getvalue().splitlines() == [
        f"{run_dir}: taking over a stale lock of pid {holder.pid} on host "
        f"{socket.gethostname()} (started {lock.stale['started']}): that process has exited "
        "without releasing it (it was killed or crashed)"]


def test_owned_or_free_tells_whether_another_process_holds_the_run(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with owned_or_free(run_dir) as free:
        assert free  # no lock file
    with open(run_dir / "run.lock", "w") as other:  # flock of another open file = another holder
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with owned_or_free(run_dir) as free:
            assert not free
    with RunDirLock(run_dir), owned_or_free(run_dir) as free:
        assert free  # this process's own lock


def test_check_fresh_run_dir_refuses_an_old_run_unless_overwrite(tmp_path):
    run_dir = tmp_path / "run"
    assert check_fresh_run_dir(run_dir) == []  # does not exist
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "notes.txt").write_text("mine")
    assert check_fresh_run_dir(run_dir) == []  # an empty checkpoints/ is not a run
    (run_dir / "metrics.jsonl").write_text("{}\n")
    (run_dir / "checkpoints" / "iter_000002").mkdir()
    (run_dir / "summary.json").write_text("{}")
    with pytest.raises(FileExistsError, match=re.escape(
            f"{run_dir} already holds a run (metrics.jsonl, checkpoints/). Resume it with "
            f"`mbjax train --resume {run_dir}`, start it again from scratch with --overwrite "
            "(deletes its metrics and checkpoints), or choose another --run-name.")):
        check_fresh_run_dir(run_dir, overwrite=False)
    out = io.StringIO()
    with RunDirLock(run_dir):
        removed = check_fresh_run_dir(run_dir, overwrite=True,
                                      console=Console(file=out, width=80))
        assert removed == ["metrics.jsonl", "checkpoints", "summary.json"]
        assert sorted(p.name for p in run_dir.iterdir()) == ["notes.txt", "run.lock"]
    assert out.getvalue().splitlines() == [
        f"--overwrite: deleted metrics.jsonl, checkpoints, summary.json of the old run in "
        f"{run_dir}"]
    assert check_fresh_run_dir(run_dir) == []
