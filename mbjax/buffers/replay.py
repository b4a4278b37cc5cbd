"""A fixed-capacity replay buffer as a pytree, usable inside ``jit`` and ``lax.scan``.

The buffer is a :class:`ReplayBuffer` (a NamedTuple of pure functions built by
:func:`make_replay_buffer`, which closes over the static sizes) acting on a
:class:`BufferState` pytree. Shapes never change while the buffer fills, so ``add`` and
``sample`` compile once.

Storage is time-major per env: every data leaf has shape ``[C, N, ...]`` with
``C = capacity_per_env`` rows per env and ``N = num_envs`` parallel envs, so each env's
stream of transitions is contiguous in time (what window sampling needs). Rows are
written in order 0, 1, ..., C-1, 0, 1, ... (a ring): once full, each add overwrites the
oldest row, so the buffer always holds the newest ``min(steps_added, C)`` steps of every
env.

>>> buffer = make_replay_buffer(capacity=1000, num_envs=4)
>>> state = buffer.init(example_transition)            # one unbatched Transition
>>> state = buffer.add(state, transitions)             # leaves [4, ...] or [T, 4, ...]
>>> batch = buffer.sample(state, key, 256)             # leaves [256, ...]
>>> windows = buffer.sample_windows(state, key, 32, 8) # leaves [32, 8, ...]

Under ``jit`` pass ``batch_size``/``length`` as static arguments (or close over them),
and donate the state to ``add`` (``jax.jit(buffer.add, donate_argnums=0)``) so that the
storage is updated in place rather than copied.

Episode ends: ``add`` stores a bool flag per transition (``done OR truncated`` for a
:class:`~mbjax.types.Transition`, see ``episode_end_fn`` of :func:`make_replay_buffer`),
and ``sample_windows`` only returns windows in which no step but the last ends an
episode. Plain ``sample`` ignores episodes.

Nothing to sample (an empty buffer; no valid window): outside ``jit`` ``sample`` and
``sample_windows`` raise :class:`ReplayBufferError`. Under ``jit`` this cannot be checked
without a host round trip, so they return zero-filled or placeholder rows of the right
shape; guard with ``can_sample`` / ``num_windows`` (e.g. in a ``lax.cond``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mbjax.buffers import serialization
from mbjax.buffers.state import BufferState, ReplayBufferError
from mbjax.types import Array, PRNGKey, Transition

#: Maps ONE unbatched transition (a pytree shaped like the example given to ``init``)
#: to a scalar; nonzero means the episode ends after that transition.
EpisodeEndFn = Callable[[Any], Array]


class ReplayBuffer(NamedTuple):
    """A replay buffer's pure functions and static sizes (see :func:`make_replay_buffer`).

    Attributes:
      init: ``init(example) -> BufferState``.
      add: ``add(state, batch) -> BufferState``.
      sample: ``sample(state, key, batch_size) -> batch`` with leaves [batch_size, ...].
      sample_windows: ``sample_windows(state, key, batch_size, length) -> windows`` with
        leaves [batch_size, length, ...].
      can_sample: ``can_sample(state, min_size=1) -> bool []``.
      num_windows: ``num_windows(state, length) -> int32 []``, the number of valid
        window starts that ``sample_windows`` draws from.
      save: ``save(path, state)``, see :func:`mbjax.buffers.save`.
      load: ``load(path, example) -> BufferState``, checks the file against this buffer's
        sizes and the example's leaves.
      capacity: total number of stored transitions, ``capacity_per_env * num_envs``.
      capacity_per_env: rows per env, ``C``.
      num_envs: number of parallel envs, ``N``.
    """

    init: Callable[[Any], BufferState]
    add: Callable[[BufferState, Any], BufferState]
    sample: Callable[..., Any]
    sample_windows: Callable[..., Any]
    can_sample: Callable[..., Array]
    num_windows: Callable[[BufferState, int], Array]
    save: Callable[[Any, BufferState], None]
    load: Callable[[Any, Any], BufferState]
    capacity: int
    capacity_per_env: int
    num_envs: int


# ---------------------------------------------------------------------------------------
# Episode-end information.


def transition_episode_end(transition: Transition) -> Array:
    """Episode end of one :class:`~mbjax.types.Transition`: ``done OR truncated``."""
    return transition.episode_end != 0


def mapping_episode_end(transition: Mapping[str, Array]) -> Array:
    """Episode end of one dict transition: ``done OR truncated`` (``truncated`` optional)."""
    end = jnp.asarray(transition["done"]) != 0
    if "truncated" in transition:
        end = end | (jnp.asarray(transition["truncated"]) != 0)
    return end


def no_episode_ends(transition: Any) -> Array:
    """Treats every env's stream as one never-ending episode (windows may span resets)."""
    del transition
    return jnp.zeros((), dtype=bool)


def _default_episode_end_fn(example: Any) -> EpisodeEndFn | None:
    """The episode-end function for data shaped like ``example``, or None if unknown."""
    if isinstance(example, Transition):
        return transition_episode_end
    if isinstance(example, Mapping) and "done" in example:
        return mapping_episode_end
    return None


# ---------------------------------------------------------------------------------------
# Validation helpers.


def _check_positive_int(value: Any, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ReplayBufferError(
            f"{where}: `{name}` must be a Python int (a static size, not a traced or "
            f"float value), got {value!r} of type {type(value).__name__}."
        )
    if value < 1:
        raise ReplayBufferError(f"{where}: `{name}` must be >= 1, got {value}.")
    return int(value)


def _is_tracer(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def _leaf_name(path) -> str:
    return jax.tree_util.keystr(path) or "<root>"


def _as_arrays(tree: Any) -> Any:
    """Converts every leaf to a JAX array (canonical dtypes, as JAX would store them)."""
    return jax.tree.map(jnp.asarray, tree)


# ---------------------------------------------------------------------------------------
# Compiled kernels. The public functions below validate their inputs in Python (at trace
# time) and then call these. They are jitted at module level so that an eager call
# compiles once per shape instead of op by op, and buffers of equal sizes share the
# compiled code; under an outer ``jit`` or ``scan`` they are simply inlined.


@functools.partial(jax.jit, static_argnames=("chunk",))
def _add_kernel(state: BufferState, batch: Any, ends: Array, chunk: bool) -> BufferState:
    """Writes a step ([N, ...], ``chunk=False``) or a chunk ([T, N, ...]) at insert_pos."""
    C = state.episode_end.shape[0]
    pos = state.insert_pos
    if not chunk:  # one step: a dynamic_update_slice at insert_pos
        steps = 1
        data = jax.tree.map(
            lambda d, x: jax.lax.dynamic_update_index_in_dim(d, x, pos, 0), state.data, batch
        )
        episode_end = jax.lax.dynamic_update_index_in_dim(state.episode_end, ends, pos, 0)
    else:  # a chunk: one scatter of the newest min(T, C) steps, wrapping around
        steps = ends.shape[0]
        keep = min(steps, C)
        rows = (pos + (steps - keep) + jnp.arange(keep)) % C
        data = jax.tree.map(
            lambda d, x: d.at[rows].set(x[steps - keep :], unique_indices=True),
            state.data,
            batch,
        )
        episode_end = state.episode_end.at[rows].set(ends[steps - keep :], unique_indices=True)
    return BufferState(
        data=data,
        episode_end=episode_end,
        insert_pos=((pos + steps) % C).astype(jnp.int32),
        size=jnp.minimum(state.size + steps, C).astype(jnp.int32),
    )


@functools.partial(jax.jit, static_argnames=("batch_size",))
def _sample_kernel(state: BufferState, key: PRNGKey, batch_size: int) -> Any:
    """Uniform over the size * N valid rows; row 0 of env 0 when empty."""
    N = state.episode_end.shape[1]
    num_valid = state.size * N
    flat = jax.random.randint(key, (batch_size,), 0, jnp.maximum(num_valid, 1))
    t, e = flat // N, flat % N
    return jax.tree.map(lambda d: d[t, e], state.data)


def window_starts(state: BufferState, length: int) -> tuple[Array, Array]:
    """Valid window starts, in chronological order.

    Let ``o = (insert_pos - size) mod C`` be the oldest row and ``end[i, e]`` the
    episode-end flag of the i-th oldest row of env e. A window of ``L = length`` steps
    starting at the i-th oldest row is valid iff

        i + L <= size                        (inside the data: no seam, no empty rows)
        sum_{j=i}^{i+L-2} end[j, e] = 0      (only its last step may end an episode)

    The sum is ``S[i+L-1] - S[i]`` with the prefix sums ``S[k] = sum_{j<k} end[j]``.

    Returns:
      (mask, oldest): bool [C, N] over (i, e) and the int32 [] oldest row ``o``.
    """
    C, N = state.episode_end.shape
    oldest = (state.insert_pos - state.size) % C
    order = (oldest + jnp.arange(C)) % C
    ends = state.episode_end[order].astype(jnp.int32)  # [C, N], oldest row first
    starts = jnp.arange(C)
    mask = jnp.broadcast_to((starts + length <= state.size)[:, None], (C, N))
    if length > 1:
        prefix = jnp.concatenate(
            [jnp.zeros((1, N), jnp.int32), jnp.cumsum(ends, axis=0)], axis=0
        )  # [C + 1, N]
        inner_ends = prefix[length - 1 : C] - prefix[: C - length + 1]  # [C - L + 1, N]
        no_inner_end = jnp.concatenate(
            [inner_ends == 0, jnp.zeros((length - 1, N), bool)], axis=0
        )
        mask = mask & no_inner_end
    return mask, oldest



@functools.partial(jax.jit, static_argnames=("length",))
def _num_windows_kernel(state: BufferState, length: int) -> Array:
    mask, _ = window_starts(state, length)
    return jnp.sum(mask, dtype=jnp.int32)


@functools.partial(jax.jit, static_argnames=("batch_size", "length"))
def _sample_windows_kernel(
    state: BufferState, key: PRNGKey, batch_size: int, length: int
) -> tuple[Any, Array]:
    """Returns (windows with leaves [B, L, ...], number of valid starts)."""
    C, N = state.episode_end.shape
    mask, oldest = window_starts(state, length)
    prefix = jnp.cumsum(mask.reshape(-1), dtype=jnp.int32)  # [C * N], (i, e) row-major
    count = prefix[-1]
    u = jax.random.randint(key, (batch_size,), 0, jnp.maximum(count, 1))
    flat = jnp.searchsorted(prefix, u, side="right")
    flat = jnp.where(count > 0, flat, 0)
    i, e = flat // N, flat % N
    rows = (oldest + i[:, None] + jnp.arange(length)[None, :]) % C  # [B, L]
    windows = jax.tree.map(lambda d: d[rows, e[:, None]], state.data)
    return windows, count


# ---------------------------------------------------------------------------------------
# The buffer's operations: pure functions of a :class:`_BufferSpec` (the static sizes and
# the episode-end function) and their arguments. ``make_replay_buffer`` closes over the
# spec; the public closures keep the documented signatures (static ``batch_size`` and
# ``length`` by name, donation of ``state``).


class _BufferSpec(NamedTuple):
    """The static configuration of one buffer.

    Attributes:
      capacity_per_env: ``C``, rows per env.
      num_envs: ``N``, parallel envs.
      episode_end_fn: the user's episode-end function, or None for the default.
    """

    capacity_per_env: int
    num_envs: int
    episode_end_fn: EpisodeEndFn | None


def _make_spec(capacity: Any, num_envs: Any, episode_end_fn: Any) -> _BufferSpec:
    """Checks ``make_replay_buffer``'s arguments; ``C = capacity // num_envs``.

    Raises:
      ReplayBufferError: sizes that are not ints >= 1, ``capacity < num_envs``, or an
        ``episode_end_fn`` that is neither callable nor None.
    """
    where = "make_replay_buffer"
    capacity = _check_positive_int(capacity, "capacity", where)
    num_envs = _check_positive_int(num_envs, "num_envs", where)
    if capacity < num_envs:
        raise ReplayBufferError(
            f"{where}: `capacity` ({capacity}) must be >= `num_envs` ({num_envs}) so that "
            "every env gets at least one row."
        )
    if episode_end_fn is not None and not callable(episode_end_fn):
        raise ReplayBufferError(
            f"{where}: `episode_end_fn` must be callable or None, got {episode_end_fn!r}."
        )
    return _BufferSpec(capacity // num_envs, num_envs, episode_end_fn)


def _resolve_episode_end_fn(spec: _BufferSpec, data: Any) -> EpisodeEndFn | None:
    """The spec's episode-end function, else the default for data shaped like ``data``."""
    if spec.episode_end_fn is not None:
        return spec.episode_end_fn
    return _default_episode_end_fn(data)


def _check_state(spec: _BufferSpec, state: Any, where: str) -> None:
    """Checks that ``state`` is a BufferState with episode_end [C, N] of this spec."""
    C, N = spec.capacity_per_env, spec.num_envs
    if not isinstance(state, BufferState):
        raise ReplayBufferError(
            f"{where}: expected a BufferState (from `init`), got {type(state).__name__}."
        )
    shape = tuple(state.episode_end.shape)
    if shape != (C, N):
        raise ReplayBufferError(
            f"{where}: the state holds [capacity_per_env, num_envs] = {list(shape)} "
            f"but this buffer has [{C}, {N}]; it was made by a different buffer."
        )


def _init_state(spec: _BufferSpec, example: Any) -> BufferState:
    """Allocates zero-filled storage for transitions shaped like ``example``.

    Args:
      spec: the buffer's sizes C, N and episode-end function.
      example: ONE unbatched transition, any pytree of arrays (e.g. a
        :class:`~mbjax.types.Transition` with obs [obs_dim], reward []); only the
        shapes and dtypes are used.

    Returns:
      An empty :class:`BufferState`: every data leaf has shape [C, N, *leaf.shape]
      and the example's dtype, episode_end bool [C, N], ``insert_pos = size = 0``.
    """
    C, N = spec.capacity_per_env, spec.num_envs
    example = _as_arrays(example)
    if not jax.tree.leaves(example):
        raise ReplayBufferError("init: `example` has no array leaves.")
    fn = _resolve_episode_end_fn(spec, example)
    if fn is not None:
        out = jax.eval_shape(fn, example)
        if getattr(out, "shape", None) != ():
            raise ReplayBufferError(
                "init: the episode-end function must return a scalar for one "
                f"transition, got shape {getattr(out, 'shape', None)}."
            )
    data = jax.tree.map(lambda x: jnp.zeros((C, N) + x.shape, x.dtype), example)
    return BufferState(
        data=data,
        episode_end=jnp.zeros((C, N), dtype=bool),
        insert_pos=jnp.zeros((), jnp.int32),
        size=jnp.zeros((), jnp.int32),
    )


def _check_batch(spec: _BufferSpec, state: BufferState, batch: Any) -> int | None:
    """Checks ``batch`` against the storage [C, N, ...] leaf by leaf.

    Every leaf must be [N, *item] (one step) or [T, N, *item] (a chunk of T >= 1 steps,
    the same T for all leaves), with ``item`` and dtype equal to the stored leaf's.

    Returns:
      T for a [T, N, ...] chunk, None for one step.
    """
    N = spec.num_envs
    data_def = jax.tree.structure(state.data)
    batch_def = jax.tree.structure(batch)
    if data_def != batch_def:
        raise ReplayBufferError(
            "add: the batch's pytree structure does not match the example's.\n"
            f"  expected: {data_def}\n  got:      {batch_def}"
        )
    stored = jax.tree_util.tree_flatten_with_path(state.data)[0]
    given = jax.tree.leaves(batch)
    chunk_len: int | None = None
    mode: str | None = None
    for (path, d), x in zip(stored, given, strict=True):
        name = _leaf_name(path)
        item = tuple(d.shape[2:])
        shape = tuple(x.shape)
        if shape[1:] == (N,) + item and mode != "step":
            this_mode, this_len = "chunk", shape[0]
        elif shape == (N,) + item and mode != "chunk":
            this_mode, this_len = "step", None
        else:
            step_shape = (N,) + item
            chunk_shape = "(T, " + ", ".join(map(str, step_shape)) + ")"
            context = f" (earlier leaves were given as a {mode})" if mode is not None else ""
            raise ReplayBufferError(
                f"add: leaf `{name}` has shape {shape}; expected {step_shape} "
                f"= [num_envs, *example_shape] for one step, or {chunk_shape} for a "
                f"chunk of T steps{context}. The example's `{name}` has shape {item}."
            )
        if mode == "chunk" and this_len != chunk_len:
            raise ReplayBufferError(
                f"add: leaf `{name}` has {this_len} steps but earlier leaves have "
                f"{chunk_len}; all leaves of a chunk need the same leading T."
            )
        mode, chunk_len = this_mode, this_len
        if x.dtype != d.dtype:
            raise ReplayBufferError(
                f"add: leaf `{name}` has dtype {x.dtype}, expected {d.dtype} (the "
                "example's dtype); cast it before adding."
            )
    if mode == "chunk" and chunk_len == 0:
        raise ReplayBufferError("add: the chunk has T = 0 steps.")
    return chunk_len


def _episode_end_flags(spec: _BufferSpec, batch: Any, lead: int) -> Array:
    """Episode-end flags of a checked batch: bool with its ``lead`` leading axes.

    Returns:
      bool [N] (``lead = 1``, one step) or [T, N] (``lead = 2``, a chunk); all False
      when the data have no episode-end information.
    """
    fn = _resolve_episode_end_fn(spec, batch)
    leading = jax.tree.leaves(batch)[0].shape[:lead]
    if fn is None:
        return jnp.zeros(leading, dtype=bool)
    for _ in range(lead):
        fn = jax.vmap(fn)
    flags = jnp.asarray(fn(batch))
    if flags.shape != leading:
        raise ReplayBufferError(
            f"add: the episode-end function returned shape {flags.shape} for a batch "
            f"with leading axes {leading}; it must return a scalar per transition."
        )
    return flags != 0


def _add(spec: _BufferSpec, state: BufferState, batch: Any) -> BufferState:
    """Appends one step of all envs, or a chunk of T consecutive steps.

    Args:
      spec: the buffer's sizes C, N and episode-end function.
      state: the buffer state.
      batch: pytree shaped like the example with leaves [N, ...] (one step of N
        parallel envs), or [T, N, ...] (T consecutive steps, e.g. the output of
        ``mbjax.envs.rollout``). Dtypes must equal the example's.

    Returns:
      The new state. Step ``k`` of a chunk goes to row ``(insert_pos + k) mod C``;
      when ``T > C`` only the newest C steps are kept.
      ``insert_pos' = (insert_pos + T) mod C``, ``size' = min(size + T, C)``.

    Raises:
      ReplayBufferError: at trace time, for a batch whose structure, leaf shapes or
        dtypes do not match the example (naming the leaf, expected vs got).
    """
    _check_state(spec, state, "add")
    batch = _as_arrays(batch)
    chunk_len = _check_batch(spec, state, batch)
    chunk = chunk_len is not None
    ends = _episode_end_flags(spec, batch, 2 if chunk else 1)
    return _add_kernel(state, batch, ends, chunk=chunk)


def _can_sample(spec: _BufferSpec, state: BufferState, min_size: int) -> Array:
    """bool []: the buffer holds at least ``min_size`` transitions (``size * N``)."""
    _check_state(spec, state, "can_sample")
    return state.size * spec.num_envs >= min_size


def _sample(spec: _BufferSpec, state: BufferState, key: PRNGKey, batch_size: int) -> Any:
    """Samples ``batch_size`` transitions uniformly, with replacement, from valid rows.

    Each draw picks one of the ``size * N`` stored transitions with probability
    ``1 / (size * N)``; uninitialised rows are never returned.

    Args:
      spec: the buffer's sizes C, N and episode-end function.
      state: the buffer state.
      key: PRNG key.
      batch_size: static int >= 1.

    Returns:
      A pytree shaped like the example with leaves [batch_size, ...].

    Empty buffer: outside ``jit`` this raises ``ReplayBufferError``. Under ``jit``
    emptiness cannot be checked; the result is then ``batch_size`` copies of the
    zero-filled row ``data[0, 0]``. Guard with ``can_sample``.
    """
    _check_state(spec, state, "sample")
    batch_size = _check_positive_int(batch_size, "batch_size", "sample")
    if not _is_tracer(state.size) and int(state.size) == 0:
        raise ReplayBufferError(
            "sample: the buffer is empty (size 0); add transitions first, or check "
            "`can_sample(state)`."
        )
    return _sample_kernel(state, key, batch_size=batch_size)


def _check_length(spec: _BufferSpec, length: Any, where: str) -> int:
    """``length`` as a Python int in [1, C]; raises ReplayBufferError otherwise."""
    length = _check_positive_int(length, "length", where)
    C = spec.capacity_per_env
    if length > C:
        raise ReplayBufferError(
            f"{where}: `length` ({length}) exceeds capacity_per_env ({C}); no window "
            "can ever be that long."
        )
    return length


def _check_episode_info(spec: _BufferSpec, state: BufferState, where: str) -> None:
    """Raises unless the stored data have episode-end information (windows need it)."""
    if _resolve_episode_end_fn(spec, state.data) is None:
        raise ReplayBufferError(
            f"{where}: this buffer's data has no episode-end information, so windows "
            "could silently span episodes. Store a Transition or a dict with 'done' "
            "(and 'truncated'), or pass `episode_end_fn` to make_replay_buffer "
            "(mbjax.buffers.no_episode_ends treats each env's stream as one episode)."
        )


def _num_windows(spec: _BufferSpec, state: BufferState, length: int) -> Array:
    """int32 []: the number of valid window starts of ``length`` steps (all envs).

    ``sample_windows`` draws from exactly these; when this is 0 its output is a
    placeholder (see :func:`_sample_windows`).
    """
    _check_state(spec, state, "num_windows")
    length = _check_length(spec, length, "num_windows")
    _check_episode_info(spec, state, "num_windows")
    return _num_windows_kernel(state, length=length)


def _sample_windows(
    spec: _BufferSpec, state: BufferState, key: PRNGKey, batch_size: int, length: int
) -> Any:
    """Samples windows of ``length`` consecutive steps of one env, within one episode.

    A window is ``data[t_0 .. t_0 + L - 1 (mod C), e]`` for a start ``(t_0, e)`` drawn
    uniformly, with replacement, from the valid starts (see :func:`window_starts`):
    consecutive steps of env e, entirely among the stored rows (never across the
    seam between the newest and the oldest row), and no step but the last ends an
    episode (``done`` or ``truncated``). Draw: with the flattened mask m and its
    inclusive prefix sums P (P[-1] = number of valid starts), u ~ U{0, ..., P[-1]-1}
    and the start is the first k with P[k] > u (a binary search), which is exactly
    uniform.

    Args:
      spec: the buffer's sizes C, N and episode-end function.
      state: the buffer state.
      key: PRNG key.
      batch_size: static int >= 1.
      length: static int in [1, C].

    Returns:
      A pytree shaped like the example with leaves [batch_size, length, ...].

    No valid window (``num_windows(state, length) == 0``): outside ``jit`` this
    raises ``ReplayBufferError``; under ``jit`` it returns placeholder windows (the
    rows of env 0 starting at the oldest row) that must be discarded.

    Cost: O(C * N) per call to build the mask, plus the gather.
    """
    where = "sample_windows"
    _check_state(spec, state, where)
    batch_size = _check_positive_int(batch_size, "batch_size", where)
    length = _check_length(spec, length, where)
    _check_episode_info(spec, state, where)
    windows, count = _sample_windows_kernel(state, key, batch_size=batch_size, length=length)
    if not _is_tracer(count) and int(count) == 0:
        raise ReplayBufferError(
            f"sample_windows: no valid window of length {length} (size {int(state.size)}"
            f" rows per env); every candidate crosses an episode end or the data's "
            "end. Check `num_windows(state, length)` first."
        )
    return windows


# ---------------------------------------------------------------------------------------
# The buffer.


def make_replay_buffer(
    capacity: int,
    num_envs: int,
    episode_end_fn: EpisodeEndFn | None = None,
) -> ReplayBuffer:
    """Builds a ring replay buffer for ``num_envs`` parallel envs.

    Args:
      capacity: total number of transitions to keep, ``>= num_envs``. Each env gets
        ``C = capacity // num_envs`` rows; when ``capacity`` is not a multiple of
        ``num_envs`` the remainder is dropped (``ReplayBuffer.capacity`` is the
        effective ``C * num_envs``).
      num_envs: ``N``, the number of parallel envs whose steps are added together.
      episode_end_fn: maps ONE unbatched transition (shaped like the ``init`` example)
        to a scalar, nonzero where the episode ends after it. Needed only by
        ``sample_windows``. Default: ``done OR truncated`` for a
        :class:`~mbjax.types.Transition`, or for a dict with a ``"done"`` key (and an
        optional ``"truncated"`` key); other pytrees have no episode-end information
        and ``sample_windows`` raises unless an ``episode_end_fn`` is given (use
        :func:`no_episode_ends` to treat every env's stream as one episode).

    Returns:
      A :class:`ReplayBuffer` whose functions are documented at the module-level
      functions they call (:func:`_init_state`, :func:`_add`, :func:`_sample`,
      :func:`_sample_windows`, :func:`_can_sample`, :func:`_num_windows`).

    Raises:
      ReplayBufferError: (a ``ValueError``) for sizes that are not ints >= 1 or
        ``capacity < num_envs``.
    """
    spec = _make_spec(capacity, num_envs, episode_end_fn)

    def init(example: Any) -> BufferState:
        """Zero-filled storage [C, N, ...] for transitions shaped like ``example``."""
        return _init_state(spec, example)

    def add(state: BufferState, batch: Any) -> BufferState:
        """Appends one step ([N, ...]) or a chunk of T steps ([T, N, ...])."""
        return _add(spec, state, batch)

    def can_sample(state: BufferState, min_size: int = 1) -> Array:
        """bool []: the buffer holds at least ``min_size`` transitions (``size * N``)."""
        return _can_sample(spec, state, min_size)

    def sample(state: BufferState, key: PRNGKey, batch_size: int) -> Any:
        """``batch_size`` uniform draws (with replacement): leaves [batch_size, ...]."""
        return _sample(spec, state, key, batch_size)

    def num_windows(state: BufferState, length: int) -> Array:
        """int32 []: the number of valid window starts of ``length`` steps (all envs)."""
        return _num_windows(spec, state, length)

    def sample_windows(state: BufferState, key: PRNGKey, batch_size: int, length: int) -> Any:
        """Windows of ``length`` steps of one env within one episode: [B, length, ...]."""
        return _sample_windows(spec, state, key, batch_size, length)

    def load(path: Any, example: Any) -> BufferState:
        """Loads a state saved by ``save``, checked against this buffer and ``example``."""
        template = jax.eval_shape(init, example)
        return serialization.load(path, template)

    C, N = spec.capacity_per_env, spec.num_envs
    return ReplayBuffer(
        init=init,
        add=add,
        sample=sample,
        sample_windows=sample_windows,
        can_sample=can_sample,
        num_windows=num_windows,
        save=serialization.save,
        load=load,
        capacity=C * N,
        capacity_per_env=C,
        num_envs=N,
    )


def as_dataset(state: BufferState) -> tuple[Any, Array]:
    """The buffer's contents as a flat dataset for model training.

    Returns (data with leaves [C * N, ...], num_valid []): the first ``num_valid = size * N``
    rows are the valid transitions (rows [0, size) of every env, in storage order), the
    rest is unused capacity. Shapes are static, so a trainer compiled on it never
    recompiles as the buffer fills (see ``mbjax.models.training``).
    """
    data = jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[2:]), state.data)
    num_envs = state.episode_end.shape[1]
    return data, state.size * num_envs
