"""Saving and loading a replay buffer's state: an ``.npz`` archive with a JSON schema.

The archive holds one array per leaf of the :class:`BufferState` (``leaf_0``,
``leaf_1``, ...) and ``__schema__``, a JSON string::

    {"format": "mbjax.replay_buffer", "version": 1,
     "capacity_per_env": C, "num_envs": N, "capacity": C * N,
     "insert_pos": ..., "size": ...,
     "leaves": [{"path": ".data.obs", "key": "leaf_0", "shape": [C, N, 3],
                 "dtype": "float32"}, ...]}

``load`` checks the schema against the buffer it loads into (sizes first, then every
leaf's path, shape and dtype) and names the first mismatch with both values. Writes are
atomic: the archive is written to a temporary file in the target's directory, flushed to
disk, then renamed over ``path``, so a crash never leaves a half-written file at ``path``.
Leaves with dtypes NumPy cannot store natively (e.g. bfloat16) are stored as their raw
bits (an unsigned integer view) and restored to the schema's dtype.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mbjax.buffers.state import BufferFileError, BufferState

FORMAT = "mbjax.replay_buffer"
VERSION = 1
_SCHEMA_KEY = "__schema__"


def _to_storable(arr: np.ndarray) -> np.ndarray:
    """The array itself for NumPy-native dtypes, else a same-size unsigned-int view."""
    if arr.dtype.kind in "biufc" and type(arr.dtype).__module__.startswith("numpy"):
        return arr
    return np.ascontiguousarray(arr).view(np.dtype(f"u{arr.dtype.itemsize}"))


def _from_storable(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return arr if arr.dtype == dtype else arr.view(dtype)


def _dtype_name(dtype: Any) -> str:
    return np.dtype(dtype).name


def save(path: str | os.PathLike, state: BufferState) -> None:
    """Writes ``state`` to ``path`` (exactly that name; no suffix is added), atomically.

    Args:
      path: file to write; its directory must exist. An existing file is replaced.
      state: a concrete :class:`BufferState` (call outside ``jit``).

    Raises:
      TypeError: ``state`` is not a BufferState or holds traced values.
      FileNotFoundError: the directory of ``path`` does not exist.
    """
    if not isinstance(state, BufferState):
        raise TypeError(f"save: expected a BufferState, got {type(state).__name__}.")
    leaves_with_paths = jax.tree_util.tree_flatten_with_path(state)[0]
    if any(isinstance(x, jax.core.Tracer) for _, x in leaves_with_paths):
        raise TypeError("save: the state holds traced values; call save outside jit.")
    host = jax.device_get([x for _, x in leaves_with_paths])
    capacity_per_env, num_envs = (int(s) for s in np.shape(state.episode_end))
    arrays: dict[str, np.ndarray] = {}
    leaves = []
    for i, ((p, _), arr) in enumerate(zip(leaves_with_paths, host, strict=True)):
        arr = np.asarray(arr)
        key = f"leaf_{i}"
        arrays[key] = _to_storable(arr)
        leaves.append(
            {
                "path": jax.tree_util.keystr(p),
                "key": key,
                "shape": list(arr.shape),
                "dtype": _dtype_name(arr.dtype),
            }
        )
    schema = {
        "format": FORMAT,
        "version": VERSION,
        "capacity_per_env": capacity_per_env,
        "num_envs": num_envs,
        "capacity": capacity_per_env * num_envs,
        "insert_pos": int(np.asarray(jax.device_get(state.insert_pos))),
        "size": int(np.asarray(jax.device_get(state.size))),
        "leaves": leaves,
    }
    arrays[_SCHEMA_KEY] = np.array(json.dumps(schema))

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"save: directory {directory!r} does not exist.")
    fd, tmp = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory
    )
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _read_schema(archive: Any, path: str) -> dict:
    if _SCHEMA_KEY not in archive.files:
        raise BufferFileError(
            f"load: {path!r} is an npz archive but not a replay buffer file (no "
            f"{_SCHEMA_KEY!r} entry)."
        )
    schema = json.loads(str(archive[_SCHEMA_KEY]))
    if not isinstance(schema, dict) or schema.get("format") != FORMAT:
        raise BufferFileError(
            f"load: {path!r} is not a replay buffer file (format "
            f"{schema.get('format') if isinstance(schema, dict) else None!r}, expected "
            f"{FORMAT!r})."
        )
    version = schema.get("version")
    if version != VERSION:
        raise BufferFileError(
            f"load: {path!r} has replay buffer format version {version!r}; this mbjax reads "
            f"version {VERSION}."
        )
    return schema


def load(path: str | os.PathLike, template: BufferState) -> BufferState:
    """Reads a state written by :func:`save`, checked against ``template``.

    Args:
      path: a file written by :func:`save`.
      template: a :class:`BufferState` of the buffer to load into, e.g.
        ``buffer.init(example)`` or, without allocating, ``jax.eval_shape(buffer.init,
        example)``; only its structure, shapes and dtypes are used.
        (``ReplayBuffer.load(path, example)`` builds it for you.)

    Returns:
      The saved :class:`BufferState`, as JAX arrays on the default device.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      BufferFileError: (a ``ValueError``) the file is corrupt or not a buffer file, or it
        was written for a different buffer: the message names the mismatching field
        (capacity_per_env / num_envs, a leaf path such as ``.data.obs``) and both the
        file's and the buffer's shape or dtype.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load: replay buffer file {path!r} does not exist.")
    if not isinstance(template, BufferState):
        raise TypeError(
            f"load: `template` must be a BufferState (e.g. buffer.init(example) or "
            f"jax.eval_shape(buffer.init, example)), got {type(template).__name__}."
        )
    want_c, want_n = (int(s) for s in template.episode_end.shape)
    expected, treedef = jax.tree_util.tree_flatten_with_path(template)
    try:
        # Open the file ourselves: np.load leaks its handle when the archive is corrupt.
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as archive:
            schema = _read_schema(archive, path)
            got_c, got_n = int(schema["capacity_per_env"]), int(schema["num_envs"])
            if (got_c, got_n) != (want_c, want_n):
                raise BufferFileError(
                    f"load: capacity mismatch: {path!r} holds capacity_per_env={got_c}, "
                    f"num_envs={got_n} (capacity {got_c * got_n}) but the buffer has "
                    f"capacity_per_env={want_c}, num_envs={want_n} (capacity "
                    f"{want_c * want_n})."
                )
            entries = {leaf["path"]: leaf for leaf in schema["leaves"]}
            want_paths = [jax.tree_util.keystr(p) for p, _ in expected]
            missing = [p for p in want_paths if p not in entries]
            extra = [p for p in entries if p not in want_paths]
            if missing or extra:
                raise BufferFileError(
                    f"load: {path!r} has different fields than the buffer: missing from "
                    f"the file {missing}, not in the buffer {extra}."
                )
            out = []
            for name, (_, want) in zip(want_paths, expected, strict=True):
                entry = entries[name]
                want_shape, want_dtype = tuple(want.shape), _dtype_name(want.dtype)
                got_shape, got_dtype = tuple(entry["shape"]), entry["dtype"]
                if got_shape != want_shape:
                    per_step = (
                        f" (per transition {got_shape[2:]} vs {want_shape[2:]})"
                        if name.startswith(".data")
                        else ""
                    )
                    raise BufferFileError(
                        f"load: field `{name}` shape mismatch: {path!r} has {got_shape}, the "
                        f"buffer expects {want_shape}{per_step}."
                    )
                if got_dtype != want_dtype:
                    raise BufferFileError(
                        f"load: field `{name}` dtype mismatch: {path!r} has {got_dtype}, "
                        f"the buffer expects {want_dtype}."
                    )
                arr = _from_storable(archive[entry["key"]], np.dtype(want.dtype))
                if arr.shape != want_shape or arr.dtype != np.dtype(want.dtype):
                    raise BufferFileError(
                        f"load: {path!r} is corrupt: field `{name}` holds an array of "
                        f"shape {arr.shape} and dtype {arr.dtype}, its schema says "
                        f"{got_shape} {got_dtype}."
                    )
                out.append(arr)
    except BufferFileError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError,
            TypeError) as e:
        raise BufferFileError(
            f"load: could not read replay buffer file {path!r}; it is corrupt or not an "
            f"npz file written by mbjax.buffers.save ({type(e).__name__}: {e})."
        ) from e
    state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a) for a in out])
    insert_pos, size = int(state.insert_pos), int(state.size)
    if not (0 <= insert_pos < want_c and 0 <= size <= want_c) or (
        size < want_c and insert_pos != size
    ):
        raise BufferFileError(
            f"load: {path!r} is corrupt: insert_pos={insert_pos}, size={size} are not a "
            f"valid fill state for capacity_per_env={want_c}."
        )
    return state
