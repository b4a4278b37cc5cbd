"""Planner specs and the planner registry: one frozen dataclass describes each planner.

A *spec* (a ``PlannerSpec`` subclass, e.g. ``CEMConfig``) holds everything that defines a
planner: its ``kind``, its static sizes (horizon, population, iterations, ...) and its
tunable floats (CEM's alpha, MPPI's kappa / beta / sigma, ...). The floats are also the
fields of the spec's ``params_type`` (``CEMParams``, ...), the pytree that ``plan`` takes
and a sweep vmaps over; ``spec.default_params()`` builds it from the spec's same-named
fields, and ``spec.build(objective, low, high, params=None)`` builds the ``Planner``
(``make_planner`` is the same as a function). A spec implements ``build_search``, the
planner of its search space; ``build`` applies the action parameterisation
(``parameterization`` / ``num_knots``, ``mbjax.planners.splines``) around it:

>>> spec = CEMConfig(horizon=20, population=300, alpha=0.2)
>>> planner = make_planner(spec, objective, env.action_low, env.action_high)
>>> planner.default_params == spec.default_params() == CEMParams(alpha=0.2)

The registry maps ``kind`` -> spec class, so configs, presets and the CLI pick planners by
name (``--planner.kind cem``; ``switch_planner`` carries the shared sizes over). A planner
of your own is a spec class in your own file, registered with the decorator:

>>> @register_planner
... @dataclasses.dataclass(frozen=True)
... class MySpec(PlannerSpec):
...     horizon: int = 10
...     temperature: float = 1.0       # a field of MyParams: traced
...     kind: str = spec_kind("mine")  # the registry key
...     params_type = MyParams         # struct.dataclass with ``temperature``
...
...     def build_search(self, objective, action_low, action_high, params=None):
...         return make_my_planner(objective, action_low, action_high, self, params)

A params field that is itself a params struct (``CEMGradientParams.cem``) is filled from
the spec's fields of that struct, so the spec stays flat (``traced_fields`` lists the
leaves: alpha, init_std_scale, min_std, learning_rate for cem_gradient).
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar

import jax.numpy as jnp

from mbjax.planners.base import Objective, Planner, check_bounds, check_positive, planner_advance
from mbjax.planners.proposals import project_proposals
from mbjax.planners.splines import check_parameterization, make_spline
from mbjax.utils.registry import Registry

_PLANNERS: Registry[type] = Registry("planner")


def spec_kind(name: str) -> Any:
    """The ``kind`` field of a spec class: default ``name``, keyword-only (so a spec's
    positional arguments stay its sizes)."""
    return dataclasses.field(default=name, kw_only=True)


def default_kind(spec_cls: type) -> str:
    """The default ``kind`` of a spec class (its registry key)."""
    return spec_cls.__dataclass_fields__["kind"].default


def _is_params_struct(value) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def params_fields(params_type: type) -> tuple[str, ...]:
    """Names of the float leaves of a params struct, nested params structs flattened."""
    names: list[str] = []
    for f in dataclasses.fields(params_type):
        if _is_params_struct(f.default):
            names.extend(params_fields(type(f.default)))
        else:
            names.append(f.name)
    return tuple(names)


def params_from(params_type: type, source) -> Any:
    """``params_type`` with each float leaf read from ``source``'s same-named attribute."""
    values = {}
    for f in dataclasses.fields(params_type):
        if _is_params_struct(f.default):
            values[f.name] = params_from(type(f.default), source)
        else:
            values[f.name] = getattr(source, f.name)
    return params_type(**values)


def traced_fields(spec_cls: type) -> tuple[str, ...]:
    """The spec fields that are traced (vmappable, sweepable): those of ``params_type``."""
    return params_fields(spec_cls.params_type)


@dataclasses.dataclass(frozen=True)
class PlannerSpec:
    """Base of all planner specs: ``kind`` (the registry key), ``horizon`` H and the
    action parameterisation.

    Subclasses (frozen dataclasses) add their sizes and the floats of ``params_type``,
    set ``kind = spec_kind(NAME)``, and implement ``build_search`` (``build`` wraps it
    with the action parameterisation); ``check_params`` validates
    a params struct (the spec's own floats are checked through it in ``__post_init__``).

    ``parameterization`` / ``num_knots`` (every spec has them, keyword-only): ``"step"``
    (default) searches one action per step; ``"zero"``, ``"linear"`` or ``"cubic"``
    search K = ``num_knots`` knots (None: K = H) interpolated to the H executed steps
    (``mbjax.planners.splines``). ``make_planner`` applies them to any planner built
    with ``make_sequence_planner``.
    """

    horizon: int = 30
    kind: str = spec_kind("")
    parameterization: str = dataclasses.field(default="step", kw_only=True)
    num_knots: int | None = dataclasses.field(default=None, kw_only=True)
    params_type: ClassVar[type]
    takes_proposals: ClassVar[bool] = True
    """Whether the planner draws a candidate population that policy proposals can join
    (``mbjax.planners.proposals``); False for planners without one (``gradient``)."""

    def __post_init__(self):
        check_positive(horizon=self.horizon)
        check_parameterization(self.parameterization, self.num_knots, self.horizon)
        expected = default_kind(type(self))
        if self.kind != expected:
            raise ValueError(
                f"planner.kind must be {expected!r} for {type(self).__name__}, got "
                f"{self.kind!r}: use --planner.kind {self.kind} to switch planners "
                f"(switch_planner(spec, {self.kind!r}) in Python)")
        self.check_params(self.default_params())

    def default_params(self) -> Any:
        """``params_type`` built from this spec's same-named fields."""
        return params_from(self.params_type, self)

    def check_params(self, params) -> None:
        """Raises ``ValueError`` naming the field of an invalid tunable float."""

    def build(self, objective: Objective, action_low, action_high,
              params: Any = None) -> Planner:
        """The planner of this spec on J over the H executed steps (``params=None``:
        ``default_params()``): ``build_search`` directly, or under a parameterisation
        the knot planner wrapped by ``parameterized`` (see ``make_planner``)."""
        if self.parameterization == "step":
            return self.build_search(objective, action_low, action_high, params)
        return parameterized(self, objective, action_low, action_high, params)

    @abc.abstractmethod
    def build_search(self, objective: Objective, action_low, action_high,
                     params: Any = None) -> Planner:
        """The planner of this spec's search space on J (``params=None``:
        ``default_params()``): H per-step actions, or K knots under a parameterisation,
        where J scores knot sequences (``build`` passes J(W @ knots)). Every subclass
        implements it, usually with ``make_sequence_planner``, whose box has the right
        size and warm-start shift for either space."""


def check_spec_class(spec_cls) -> None:
    """Raises ``TypeError``/``ValueError`` unless ``spec_cls`` is a usable spec class."""
    if not (isinstance(spec_cls, type) and issubclass(spec_cls, PlannerSpec)
            and dataclasses.is_dataclass(spec_cls)):
        raise TypeError(f"a planner spec must be a frozen dataclass subclassing "
                        f"PlannerSpec, got {spec_cls!r}")
    name = spec_cls.__name__
    kind = default_kind(spec_cls)
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"{name} needs a default kind: kind: str = spec_kind('NAME')")
    if spec_cls.build is not PlannerSpec.build:
        raise TypeError(f"{name} overrides build; implement build_search(objective, "
                        "action_low, action_high, params=None) -> Planner instead (build "
                        "applies the action parameterisation around it)")
    if getattr(spec_cls.build_search, "__isabstractmethod__", False):
        raise TypeError(f"{name} defines no build_search(objective, action_low, "
                        "action_high, params=None) -> Planner")
    params_type = getattr(spec_cls, "params_type", None)
    if not dataclasses.is_dataclass(params_type):
        raise TypeError(f"{name}.params_type must be a params struct (a dataclass), got "
                        f"{params_type!r}")
    spec_fields = {f.name for f in dataclasses.fields(spec_cls)}
    for field in traced_fields(spec_cls):
        if field not in spec_fields:
            raise ValueError(f"{name}.params_type ({params_type.__name__}) has field "
                             f"{field!r} that {name} lacks: add `{field}: float = ...` "
                             f"to the spec")


def register_planner(spec_cls: type, replace: bool = False) -> type:
    """Registers a spec class under its default ``kind``; returns it (a class decorator).

    Registering a taken kind is an error unless ``replace``.
    """
    check_spec_class(spec_cls)
    _PLANNERS.register(default_kind(spec_cls), spec_cls, replace=replace)
    return spec_cls


def unregister_planner(kind: str) -> None:
    """Removes ``kind`` from the registry (tests that register their own planners)."""
    _PLANNERS.unregister(kind)


def planner_spec(kind: str) -> type:
    """The spec class registered as ``kind``; unknown kinds raise ``KeyError`` listing the
    registered ones."""
    return _PLANNERS.get(kind)


def planner_kinds() -> list[str]:
    """Registered planner kinds, in registration order."""
    return _PLANNERS.names()


def make_planner(spec: PlannerSpec, objective: Objective, action_low, action_high,
                 params: Any = None) -> Planner:
    """The planner of ``spec`` on J: ``spec.build(objective, action_low, action_high,
    params)`` (``params=None``: ``spec.default_params()``)."""
    return spec.build(objective, action_low, action_high, params)


def parameterized(spec: PlannerSpec, objective: Objective, action_low, action_high,
                  params: Any = None) -> Planner:
    """The planner of a parameterised ``spec`` (``spec.parameterization`` != "step") as a
    planner over the H executed steps.

    ``spec.build_search`` searches K knots on J_K(knots) = J(clip(W @ knots)) (the clip
    only bites for cubic overshoot); ``plan`` returns the first interpolated action with
    ``info["plan"]`` = clip(W @ knots) [H, A] and ``info["knots"]`` [K, A]. The search
    planner's warm starts re-sample its knots in time (its box's ``Spline.shift``), so
    its ``advance`` applies unchanged.
    """
    spline = make_spline(spec.parameterization, spec.num_knots, spec.horizon)
    low, high = check_bounds(action_low, action_high)

    def expand(knots):
        return jnp.clip(spline.expand(knots), low, high)

    def knot_objective(objective_params, obs, knots, key):
        return objective(objective_params, obs, expand(knots), key)

    knot_propose = project_proposals(objective, spline.interpolation, low, high)
    if knot_propose is not None:  # policy proposals, fitted to the knots
        knot_objective.propose = knot_propose

    inner = spec.build_search(knot_objective, low, high, params)
    if inner.horizon != spline.num_knots:
        raise ValueError(
            f"planner {spec.kind!r} does not support parameterization "
            f"{spec.parameterization!r}: it searches {inner.horizon} steps, not "
            f"num_knots = {spline.num_knots}. Build it with "
            "mbjax.planners.make_sequence_planner (which sizes its box by the knots), "
            "or use --planner.parameterization step")

    def plan(params, objective_params, state, obs, key):
        _, state, info = inner.plan(params, objective_params, state, obs, key)
        knots = info["plan"]
        actions = expand(knots)
        return actions[0], state, {**info, "plan": actions, "knots": knots}

    return inner._replace(plan=plan, horizon=spec.horizon, advance=planner_advance(inner))


def carry_over(spec: PlannerSpec, spec_cls: type, **overrides) -> PlannerSpec:
    """A ``spec_cls`` with the values of every field it shares with ``spec`` (horizon,
    population, ...), all but ``kind``, then ``overrides``; the others keep
    ``spec_cls``'s defaults."""
    names = {f.name for f in dataclasses.fields(spec_cls)} - {"kind"}
    shared = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)
              if f.name in names}
    return spec_cls(**{**shared, **overrides})


def switch_planner(spec: PlannerSpec, kind: str) -> PlannerSpec:
    """The registered spec of ``kind`` carrying over ``spec``'s shared fields (what
    ``--planner.kind NAME`` does); ``spec`` itself when it already is of ``kind``."""
    if spec.kind == kind:
        return spec
    return carry_over(spec, planner_spec(kind))
