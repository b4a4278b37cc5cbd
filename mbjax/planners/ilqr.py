"""iLQR: Gauss-Newton trajectory optimisation on a stepwise problem, box-constrained.

Sampling and gradient planners see only the black-box J(objective_params, obs, actions); iLQR
needs the per-step structure of the return, a ``StepwiseProblem``:

    x_0 = initial_state(p, obs),   x_{t+1} = f(x_t, a_t) = step(p, x_t, a_t),
    R(a) = sum_{t<H} gamma^t r_t,  r_t = reward(p, x_t, a_t, x_{t+1})

(``p`` = the planner's ``objective_params``). ``stepwise_objective(problem)`` is the ordinary
population J of that return (so sampling planners run on the same problem) and carries the
problem as its attribute ``stepwise``, which ``ILQRConfig.build_search`` reads. Constructors:
``sequence_problem`` (a known ``step_fn(params, x, a)`` such as ``Pendulum.dynamics``),
``ensemble_mean_problem`` (a learned ensemble's mean prediction) and ``env_problem`` (the
true simulator, x = the env ``State``).

The algorithm (iLQR, Li & Todorov 2004; regularisation and line search after Tassa, Erez &
Todorov 2012, "Synthesis and stabilization of complex behaviors through online trajectory
optimization"; box controls after Tassa, Mansard & Todorov 2014, "Control-limited
differential dynamic programming"). We minimise the cost l_t = -gamma^t (r_t - c/2 |a_t|^2)
(``action_cost`` c >= 0). Each of ``iterations`` rounds (a fixed count: a ``lax.scan``, so the
solve is jit- and vmap-able; rounds after convergence change nothing):

1. Linearise the dynamics along the nominal trajectory (x̄, ū) with ``jax.jacfwd``:
   dx' = f_x dx + f_u du. Quadratise the reward in (x, a, x') with ``jax.hessian`` and chain
   it through the linearised dynamics (Gauss-Newton: no second derivatives of f), giving
   l_x [S], l_u [A], l_xx [S, S], l_ux [A, S], l_uu [A, A] per step.
2. Backward Riccati pass (``lax.scan`` in reverse), V_x = 0, V_xx = 0 after the last step:
       Q_x = l_x + f_x' V_x,  Q_u = l_u + f_u' V_x,  Q_xx = l_xx + f_x' V_xx f_x,
       Q_ux = l_ux + f_u' V_xx f_x,  Q_uu = l_uu + f_u' V_xx f_u,
   gains from the Levenberg-Marquardt regularised H = psd(Q_uu) + mu I (psd: eigenvalues
   clamped at 0, as trajax's ``make_psd``, so a non-convex reward still gives a descent
   step): k = -H^-1 Q_u, K = -H^-1 Q_ux, then box-DDP light: the controls that the step
   pushes out of [low, high] are clamped (k_i = bound_i - ū_i, row K_i = 0) and the free
   ones re-solved given them, H_ff k_f = -(Q_u,f + H_fc k_c), H_ff K_f = -Q_ux,f (one
   active-set pass of Tassa et al. 2014's box QP, not their full projected Newton).
       V_x = Q_x + K'Q_uu k + K'Q_u + Q_ux'k,  V_xx = Q_xx + K'Q_uu K + K'Q_ux + Q_ux'K.
3. Forward pass for ``num_line_search`` step sizes alpha = 1, 1/2, 1/4, ... at once (vmap):
   u_t = clip(ū_t + alpha k_t + K_t (x_t - x̄_t), low, high). The best candidate (the
   largest alpha among those within float rounding, tol = 8 eps (1 + |objective|), of the
   best) replaces the nominal unless it is worse by more than tol; mu follows Tassa et
   al. 2012's schedule (decrease on success, increase on failure; mu_min = 1e-6).
   Non-finite candidates count as -inf (``sanitize_returns``) and in ``num_nonfinite``.

Each round costs one linearisation (H Jacobians and Hessians) and ``num_line_search``
rollouts. The state x may be any pytree (an env ``State``): its floating-point leaves,
flattened with ``ravel_pytree``, are the tangent space of the derivatives (S = their total
size); other leaves (step counters, PRNG keys) follow the dynamics but are held fixed when
differentiating. trajax (``trajax.optimizers.ilqr``) is the reference implementation this
follows; see ``docs/ilqr_decision.md`` for why mbjax has its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct
from jax.flatten_util import ravel_pytree

from mbjax.planners.base import Objective, Planner, check_positive, check_range, sanitize_returns
from mbjax.planners.registry import PlannerSpec, register_planner, spec_kind
from mbjax.planners.sampling import Best, make_sequence_planner
from mbjax.types import Array

MU_MIN = 1e-6  # Tassa et al. 2012: below it the regularisation stays at mu_min
MU_MAX = 1e10
MU_FACTOR = 2.0  # Tassa et al. 2012's Delta_0


# ----------------------------------------------------------------------------------------
# Stepwise problems
# ----------------------------------------------------------------------------------------


class StepwiseProblem(NamedTuple):
    """The per-step structure of a return R = sum_{t<H} gamma^t r_t.

    initial_state(objective_params, obs) -> x_0 (an array [S] or any pytree);
    step(objective_params, x, a [A]) -> x' (same structure as x);
    reward(objective_params, x, a, x') -> r [];
    discount: gamma in (0, 1].
    """

    initial_state: Callable[[Any, Any], Any]
    step: Callable[[Any, Any, Array], Any]
    reward: Callable[[Any, Any, Array, Any], Array]
    discount: float = 1.0


def check_problem(problem: StepwiseProblem) -> StepwiseProblem:
    """Raises ``TypeError`` / ``ValueError`` unless ``problem`` is a usable problem."""
    if not isinstance(problem, StepwiseProblem):
        raise TypeError(f"expected a StepwiseProblem, got {type(problem).__name__}")
    if not isinstance(problem.discount, jax.core.Tracer) and not 0.0 < problem.discount <= 1.0:
        raise ValueError(f"discount must be in (0, 1], got {problem.discount}")
    return problem


def discounts(discount, horizon: int) -> Array:
    """gamma^t for t < H: [H]."""
    return jnp.asarray(discount, jnp.float32) ** jnp.arange(horizon)


def rollout(problem: StepwiseProblem, objective_params, x0, actions: Array):
    """States and rewards of actions [H, A] from x0: (states, pytree with a leading axis
    [H + 1] (states[0] = x0), rewards [H])."""

    def body(x, a):
        nx = problem.step(objective_params, x, a)
        return nx, (x, problem.reward(objective_params, x, a, nx))

    last, (states, rewards) = jax.lax.scan(body, x0, actions)
    states = jax.tree_util.tree_map(lambda s, e: jnp.concatenate([s, e[None]]), states, last)
    return states, rewards


def stepwise_objective(problem: StepwiseProblem) -> Objective:
    """The population objective J(objective_params, obs, actions [N, H, A], key) -> [N] of
    ``problem``: R = sum_t gamma^t r_t per candidate (key unused: deterministic).

    The returned function carries ``problem`` as ``J.stepwise`` (what iLQR needs)."""
    check_problem(problem)

    def single(objective_params, x0, actions):
        _, rewards = rollout(problem, objective_params, x0, actions)
        return jnp.sum(discounts(problem.discount, actions.shape[0]) * rewards)

    def objective(objective_params, obs, actions, key):
        del key
        x0 = problem.initial_state(objective_params, obs)
        return jax.vmap(single, in_axes=(None, None, 0))(objective_params, x0, actions)

    objective.stepwise = problem
    return objective


def sequence_problem(step_fn: Callable, reward_fn: Callable,
                     discount: float = 1.0) -> StepwiseProblem:
    """A known deterministic system: x' = step_fn(objective_params, x, a) (e.g. an env's
    ``dynamics(params, x, a)`` or a linear system), r = reward_fn(x, a, x'); J's ``obs`` is
    the state x [S] (the same returns as ``make_sequence_objective`` without termination)."""
    return check_problem(StepwiseProblem(
        initial_state=lambda objective_params, obs: obs,
        step=step_fn,
        reward=lambda objective_params, x, a, nx: reward_fn(x, a, nx),
        discount=discount))


def _model_state(objective_params):
    """The ``ModelState`` in an objective's params: itself (``make_model_objective``) or the
    first entry of the agents' tuple (model_state, hparams, value_params)."""
    return objective_params[0] if isinstance(objective_params, tuple) else objective_params


def ensemble_mean_problem(model, reward_fn: Callable | None = None,
                          discount: float = 1.0) -> StepwiseProblem:
    """A learned ensemble as deterministic dynamics: x' = (1/E) sum_e mu_e(x, a), the
    members' predicted mean next observations averaged (the ``"expectation"`` propagation
    without sampling; ``mbjax.planners.proposals.model_mean_step`` is the same step).

    ``obs`` (J's) is the observation [O]; ``objective_params`` is the ``ModelState`` or a tuple
    starting with it. r = reward_fn(obs, a, next_obs), or, when None, the members' mean of
    the learned reward head (the model must have one). Uncertainty penalties and particle
    risk measures of ``make_tunable_model_objective`` are not part of this problem."""
    if reward_fn is None and not model.config.learn_reward:
        raise ValueError("ensemble_mean_problem: no reward_fn given and the model has no "
                         "reward head (EnsembleConfig.learn_reward=False)")

    def predict(objective_params, x, a):
        return model.predict(_model_state(objective_params), x[None], a[None])

    def step(objective_params, x, a):
        return predict(objective_params, x, a).next_obs_mean.mean(0)[0]

    def reward(objective_params, x, a, nx):
        if reward_fn is not None:
            return reward_fn(x, a, nx)
        return predict(objective_params, x, a).reward_mean.mean(0)[0]

    return check_problem(StepwiseProblem(lambda objective_params, obs: obs, step, reward,
                                         discount))


def env_problem(env, discount: float = 1.0) -> StepwiseProblem:
    """The true simulator: x = the env ``State`` (J's ``obs``, as for ``make_env_objective``),
    x' = env.step(x, a), r = x'.reward; ``objective_params`` unused.

    The derivatives are taken with respect to every floating-point leaf of the State
    (physics, obs, reward, ...; S = their total size), the other leaves held fixed. Use a
    task env without auto-reset. Terminations are not modelled (rewards after a terminal
    step still count; the classic tasks never terminate). For a pure-JAX ``SimulatorEnv``
    ``sequence_problem(env.dynamics, env.transition_reward)`` on x = ``State.physics`` is
    the smaller problem. For brax / MJX envs S is the size of the whole pipeline state
    (thousands for ``mjx.Data``: costly Jacobians), and gradients through contacts can be
    zero or discontinuous, so iLQR may stall there; prefer the sampling planners."""
    return check_problem(StepwiseProblem(
        initial_state=lambda objective_params, obs: obs,
        step=lambda objective_params, state, a: env.step(state, a),
        reward=lambda objective_params, state, a, next_state: next_state.reward,
        discount=discount))


# ----------------------------------------------------------------------------------------
# Tangent space of pytree states
# ----------------------------------------------------------------------------------------


def _is_float(leaf) -> bool:
    dtype = getattr(leaf, "dtype", None)
    if dtype is None:
        dtype = jnp.result_type(leaf)
    return jnp.issubdtype(dtype, jnp.floating)


def tangent(x) -> tuple[Array, Callable[[Array], Any]]:
    """(v [S], rebuild): v = the floating-point leaves of the pytree x raveled;
    rebuild(v') = x with those leaves replaced by v' (the other leaves kept)."""
    leaves, treedef = jax.tree_util.tree_flatten(x)
    is_float = [_is_float(leaf) for leaf in leaves]
    v, unravel = ravel_pytree([leaf for leaf, f in zip(leaves, is_float) if f])

    def rebuild(v_new):
        floats = iter(unravel(v_new))
        return treedef.unflatten([next(floats) if f else leaf
                                  for leaf, f in zip(leaves, is_float)])

    return v, rebuild


# ----------------------------------------------------------------------------------------
# The solver
# ----------------------------------------------------------------------------------------


class LocalModel(NamedTuple):
    """The linear-quadratic model of one step around (x̄_t, ū_t), in cost form
    l = -gamma^t (r - c/2 |a|^2): f_x [S, S], f_u [S, A], l_x [S], l_u [A], l_xx [S, S],
    l_ux [A, S], l_uu [A, A] (with a leading [H] axis for a trajectory)."""

    f_x: Array
    f_u: Array
    l_x: Array
    l_u: Array
    l_xx: Array
    l_ux: Array
    l_uu: Array


def local_model(problem: StepwiseProblem, objective_params, x, a: Array, next_x, weight,
                action_cost) -> LocalModel:
    """``LocalModel`` of the step x --a--> next_x (the nominal next state) with weight
    gamma^t: Jacobians of f by ``jax.jacfwd``; the Hessian of r in w = (x, a, x') chained
    through the linearised step, J = [[I, 0], [0, I], [f_x, f_u]]: grad = J' r_w,
    Hessian = J' r_ww J (Gauss-Newton: f's own curvature dropped)."""
    v, rebuild = tangent(x)
    nv, rebuild_next = tangent(next_x)
    s, na = v.shape[0], a.shape[0]

    def f(v, a):
        return tangent(problem.step(objective_params, rebuild(v), a))[0]

    f_x, f_u = jax.jacfwd(f, argnums=(0, 1))(v, a)

    def r(w):
        return problem.reward(objective_params, rebuild(w[:s]), w[s:s + na],
                              rebuild_next(w[s + na:]))

    w = jnp.concatenate([v, a, nv])
    r_w, r_ww = jax.grad(r)(w), jax.hessian(r)(w)
    jac = jnp.concatenate([jnp.eye(s + na), jnp.concatenate([f_x, f_u], axis=1)], axis=0)
    g, h = jac.T @ r_w, jac.T @ r_ww @ jac  # [S + A], [S + A, S + A]
    g = g.at[s:].add(-action_cost * a)
    h = h.at[s:, s:].add(-action_cost * jnp.eye(na))
    g, h = -weight * g, -weight * h
    return LocalModel(f_x, f_u, g[:s], g[s:], h[:s, :s], h[s:, :s], h[s:, s:])


def psd(matrix: Array) -> Array:
    """The projection of a symmetric [A, A] matrix onto the PSD cone (eigenvalues >= 0)."""
    vals, vecs = jnp.linalg.eigh(0.5 * (matrix + matrix.T))
    return (vecs * jnp.maximum(vals, 0.0)) @ vecs.T


def box_gains(q_uu: Array, q_u: Array, q_ux: Array, u: Array, low: Array, high: Array,
              mu) -> tuple[Array, Array]:
    """The feedforward k [A] and feedback K [A, S] of one step under the box.

    H = psd(Q_uu) + mu I; the free Newton step k = -H^-1 Q_u; the controls it takes out of
    [low, high] are clamped (c: k_c = clip(u + k) - u, K_c = 0) and the others re-solved,
    H_ff k_f = -(Q_u,f + H_fc k_c), H_ff K_f = -Q_ux,f (one active-set pass)."""
    hess = psd(q_uu) + mu * jnp.eye(q_uu.shape[0])
    k_free = -jnp.linalg.solve(hess, q_u)
    target = u + k_free
    clamped = (target < low) | (target > high)
    free = (~clamped).astype(hess.dtype)
    k_c = jnp.where(clamped, jnp.clip(target, low, high) - u, 0.0)
    masked = hess * free[:, None] * free[None, :] + jnp.diag(1.0 - free)
    k = jnp.linalg.solve(masked, free * -(q_u + hess @ k_c) + k_c)
    gain = jnp.linalg.solve(masked, free[:, None] * -q_ux)
    return k, gain


def backward_pass(model: LocalModel, actions: Array, low: Array, high: Array, mu
                  ) -> tuple[Array, Array]:
    """The Riccati recursion of the module docstring over a trajectory's ``LocalModel``
    ([H] leading axes) and nominal actions [H, A]: (k [H, A], K [H, A, S])."""
    s = model.f_x.shape[-1]

    def body(carry, step):
        v_x, v_xx = carry
        m, u = step
        q_x = m.l_x + m.f_x.T @ v_x
        q_u = m.l_u + m.f_u.T @ v_x
        q_xx = m.l_xx + m.f_x.T @ v_xx @ m.f_x
        q_ux = m.l_ux + m.f_u.T @ v_xx @ m.f_x
        q_uu = m.l_uu + m.f_u.T @ v_xx @ m.f_u
        k, gain = box_gains(q_uu, q_u, q_ux, u, low, high, mu)
        v_x = q_x + gain.T @ q_uu @ k + gain.T @ q_u + q_ux.T @ k
        v_xx = q_xx + gain.T @ q_uu @ gain + gain.T @ q_ux + q_ux.T @ gain
        return (v_x, 0.5 * (v_xx + v_xx.T)), (k, gain)

    zero = (jnp.zeros(s, model.f_x.dtype), jnp.zeros((s, s), model.f_x.dtype))
    _, (k, gain) = jax.lax.scan(body, zero, (model, actions), reverse=True)
    return k, gain


def forward_pass(problem: StepwiseProblem, objective_params, states, actions: Array,
                 k: Array, gain: Array, alpha, low: Array, high: Array):
    """The closed-loop rollout u_t = clip(ū_t + alpha k_t + K_t (x_t - x̄_t), low, high)
    from x̄_0 around the nominal states (leading [H + 1]) and actions [H, A]:
    (states [H + 1, ...], actions [H, A], rewards [H])."""
    horizon = actions.shape[0]
    nominal = jax.vmap(lambda x: tangent(x)[0])(
        jax.tree_util.tree_map(lambda s: s[:horizon], states))
    x0 = jax.tree_util.tree_map(lambda s: s[0], states)

    def body(x, step):
        x_bar, u_bar, k_t, gain_t = step
        du = alpha * k_t + gain_t @ (tangent(x)[0] - x_bar)
        u = jnp.clip(u_bar + du, low, high).astype(u_bar.dtype)
        nx = problem.step(objective_params, x, u)
        return nx, (x, u, problem.reward(objective_params, x, u, nx))

    last, (xs, us, rewards) = jax.lax.scan(body, x0, (nominal, actions, k, gain))
    xs = jax.tree_util.tree_map(lambda s, e: jnp.concatenate([s, e[None]]), xs, last)
    return xs, us, rewards


class ILQRSolution(NamedTuple):
    """The result of ``ilqr_solve``: actions [H, A], states (leading [H + 1]), rewards [H],
    the problem's return sum_t gamma^t r_t [], the optimised objective (the return minus
    the discounted action cost) [], the rounds that improved it [], the final
    regularisation mu [] and the non-finite line-search candidates seen []."""

    actions: Array
    states: Any
    rewards: Array
    value: Array
    objective: Array
    improved: Array
    regularization: Array
    num_nonfinite: Array


def ilqr_solve(problem: StepwiseProblem, objective_params, obs, init_actions: Array,
               low: Array, high: Array, regularization=1e-3, action_cost=0.0,
               iterations: int = 10, num_line_search: int = 8) -> ILQRSolution:
    """Box-constrained iLQR (module docstring) from init_actions [H, A] (clipped to the
    box) on ``problem`` started at initial_state(objective_params, obs). ``regularization``
    (mu_0 > 0) and ``action_cost`` (c >= 0) may be traced; ``iterations`` and
    ``num_line_search`` are static. Pure: jit / vmap it freely."""
    horizon = init_actions.shape[0]
    weights = discounts(problem.discount, horizon)
    alphas = 0.5 ** jnp.arange(num_line_search, dtype=jnp.float32)
    x0 = problem.initial_state(objective_params, obs)
    actions = jnp.clip(init_actions, low, high)
    states, rewards = rollout(problem, objective_params, x0, actions)

    def objective_of(us, rs):
        return jnp.sum(weights * (rs - 0.5 * action_cost * jnp.sum(us**2, axis=-1)))

    def round_(carry, _):
        states, actions, rewards, obj, mu, delta, improved, bad = carry
        next_states = jax.tree_util.tree_map(lambda s: s[1:], states)
        this_states = jax.tree_util.tree_map(lambda s: s[:-1], states)
        model = jax.vmap(local_model, in_axes=(None, None, 0, 0, 0, 0, None))(
            problem, objective_params, this_states, actions, next_states, weights,
            action_cost)
        k, gain = backward_pass(model, actions, low, high, mu)
        xs, us, rs = jax.vmap(forward_pass, in_axes=(None,) * 6 + (0, None, None))(
            problem, objective_params, states, actions, k, gain, alphas, low, high)
        objs, nonfinite = sanitize_returns(jax.vmap(objective_of)(us, rs))
        # The largest step among the best (ties within float rounding, tol): near the
        # optimum float32 cannot rank the step sizes, and the full step is the Newton one.
        tol = 8.0 * jnp.finfo(objs.dtype).eps * (1.0 + jnp.abs(obj))
        i = jnp.argmax(objs >= jnp.max(objs) - tol)
        accept = objs[i] >= obj - tol
        improved = improved + (objs[i] > obj)
        pick = lambda new, old: jnp.where(accept, new[i], old)
        states = jax.tree_util.tree_map(pick, xs, states)
        actions, rewards, obj = pick(us, actions), pick(rs, rewards), pick(objs, obj)
        # Tassa et al. 2012, Sec. II-F: delta and mu shrink on success, grow on failure.
        delta = jnp.where(accept, jnp.minimum(1.0 / MU_FACTOR, delta / MU_FACTOR),
                          jnp.maximum(MU_FACTOR, delta * MU_FACTOR))
        mu = jnp.clip(mu * delta, MU_MIN, MU_MAX)
        return (states, actions, rewards, obj, mu, delta, improved,
                bad + nonfinite), None

    mu0 = jnp.asarray(regularization, jnp.float32)
    carry = (states, actions, rewards, objective_of(actions, rewards), mu0,
             jnp.ones_like(mu0), jnp.array(0), jnp.array(0))
    (states, actions, rewards, obj, mu, _, improved, bad), _ = jax.lax.scan(
        round_, carry, None, length=iterations)
    return ILQRSolution(actions, states, rewards, jnp.sum(weights * rewards), obj, improved,
                        mu, bad)


# ----------------------------------------------------------------------------------------
# The planner
# ----------------------------------------------------------------------------------------


@struct.dataclass
class ILQRParams:
    """regularization: the initial Levenberg-Marquardt mu (> 0) added to Q_uu, per plan
    call; action_cost: c >= 0, -c/2 |a_t|^2 added to every step's reward."""

    regularization: float = 1e-3
    action_cost: float = 0.0


def check_ilqr_params(params: ILQRParams) -> None:
    """regularization > 0 and action_cost >= 0 (``ValueError`` naming the field)."""
    check_range("regularization", params.regularization, 0.0, include_low=False)
    check_range("action_cost", params.action_cost, 0.0)


@struct.dataclass
class ILQRState:
    plan: jax.Array  # [H, A] previous solution, shifted


STEPWISE_CONSTRUCTORS = ("mbjax.planners.ilqr.stepwise_objective(problem) with "
                         "sequence_problem, ensemble_mean_problem or env_problem")


@register_planner
@dataclasses.dataclass(frozen=True)
class ILQRConfig(PlannerSpec):
    """The iLQR spec: ``iterations`` rounds of ``num_line_search`` step sizes (static) with
    ``ILQRParams``' traced floats. Per-step actions only (``parameterization="step"``)."""

    horizon: int = 30
    iterations: int = 10
    num_line_search: int = 8
    regularization: float = ILQRParams.regularization
    action_cost: float = ILQRParams.action_cost
    kind: str = spec_kind("ilqr")
    takes_proposals = False  # no candidate population to join
    params_type = ILQRParams
    check_params = staticmethod(check_ilqr_params)

    def __post_init__(self):
        check_positive(iterations=self.iterations, num_line_search=self.num_line_search)
        if self.parameterization != "step":
            raise ValueError(f"planner ilqr optimises per-step actions; parameterization "
                             f"{self.parameterization!r} is not supported (use "
                             "--planner.parameterization step)")
        super().__post_init__()

    def build_search(self, objective, action_low, action_high, params=None) -> Planner:
        return _search_ilqr(objective, action_low, action_high, self, params)


def stepwise_of(objective) -> StepwiseProblem:
    """The ``StepwiseProblem`` an objective carries (``J.stepwise``), or ``ValueError``."""
    problem = getattr(objective, "stepwise", None)
    if problem is None:
        raise ValueError(
            "planner ilqr needs a stepwise objective (its per-step dynamics and rewards), "
            f"got a black-box objective {getattr(objective, '__name__', objective)!r} "
            f"without a .stepwise problem: build it with {STEPWISE_CONSTRUCTORS}")
    return check_problem(problem)


def _search_ilqr(objective: Objective, action_low, action_high, config: ILQRConfig,
                 params: ILQRParams | None = None) -> Planner:
    """The planner of ``config`` (``ILQRConfig.build_search``): iLQR from the warm start
    (the previous solution shifted by one step, the middle of the box appended)."""
    problem = stepwise_of(objective)

    def solve(box, params: ILQRParams, objective_params, state: ILQRState, obs, key):
        del key  # deterministic
        sol = ilqr_solve(problem, objective_params, obs, state.plan, box.low, box.high,
                         params.regularization, params.action_cost, config.iterations,
                         config.num_line_search)
        best = Best(sol.actions, sol.value, sol.num_nonfinite)
        extra = {"ilqr_objective": sol.objective, "ilqr_iterations_improved": sol.improved,
                 "ilqr_regularization": sol.regularization}
        return sol.actions, best, ILQRState(plan=box.shift(sol.actions, box.mid)), extra

    return make_sequence_planner(config, action_low, action_high, params,
                                 lambda box: ILQRState(plan=box.middle()), solve)


def make_ilqr(objective: Objective, action_low, action_high,
              config: ILQRConfig | None = None, params: ILQRParams | None = None) -> Planner:
    """iLQR planner on a stepwise objective (``stepwise_objective``); see the module
    docstring (``params=None``: ``config.default_params()``)."""
    return (config or ILQRConfig()).build(objective, action_low, action_high, params)
