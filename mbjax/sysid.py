"""System identification: fit the unknown physical parameters of a simulator to data.

(A module above ``mbjax.models`` and ``mbjax.planners``: it uses the true simulator as a
model and the planners' CEM as a search, so it lives over both.)

Given a parametrised simulator x' = f_p(x, a) (``dynamics_fn(params, x, action)``, e.g.
``Pendulum.dynamics`` / ``CartpoleSwingup.dynamics`` with ``PendulumParams`` /
``CartpoleParams``) and transitions (x_i, a_i, x'_i), i = 1..N, of the real system, find

    p* = argmin_p  L(p),   L(p) = 1/(N K S) sum_i sum_k sum_d (r_ikd / sigma_d)^2,

where r_ik = f_p^(k)(x_i, a_i1..a_ik) - x'_ik is the error of the k-step open-loop
prediction (K = 1: the one-step error), wrapped into [-pi, pi) on ``angle_dims``, and
sigma_d is the standard deviation of the one-step change of state dimension d in the data
(``normalize=True``), so that every dimension counts equally whatever its units.

* :func:`fit_parameters` minimises L by gradient descent through the simulator (Adam
  with a cosine-decayed step size, in ``lax.scan``; jit-able).
* :func:`fit_parameters_cem` minimises L with the planners' cross-entropy method
  (``mbjax.planners.make_cem`` over a one-step "action sequence" of parameters): the
  fallback where gradients are useless (contacts, clipping, discontinuities, or a
  non-differentiable simulator). It needs only loss evaluations but scales poorly with
  the number of parameters.

Parameters are a dataclass (``flax.struct.dataclass`` such as ``PendulumParams``) or a
dict of arrays. ``free`` selects the fitted fields; the others stay at their value in
``init_params`` (known quantities such as gravity). Free fields are optimised in log
space, p = exp(theta), so masses and lengths stay positive and steps are relative; list
fields that may be zero or negative in ``linear``. A log-space field must start > 0.

Data: :func:`collect_trajectories` runs the real env with random actions (no resets in
the middle) and records the simulator state before and after every step;
:func:`one_step_data` / :func:`multi_step_data` cut it into (x, a, x') arrays.
:func:`report` compares fitted with true values (relative errors).

MJX / brax models: ``dynamics_fn`` may be any pure function, e.g. one that writes the
parameter into the MJX model (``sys.replace(body_mass=sys.body_mass.at[i].set(m))``) and
runs brax's pipeline for one control step from x = [q, qd]. Checked by hand on brax's
``inverted_pendulum`` (pole mass, 256 transitions, start 40 % off): CEM recovered it to a
relative error of 3e-5; gradient descent also works (9e-5), but only with
``opt.iterations = 1``, because MJX's constraint solver is a ``lax.while_loop``, which
reverse-mode autodiff rejects (``fit_parameters`` then raises and points to CEM).
Compiling either fit takes 1.5-3 minutes on a 2-core CPU, so there is no MJX test or helper
yet (future work).

Identifiability (what one-step data can and cannot determine):

* **Pendulum** (``PendulumParams``): the only parameter-dependent part of a step is the
  angular acceleration  theta_dd = (3 g / (2 l)) sin(theta) + (3 / (m l^2)) u
  - (3 b / (m l^2)) theta_dot.  Data with varied theta, theta_dot and u determine exactly
  the three coefficients  g / l,  m l^2  and  b  (b = ratio of the last two). With
  **gravity known** (fixed), (g/l, m l^2, b) -> (l, m, b) is one-to-one, so mass, length
  and damping are all identifiable. With gravity free too, the four parameters are NOT
  separately identifiable: any (c g, c l, m / c^2, b) for c > 0 fits every transition
  exactly; only g / l, m l^2 and b are recovered. Multi-step data do not change this
  (the rollout is the same map iterated). Steps where theta_dot hits the +-max_speed clip
  carry no gradient (and no information) about the parameters. The damping b = 0 of the
  default pendulum is a boundary value: fit it with ``linear=("damping",)``.
* **Cart-pole swing-up** (``CartpoleParams``, uniform rod): the equations of motion are
  (m_c + m_p) x_dd + (m_p l / 2)(cos(theta) theta_dd - sin(theta) theta_dot^2) = F - b x_dot
  and  cos(theta) x_dd + (2 l / 3) theta_dd = g sin(theta).
  The second determines l / g, the first (with the known force F) m_c + m_p, m_p l and b.
  With **gravity known**, cart_mass, pole_mass, pole_length and cart_friction are all
  identifiable from one-step transitions, provided the forces vary (F sets the mass
  scale; without it only ratios of the masses and friction are determined), the cart
  moves (x_dot != 0, for b) and the pole is not at rest exactly hanging or upright
  (theta_dd != 0 and x_dd != 0, for l and m_p). Random actions from the hanging start
  satisfy all three. With gravity free, only l / g is determined from the second
  equation; g, and with it l, is not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.flatten_util import ravel_pytree

from mbjax.envs.acting import Policy, uniform_random_policy
from mbjax.envs.base import Env, State
from mbjax.envs.classic import angle_normalize
from mbjax.planners import CEMConfig, CEMParams, make_cem
from mbjax.planners.risk import param_fields, replace_params
from mbjax.types import Array, PRNGKey

#: dynamics_fn(params, x [S], action [A]) -> x' [S], for ONE transition.
DynamicsFn = Callable[[Any, Array, Array], Array]


# ----------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------


def _as_name_tuple(value, field: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        raise ValueError(f"{field} must be a tuple of field names, got the string {value!r}; "
                         f"write ({value!r},)")
    names = tuple(value)
    if not all(isinstance(n, str) for n in names):
        raise ValueError(f"{field} must contain field names (str), got {value!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"{field} lists a field twice: {value!r}")
    return names


@dataclasses.dataclass(frozen=True)
class _FitSpec:
    """What is fitted and how the loss is measured (shared by both optimisers)."""

    #: Names of the fitted fields; None = every field of ``init_params``.
    free: tuple[str, ...] | None = None
    #: Free fields optimised as they are (may be <= 0), not in log space.
    linear: tuple[str, ...] = ()
    #: False: every free field is optimised linearly.
    log_space: bool = True
    #: State dimensions that are angles: residuals are wrapped into [-pi, pi).
    angle_dims: tuple[int, ...] = ()
    #: Divide residuals by the per-dimension std of the one-step state change in the data.
    normalize: bool = True

    def __post_init__(self):
        object.__setattr__(self, "free", _as_name_tuple(self.free, "free"))
        object.__setattr__(self, "linear", _as_name_tuple(self.linear, "linear"))
        if self.free is not None and not self.free:
            raise ValueError("free is empty: name at least one field to fit (or None for all)")
        if self.free is not None:
            stray = [n for n in self.linear if n not in self.free]
            if stray:
                raise ValueError(f"linear names fields that are not free: {stray}; "
                                 f"free = {self.free}")
        dims = tuple(self.angle_dims)
        if not all(isinstance(d, (int, np.integer)) for d in dims):
            raise ValueError(f"angle_dims must be integers, got {self.angle_dims!r}")
        object.__setattr__(self, "angle_dims", tuple(int(d) for d in dims))


@dataclasses.dataclass(frozen=True)
class SysIdConfig(_FitSpec):
    """Gradient-descent system identification (:func:`fit_parameters`).

    Attributes (besides ``free``, ``linear``, ``log_space``, ``angle_dims``,
    ``normalize``, see the module docstring):
      num_steps: Adam steps.
      learning_rate: initial step size; in log space 0.05 means ~5 % per step at most.
      final_lr_fraction: the step size decays (cosine) to this fraction of the initial one,
        which lets Adam settle instead of oscillating around the optimum.
      batch_size: None (default) = full-batch gradients; else random minibatches of this
        many transitions per step (needs a ``key``).
    """

    num_steps: int = 500
    learning_rate: float = 0.05
    final_lr_fraction: float = 0.01
    batch_size: int | None = None

    def __post_init__(self):
        super().__post_init__()
        if int(self.num_steps) != self.num_steps or self.num_steps < 1:
            raise ValueError(f"num_steps must be an integer >= 1, got {self.num_steps}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0.0 <= self.final_lr_fraction <= 1.0:
            raise ValueError(f"final_lr_fraction must be in [0, 1], got "
                             f"{self.final_lr_fraction}")
        if self.batch_size is not None and (int(self.batch_size) != self.batch_size
                                            or self.batch_size < 1):
            raise ValueError(f"batch_size must be None or an integer >= 1, got "
                             f"{self.batch_size}")


@dataclasses.dataclass(frozen=True)
class CEMSysIdConfig(_FitSpec):
    """Cross-entropy-method system identification (:func:`fit_parameters_cem`).

    Attributes (besides the shared ``free``, ``linear``, ``log_space``, ``angle_dims``,
    ``normalize``):
      population: candidate parameter vectors per iteration.
      num_elites: the best candidates the Gaussian is refitted to.
      iterations: CEM iterations.
      init_std: initial std sigma_0 of the Gaussian; in log space it is relative
        (0.5 ~ +-50 %), for a linear field it is multiplied by max(|initial value|, 1).
      min_std: the search stops once every std is below this (units of ``init_std``).
      smoothing: alpha in  mu <- alpha mu + (1 - alpha) mean(elites)  (and the variance).
      search_radius: candidates stay in theta_0 +- search_radius sigma_0 (CEM searches a
        box); >= 2, so the initial std fits in it.
    """

    population: int = 64
    num_elites: int = 8
    iterations: int = 40
    init_std: float = 0.5
    min_std: float = 1e-4
    smoothing: float = 0.5
    search_radius: float = 6.0

    def __post_init__(self):
        super().__post_init__()
        for name in ("population", "num_elites", "iterations"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value}")
        if self.num_elites < 2:
            raise ValueError(f"num_elites must be >= 2 to estimate a std, got {self.num_elites}")
        if not self.init_std > 0 or not self.min_std >= 0:
            raise ValueError(f"init_std must be > 0 and min_std >= 0, got {self.init_std}, "
                             f"{self.min_std}")
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing}")
        if not self.search_radius >= 2.0:
            raise ValueError(f"search_radius must be >= 2 (initial stds), got "
                             f"{self.search_radius}")
        self.planner_settings()  # CEMConfig checks population and num_elites

    def planner_settings(self) -> tuple[CEMConfig, CEMParams]:
        """The planners' CEM over z = (theta - theta_0) / sigma_0 in [-R, R]^P, R =
        ``search_radius``: horizon 1, and std0 = init_std_scale (2 R) / 4 = 1."""
        return (CEMConfig(horizon=1, population=self.population, num_elites=self.num_elites,
                          iterations=self.iterations),
                CEMParams(alpha=self.smoothing, init_std_scale=2.0 / self.search_radius,
                          min_std=self.min_std / self.init_std))


# ----------------------------------------------------------------------------------------
# Parameter pytrees <-> the optimised vector theta
# ----------------------------------------------------------------------------------------


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


@dataclasses.dataclass(frozen=True)
class _Space:
    """The free fields and their transform p = exp(theta) (log) or p = theta (linear)."""

    names: tuple[str, ...]
    log: tuple[bool, ...]

    def to_theta(self, params) -> dict[str, Array]:
        fields = param_fields(params)
        out = {}
        for name, is_log in zip(self.names, self.log):
            value = jnp.asarray(fields[name], dtype=float)
            out[name] = jnp.log(value) if is_log else value
        return out

    def to_params(self, init_params, theta: dict[str, Array]):
        values = {n: (jnp.exp(theta[n]) if is_log else theta[n])
                  for n, is_log in zip(self.names, self.log)}
        return replace_params(init_params, values)


def _make_space(init_params, spec: _FitSpec) -> _Space:
    fields = param_fields(init_params)
    valid = ", ".join(fields)
    free = spec.free if spec.free is not None else tuple(fields)
    for field_name, names in (("free", free), ("linear", spec.linear)):
        unknown = [n for n in names if n not in fields]
        if unknown:
            raise ValueError(f"{field_name} names unknown parameter(s) {unknown}; the "
                             f"parameters of {type(init_params).__name__} are: {valid}")
    log = tuple(spec.log_space and n not in spec.linear for n in free)
    for name, is_log in zip(free, log):
        value = fields[name]
        try:
            arr = jnp.asarray(value)
        except TypeError:
            raise ValueError(f"parameter {name!r} is not numeric ({type(value).__name__}) "
                             "and cannot be fitted") from None
        if not jnp.issubdtype(arr.dtype, jnp.number):
            raise ValueError(f"parameter {name!r} has dtype {arr.dtype} and cannot be fitted")
        if is_log and _is_concrete(arr) and not np.all(np.asarray(arr) > 0):
            raise ValueError(
                f"parameter {name!r} starts at {np.asarray(arr)}, but log-space fitting "
                f"needs a value > 0; start it at a positive guess or list it in "
                f"linear=({name!r},) to fit it without the log transform")
    return _Space(names=free, log=log)


# ----------------------------------------------------------------------------------------
# Data and loss
# ----------------------------------------------------------------------------------------


def _check_finite(name: str, x: Array) -> None:
    if not _is_concrete(x):
        return
    arr = np.asarray(x)
    ok = np.isfinite(arr.reshape(arr.shape[0], -1)).all(-1)
    if not ok.all():
        raise ValueError(f"{name} contains NaN or inf (first at row {int(np.argmin(ok))} of "
                         f"{arr.shape[0]}); remove or fix those transitions")


def _prepare_data(states, actions, next_states) -> tuple[Array, Array, Array]:
    """Checks shapes / finiteness; returns states [N, S], actions [N, K, A],
    next_states [N, K, S] (K = 1 for one-step data)."""
    states, actions, next_states = (jnp.asarray(x) for x in (states, actions, next_states))
    if states.ndim != 2:
        raise ValueError(f"states must have shape (N, S), got {states.shape}")
    if actions.ndim == 2 and next_states.ndim == 2:
        actions, next_states = actions[:, None], next_states[:, None]
    elif not (actions.ndim == 3 and next_states.ndim == 3):
        raise ValueError(
            f"expected one-step data actions (N, A), next_states (N, S) or multi-step data "
            f"actions (N, K, A), next_states (N, K, S); got actions {actions.shape} and "
            f"next_states {next_states.shape}")
    n = states.shape[0]
    if actions.shape[0] != n or next_states.shape[0] != n:
        raise ValueError(
            f"the number of transitions N differs: states has {n} rows, actions "
            f"{actions.shape[0]}, next_states {next_states.shape[0]}")
    if n < 1:
        raise ValueError("no transitions (N = 0)")
    if next_states.shape[2] != states.shape[1]:
        raise ValueError(f"states have {states.shape[1]} dimensions but next_states "
                         f"{next_states.shape[2]}")
    if actions.shape[1] != next_states.shape[1]:
        raise ValueError(f"multi-step data: actions cover {actions.shape[1]} steps but "
                         f"next_states {next_states.shape[1]}")
    for name, x in (("states", states), ("actions", actions), ("next_states", next_states)):
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"{name} must be floating point, got {x.dtype}")
        _check_finite(name, x)
    return states, actions, next_states


def _check_dynamics(dynamics_fn: DynamicsFn, init_params, states, actions) -> None:
    out = jax.eval_shape(dynamics_fn, init_params, states[0], actions[0, 0])
    shape = getattr(out, "shape", None)
    if shape != states.shape[1:]:
        raise ValueError(f"dynamics_fn(params, x, action) returned shape {shape} for a state "
                         f"of shape {states.shape[1:]}; it must map ONE state to the next")


def _residual(pred: Array, target: Array, angle_dims: tuple[int, ...]) -> Array:
    r = pred - target
    if angle_dims:
        dims = jnp.asarray(angle_dims)
        r = r.at[..., dims].set(angle_normalize(r[..., dims]))
    return r


def _scale(states, next_states, spec: _FitSpec) -> Array:
    """sigma_d: std of the one-step change of each state dimension, floored."""
    s = states.shape[-1]
    if not spec.normalize:
        return jnp.ones(s, states.dtype)
    prev = jnp.concatenate([states[:, None], next_states[:, :-1]], axis=1)
    delta = _residual(next_states, prev, spec.angle_dims).reshape(-1, s)
    std = jnp.std(delta, axis=0)
    return jnp.maximum(std, jnp.maximum(1e-3 * jnp.max(std), 1e-12))


def _make_loss(dynamics_fn: DynamicsFn, space: _Space, init_params, spec: _FitSpec,
               states, actions, next_states):
    """loss(theta, rows=None) -> L on all transitions, or on the given rows [B]."""
    scale = _scale(states, next_states, spec)
    step = jax.vmap(dynamics_fn, in_axes=(None, 0, 0))

    def loss(theta, rows=None):
        params = space.to_params(init_params, theta)
        s, a, ns = states, actions, next_states
        if rows is not None:
            s, a, ns = s[rows], a[rows], ns[rows]

        def body(x, a_k):
            x = step(params, x, a_k)
            return x, x

        _, pred = jax.lax.scan(body, s, a.swapaxes(0, 1))  # [K, N, S]
        r = _residual(pred.swapaxes(0, 1), ns, spec.angle_dims) / scale
        return jnp.mean(jnp.square(r))

    return loss


def _setup(dynamics_fn, init_params, states, actions, next_states, config, config_type):
    """Checks config (None: ``config_type()``), fields, data and simulator of one fit.

    Returns:
      (config, space, theta_0, N, data_ok (all data finite), loss(theta, rows=None)).
    """
    spec = config if config is not None else config_type()
    if not isinstance(spec, config_type):
        raise TypeError(f"config must be a {config_type.__name__}, got {type(spec).__name__}")
    space = _make_space(init_params, spec)
    states, actions, next_states = _prepare_data(states, actions, next_states)
    for d in spec.angle_dims:
        if not -states.shape[1] <= d < states.shape[1]:
            raise ValueError(f"angle_dims entry {d} is out of range for states with "
                             f"{states.shape[1]} dimensions")
    _check_dynamics(dynamics_fn, init_params, states, actions)
    data_ok = jnp.all(jnp.array([jnp.all(jnp.isfinite(x))
                                 for x in (states, actions, next_states)]))
    loss = _make_loss(dynamics_fn, space, init_params, spec, states, actions, next_states)
    return spec, space, space.to_theta(init_params), states.shape[0], data_ok, loss


# ----------------------------------------------------------------------------------------
# Gradient descent
# ----------------------------------------------------------------------------------------


def fit_parameters(
    dynamics_fn: DynamicsFn,
    init_params,
    states: Array,
    actions: Array,
    next_states: Array,
    config: SysIdConfig | None = None,
    key: PRNGKey | None = None,
):
    """Fits the free physical parameters by gradient descent through the simulator.

    Minimises L(p) (module docstring) over theta (p = exp(theta) for log-space fields)
    with Adam, step size lr_t = cosine decay from ``learning_rate`` to
    ``final_lr_fraction * learning_rate`` over ``num_steps`` steps, in one ``lax.scan``.
    Steps whose loss or gradient is NaN/inf are skipped (and reported).

    Shape checks, unknown field names and (for concrete inputs) NaN/inf data raise
    ``ValueError`` at call time; the function is pure and can be wrapped in ``jax.jit``
    (then non-finite data show up as ``info["data_nonfinite"]`` instead).

    Args:
      dynamics_fn: (params, x [S], action [A]) -> x' [S] for one transition, e.g.
        ``env.dynamics`` of ``Pendulum`` / ``CartpoleSwingup``.
      init_params: initial guess; fixed fields keep these values.
      states: [N, S] simulator states x_i.
      actions: [N, A] (one-step) or [N, K, A] (K-step open-loop sequences).
      next_states: [N, S] (one-step) or [N, K, S] (states after each of the K steps).
      config: ``SysIdConfig`` (defaults: all fields free, log space, 500 full-batch steps).
      key: PRNG key, needed only with ``config.batch_size`` (minibatches).

    Returns:
      (params, info): the fitted parameters (same type as ``init_params``) and a dict with
      ``loss_history`` [num_steps] (loss before each step, on the step's batch),
      ``initial_loss`` and ``final_loss`` (all transitions), ``data_nonfinite`` and
      ``loss_nonfinite`` (bool: some steps were skipped).
    """
    cfg, space, theta0, n, data_ok, loss_fn = _setup(
        dynamics_fn, init_params, states, actions, next_states, config, SysIdConfig)
    minibatch = cfg.batch_size is not None and cfg.batch_size < n
    if minibatch and key is None:
        raise ValueError("config.batch_size < N draws random minibatches: pass a PRNG key")
    schedule = optax.cosine_decay_schedule(cfg.learning_rate, cfg.num_steps,
                                           alpha=cfg.final_lr_fraction)
    optimizer = optax.adam(schedule)
    grad_fn = jax.value_and_grad(loss_fn)
    keys = (jax.random.split(key, cfg.num_steps) if minibatch
            else jnp.zeros((cfg.num_steps, 0), jnp.uint32))

    def step(carry, k):
        theta, opt_state, bad = carry
        rows = jax.random.randint(k, (cfg.batch_size,), 0, n) if minibatch else None
        loss, grads = grad_fn(theta, rows)
        finite = jnp.isfinite(loss) & jnp.all(jnp.array(
            [jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grads)]))
        finite = finite & data_ok
        updates, new_opt = optimizer.update(grads, opt_state, theta)
        new_theta = optax.apply_updates(theta, updates)
        keep = lambda new, old: jnp.where(finite, new, old)
        theta = jax.tree_util.tree_map(keep, new_theta, theta)
        opt_state = jax.tree_util.tree_map(keep, new_opt, opt_state)
        return (theta, opt_state, bad | ~finite), loss

    try:
        (theta, _, bad), history = jax.lax.scan(
            step, (theta0, optimizer.init(theta0), jnp.array(False)), keys)
    except ValueError as err:
        if "Reverse-mode differentiation" not in str(err):
            raise
        raise ValueError(
            "dynamics_fn cannot be differentiated in reverse mode (it contains a "
            "lax.while_loop, e.g. MJX's constraint solver); use fit_parameters_cem, or make "
            "the simulator differentiable (MJX: model.opt.iterations = 1)") from err
    info = {
        "loss_history": history,
        "initial_loss": loss_fn(theta0),
        "final_loss": loss_fn(theta),
        "data_nonfinite": ~data_ok,
        "loss_nonfinite": bad & data_ok,
    }
    return space.to_params(init_params, theta), info


# ----------------------------------------------------------------------------------------
# Cross-entropy method
# ----------------------------------------------------------------------------------------


def fit_parameters_cem(
    dynamics_fn: DynamicsFn,
    init_params,
    states: Array,
    actions: Array,
    next_states: Array,
    config: CEMSysIdConfig | None,
    key: PRNGKey,
):
    """Fits the free physical parameters with the cross-entropy method (no gradients).

    The planners' CEM (``mbjax.planners.make_cem``, see ``mbjax.planners.cem``) over
    z = (theta - theta_0) / sigma_0 [P] (theta_0 = theta(init_params), sigma_0 from
    ``init_std``) as a one-step action sequence [1, P] in the box [-R, R]^P, R =
    ``search_radius``, maximising J(z) = -L(theta_0 + sigma_0 z) (NaN/inf: the worst).
    From mu = 0, std 1, it refits the Gaussian to the ``num_elites`` best of
    ``population`` candidates ``iterations`` times (smoothing alpha), stopping once every
    std < ``min_std``; the fit is the final mean. Same data conventions and errors as
    :func:`fit_parameters`; cost ~ iterations x population loss evaluations.

    Args:
      dynamics_fn, init_params, states, actions, next_states: as ``fit_parameters``.
      config: ``CEMSysIdConfig`` (None: defaults).
      key: PRNG key for the samples.

    Returns:
      (params, info): fitted parameters (``init_params`` where the data are not finite)
      and a dict with ``initial_loss``, ``final_loss``, ``best_loss`` (the lowest L of
      any candidate), ``num_nonfinite`` (candidates whose loss was NaN/inf) and
      ``data_nonfinite``.
    """
    if key is None:
        raise ValueError("fit_parameters_cem needs a PRNG key")
    cfg, space, theta0, _, data_ok, loss_fn = _setup(
        dynamics_fn, init_params, states, actions, next_states, config, CEMSysIdConfig)
    flat0, unravel = ravel_pytree(theta0)
    sigma0 = cfg.init_std * ravel_pytree({n: (jnp.ones_like(theta0[n]) if is_log
                                              else jnp.maximum(jnp.abs(theta0[n]), 1.0))
                                          for n, is_log in zip(space.names, space.log)})[0]
    theta_of = lambda z: unravel(flat0 + sigma0 * z)

    def objective(objective_params, obs, candidates, key):  # candidates [N, 1, P]
        del objective_params, obs, key
        losses = jax.vmap(lambda z: loss_fn(theta_of(z)))(candidates[:, 0])
        return jnp.where(data_ok, -losses, -jnp.inf)

    radius = np.full(flat0.shape, cfg.search_radius, np.float32)
    with jax.ensure_compile_time_eval():  # make_cem checks its bounds on the host, also under jit
        planner = make_cem(objective, -radius, radius, *cfg.planner_settings())
    z, _, plan = planner.plan(planner.default_params, None, planner.init(key), None, key)
    theta = theta_of(jnp.where(data_ok, z, 0.0))
    info = {
        "initial_loss": loss_fn(theta0),
        "final_loss": loss_fn(theta),
        "best_loss": -plan["best_return"],
        "num_nonfinite": plan["num_nonfinite"],
        "data_nonfinite": ~data_ok,
    }
    return space.to_params(init_params, theta), info


# ----------------------------------------------------------------------------------------
# Data collection
# ----------------------------------------------------------------------------------------


@struct.dataclass
class Trajectories:
    """Simulator states along rollouts of the real environment.

    Attributes:
      states: ``State.physics`` at every step, leading axes [E, T + 1] (a vector [S] per
        step for the pure-JAX envs; a pytree for brax/MJX).
      actions: [E, T, A] the actions taken between consecutive states.
    """

    states: Any
    actions: Array


def _has_auto_reset(env: Env) -> bool:
    from mbjax.envs.wrappers import EpisodeWrapper, VmapWrapper

    e = env
    while True:
        if isinstance(e, VmapWrapper):
            raise ValueError("collect_trajectories batches the env itself; pass the env "
                             "without VmapWrapper")
        if isinstance(e, EpisodeWrapper) and e.auto_reset:
            return True
        inner = getattr(e, "__dict__", {}).get("env")
        if not isinstance(inner, Env):
            return False
        e = inner


def collect_trajectories(
    env: Env,
    num_envs: int,
    num_steps: int,
    key: PRNGKey,
    policy: Policy | None = None,
) -> Trajectories:
    """Runs ``num_envs`` independent episodes of ``num_steps`` steps and records states.

    Each episode starts from ``env.reset`` and takes actions from ``policy`` (default:
    uniform random in the action bounds); there are no resets in the middle, so
    consecutive states are real transitions x_{t+1} = f(x_t, a_t).

    Args:
      env: an unbatched env without auto-reset.
      num_envs, num_steps: E episodes of T steps (E x T transitions).
      key: PRNG key.
      policy: (obs [E, O], key) -> actions [E, A]; default uniform random.

    Returns:
      ``Trajectories`` with states [E, T + 1, ...] and actions [E, T, A].
    """
    if int(num_envs) < 1 or int(num_steps) < 1:
        raise ValueError(f"num_envs and num_steps must be >= 1, got {num_envs}, {num_steps}")
    if _has_auto_reset(env):
        raise ValueError("the env auto-resets (EpisodeWrapper); system identification needs "
                         "uninterrupted transitions: pass the env without EpisodeWrapper "
                         "(or with auto_reset=False)")
    policy = policy if policy is not None else uniform_random_policy(env)
    key_reset, key_act = jax.random.split(key)
    state0 = jax.vmap(env.reset)(jax.random.split(key_reset, num_envs))

    def body(state: State, k):
        action = policy(state.obs, k)
        next_state = jax.vmap(env.step)(state, action)
        return next_state, (next_state.physics, action)

    _, (physics, actions) = jax.lax.scan(body, state0, jax.random.split(key_act, num_steps))
    states = jax.tree_util.tree_map(
        lambda x0, xs: jnp.concatenate([x0[None], xs], axis=0).swapaxes(0, 1),
        state0.physics, physics)
    return Trajectories(states=states, actions=actions.swapaxes(0, 1))


def one_step_data(traj: Trajectories) -> tuple[Any, Array, Any]:
    """(states [N, ...], actions [N, A], next_states [N, ...]) with N = E T."""
    flat = lambda x: x.reshape((-1,) + x.shape[2:])
    states = jax.tree_util.tree_map(lambda x: flat(x[:, :-1]), traj.states)
    next_states = jax.tree_util.tree_map(lambda x: flat(x[:, 1:]), traj.states)
    return states, flat(traj.actions), next_states


def multi_step_data(traj: Trajectories, horizon: int) -> tuple[Any, Array, Any]:
    """Every window of ``horizon`` consecutive steps: (states [N, ...], actions
    [N, K, A], next_states [N, K, ...]) with K = horizon and N = E (T - K + 1)."""
    t = traj.actions.shape[1]
    if not 1 <= int(horizon) <= t:
        raise ValueError(f"horizon must be in [1, {t}] (the trajectory length), got {horizon}")
    k = int(horizon)
    starts = jnp.arange(t - k + 1)
    window = starts[:, None] + jnp.arange(k)[None]  # [W, K]
    flat = lambda x: x.reshape((-1,) + x.shape[2:])
    states = jax.tree_util.tree_map(lambda x: flat(x[:, starts]), traj.states)
    actions = flat(traj.actions[:, window])
    next_states = jax.tree_util.tree_map(lambda x: flat(x[:, window + 1]), traj.states)
    return states, actions, next_states


# ----------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------


def report(true_params, fitted_params, names: tuple[str, ...] | None = None
           ) -> dict[str, dict[str, Any]]:
    """Recovered vs true values of each parameter.

    Args:
      true_params, fitted_params: parameter dataclasses or dicts of the same kind.
      names: fields to include (default: every field of ``true_params``).

    Returns:
      {name: {"true", "fitted", "abs_error", "rel_error"}} with
      rel_error = |fitted - true| / |true| (inf where true = 0 and fitted != 0, 0 where
      both are 0); floats for scalar fields, numpy arrays (elementwise) otherwise.
    """
    true_f, fit_f = param_fields(true_params), param_fields(fitted_params)
    names = tuple(true_f) if names is None else tuple(names)
    unknown = [n for n in names if n not in true_f or n not in fit_f]
    if unknown:
        raise ValueError(f"report: unknown parameter(s) {unknown}; true has {list(true_f)}, "
                         f"fitted has {list(fit_f)}")
    out = {}
    for name in names:
        t = np.asarray(true_f[name], dtype=np.float64)
        f = np.asarray(fit_f[name], dtype=np.float64)
        abs_err = np.abs(f - t)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(t != 0, abs_err / np.abs(t), np.where(abs_err == 0, 0.0, np.inf))
        conv = (lambda x: float(x)) if t.ndim == 0 else (lambda x: x)
        out[name] = {"true": conv(t), "fitted": conv(f), "abs_error": conv(abs_err),
                     "rel_error": conv(rel)}
    return out


def format_report(rep: dict[str, dict[str, Any]]) -> str:
    """A plain-text table of a :func:`report` (one line per scalar parameter)."""
    lines = [f"{'parameter':<16}{'true':>12}{'fitted':>12}{'rel. error':>12}"]
    for name, row in rep.items():
        t, f, r = (np.asarray(row[k]) for k in ("true", "fitted", "rel_error"))
        if t.ndim == 0:
            lines.append(f"{name:<16}{float(t):>12.5g}{float(f):>12.5g}{float(r):>12.2%}")
        else:
            worst = float(np.max(r))
            lines.append(f"{name:<16}{'array':>12}{'array':>12}{worst:>12.2%}  (max of elements)")
    return "\n".join(lines)
