"""Checkpoints of any pytree with orbax, with a schema check on load.

``save(path, tree, metadata)`` writes the pytree and a JSON record (metadata plus the
schema: every leaf's path, shape and dtype). Orbax writes into a temporary directory and
renames it when complete, so a process killed during a save never leaves a half-written
checkpoint under ``path``; overwriting swaps directories the same way.

``load(path, template, expected_metadata)`` refuses, with an error that names what differs,
a checkpoint whose schema does not match ``template`` (a model of a different shape) or
whose metadata differ from ``expected_metadata`` (e.g. a different config), and reports a
missing, incomplete or corrupt checkpoint as such.

Zero-size leaves (e.g. MJX's ``Data.act`` of a model without actuator activations, shape
[..., 0]) hold no data and orbax refuses to write them: they are stored as empty nodes and
restored as zeros of the template's shape and dtype.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from mbjax.distributed import is_primary, sync

SCHEMA_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupt or does not match what loads it."""


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


def save(path: str | os.PathLike, tree: Any, metadata: dict | None = None,
         overwrite: bool = True) -> Path:
    """Saves ``tree`` (and JSON-serialisable ``metadata``) to directory ``path`` atomically."""
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
        shutil.rmtree(tmp, ignore_errors=True)  # a leftover of a killed multi-process save
    sync("mbjax-checkpoint-start")
    _checkpointer().save(tmp, ocp.args.Composite(state=ocp.args.StandardSave(_drop_empty(tree)),
                                                 record=ocp.args.JsonSave(record)))
    sync("mbjax-checkpoint-written")
    if primary:
        if path.exists():  # swap: the old checkpoint stays intact until the new one is done
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    sync("mbjax-checkpoint-renamed")
    return path



def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata and schema record stored with a checkpoint."""
    path = Path(path).absolute()
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint at {path}")
    if not (path / "record").exists() or not (path / "state").exists():
        raise CheckpointError(
            f"{path} is not a complete mbjax checkpoint (missing 'record' or 'state'); it may "
            "have been interrupted while saving or written by another program")
    try:
        return _checkpointer().restore(
            path, ocp.args.Composite(record=ocp.args.JsonRestore()))["record"]
    except Exception as err:  # orbax raises many types for unreadable files
        raise CheckpointError(f"checkpoint {path} is corrupt: its record cannot be read "
                              f"({type(err).__name__}: {err})") from err


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


def load(path: str | os.PathLike, template: Any, expected_metadata: dict | None = None) -> Any:
    """Restores the pytree saved at ``path`` into the structure of ``template``.

    Raises:
      CheckpointError: missing/incomplete/corrupt checkpoint, a schema that differs from
        ``template`` (each differing leaf is named with both shapes), or metadata that
        differ from ``expected_metadata`` (each differing field is named).
    """
    path = Path(path).absolute()
    record = read_metadata(path)
    if expected_metadata is not None:
        diff = _diff_metadata(json.loads(json.dumps(record.get("metadata", {}))),
                              json.loads(json.dumps(expected_metadata)))
        if diff:
            raise CheckpointError(
                f"checkpoint {path} was written with a different configuration:\n"
                + "\n".join(diff) + "\nLoad it with the configuration it was written with, "
                "or start a new run.")
    diff = _diff_schema(record.get("schema", {}), schema(template))
    if diff:
        raise CheckpointError(
            f"checkpoint {path} does not match the structure it is loaded into:\n"
            + "\n".join(diff) + "\nIt was written by a model/state of another shape.")
    try:
        restored = _checkpointer().restore(
            path, ocp.args.Composite(state=ocp.args.StandardRestore(_drop_empty(template)))
        )["state"]
    except Exception as err:
        raise CheckpointError(f"checkpoint {path} is corrupt: its arrays cannot be read "
                              f"({type(err).__name__}: {err})") from err
    return _refill_empty(restored, template)
