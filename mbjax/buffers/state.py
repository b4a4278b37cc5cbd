"""The replay buffer's state pytree and its error types."""

from __future__ import annotations

from typing import Any

from flax import struct

from mbjax.types import Array


class ReplayBufferError(ValueError):
    """Bad input to a replay buffer: sizes, shapes, dtypes or pytree structure."""


@struct.dataclass
class BufferState:
    """State of a replay buffer with ``C = capacity_per_env`` rows for each of ``N`` envs.

    Attributes:
      data: pytree shaped like the example given to ``init``, every leaf with shape
        [C, N, *example_leaf.shape]; row ``t`` of env ``e`` is ``data[t, e]``.
      episode_end: bool [C, N]; True where the episode ends after transition ``[t, e]``
        (terminal or truncated). All False for data without episode-end information.
      insert_pos: int32 []; the row the next step is written to, in [0, C).
      size: int32 []; number of valid rows per env, in [0, C]. Rows [0, size) are valid
        (all envs are added together, so every env holds the same number of rows).
        Chronologically, the oldest valid row is ``(insert_pos - size) mod C`` and the
        newest is ``(insert_pos - 1) mod C``.
    """

    data: Any
    episode_end: Array
    insert_pos: Array
    size: Array



class BufferFileError(ReplayBufferError):
    """A saved buffer file is corrupt, not a buffer file, or does not match the buffer."""
