"""Replay buffers: fixed-capacity pytrees that ``add``/``sample`` inside ``jit``/``scan``.

>>> import mbjax.buffers as buffers
>>> buffer = buffers.make_replay_buffer(capacity=100_000, num_envs=8)
>>> state = buffer.init(example_transition)
"""

from mbjax.buffers.masked import (
    RolloutBufferState,
    rollout_buffer_add,
    rollout_buffer_init,
    rollout_buffer_sample,
)
from mbjax.buffers.replay import (
    EpisodeEndFn,
    ReplayBuffer,
    as_dataset,
    make_replay_buffer,
    mapping_episode_end,
    no_episode_ends,
    transition_episode_end,
)
from mbjax.buffers.serialization import load, save
from mbjax.buffers.state import BufferFileError, BufferState, ReplayBufferError

__all__ = [
    "BufferFileError", "BufferState", "EpisodeEndFn", "ReplayBuffer", "ReplayBufferError",
    "RolloutBufferState", "as_dataset", "load", "make_replay_buffer", "mapping_episode_end",
    "no_episode_ends", "rollout_buffer_add", "rollout_buffer_init", "rollout_buffer_sample",
    "save", "transition_episode_end",
]
