"""The dynamics-model protocol and the model registry: what agents need of a model.

A model is described by a *spec*, a frozen dataclass subclassing ``ModelSpec`` (the
built-in one is ``EnsembleConfig``, kind "ensemble"), registered by its ``kind`` with a
build function (``register_model(spec_type, build)``); ``build_model(spec, obs_size,
action_size, train_config) -> BuiltModel`` returns the model and its two pure training
functions:

    model.predict(state, obs [B, O], action [B, A]) -> Prediction   (leaves [E, B, ...])
    model.num_members, model.config                                  (E; this spec)
    init(key) -> state
    train(state, data, num_valid, key, learning_rate=None) -> (state, metrics)

``data`` is a ``Transition`` pytree with a fixed leading capacity [C, ...] whose first
``num_valid`` rows are valid (``mbjax.buffers.as_dataset``); ``learning_rate`` may be
traced (sweeps vmap it). ``metrics`` should hold ``model/train_loss`` and, when training
can fail on bad data, ``model/data_nonfinite`` (``raise_if_failed`` reads it). A state
with an ``elites`` field (int32 [K] member indices) tells MBPO which members to roll out
with; without one every member is used. The planners' rollouts
(``mbjax.models.rollout``) read ``config.probabilistic`` (sample s' from
N(mean, std^2)) and ``config.learn_reward`` (reward head instead of ``reward_fn``).

A user registers a new model from their own file (``register_model``) and sets it as a
run's ``model`` field; every agent (MPC, MBPO, distillation) then trains with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from mbjax.types import Array, Metrics, PRNGKey
from mbjax.utils.registry import Registry


class DynamicsModel(Protocol):
    """What rollouts and planners call on a model (``EnsembleModel`` is one)."""

    num_members: int
    config: Any

    def predict(self, state: Any, obs: Array, action: Array) -> Any: ...  # Prediction


class BuiltModel(NamedTuple):
    """A model with its training functions (what a registered build returns)."""

    model: DynamicsModel
    init: Callable[[PRNGKey], Any]
    train: Callable[..., tuple[Any, Metrics]]  # (state, data, num_valid, key, lr=None)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Base of every model spec: the fields rollouts read, plus ``kind``."""

    kind: str = ""
    """Registered model name (``register_model``)."""
    num_members: int = 1
    probabilistic: bool = False
    """Gaussian head: rollouts sample s' ~ N(mean, std^2) (False: the mean)."""
    learn_reward: bool = False
    """A reward head (needed when the task has no reward function of observations)."""
    learn_termination: bool = False

    def __post_init__(self):
        if self.kind in MODELS and not isinstance(self, MODELS.get(self.kind).spec_type):
            raise ValueError(f"model.kind {self.kind!r} belongs to "
                             f"{MODELS.get(self.kind).spec_type.__name__}, not "
                             f"{type(self).__name__}")
        if self.num_members < 1:
            raise ValueError(f"model.num_members must be >= 1, got {self.num_members}")


class ModelEntry(NamedTuple):
    spec_type: type
    build: Callable[..., BuiltModel]  # (spec, obs_size, action_size, train_config)


MODELS: Registry[ModelEntry] = Registry("model")


def register_model(spec_type: type, build: Callable[..., BuiltModel],
                   replace: bool = False) -> None:
    """Registers a ``ModelSpec`` subclass under its default ``kind`` with its
    ``build(spec, obs_size, action_size, train_config) -> BuiltModel``."""
    if not (isinstance(spec_type, type) and issubclass(spec_type, ModelSpec)):
        raise TypeError(f"a model spec must subclass mbjax.models.ModelSpec, got "
                        f"{spec_type!r}")
    kind = next(f.default for f in dataclasses.fields(spec_type) if f.name == "kind")
    if not kind:
        raise ValueError(f"{spec_type.__name__} needs a default kind (its registered name)")
    MODELS.register(kind, ModelEntry(spec_type, build), replace)


def unregister_model(kind: str) -> None:
    MODELS.unregister(kind)


def model_spec(kind: str) -> type:
    """The registered spec class of ``kind`` (an unknown kind lists the registered)."""
    return MODELS.get(kind).spec_type


def switch_model(spec: ModelSpec, kind: str) -> ModelSpec:
    """The registered model spec ``kind`` with the values of every field it shares with
    ``spec`` (num_members, probabilistic, ...) carried over (``--model.kind NAME``)."""
    target = model_spec(kind)
    if isinstance(spec, target):
        return spec
    names = {f.name for f in dataclasses.fields(target) if f.init} - {"kind"}
    return target(**{f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)
                     if f.name in names})


def build_model(spec: ModelSpec, obs_size: int, action_size: int, train_config
                ) -> BuiltModel:
    """The model of any registered spec, with its init / train."""
    return MODELS.get(spec.kind).build(spec, obs_size, action_size, train_config)
