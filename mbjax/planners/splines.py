"""Action parameterisations: plan over K knots, execute H interpolated steps.

A sampling planner's search space is H x A (a 24-DoF hand over H = 16 steps: 384
dimensions). Planning over K < H knots instead, and interpolating them to the H executed
steps, shrinks it to K x A (4 knots: 96) while keeping the sequences smooth — the action
parameterisation of hydrax (Kurtz et al. 2024, ``hydrax.alg_base.SamplingBasedController``,
"plan_horizon" / "num_knots" / "spline_type"), DIAL-MPC and judo.

Knots sit at evenly spaced times tau_j = j (H - 1) / (K - 1), j < K (K = 1: tau_0 = 0, a
constant sequence). Every interpolation here is linear in the knots, so it is a fixed
matrix computed once in numpy:

    actions [H, A] = W [H, K] @ knots [K, A],     W[t, j] = b_j(t)

with the basis b_j of the parameterisation:
  * ``"zero"``   zero-order hold: a_t = knot_j for tau_j <= t < tau_{j+1};
  * ``"linear"`` piecewise linear through the knots (hat functions);
  * ``"cubic"``  the natural cubic spline through the knots (C2, zero second derivative
    at both ends; K = 2 gives the straight line).
K = H with ``"zero"`` (or ``"linear"``) is the identity: the plain per-step planner.

**Warm start.** After s executed steps the plan's curve should be re-sampled at the
knots' times shifted by s, not shifted by one knot: the new knot j is the old curve at
tau_j + s,

    knots' [K, A] = R_s [K, K] @ knots + m_s [K] fill [A]

where R_s[j] = b(tau_j + s) for tau_j + s <= tau_{K-1} and m_s[j] = 1 (the planner's fill
value: the middle of the bounds or the repeated last knot) past the end. For K = H and
``"zero"`` this is the plain one-step shift (``mbjax.planners.base.shift``).

``make_planner`` applies a parameterisation to every planner built with
``make_sequence_planner`` (all built-in ones): the planner searches knots on the
objective J_K(knots) = J(W @ knots), and its warm-start shifts use R_s (the
``ActionBox.shift`` of its box). Use it from a config with
``--planner.parameterization cubic --planner.num-knots 4``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from mbjax.types import Array

PARAMETERIZATIONS = ("step", "zero", "linear", "cubic")  # "step": one value per step
_EPS = 1e-9


def knot_times(num_knots: int, horizon: int) -> np.ndarray:
    """tau [K]: evenly spaced knot times over the executed steps 0..H-1 (K = 1: [0])."""
    if num_knots == 1:
        return np.zeros(1)
    return np.arange(num_knots) * (horizon - 1) / (num_knots - 1)


def natural_cubic_second_derivatives(times: np.ndarray) -> np.ndarray:
    """M [K, K]: the natural cubic spline's second derivatives at the knots are M @ y.

    Solves the tridiagonal system h_{j-1} M_{j-1} + 2 (h_{j-1} + h_j) M_j + h_j M_{j+1}
    = 6 ((y_{j+1} - y_j) / h_j - (y_j - y_{j-1}) / h_{j-1}), M_0 = M_{K-1} = 0, for every
    unit vector y = e_i at once.
    """
    k = times.shape[0]
    out = np.zeros((k, k))
    if k < 3:
        return out
    h = np.diff(times)
    lhs = np.zeros((k - 2, k - 2))
    rhs = np.zeros((k - 2, k))
    for row, j in enumerate(range(1, k - 1)):
        lhs[row, row] = 2 * (h[j - 1] + h[j])
        if row > 0:
            lhs[row, row - 1] = h[j - 1]
        if row < k - 3:
            lhs[row, row + 1] = h[j]
        rhs[row, j + 1] += 6 / h[j]
        rhs[row, j] -= 6 / h[j] + 6 / h[j - 1]
        rhs[row, j - 1] += 6 / h[j - 1]
    out[1:-1] = np.linalg.solve(lhs, rhs)
    return out


def basis(kind: str, times: np.ndarray, query: np.ndarray) -> np.ndarray:
    """B [Q, K]: the parameterisation's basis at query times (within [tau_0, tau_{K-1}]),
    so that the curve through knots y [K] takes the values B @ y there."""
    k = times.shape[0]
    q = np.clip(np.asarray(query, np.float64), times[0], times[-1])
    out = np.zeros((q.shape[0], k))
    if k == 1:
        out[:, 0] = 1.0
        return out
    # Segment j holds tau_j <= t < tau_{j+1} (the last segment includes its end).
    seg = np.clip(np.searchsorted(times, q + _EPS, side="right") - 1, 0, k - 2)
    rows = np.arange(q.shape[0])
    if kind == "zero":
        at_end = q >= times[-1] - _EPS
        out[rows, np.where(at_end, k - 1, seg)] = 1.0
        return out
    h = times[seg + 1] - times[seg]
    u = (q - times[seg]) / h  # position within the segment, [0, 1]
    out[rows, seg] += 1.0 - u
    out[rows, seg + 1] += u
    if kind == "linear":
        return out
    if kind != "cubic":
        raise ValueError(f"unknown parameterization {kind!r}; expected one of "
                         f"{PARAMETERIZATIONS[1:]}")
    # Natural cubic: linear part plus the second-derivative correction
    # -h^2/6 (u (1-u)) ((2-u) M_j + (1+u) M_{j+1}).
    second = natural_cubic_second_derivatives(times)
    bump = h**2 / 6.0 * u * (1.0 - u)
    out -= (bump * (2.0 - u))[:, None] * second[seg] + (bump * (1.0 + u))[:, None] * second[seg + 1]
    return out


class Spline(NamedTuple):
    """A parameterisation of H executed steps by K knots (the matrices of the module
    docstring, float32). ``interpolation`` W [H, K]; ``expand`` / ``shift`` apply it."""

    kind: str
    num_knots: int
    horizon: int
    interpolation: np.ndarray  # W [H, K]

    def expand(self, knots: Array) -> Array:
        """Actions [..., H, A] = W @ knots [..., K, A]."""
        return jnp.einsum("hk,...ka->...ha", self.interpolation, knots)

    def shift(self, knots: Array, fill: Array, steps: int = 1) -> Array:
        """Knots [..., K, A] re-sampled ``steps`` (static) executed steps later, ``fill``
        [..., A] past the end: R_s @ knots + m_s fill (module docstring)."""
        if steps == 0:
            return knots
        retime, past_end = retiming(self.kind, self.num_knots, self.horizon, steps)
        moved = jnp.einsum("jk,...ka->...ja", retime, knots)
        return moved + past_end[:, None] * fill[..., None, :]


@functools.lru_cache(maxsize=256)
def retiming(kind: str, num_knots: int, horizon: int, steps: int):
    """(R_s [K, K], m_s [K]) float32 of the module docstring, cached per sizes."""
    times = knot_times(num_knots, horizon)
    shifted = times + steps
    past_end = shifted > times[-1] + _EPS
    retime = basis(kind, times, shifted)
    retime[past_end] = 0.0
    return retime.astype(np.float32), past_end.astype(np.float32)


def check_parameterization(kind: str, num_knots: int | None, horizon: int) -> None:
    """Raises ``ValueError`` naming the field for an unknown kind or a knot count that
    is not in [1, H] ([2, H] for linear / cubic), or knots set without a kind."""
    if kind not in PARAMETERIZATIONS:
        raise ValueError(f"planner.parameterization must be one of {PARAMETERIZATIONS}, "
                         f"got {kind!r}")
    if kind == "step":
        if num_knots is not None:
            raise ValueError(f"planner.num_knots ({num_knots}) needs a parameterization: "
                             "set --planner.parameterization zero, linear or cubic (or "
                             "leave num_knots unset to plan every step)")
        return
    k = horizon if num_knots is None else num_knots
    least = 1 if kind == "zero" else 2
    if not least <= k <= horizon:
        raise ValueError(f"planner.num_knots must be in [{least}, horizon={horizon}] for "
                         f"parameterization {kind!r}, got {k}")


def make_spline(kind: str, num_knots: int | None, horizon: int) -> Spline:
    """The ``Spline`` of ``kind`` with K = ``num_knots`` (None: K = H) over H steps."""
    check_parameterization(kind, num_knots, horizon)
    k = horizon if num_knots is None else num_knots
    times = knot_times(k, horizon)
    w = basis(kind, times, np.arange(horizon, dtype=np.float64)).astype(np.float32)
    return Spline(kind, k, horizon, w)
