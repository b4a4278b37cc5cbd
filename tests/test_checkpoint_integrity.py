"""Checkpoint integrity: checksums written with each checkpoint and checked on load; a
run's fallback to its previous good checkpoint with one warning line; one clear error
(details in a log file) when none is usable; leftovers of killed saves removed."""

import fcntl
import gc
import io
import json
import os
import re
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rich.console import Console

from mbjax import checkpoint
from mbjax.checkpoint import CheckpointError, CheckpointMismatch, UnverifiedCheckpointWarning

META = {"config": {"lr": 0.1}}


def _tree(value: float = 0.0):
    return {"w": jnp.arange(6.0).reshape(2, 3) + value, "n": jnp.int32(3)}


def _template():
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _tree())


def _console():
    buf = io.StringIO()
    return Console(file=buf, width=80), buf


def _data_file(ckpt):
    """The largest array-data file of a checkpoint (orbax/OCDBT's ``state/.../d/...``)."""
    files = [f for f in (ckpt / "state").rglob("*") if f.is_file() and f.parent.name == "d"]
    return max(files, key=lambda f: f.stat().st_size)


def _flip_byte(f):
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    return f


def _run_with_checkpoints(tmp_path, iterations=(1, 2), manifest=True):
    root = tmp_path / "run" / "checkpoints"
    for it in iterations:
        checkpoint.save_checkpoint(root, it, _tree(it), META, console=Console(file=io.StringIO()))
    ckpts = checkpoint.list_checkpoints(tmp_path / "run")
    if not manifest:  # as written by mbjax before integrity.json existed
        for c in ckpts:
            (c / checkpoint.MANIFEST).unlink()
    return tmp_path / "run", ckpts


def test_manifest_lists_every_file_with_size_and_sha256(tmp_path):
    path = checkpoint.save(tmp_path / "c", _tree(), META)
    manifest = json.loads((path / "integrity.json").read_text())
    files = {f.relative_to(path).as_posix(): f for f in path.rglob("*") if f.is_file()}
    assert set(manifest["files"]) == set(files) - {"integrity.json"}
    assert {"record/metadata", "_CHECKPOINT_METADATA"} <= set(manifest["files"])
    for rel, entry in manifest["files"].items():
        assert entry == {"size": files[rel].stat().st_size,
                         "sha256": checkpoint.sha256_of(files[rel])}
    assert checkpoint.verify_integrity(path) is True


def test_flipped_byte_in_a_data_file_is_named(tmp_path):
    path = checkpoint.save(tmp_path / "c", _tree(), META)
    rel = _flip_byte(_data_file(path)).relative_to(path).as_posix()
    expected = (f"checkpoint {path} is corrupt: {rel} has changed since it was saved "
                "(sha256 mismatch). Its files were damaged after it was written")
    with pytest.raises(CheckpointError, match="^" + re.escape(expected)) as info:
        checkpoint.load(path, _template(), META)
    assert info.value.reason == f"{rel} has changed since it was saved (sha256 mismatch)"
    assert not isinstance(info.value, CheckpointMismatch)


def test_missing_truncated_and_extra_files_are_named(tmp_path):
    good = checkpoint.save(tmp_path / "good", _tree(), META)
    rel = _data_file(good).relative_to(good).as_posix()
    missing, truncated, extra = (shutil.copytree(good, tmp_path / n)
                                 for n in ("missing", "truncated", "extra"))
    (missing / rel).unlink()
    size = (truncated / rel).stat().st_size
    (truncated / rel).write_bytes((truncated / rel).read_bytes()[:-1])
    (extra / "state" / "stray.bin").write_bytes(b"x")
    cases = {missing: f"{rel} is missing",
             truncated: f"{rel} has changed size since it was saved ({size} -> {size - 1} bytes)",
             extra: "state/stray.bin was not part of the saved checkpoint"}
    for path, what in cases.items():
        with pytest.raises(CheckpointError,
                           match="^" + re.escape(f"checkpoint {path} is corrupt: {what}. ")):
            checkpoint.verify_integrity(path)


def test_checkpoint_of_older_mbjax_without_manifest_loads_with_a_note(tmp_path):
    path = checkpoint.save(tmp_path / "c", _tree(5.0), META)
    (path / "integrity.json").unlink()
    assert checkpoint.verify_integrity(path) is False
    with pytest.warns(UnverifiedCheckpointWarning, match="has no integrity.json"):
        loaded = checkpoint.load(path, _template(), META)
    np.testing.assert_array_equal(loaded["w"], _tree(5.0)["w"])


def test_load_latest_falls_back_to_the_older_checkpoint_with_one_warning_line(tmp_path):
    run_dir, (old, new) = _run_with_checkpoints(tmp_path)
    rel = _flip_byte(_data_file(new)).relative_to(new).as_posix()
    console, out = _console()
    state = checkpoint.load_latest(run_dir, _template(), META, console)
    np.testing.assert_array_equal(state["w"], _tree(1)["w"])
    log = run_dir / "checkpoint_errors.log"
    assert out.getvalue().splitlines() == [
        f"warning: skipping checkpoint {new}: {rel} has changed since it was saved (sha256 "
        f"mismatch); trying iter_000001 (details in {log})"]
    assert f"loading {new} failed: {rel} has changed since it was saved" in log.read_text()


def test_all_checkpoints_corrupt_gives_one_paragraph_and_a_log(tmp_path, capfd, monkeypatch):
    """Checkpoints without a manifest make orbax itself fail: its tracebacks and asyncio's
    late 'Event loop is closed' go to the log, the terminal gets one line and one error."""
    leaked = []  # unraisable exceptions (tensorstore callbacks) that escape the capture
    monkeypatch.setattr(sys, "unraisablehook", lambda u: leaked.append(repr(u.exc_value)))
    run_dir, (old, new) = _run_with_checkpoints(tmp_path, manifest=False)
    for ckpt in (old, new):
        for f in (ckpt / "state").rglob("*"):
            if f.is_file() and f.parent.name == "d":
                _flip_byte(f)
    capfd.readouterr()
    console, out = _console()
    with pytest.raises(CheckpointError) as info:
        checkpoint.load_latest(run_dir, _template(), META, console)
    message = str(info.value)
    log = run_dir / "checkpoint_errors.log"
    assert "\n" not in message
    assert message.startswith(
        f"no usable checkpoint in {run_dir}: tried iter_000002 (its arrays cannot be read "
        "(ValueError)), iter_000001 (its arrays cannot be read (ValueError)). The full errors "
        f"are in {log}. ")
    assert "--overwrite" in message and "backup" in message
    assert out.getvalue().splitlines() == [
        f"warning: skipping checkpoint {new}: its arrays cannot be read (ValueError); trying "
        f"iter_000001 (details in {log})"]
    text = log.read_text()
    assert text.count("Traceback (most recent call last)") >= 2
    assert f"loading {new} failed" in text and f"loading {old} failed" in text
    gc.collect()  # late callbacks of orbax's futures would print now
    terminal = capfd.readouterr()
    assert "Event loop is closed" not in terminal.out + terminal.err
    assert "Traceback" not in terminal.out + terminal.err
    assert leaked == []


def test_config_mismatch_raises_at_once_without_fallback(tmp_path):
    run_dir, _ = _run_with_checkpoints(tmp_path)
    console, out = _console()
    with pytest.raises(CheckpointMismatch, match=r"different configuration:\n  config.lr: "
                                                 r"checkpoint 0.1, expected 0.2"):
        checkpoint.load_latest(run_dir, _template(), {"config": {"lr": 0.2}}, console)
    assert out.getvalue() == ""
    assert not (run_dir / "checkpoint_errors.log").exists()


def test_leftovers_of_killed_saves_are_removed_on_save_and_on_load(tmp_path):
    run_dir, (old, new) = _run_with_checkpoints(tmp_path)
    root = run_dir / "checkpoints"
    for name in (".iter_000003.tmp-0badf00d", ".iter_000003.tmp-0badf00d.orbax-checkpoint-tmp-7"):
        (root / name / "state").mkdir(parents=True)
        (root / name / "state" / "x").write_bytes(b"partial")
    console, out = _console()
    checkpoint.save_checkpoint(root, 4, _tree(4), META, console=console)
    assert sorted(p.name for p in root.iterdir()) == ["iter_000002", "iter_000004"]
    assert out.getvalue().splitlines() == [
        f"removed .iter_000003.tmp-0badf00d from {root}: the leftover of an interrupted save",
        f"removed .iter_000003.tmp-0badf00d.orbax-checkpoint-tmp-7 from {root}: the leftover "
        "of an interrupted save"]
    # Killed between moving iter_000004 aside and moving its replacement in: the previous
    # version is put back, the unfinished replacement deleted, and the load uses it.
    os.replace(root / "iter_000004", root / ".iter_000004.old-12ab34cd")
    (root / ".iter_000004.tmp-56ef78ab").mkdir()
    console, out = _console()
    state = checkpoint.load_latest(run_dir, _template(), META, console)
    np.testing.assert_array_equal(state["w"], _tree(4)["w"])
    assert sorted(p.name for p in root.iterdir()) == ["iter_000002", "iter_000004"]
    assert out.getvalue().splitlines() == [
        f"restored checkpoint {root / 'iter_000004'} from .iter_000004.old-12ab34cd: a save "
        "was killed while replacing it",
        f"removed .iter_000004.tmp-56ef78ab from {root}: the leftover of an interrupted save"]


def test_load_latest_leaves_the_saves_of_a_live_run_alone(tmp_path):
    """``mbjax evaluate`` beside a running ``mbjax train``: the run's lock is held, so its
    in-progress save is not mistaken for a leftover."""
    run_dir, _ = _run_with_checkpoints(tmp_path)
    in_progress = run_dir / "checkpoints" / ".iter_000003.tmp-0badf00d"
    in_progress.mkdir()
    with open(run_dir / "run.lock", "w") as held:  # a lock of another process, as flock sees it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        console, out = _console()
        state = checkpoint.load_latest(run_dir, _template(), META, console)
    np.testing.assert_array_equal(state["w"], _tree(2)["w"])
    assert in_progress.is_dir() and out.getvalue() == ""
