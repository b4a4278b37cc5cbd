"""Environment registry: ``make(name, **overrides)`` and ``names()``.

Each entry maps a name to a factory (usually the env class). Overrides are the
factory's keyword arguments; an unknown name or key raises an error listing the
valid ones.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable

from mbjax.envs.base import Env

_REGISTRY: dict[str, Callable[..., Env]] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register(name: str, factory: Callable[..., Env], description: str = "") -> None:
    """Registers ``factory`` (returns an ``Env``) under ``name``; names are unique."""
    if name in _REGISTRY:
        raise ValueError(f"environment {name!r} is already registered")
    _REGISTRY[name] = factory
    _DESCRIPTIONS[name] = description


def names() -> list[str]:
    """Sorted names of all registered environments (``playground/<Name>`` not listed)."""
    return sorted(_REGISTRY)


def describe() -> dict[str, str]:
    """Name -> one-line description of each registered environment."""
    return {n: _DESCRIPTIONS[n] for n in names()}


def override_keys(name: str) -> list[str]:
    """Keyword arguments accepted by ``make(name, ...)``."""
    factory = _lookup(name)
    params = inspect.signature(factory).parameters.values()
    return [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def signature_passing_options(init: Callable, inner: Callable) -> inspect.Signature:
    """The signature of a constructor ``init(self, ..., **options)`` that passes
    ``options`` on to ``inner``: init's named parameters, then inner's as keyword-only.

    Set it as the class's ``__signature__`` so that ``make`` and ``override_keys`` see
    every option, the inner ones included.
    """
    own = list(inspect.signature(init).parameters.values())[1:]  # without self
    own = [p for p in own if p.kind is not p.VAR_KEYWORD]
    passed = inspect.signature(inner).parameters.values()
    return inspect.Signature(own + [p.replace(kind=p.KEYWORD_ONLY) for p in passed])


def _lookup(name: str) -> Callable[..., Env]:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.startswith("playground/"):
        from mbjax.envs.playground import make_playground_factory

        return make_playground_factory(name.removeprefix("playground/"))
    close = difflib.get_close_matches(name, names(), n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise KeyError(
        f"unknown environment {name!r}.{hint} Valid names: {', '.join(names())}, "
        "or 'playground/<EnvName>' for a MuJoCo Playground env (extra 'playground')."
    )


def make(name: str, **overrides) -> Env:
    """Creates the environment ``name`` with keyword ``overrides`` of its defaults.

    Example: ``make("pendulum", max_torque=1.0)``.
    """
    factory = _lookup(name)
    valid = override_keys(name)
    bad = [k for k in overrides if k not in valid]
    if bad:
        raise TypeError(
            f"environment {name!r} has no option(s) {', '.join(map(repr, bad))}; "
            f"valid options: {', '.join(valid) or '(none)'}"
        )
    return factory(**overrides)
