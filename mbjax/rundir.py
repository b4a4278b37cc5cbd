"""Ownership of a run directory: one process writes a run at a time.

``RunDirLock(run_dir)`` takes an exclusive ``fcntl.flock`` on ``<run_dir>/run.lock`` and
keeps the file open while held (normally the whole process lifetime: use it as a context
manager around the run, or call ``acquire`` and let the process exit). The holder's pid,
host and start time are written into the file for the message a second process gets: a
second ``RunDirLock`` on the same directory, in this or another process, raises
``RunDirLocked`` naming the holder.

The kernel releases a flock when its holder dies, so a lock file left by a killed process
is found unlocked and is taken over (the message names the dead holder's pid). A clean
``release`` deletes the lock file while still holding the lock, so an existing but
unlocked file always means the previous holder was killed.

Several processes (``mbjax.distributed``): only process 0 (``is_primary()``) takes the
lock; on the other processes ``acquire`` does nothing (they write no run files but their
checkpoint shards, inside saves that process 0 coordinates). ``is_primary`` asks JAX for
the process index, so take the lock (and call ``check_fresh_run_dir``) after
``mbjax.distributed.initialize``. flock works on local file
systems and on NFSv4 (where Linux maps it onto NFS byte-range locks); on file systems
without working locks two runs are not kept apart.

``check_fresh_run_dir(run_dir, overwrite)`` refuses to start a new run over the files of
an old one unless ``overwrite`` (then it deletes them). Take the lock first, then check,
so that a second process cannot delete the files of a run that is in progress.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from mbjax.distributed import is_primary

LOCK_NAME = "run.lock"

# The files and directories that make a directory a run (``check_fresh_run_dir`` looks
# for the first group) and that ``overwrite`` deletes (all of them; nothing else).
RUN_MARKERS = ("config.json", "metrics.jsonl", "checkpoints")
RUN_OUTPUTS = ("batch.json", "summary.json", "learning_curve.png", "eval.json",
               "checkpoint_errors.log")

# Lock files held by this process (resolved paths), so that a check from inside the
# process that owns a run does not mistake its own lock for another's.
_HELD: set[str] = set()


class RunDirLocked(ValueError):
    """Another live process holds the run directory's lock."""


def lock_path(run_dir: str | os.PathLike) -> Path:
    """The lock file of ``run_dir``."""
    return Path(run_dir).absolute() / LOCK_NAME


def holder_info() -> dict:
    """What this process writes into a lock it holds: pid, host, start time, command."""
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)}


def read_holder(path: str | os.PathLike) -> dict:
    """The holder record of lock file ``path`` ({} when missing, empty or unreadable)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def describe_holder(record: dict) -> str:
    """``pid 123 on host h (started 2025-01-01T10:00:00+00:00)`` for a holder record."""
    if not record.get("pid"):
        return "an unknown process (its lock file names no holder)"
    return (f"pid {record['pid']} on host {record.get('host', '?')} "
            f"(started {record.get('started', '?')})")


def held_by_this_process(run_dir: str | os.PathLike) -> bool:
    """True while a ``RunDirLock`` of this process holds ``run_dir``."""
    return str(lock_path(run_dir)) in _HELD


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise
    return True


def _is_current(fd: int, path: Path) -> bool:
    """True if ``fd`` is still the file at ``path`` (not one a releaser has unlinked)."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _write_record(fd: int, record: dict) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    os.fsync(fd)


class RunDirLock:
    """An exclusive lock on a run directory, held while the object holds it.

    Args:
      run_dir: the run directory (created if missing).
      console: a ``rich`` console for the stale-lock message (stderr if None).
      wait_s: how long a held lock is retried before ``RunDirLocked`` is raised (covers
        a short check by ``mbjax.checkpoint.load_latest`` of another process).

    Attributes:
      stale: the holder record of a stale lock that ``acquire`` took over, else None.
      held: whether this object holds the lock.
    """

    def __init__(self, run_dir: str | os.PathLike, console=None, wait_s: float = 1.0):
        self.run_dir = Path(run_dir).absolute()
        self.path = lock_path(run_dir)
        self.console = console
        self.wait_s = wait_s
        self.stale: dict | None = None
        self.held = False
        self._fd: int | None = None

    def acquire(self) -> RunDirLock:
        """Takes the lock (a no-op on processes other than process 0).

        Returns:
          self.

        Raises:
          RunDirLocked: another live process (or another ``RunDirLock`` of this process)
            holds it; the message names the holder's pid and host and what to do.
        """
        if self.held or not is_primary():
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.wait_s
        while True:
            existed = self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if _try_flock(fd):
                if _is_current(fd, self.path):
                    break
                os.close(fd)  # locked a file its holder had just deleted: open the new one
                continue
            os.close(fd)
            if time.monotonic() >= deadline:
                raise RunDirLocked(locked_message(self.run_dir, read_holder(self.path)))
            time.sleep(0.05)
        previous = read_holder(self.path)
        if existed and previous:
            self.stale = previous
            _say(self.console, f"{self.run_dir}: taking over a stale lock of "
                               f"{describe_holder(previous)}: that process has exited "
                               "without releasing it (it was killed or crashed)")
        _write_record(fd, holder_info())
        self._fd = fd
        self.held = True
        _HELD.add(str(self.path))
        return self

    def release(self) -> None:
        """Deletes the lock file and releases the lock (a no-op when not held)."""
        if not self.held:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # while still locked: see the module docstring
        os.close(self._fd)
        self._fd = None
        self.held = False
        _HELD.discard(str(self.path))

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def locked_message(run_dir: Path, record: dict) -> str:
    """The ``RunDirLocked`` message for ``run_dir`` held by ``record``'s process."""
    pid = record.get("pid")
    stop = f" or stop it (kill {pid})" if pid else ""
    return (f"{run_dir} is in use by {describe_holder(record)}: another `mbjax train` is "
            f"writing this run. Wait for it to finish{stop}, or choose another --run-name. "
            f"If that process is gone and the lock stays, delete {run_dir / LOCK_NAME}.")


@contextlib.contextmanager
def owned_or_free(run_dir: str | os.PathLike) -> Iterator[bool]:
    """Whether this process may tidy ``run_dir`` (e.g. delete leftovers of killed saves).

    Yields True when this process holds the run's lock, when there is no lock file, or
    when the lock is free (it is then held, without writing a record, until the block
    ends); False when another live process holds it.
    """
    path = lock_path(run_dir)
    if held_by_this_process(run_dir) or not path.exists():
        yield True
        return
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        yield True
        return
    try:
        yield _try_flock(fd) or not _is_current(fd, path)
    finally:
        os.close(fd)


def existing_run_files(run_dir: str | os.PathLike) -> list[str]:
    """The names in ``RUN_MARKERS`` that ``run_dir`` holds (an empty checkpoints/ is none)."""
    run_dir = Path(run_dir)
    found = []
    for name in RUN_MARKERS:
        p = run_dir / name
        if p.is_file() or (p.is_dir() and any(p.iterdir())):
            found.append(name + ("/" if p.is_dir() else ""))
    return found


def check_fresh_run_dir(run_dir: str | os.PathLike, overwrite: bool = False,
                        console=None) -> list[str]:
    """Refuses to start a new run in a directory that holds one, unless ``overwrite``.

    With ``overwrite`` the files of the old run (``RUN_MARKERS`` and ``RUN_OUTPUTS``) are
    deleted, on process 0 only; other files are left alone.

    Returns:
      The names deleted (empty when the directory held no run).

    Raises:
      FileExistsError: ``run_dir`` holds a run and ``overwrite`` is False; the message
        names what it holds, ``--resume RUN_DIR`` and ``--overwrite``.
    """
    run_dir = Path(run_dir)
    found = existing_run_files(run_dir)
    if not found:
        return []
    if not overwrite:
        raise FileExistsError(
            f"{run_dir} already holds a run ({', '.join(found)}). Resume it with "
            f"`mbjax train --resume {run_dir}`, start it again from scratch with --overwrite "
            "(deletes its metrics and checkpoints), or choose another --run-name.")
    removed = []
    for name in RUN_MARKERS + RUN_OUTPUTS:
        p = run_dir / name
        if not is_primary() or not (p.is_file() or p.is_dir()):
            continue
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
        removed.append(name)
    if removed:
        _say(console, f"--overwrite: deleted {', '.join(removed)} of the old run in {run_dir}")
    return removed


def _say(console, text: str) -> None:
    if console is None:
        print(f"mbjax: {text}", file=sys.stderr)
    else:
        from rich.markup import escape

        console.print(escape(text), soft_wrap=True, highlight=False)
