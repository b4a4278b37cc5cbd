"""Checkpoints of any pytree with orbax, with a schema check on load.

``save(path, tree, metadata)`` writes the pytree and a JSON record (metadata plus the
schema: every leaf's path, shape and dtype). Orbax writes into a temporary directory and
renames it when complete, so a process killed during a save never leaves a half-written
checkpoint under ``path``; overwriting swaps directories the same way. Before the rename,
``integrity.json`` records the size and sha256 of every file of the checkpoint; ``load``
checks them first, so a damaged file is reported by name instead of surfacing later as an
orbax/tensorstore error (checkpoints of older mbjax versions, without the file, load
unverified with an ``UnverifiedCheckpointWarning``). Leftovers of a killed save
(``.<name>.tmp-*``, ``.<name>.old-*``) are removed by the next save of the same name.

``load(path, template, expected_metadata)`` refuses, with an error that names what differs,
a checkpoint whose schema does not match ``template`` (a model of a different shape) or
whose metadata differ from ``expected_metadata`` (e.g. a different config), and reports a
missing, incomplete or corrupt checkpoint as such.

The checkpoints of a training run (``<run_dir>/checkpoints/iter_<n>``): ``save_checkpoint``
keeps the newest few, ``load_latest`` restores the newest usable one, falling back to older
ones when the newest is damaged, with one warning line each; what orbax logs while failing
goes to ``<run_dir>/checkpoint_errors.log``, not to the terminal. Both remove the leftovers
of every killed save in ``checkpoints/`` (``load_latest`` only when no other live process
holds the run's ``mbjax.rundir.RunDirLock``, so that an evaluation beside a running training
does not delete its save in progress). A config or structure mismatch
(``CheckpointMismatch``) is raised at once: an older checkpoint would not match either.

Zero-size leaves (e.g. MJX's ``Data.act`` of a model without actuator activations, shape
[..., 0]) hold no data and orbax refuses to write them: they are stored as empty nodes and
restored as zeros of the template's shape and dtype.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import gc
import hashlib
import io
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import traceback
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from mbjax.distributed import is_primary, sync
from mbjax.rundir import owned_or_free

SCHEMA_VERSION = 1
MANIFEST = "integrity.json"
MANIFEST_VERSION = 1
KEEP_CHECKPOINTS = 2
ERROR_LOG = "checkpoint_errors.log"
# In-progress and replaced directories of ``save``: ``.<name>.tmp-<id>`` (orbax first
# writes ``.<name>.tmp-<id>.orbax-checkpoint-tmp-<n>``) and ``.<name>.old-<id>``.
LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-[^.]+(\.orbax-checkpoint-tmp.*)?$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupt or does not match what loads it.

    Attributes:
      reason: a few words on what is wrong (for one-line summaries); the message by default.
    """

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


class CheckpointMismatch(CheckpointError):
    """A readable checkpoint of another configuration or structure than what loads it."""


class UnverifiedCheckpointWarning(UserWarning):
    """A checkpoint without ``integrity.json`` (older mbjax) was loaded unverified."""


def schema(tree: Any) -> dict[str, dict]:
    """{leaf path: {"shape": [...], "dtype": str}} of a pytree of arrays."""
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        arr = np.asarray(leaf) if not hasattr(leaf, "shape") else leaf
        out[jax.tree_util.keystr(path)] = {"shape": list(arr.shape), "dtype": str(arr.dtype)}
    return out


def _is_empty(leaf) -> bool:
    return leaf is not None and int(np.prod(np.shape(leaf))) == 0


def _drop_empty(tree: Any) -> Any:
    """``tree`` with its zero-size leaves replaced by ``None`` (an empty node)."""
    return jax.tree_util.tree_map(lambda x: None if _is_empty(x) else x, tree)


def _refill_empty(restored: Any, template: Any) -> Any:
    """Inverse of ``_drop_empty``: zeros (shape/dtype of ``template``) where ``restored``
    holds the ``None`` of a zero-size leaf."""
    is_none = lambda x: x is None  # noqa: E731
    t_leaves, treedef = jax.tree_util.tree_flatten(template, is_leaf=is_none)
    r_leaves = jax.tree_util.tree_leaves(restored, is_leaf=is_none)
    return jax.tree_util.tree_unflatten(treedef, [
        jnp.zeros(t.shape, t.dtype) if _is_empty(t) else r
        for t, r in zip(t_leaves, r_leaves, strict=True)])


def _checkpointer() -> ocp.Checkpointer:
    return ocp.Checkpointer(ocp.CompositeCheckpointHandler())


def file_digests(directory: str | os.PathLike) -> dict[str, dict]:
    """{relative path: {"size": bytes, "sha256": hex}} of every file under ``directory``
    except the manifest itself."""
    directory = Path(directory)
    out = {}
    for f in sorted(directory.rglob("*")):
        rel = f.relative_to(directory).as_posix()
        if f.is_file() and rel != MANIFEST:
            out[rel] = {"size": f.stat().st_size, "sha256": sha256_of(f)}
    return out


def sha256_of(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: str | os.PathLike) -> dict:
    """Writes ``integrity.json`` (the ``file_digests`` of ``directory``) atomically."""
    directory = Path(directory)
    manifest = {"version": MANIFEST_VERSION, "files": file_digests(directory)}
    tmp = directory / f".{MANIFEST}.tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / MANIFEST)
    return manifest


def integrity_problems(directory: str | os.PathLike, files: dict[str, dict]) -> list[str]:
    """What differs between the files under ``directory`` and the manifest ``files``:
    one ``"<relative path> <what>"`` per missing, changed or unexpected file."""
    directory = Path(directory)
    present = {f.relative_to(directory).as_posix(): f for f in sorted(directory.rglob("*"))
               if f.is_file() and f.relative_to(directory).as_posix() != MANIFEST}
    problems = []
    for rel, entry in sorted(files.items()):
        f = present.get(rel)
        if f is None:
            problems.append(f"{rel} is missing")
        elif f.stat().st_size != entry["size"]:
            problems.append(f"{rel} has changed size since it was saved "
                            f"({entry['size']} -> {f.stat().st_size} bytes)")
        elif sha256_of(f) != entry["sha256"]:
            problems.append(f"{rel} has changed since it was saved (sha256 mismatch)")
    problems += [f"{rel} was not part of the saved checkpoint"
                 for rel in sorted(set(present) - set(files))]
    return problems


def verify_integrity(path: str | os.PathLike) -> bool:
    """Checks every file of checkpoint ``path`` against its ``integrity.json``.

    Returns:
      True if verified; False if the checkpoint has no manifest (written by an older
      mbjax), which is not an error.

    Raises:
      CheckpointError: the manifest is unreadable, or a file is missing, changed or not
        part of the saved checkpoint (the message names each such file).
    """
    path = Path(path).absolute()
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        return False
    try:
        files = json.loads(manifest_path.read_text())["files"]
        problems = integrity_problems(path, files)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: its {MANIFEST} cannot be read "
            f"({type(err).__name__}: {err})", reason=f"{MANIFEST} unreadable") from err
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise CheckpointError(
            f"checkpoint {path} is corrupt: " + "; ".join(problems[:5]) + more
            + ". Its files were damaged after it was written (disk, copy or manual edit).",
            reason=problems[0] + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""))
    return True


def remove_leftovers(directory: str | os.PathLike, name: str | None = None,
                     console=None) -> list[str]:
    """Removes what killed saves left in ``directory`` (of checkpoint ``name``, or of all).

    A ``.<name>.tmp-*`` directory (a save that did not finish) is deleted. A
    ``.<name>.old-*`` directory (the previous version, moved aside while a save replaced
    it) is renamed back to ``<name>`` if the save was killed before the new version took
    its place, and deleted otherwise. Each action is reported in one line.

    Returns:
      The names of the leftovers acted on.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    leftovers = [(p, m) for p in sorted(directory.iterdir())
                 if (m := LEFTOVER.match(p.name)) and p.is_dir()
                 and (name is None or m["name"] == name)]
    done = []
    for p, m in sorted(leftovers, key=lambda pm: pm[1]["kind"] == "tmp"):  # old ones first
        target = directory / m["name"]
        if m["kind"] == "old" and not target.exists():
            os.replace(p, target)
            _say(console, f"restored checkpoint {target} from {p.name}: a save was killed "
                          "while replacing it")
        else:
            shutil.rmtree(p, ignore_errors=True)
            what = "an interrupted save" if m["kind"] == "tmp" else "a replaced checkpoint"
            _say(console, f"removed {p.name} from {directory}: the leftover of {what}")
        done.append(p.name)
    return done


def save(path: str | os.PathLike, tree: Any, metadata: dict | None = None,
         overwrite: bool = True, console=None) -> Path:
    """Saves ``tree`` (and JSON-serialisable ``metadata``) to directory ``path`` atomically,
    with an ``integrity.json`` of its files; removes leftovers of killed saves of ``path``
    (reported on ``console``, or stderr)."""
    path = Path(path).absolute()
    if path.exists() and not overwrite:
        raise CheckpointError(f"checkpoint {path} exists; pass overwrite=True to replace it")
    record = {"version": SCHEMA_VERSION, "metadata": metadata or {}, "schema": schema(tree)}
    # Several processes save together (each writes its shards, orbax the metadata once)
    # into one temporary directory that process 0 then renames.
    multi = jax.process_count() > 1
    primary = is_primary()
    tmp = path.with_name(f".{path.name}.tmp-" + ("multi" if multi else uuid.uuid4().hex[:8]))
    if primary:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(path.parent, path.name, console)
    sync("mbjax-checkpoint-start")
    _checkpointer().save(tmp, ocp.args.Composite(state=ocp.args.StandardSave(_drop_empty(tree)),
                                                 record=ocp.args.JsonSave(record)))
    sync("mbjax-checkpoint-written")
    if primary:
        write_manifest(tmp)
        if path.exists():  # swap: the old checkpoint stays intact until the new one is done
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    sync("mbjax-checkpoint-renamed")
    return path


def _require_complete(path: Path) -> None:
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint at {path}", reason="missing")
    if not (path / "record").exists() or not (path / "state").exists():
        raise CheckpointError(
            f"{path} is not a complete mbjax checkpoint (missing 'record' or 'state'); it may "
            "have been interrupted while saving or written by another program",
            reason="incomplete (no 'record' or 'state')")


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata and schema record stored with a checkpoint (not verified: ``load``
    and ``verify_integrity`` check the files)."""
    path = Path(path).absolute()
    _require_complete(path)
    try:
        return _checkpointer().restore(
            path, ocp.args.Composite(record=ocp.args.JsonRestore()))["record"]
    except Exception as err:  # orbax raises many types for unreadable files
        raise CheckpointError(f"checkpoint {path} is corrupt: its record cannot be read "
                              f"({type(err).__name__}: {err})",
                              reason=f"its record cannot be read ({type(err).__name__})") from err


def _diff_schema(stored: dict, expected: dict) -> list[str]:
    lines = []
    for key in sorted(set(stored) | set(expected)):
        if key not in expected:
            lines.append(f"  {key}: in the checkpoint, not in what loads it")
        elif key not in stored:
            lines.append(f"  {key}: expected {expected[key]['shape']} but not in the checkpoint")
        elif stored[key] != expected[key]:
            s, e = stored[key], expected[key]
            lines.append(f"  {key}: checkpoint {tuple(s['shape'])} {s['dtype']}, "
                         f"expected {tuple(e['shape'])} {e['dtype']}")
    return lines


def _diff_metadata(stored: dict, expected: dict, prefix: str = "") -> list[str]:
    lines = []
    for key in sorted(set(stored) | set(expected)):
        s, e = stored.get(key, "<missing>"), expected.get(key, "<missing>")
        if isinstance(s, dict) and isinstance(e, dict):
            lines += _diff_metadata(s, e, f"{prefix}{key}.")
        elif s != e:
            lines.append(f"  {prefix}{key}: checkpoint {s!r}, expected {e!r}")
    return lines


def load(path: str | os.PathLike, template: Any, expected_metadata: dict | None = None,
         check_integrity: bool = True) -> Any:
    """Restores the pytree saved at ``path`` into the structure of ``template``.

    Args:
      path: the checkpoint directory.
      template: a pytree of arrays or ``jax.ShapeDtypeStruct`` (with shardings to restore
        onto devices) of the structure saved.
      expected_metadata: if given, the stored metadata must equal it.
      check_integrity: verify the files against ``integrity.json`` first (a checkpoint
        without one, from an older mbjax, loads with an ``UnverifiedCheckpointWarning``).

    Raises:
      CheckpointError: missing/incomplete/corrupt checkpoint (a damaged file is named).
      CheckpointMismatch: a schema that differs from ``template`` (each differing leaf is
        named with both shapes), or metadata that differ from ``expected_metadata`` (each
        differing field is named).
    """
    path = Path(path).absolute()
    _require_complete(path)
    if check_integrity and not verify_integrity(path):
        warnings.warn(unverified_note(path), UnverifiedCheckpointWarning, stacklevel=2)
    record = read_metadata(path)
    if expected_metadata is not None:
        diff = _diff_metadata(json.loads(json.dumps(record.get("metadata", {}))),
                              json.loads(json.dumps(expected_metadata)))
        if diff:
            raise CheckpointMismatch(
                f"checkpoint {path} was written with a different configuration:\n"
                + "\n".join(diff) + "\nLoad it with the configuration it was written with, "
                "or start a new run.")
    diff = _diff_schema(record.get("schema", {}), schema(template))
    if diff:
        raise CheckpointMismatch(
            f"checkpoint {path} does not match the structure it is loaded into:\n"
            + "\n".join(diff) + "\nIt was written by a model/state of another shape.")
    try:
        restored = _checkpointer().restore(
            path, ocp.args.Composite(state=ocp.args.StandardRestore(_drop_empty(template)))
        )["state"]
    except Exception as err:
        raise CheckpointError(f"checkpoint {path} is corrupt: its arrays cannot be read "
                              f"({type(err).__name__}: {err})",
                              reason=f"its arrays cannot be read ({type(err).__name__})") from err
    return _refill_empty(restored, template)


def unverified_note(path: str | os.PathLike) -> str:
    """The note for a checkpoint without ``integrity.json``."""
    return (f"checkpoint {path} has no {MANIFEST} (written by an older mbjax): loading it "
            "without checking its files")


# --- the checkpoints of a training run -------------------------------------------------


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Checkpoint directories of a run (``<run_dir>/checkpoints/iter_*``), oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("iter_"))


def save_checkpoint(root: str | os.PathLike, iteration: int, state: Any, metadata: dict,
                    keep: int = KEEP_CHECKPOINTS, console=None) -> Path:
    """Writes ``<root>/iter_<iteration>`` atomically and keeps the newest ``keep``.

    ``root`` is a run's ``checkpoints`` directory; leftovers of killed saves in it are
    removed first (reported on ``console``, or stderr). Every process calls it.
    """
    root = Path(root)
    if is_primary():
        remove_leftovers(root, console=console)
    path = save(root / f"iter_{iteration:06d}", state, dict(metadata, iteration=iteration),
                console=console)
    if is_primary():
        for old in list_checkpoints(root.parent)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    sync("mbjax-checkpoint-pruned")
    return path


class BackgroundCheckpointer:
    """``save_checkpoint`` on a background thread, one write at a time.

    ``save(...)`` copies the state to host memory (numpy, so that buffers the next
    iteration donates or overwrites cannot change what is written), then returns while a
    worker thread writes it; the write is as atomic as a foreground one (a process killed
    meanwhile leaves the previous checkpoints intact). The next ``save`` and ``wait``
    first wait for the write in flight and re-raise its error, if any; ``close`` waits
    and stops the thread. With ``enabled=False``, or when several processes save
    together (their saves synchronise them), ``save`` writes in the foreground.

    Use it as a context manager: leaving the block waits for the last write.
    """

    def __init__(self, enabled: bool = True):
        from concurrent.futures import ThreadPoolExecutor

        self.background = bool(enabled) and jax.process_count() == 1
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="mbjax-checkpoint") \
            if self.background else None
        self._pending = None

    def save(self, root: str | os.PathLike, iteration: int, state: Any, metadata: dict,
             keep: int = KEEP_CHECKPOINTS, console=None) -> None:
        self.wait()
        if not self.background:
            save_checkpoint(root, iteration, state, metadata, keep=keep, console=console)
            return
        host = jax.tree_util.tree_map(lambda x: np.array(x, copy=True), state)
        self._pending = self._pool.submit(save_checkpoint, root, iteration, host, metadata,
                                          keep=keep, console=console)

    def wait(self) -> None:
        """Blocks until the write in flight (if any) is done; re-raises its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)

    def __enter__(self) -> BackgroundCheckpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def error_log_path(run_dir: str | os.PathLike) -> Path:
    """Where ``load_latest`` writes the details of failed attempts (one file per process)."""
    suffix = "" if is_primary() else f".process{jax.process_index()}"
    return Path(run_dir) / ERROR_LOG.replace(".log", f"{suffix}.log")


class Attempt(NamedTuple):
    """The outcome of loading one checkpoint: ``state`` or a short ``failure``."""

    state: Any
    failure: str | None
    verified: bool


def load_latest(run_dir: str | os.PathLike, template: Any, metadata: dict, console=None) -> Any:
    """Loads the newest usable checkpoint of a run, trying older ones when it is damaged.

    The checkpoints are tried newest first; each one that cannot be used is reported in
    one warning line on ``console`` (stderr if None) and the next older one is tried.
    Whatever orbax, absl and asyncio print while an attempt fails goes, with the
    traceback, to ``error_log_path(run_dir)`` instead of the terminal. Leftovers of killed
    saves are removed first, unless another live process holds the run's lock.

    Args:
      run_dir: the run directory (with ``checkpoints/iter_*``).
      template: the structure to restore into (see ``load``).
      metadata: what the checkpoints' metadata must equal, besides ``iteration``.
      console: a ``rich`` console for the warnings.

    Raises:
      CheckpointMismatch: a checkpoint of another configuration or structure, at once
        (an older checkpoint of the same run would not match either).
      CheckpointError: no checkpoint, or none usable; the message is one paragraph naming
        each checkpoint tried and why it failed, the log file and what to do.
    """
    run_dir = Path(run_dir)
    if is_primary():
        with owned_or_free(run_dir) as may_tidy:
            if may_tidy:
                remove_leftovers(run_dir / "checkpoints", console=console)
    sync("mbjax-checkpoint-leftovers")
    candidates = list(reversed(list_checkpoints(run_dir)))
    if not candidates:
        raise CheckpointError(f"{run_dir} has no checkpoint to load (none was saved yet, or "
                              "they were deleted)", reason="none")
    log_path = error_log_path(run_dir)
    failures = []
    for i, path in enumerate(candidates):
        attempt = attempt_load(path, template, metadata, log_path)
        if attempt.failure is None:
            if not attempt.verified:
                _say(console, "note: " + unverified_note(path))
            return attempt.state
        failures.append(f"{path.name} ({attempt.failure})")
        if i + 1 < len(candidates):
            _say(console, f"skipping checkpoint {path}: {attempt.failure}; trying "
                          f"{candidates[i + 1].name} (details in {log_path})", warning=True)
    raise CheckpointError(
        f"no usable checkpoint in {run_dir}: tried {', '.join(failures)}. The full errors "
        f"are in {log_path}. These checkpoint files were damaged after they were written "
        "(disk, copy or manual edit), so the run cannot resume from them: put back a copy "
        f"of {run_dir / 'checkpoints'} from a backup and resume again, or start the run "
        "from scratch (`mbjax train ... --overwrite`, or another --run-name).",
        reason="no usable checkpoint")


def attempt_load(path: Path, template: Any, metadata: dict, log_path: Path) -> Attempt:
    """Verifies and loads one run checkpoint with the noise of a failure captured.

    A failure is reported as ``Attempt.failure`` (a few words) and appended, with what
    was printed and logged meanwhile and the traceback, to ``log_path``.

    Raises:
      CheckpointMismatch: from ``load`` (not a failure of this checkpoint's files).
    """
    with tempfile.TemporaryFile() as buf:
        with captured_output(buf):
            try:
                verified = verify_integrity(path)
                record = read_metadata(path)
                expected = dict(metadata, iteration=record.get("metadata", {}).get("iteration"))
                return Attempt(load(path, template, expected, check_integrity=False), None,
                               verified)
            except CheckpointMismatch:
                raise
            except CheckpointError as err:
                failure, details = short_reason(err), traceback.format_exc()
            # The exception (and with it orbax's pending tensorstore futures) is freed now:
            # collect it while the output is still captured, so that their late callbacks
            # ("RuntimeError: Event loop is closed") land in the log, not on the terminal.
            gc.collect()
        buf.seek(0)
        noise = buf.read().decode(errors="replace")
    append_log(log_path, f"loading {path} failed: {failure}", noise + details)
    return Attempt(None, failure, False)


def short_reason(err: BaseException, limit: int = 160) -> str:
    """A few words on why a checkpoint failed: ``err.reason`` (or its first line), cut."""
    text = getattr(err, "reason", None) or (str(err).splitlines() or [type(err).__name__])[0]
    return text if len(text) <= limit else text[:limit - 3] + "..."


def append_log(log_path: Path, title: str, text: str) -> None:
    """Appends a titled, timestamped section to ``log_path``."""
    stamp = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as f:
        f.write(f"=== {stamp} {title}\n{text.rstrip()}\n\n")


@contextlib.contextmanager
def captured_output(buf) -> Iterator[None]:
    """Sends everything written to stderr (fd 2 and ``sys.stderr``), Python logging
    (the root and ``absl`` loggers, which orbax uses), warnings and unraisable exceptions
    (tensorstore's callbacks onto a closed asyncio loop) into the binary file ``buf`` for
    the duration."""
    sys.stderr.flush()
    saved_fd = os.dup(2)
    saved_stderr, saved_hook = sys.stderr, sys.unraisablehook
    stream = io.TextIOWrapper(open(os.dup(buf.fileno()), "wb", buffering=0),
                              write_through=True, errors="replace")
    handler = logging.StreamHandler(stream)
    loggers = [logging.getLogger(), logging.getLogger("absl")]
    saved = [(lg, lg.handlers[:], lg.propagate) for lg in loggers]
    try:
        os.dup2(buf.fileno(), 2)
        sys.stderr = stream
        sys.unraisablehook = functools.partial(write_unraisable, stream)
        for lg in loggers:
            lg.handlers = [handler]
        loggers[1].propagate = False
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            yield
    finally:
        for lg, handlers, propagate in saved:
            lg.handlers, lg.propagate = handlers, propagate
        sys.stderr, sys.unraisablehook = saved_stderr, saved_hook
        stream.flush()
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        stream.close()


def write_unraisable(stream, unraisable) -> None:
    """An ``sys.unraisablehook`` that writes the exception to ``stream`` and never raises.

    It may run late, on another thread (tensorstore's callbacks), after ``stream`` is
    closed, and ``repr`` of the object may itself fail; a hook that raised would make
    Python print its own traceback on the real stderr, which is what the capture avoids."""
    try:
        try:
            where = repr(unraisable.object)
        except Exception:  # noqa: BLE001 - a broken repr must not escape the hook
            where = f"<{type(unraisable.object).__name__} object>"
        text = f"{unraisable.err_msg or 'Exception ignored in'}: {where}\n" + "".join(
            traceback.format_exception(unraisable.exc_type, unraisable.exc_value,
                                       unraisable.exc_traceback))
        if not stream.closed:
            stream.write(text)
    except Exception:  # noqa: BLE001 - e.g. the stream closed between check and write
        pass


def _say(console, text: str, warning: bool = False) -> None:
    """Prints one line (``warning:`` first if ``warning``) on ``console`` without wrapping,
    or on stderr without one."""
    if console is None:
        print("mbjax: " + ("warning: " if warning else "") + text, file=sys.stderr)
        return
    from rich.markup import escape

    console.print(("[yellow]warning:[/] " if warning else "") + escape(text), soft_wrap=True,
                  highlight=False)
