"""Environments: the ``Env`` API, a registry, wrappers and the built-in tasks.

>>> import mbjax.envs as envs
>>> env = envs.make("pendulum")
>>> envs.names()  # doctest: +ELLIPSIS
[...]
"""

from mbjax.envs import classic
from mbjax.envs.acting import Policy, rollout, transition, uniform_random_policy
from mbjax.envs.base import (
    Env,
    EnvError,
    RewardFnUnavailableError,
    State,
    checked,
    validate_action,
)
from mbjax.envs.registry import describe, make, names, override_keys, register
from mbjax.envs.wrappers import (
    ActionRepeat,
    EpisodeWrapper,
    ObservationExtension,
    VmapWrapper,
    Wrapper,
    wrap_for_training,
)

register("pendulum", classic.Pendulum, "pure-JAX pendulum swing-up (Gymnasium Pendulum-v1)")
register(
    "cartpole_swingup",
    classic.CartpoleSwingup,
    "pure-JAX continuous cart-pole swing-up (PETS reward)",
)

from mbjax.envs import pixel as _pixel  # noqa: E402

register("pixel_pendulum", _pixel.PixelPendulum,
         "pendulum swing-up seen through two stacked 32x32 frames (reward not in pixels)")

from mbjax.envs import brax_envs as _brax_envs  # noqa: E402, F401  (registers the brax tasks)

__all__ = [
    "ActionRepeat", "Env", "EnvError", "EpisodeWrapper", "ObservationExtension", "Policy",
    "RewardFnUnavailableError", "State", "VmapWrapper", "Wrapper", "checked", "describe",
    "make", "names", "override_keys", "register", "rollout", "transition",
    "uniform_random_policy", "validate_action", "wrap_for_training",
]
from mbjax.envs import hand as _hand  # noqa: E402, F401  (registers the hand tasks)
