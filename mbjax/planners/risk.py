"""Risk measures over particles or randomised simulators, and the simulators' parameters.

A planner scores a candidate action sequence by one number; when the candidate has M
returns (P particles of a learned ensemble, or M simulators with randomised physical
parameters) a *risk measure* rho turns the M returns R_1..R_M of each candidate into it
(``aggregate``, the last axis is reduced):

* ``"mean"``:     rho(R) = (1/M) sum_m R_m (risk-neutral);
* ``"worst"``:    rho(R) = min_m R_m (robust / worst-case);
* ``"cvar"``:     rho(R) = CVaR_alpha(R), the mean of the worst alpha-fraction of the
  returns (lower tail: returns are rewards, larger is better). With the returns sorted
  ascending, R_(0) <= ... <= R_(M-1), this is the *exact* fractional form

      CVaR_alpha(R) = sum_i w_i R_(i),   w_i = clip(alpha M - i, 0, 1) / (alpha M),

  i.e. the whole of the floor(alpha M) worst returns and the fraction alpha M - floor(alpha M)
  of the next one, normalised: the CVaR of the empirical distribution of the M returns
  (Rockafellar & Uryasev 2000, "Optimization of conditional value-at-risk", J. Risk 2(3);
  the minimisation formula CVaR_alpha = max_z z - E[(z - R)_+] / alpha gives exactly these
  weights). CVaR_1 = mean, and CVaR_alpha = worst for alpha <= 1/M. It is continuous in
  alpha, which may be traced (vmapped over a sweep);
* ``"mean_std"``: rho(R) = mean(R) - k std(R) (population std, ddof = 0; k >= 0 traced),
  the PETS-style risk-averse score (k = 0: the mean).

Planning with a risk measure over domain-randomised simulators follows hydrax's risk-aware
sampling-based MPC (the ``hydrax.risk`` module: ``AverageCost``, ``WorstCase``,
``ConditionalValueAtRisk`` over ``num_randomizations`` MJX models; V. Kurtz, "Hydrax:
sampling-based model predictive control on GPU with JAX and MuJoCo MJX", 2024). Here the
randomised simulators come from ``randomize_params`` (p_m = p_nominal (1 + s U(-1, 1)) per
field) and ``env_with_params`` builds the task env with parameters p_m;
``mbjax.planners.objectives.make_randomized_env_objective`` is the objective.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mbjax.types import Array, PRNGKey

RISK_MEASURES = ("mean", "worst", "cvar", "mean_std")


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_risk(kind: str, alpha: Any = 1.0, std_weight: Any = 0.0) -> None:
    """Raises ValueError unless ``kind`` is one of ``RISK_MEASURES``, ``alpha`` (the CVaR
    level) is in (0, 1] and ``std_weight`` (k of mean - k std) is >= 0. Traced values are
    not checked (only concrete ones can be)."""
    if kind not in RISK_MEASURES:
        raise ValueError(f"unknown risk measure {kind!r}; choose one of "
                         f"{', '.join(RISK_MEASURES)}")
    if _is_concrete(alpha):
        a = np.asarray(alpha)
        if not np.all((a > 0.0) & (a <= 1.0)):
            raise ValueError(f"the CVaR level alpha must be in (0, 1], got {alpha}")
    if _is_concrete(std_weight):
        if not np.all(np.asarray(std_weight) >= 0.0):
            raise ValueError(f"std_weight (k of mean - k std) must be >= 0, got {std_weight}")


def cvar_weights(alpha: Any, m: int) -> Array:
    """The weights w_i = clip(alpha M - i, 0, 1) / (alpha M), i = 0..M-1, of the ascending
    sorted returns in CVaR_alpha (they sum to 1 for alpha in (0, 1])."""
    am = jnp.asarray(alpha, jnp.float32) * m
    return jnp.clip(am - jnp.arange(m, dtype=jnp.float32), 0.0, 1.0) / am


def aggregate(returns: Array, kind: str = "mean", alpha: Any = 1.0,
              std_weight: Any = 0.0) -> Array:
    """rho over the last axis: returns [..., M] -> [...] (see the module docstring).

    Args:
      returns: the M returns per candidate on the last axis.
      kind: one of ``RISK_MEASURES`` (static).
      alpha: CVaR level in (0, 1] for ``"cvar"`` (may be traced; unused otherwise).
      std_weight: k >= 0 of mean - k std for ``"mean_std"`` (may be traced; unused
        otherwise).
    """
    check_risk(kind, alpha, std_weight)
    if kind == "mean":
        return returns.mean(-1)
    if kind == "worst":
        return returns.min(-1)
    if kind == "mean_std":
        return returns.mean(-1) - std_weight * returns.std(-1)
    ordered = jnp.sort(returns, axis=-1)  # ascending: the worst first
    return jnp.sum(ordered * cvar_weights(alpha, returns.shape[-1]), axis=-1)


# ----------------------------------------------------------------------------------------
# Randomised physical parameters
# ----------------------------------------------------------------------------------------


def param_fields(params) -> dict[str, Any]:
    """The named fields of a parameter dataclass (e.g. ``PendulumParams``) or dict."""
    if isinstance(params, Mapping):
        return dict(params)
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        return {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
    raise TypeError(f"parameters must be a dataclass (e.g. PendulumParams) or a dict, got "
                    f"{type(params).__name__}")


def replace_params(params, updates: Mapping[str, Any]):
    """``params`` with the fields in ``updates`` replaced (dataclass or dict)."""
    if isinstance(params, Mapping):
        return {**params, **updates}
    return dataclasses.replace(params, **updates)


def _is_float(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return True
    dtype = getattr(value, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jnp.floating)


def float_fields(params) -> tuple[str, ...]:
    """The names of the floating-point fields of ``params`` (what is randomised)."""
    return tuple(n for n, v in param_fields(params).items() if _is_float(v))


def randomize_params(nominal, num: int, scale: float, key: PRNGKey,
                     fields: Sequence[str] | None = None) -> dict[str, Array]:
    """M = ``num`` draws p_m = p_nominal (1 + scale u), u ~ U(-1, 1) independent per field
    and draw, of the fields ``fields`` (default: every float field) of ``nominal``.

    Returns {field: [M, *shape]} (the other fields keep their nominal value; rebuild draw m
    with ``replace_params(nominal, {f: v[m] ...})``). A zero nominal value stays zero.
    ``scale`` in [0, 1) keeps every parameter's sign.
    """
    if num < 1:
        raise ValueError(f"the number of randomised simulators must be >= 1, got {num}")
    if not 0.0 <= scale < 1.0:
        raise ValueError(f"the randomisation scale (relative half-width) must be in [0, 1), "
                         f"got {scale}")
    values = param_fields(nominal)
    names = float_fields(nominal) if fields is None else tuple(fields)
    if not names:
        raise ValueError(f"{type(nominal).__name__} has no float fields to randomise")
    for name in names:
        if name not in values:
            raise ValueError(f"unknown parameter field {name!r}; {type(nominal).__name__} has "
                             f"{', '.join(values)}")
        if not _is_float(values[name]):
            raise ValueError(f"parameter field {name!r} is not a float "
                             f"({type(values[name]).__name__}); only float fields are "
                             "randomised")
    keys = jax.random.split(key, len(names))
    out = {}
    for k, name in zip(keys, names):
        p = jnp.asarray(values[name], jnp.float32)
        u = jax.random.uniform(k, (num,) + p.shape, minval=-1.0, maxval=1.0)
        out[name] = p * (1.0 + scale * u)
    return out


def _children(obj) -> list[tuple[str, Any]]:
    from mbjax.envs.base import Env

    return [(n, v) for n, v in vars(obj).items() if isinstance(v, Env)]


def _holder_path(env) -> list[str] | None:
    """Attribute names from ``env`` down to the env object whose own ``params`` are its
    physical parameters (through wrappers' ``env`` and composites such as a pixel env's
    ``pendulum``), or None if there is none."""
    if "params" in vars(env):
        return []
    for name, child in _children(env):
        path = _holder_path(child)
        if path is not None:
            return [name] + path
    return None


def physical_params(env):
    """The physical-parameter pytree the env simulates with (e.g. ``PendulumParams`` of a
    ``Pendulum``, also under wrappers such as ``ActionRepeat``), or None if it has none
    (e.g. brax / MJX envs)."""
    path = _holder_path(env)
    if path is None:
        return None
    obj = env
    for name in path:
        obj = getattr(obj, name)
    return obj.params


def env_with_params(env, params):
    """A shallow copy of ``env`` (and of each wrapper down to the parameter holder) that
    simulates with ``params``; ``env`` is unchanged. ``params`` may be traced (the env is
    built inside the ``vmap`` over simulators)."""
    path = _holder_path(env)
    if path is None:
        raise ValueError(f"{getattr(env, 'name', type(env).__name__)} has no physical "
                         "parameters (`params`) to replace")

    def rebuild(obj, rest):
        new = copy.copy(obj)
        if not rest:
            new.params = params
        else:
            setattr(new, rest[0], rebuild(getattr(obj, rest[0]), rest[1:]))
        return new

    return rebuild(env, path)
