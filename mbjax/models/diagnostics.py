"""Diagnostics of a learned dynamics ensemble: accuracy, likelihood, calibration, compounding.

Metric functions (pure: arrays in, JSON-ready dicts of floats and lists out):

* :func:`one_step_metrics`: MSE of the ensemble-mean prediction per observation dim, in
  data units and normalised by the training-data variance of the target (the state
  delta), R^2, and the Gaussian negative log-likelihood of every member, of the
  ensemble as an equally weighted mixture and of its moment-matched Gaussian;
* :func:`k_step_errors`: open-loop error of ``rollout_particles`` (mean over particles)
  after k = 1..K steps from every start of held-out trajectories, windows that cross an
  episode end excluded, with the "copy the start observation" baseline;
* :func:`calibration`: fraction of true next observations inside mu +- k sigma of the
  moment-matched ensemble Gaussian (per dim and overall) and a reliability curve
  (observed vs expected coverage of central intervals over a grid of probabilities),
  also for the exact mixture.

The report (``metrics.json`` and plots) and the command-line job that collects data,
trains an ensemble and evaluates it are front-end code: ``mbjax.jobs.diagnostics``.

The moment-matched Gaussian of an ensemble of Gaussians N(mu_e, sigma_e^2), e = 1..E:
  m = (1/E) sum_e mu_e,   v = (1/E) sum_e sigma_e^2 + (1/E) sum_e (mu_e - m)^2
(aleatoric + epistemic variance), per dimension.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from mbjax.models.ensemble import EnsembleModel, ModelState
from mbjax.models.rollout import PROPAGATIONS, check_propagation, rollout_particles
from mbjax.types import Array, PRNGKey, Transition

#: Default k of the k-step error table (PETS plans 30 steps ahead).
DEFAULT_KS = (1, 5, 10, 15, 20, 30)
#: Probability levels of the reliability curve (central-interval coverage).
DEFAULT_GRID = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2).tolist()) + (0.99,)
_LOG_2PI = math.log(2.0 * math.pi)
_VAR_FLOOR = 1e-12  # in normalised units; keeps deterministic (sigma = 0) models finite


# ----------------------------------------------------------------------------------------
# Input checks and prediction
# ----------------------------------------------------------------------------------------


def _check_transitions(model: EnsembleModel, transitions: Transition
                       ) -> tuple[np.ndarray, ...]:
    """(obs [N, O], action [N, A], next_obs [N, O], reward [N] or None) as host arrays
    with the leading dims flattened."""
    obs, action, next_obs = (np.asarray(x) for x in (transitions.obs, transitions.action,
                                                      transitions.next_obs))
    if obs.ndim < 2 or action.ndim < 2:
        raise ValueError(f"transitions need a batch axis: obs [..., O] and action [..., A], got "
                         f"obs {obs.shape} and action {action.shape}")
    if obs.shape[-1] != model.obs_size or action.shape[-1] != model.action_size:
        raise ValueError(f"model expects obs [..., {model.obs_size}] and action [..., "
                         f"{model.action_size}], got obs {obs.shape} and action {action.shape}")
    if next_obs.shape != obs.shape:
        raise ValueError(f"next_obs {next_obs.shape} must have the shape of obs {obs.shape}")
    if action.shape[:-1] != obs.shape[:-1]:
        raise ValueError(f"obs {obs.shape} and action {action.shape} have different batch "
                         "shapes")
    n = int(np.prod(obs.shape[:-1]))
    if n == 0:
        raise ValueError("transitions are empty (no rows to evaluate)")
    reward = transitions.reward
    reward = None if reward is None else np.asarray(reward).reshape(-1)
    if reward is not None and reward.shape[0] != n:
        reward = None  # only used for the reward head; a malformed one is ignored there
    return (obs.reshape(n, -1), action.reshape(n, -1), next_obs.reshape(n, -1), reward)


@functools.partial(jax.jit, static_argnums=0)
def _predict_targets(model: EnsembleModel, state: ModelState, obs: Array, action: Array):
    """(mean, std) [E, B, D] of s' (and r) of every member, data units."""
    p = model.predict(state, obs, action)
    mean, std = [p.next_obs_mean], [p.next_obs_std]
    if p.reward_mean is not None:
        mean.append(p.reward_mean[..., None])
        std.append(p.reward_std[..., None])
    return jnp.concatenate(mean, -1), jnp.concatenate(std, -1)


def _predict(model: EnsembleModel, state: ModelState, obs: Array, action: Array,
             chunk: int = 4096):
    """Per-member predictive mean/std of the regression targets in data units, chunked.

    Returns (mean [E, N, D], std [E, N, D]) as float64 numpy, D = obs dims (+ reward).
    """
    n = obs.shape[0]
    chunk = min(chunk, n)
    means, stds = [], []
    for start in range(0, n, chunk):
        o, a = obs[start:start + chunk], action[start:start + chunk]
        m = o.shape[0]
        if m < chunk:  # pad the last chunk: one compile for all chunks
            o = np.concatenate([o, np.broadcast_to(o[-1:], (chunk - m, o.shape[1]))])
            a = np.concatenate([a, np.broadcast_to(a[-1:], (chunk - m, a.shape[1]))])
        mu, sd = _predict_targets(model, state, o, a)
        means.append(np.asarray(mu, np.float64)[:, :m])
        stds.append(np.asarray(sd, np.float64)[:, :m])
    return np.concatenate(means, 1), np.concatenate(stds, 1)


def moment_matched(mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Moment-matched Gaussian of an equally weighted mixture over the leading axis.

    Args:
      mean, std: [E, ...] member means and standard deviations.

    Returns:
      (m, v) [...]: m = mean_e mu_e, v = mean_e sigma_e^2 + var_e mu_e.
    """
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    m = mean.mean(0)
    return m, (std ** 2).mean(0) + mean.var(0)


def _targets(model, obs, next_obs, reward, mean, std):
    """True values in the predictions' space [N, D] and the predictions (reward dropped
    where there is no reward in the data)."""
    y = np.asarray(next_obs, np.float64)
    if model.config.learn_reward:
        if reward is None:
            mean, std = mean[..., :-1], std[..., :-1]
        else:
            y = np.concatenate([y, np.asarray(reward, np.float64)[:, None]], -1)
    return y, mean, std


def _target_scale(state: ModelState, d: int) -> np.ndarray:
    """Training-data std of each regression target [D] (the model's normalised units)."""
    return np.asarray(state.target_norm.std, np.float64)[:d]


def _member_predictions(model: EnsembleModel, state: ModelState, transitions: Transition,
                        members: Sequence[int] | None):
    """What the one-step metrics compare: checked data and the members' predictions.

    Returns:
      (obs [N, O], y [N, D] true targets s' [, r], mean and std [E', N, D] of the members
      ``members`` (default all E), c [D] training-data std of each target), float64 numpy
      in data units; D drops the reward where the data have none.
    """
    obs, action, next_obs, reward = _check_transitions(model, transitions)
    mean, std = _predict(model, state, obs, action)
    if members is not None:
        idx = np.asarray(members, np.int64).reshape(-1)
        mean, std = mean[idx], std[idx]
    y, mean, std = _targets(model, obs, next_obs, reward, mean, std)
    return obs, y, mean, std, _target_scale(state, y.shape[1])


def _dim_names(model: EnsembleModel, d: int) -> list[str]:
    names = [f"obs[{i}]" for i in range(model.obs_size)]
    if d > model.obs_size:
        names.append("reward")
    return names


def _floats(x) -> list:
    return np.asarray(x, np.float64).tolist()


# ----------------------------------------------------------------------------------------
# One-step accuracy and likelihood
# ----------------------------------------------------------------------------------------


def gaussian_nll(y: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Elementwise -log N(y; mean, var) = 0.5 (log(2 pi var) + (y - mean)^2 / var)."""
    return 0.5 * (_LOG_2PI + np.log(var) + (y - mean) ** 2 / var)


def one_step_metrics(model: EnsembleModel, state: ModelState, transitions: Transition,
                     members: Sequence[int] | None = None) -> dict:
    """One-step prediction accuracy and likelihood on (held-out) transitions.

    Errors of the prediction of s' are errors of the predicted delta s' - s. With
    ensemble mean m = mean_e mu_e [N, D] and the training-data std c_d of target d
    (``state.target_norm.std``, the model's normalised units):

    * ``mse_per_dim[d]`` = mean_n (m_nd - y_nd)^2 (data units), ``mse`` its mean over d;
    * ``nmse_per_dim[d]`` = mse_per_dim[d] / c_d^2, ``nmse`` its mean (1 = as bad as
      always predicting the average delta of the training data);
    * ``member_nmse[e]`` the same for member e alone;
    * ``r2_per_dim[d]`` = 1 - SSE_d / SST_d of the regression target (the delta s' - s
      when ``predict_delta``), SST about its held-out mean;
    * NLL in nats per dimension in normalised units (y, mu, sigma divided by c):
      ``nll_members[e]`` = mean_{n,d} -log N(y; mu_e, sigma_e^2);
      ``nll_mixture`` = -(1/D) mean_n log((1/E) sum_e prod_d N(y_nd; mu_end, sigma_end^2));
      ``nll_moment_matched`` = mean_{n,d} -log N(y; m, v) with v = mean sigma^2 + var mu.
      Member and mixture NLLs are None for deterministic models (sigma = 0); the
      moment-matched one then uses the members' spread only (None if E = 1).

    Args:
      model, state: the ensemble and its trained state.
      transitions: ``Transition`` with any leading batch shape [..., O] (flattened).
      members: member indices to use (e.g. ``state.elites``); default all members.

    Returns:
      A JSON-ready dict; a reward head (``learn_reward``) adds a "reward" dimension.

    Raises:
      ValueError: mismatched shapes or no transitions.
    """
    obs, y, mean, std, c = _member_predictions(model, state, transitions, members)
    n, d = y.shape
    m = mean.mean(0)
    err2 = (m - y) ** 2
    mse_d = err2.mean(0)
    nmse_d = mse_d / c ** 2
    member_nmse = (((mean - y) ** 2).mean(1) / c ** 2).mean(-1)
    target = y.copy()  # the regression target: s' - s (predict_delta) [, r]
    if model.config.predict_delta:
        target[:, :model.obs_size] -= np.asarray(obs, np.float64)
    sst = ((target - target.mean(0)) ** 2).sum(0)
    r2_d = np.where(sst > 0, 1.0 - err2.sum(0) / np.where(sst > 0, sst, 1.0), np.nan)

    yn, mun, sdn = y / c, mean / c, std / c
    probabilistic = bool(model.config.probabilistic)
    nll_members = nll_mixture = None
    if probabilistic:
        lp = -gaussian_nll(yn, mun, np.maximum(sdn ** 2, _VAR_FLOOR))  # [E, N, D]
        nll_members = -lp.mean((1, 2))
        joint = lp.sum(-1)  # [E, N]
        top = joint.max(0)
        log_mix = top + np.log(np.exp(joint - top).mean(0))
        nll_mixture = float(-log_mix.mean() / d)
    mm_mean, mm_var = moment_matched(mun, sdn)
    nll_mm = nll_mm_d = None
    if probabilistic or mean.shape[0] > 1:
        nll_mm_d = gaussian_nll(yn, mm_mean, np.maximum(mm_var, _VAR_FLOOR)).mean(0)
        nll_mm = float(nll_mm_d.mean())
    return {
        "num_transitions": int(n),
        "num_members": int(mean.shape[0]),
        "dims": _dim_names(model, d),
        "mse": float(mse_d.mean()),
        "mse_per_dim": _floats(mse_d),
        "nmse": float(nmse_d.mean()),
        "nmse_per_dim": _floats(nmse_d),
        "member_nmse": _floats(member_nmse),
        "r2": float(np.nanmean(r2_d)) if np.isfinite(r2_d).any() else None,
        "r2_per_dim": _floats(r2_d),
        "target_std": _floats(c),
        "nll_units": "nats per dimension, normalised target units",
        "nll_members": None if nll_members is None else _floats(nll_members),
        "nll_member_mean": None if nll_members is None else float(nll_members.mean()),
        "nll_mixture": nll_mixture,
        "nll_moment_matched": nll_mm,
        "nll_moment_matched_per_dim": None if nll_mm_d is None else _floats(nll_mm_d),
    }


# ----------------------------------------------------------------------------------------
# Calibration
# ----------------------------------------------------------------------------------------


def expected_coverage(k: float) -> float:
    """P(|Z| <= k) for Z ~ N(0, 1): 0.6827 for k = 1, 0.9545 for k = 2."""
    return float(special.erf(k / math.sqrt(2.0)))


def calibration(model: EnsembleModel, state: ModelState, transitions: Transition,
                levels: Sequence[float] = (1.0, 2.0), grid: Sequence[float] = DEFAULT_GRID,
                members: Sequence[int] | None = None) -> dict:
    """Coverage of the true next observations by the ensemble's predictive intervals.

    With the moment-matched Gaussian (m, v) of the members (see :func:`moment_matched`)
    and z_nd = |y_nd - m_nd| / sqrt(v_nd):

    * ``coverage[level]`` = mean_{n,d} 1[z_nd <= level] (expected erf(level / sqrt 2):
      68.3 % at 1 sigma, 95.4 % at 2 sigma), ``coverage_per_dim[level]`` per d;
    * reliability curve: for each p in ``grid``, observed coverage of the central
      p-interval, mean 1[z <= Phi^-1((1 + p) / 2)], against p (the diagonal is perfect
      calibration; below it = over-confident). ``mixture_observed`` is the same for the
      exact mixture (1/E) sum_e N(mu_e, sigma_e^2) per dim: y is inside its central
      p-interval iff |2 F(y) - 1| <= p with F the mixture CDF (probabilistic models);
    * ``calibration_error`` = mean_p |observed(p) - p| (0 = calibrated);
    * ``sharpness`` = sqrt(mean v) and ``rmse`` = sqrt(mean (y - m)^2), both in
      normalised units; ``spread_skill_ratio`` = sharpness / rmse (1 when calibrated,
      < 1 over-confident).

    Args:
      transitions: ``Transition`` with leading batch shape [..., O].
      levels: interval half-widths in standard deviations.
      grid: probabilities in (0, 1) of the reliability curve.
      members: member indices to use; default all.

    Returns:
      A JSON-ready dict (coverage keys are the levels formatted like "1", "2", "1.5").
    """
    levels = [float(k) for k in levels]
    grid = [float(p) for p in grid]
    if not levels or any(not k > 0 for k in levels):
        raise ValueError(f"levels must be positive numbers of standard deviations, got {levels}")
    if not grid or any(not 0.0 < p < 1.0 for p in grid):
        raise ValueError(f"grid probabilities must lie in (0, 1), got {grid}")
    _, y, mean, std, c = _member_predictions(model, state, transitions, members)
    d = y.shape[1]
    yn, mun, sdn = y / c, mean / c, std / c
    m, v = moment_matched(mun, sdn)
    v = np.maximum(v, _VAR_FLOOR)
    z = np.abs(yn - m) / np.sqrt(v)
    key = lambda k: f"{k:g}"
    coverage = {key(k): float((z <= k).mean()) for k in levels}
    per_dim = {key(k): _floats((z <= k).mean(0)) for k in levels}
    p = np.asarray(grid)
    half_width = special.ndtri((1.0 + p) / 2.0)
    observed = (z[None] <= half_width[:, None, None]).mean((1, 2))
    mixture = None
    if model.config.probabilistic:
        cdf = special.ndtr((yn - mun) / np.sqrt(np.maximum(sdn ** 2, _VAR_FLOOR))).mean(0)
        mixture = (np.abs(2.0 * cdf - 1.0)[None] <= p[:, None, None]).mean((1, 2))
    rmse = float(np.sqrt(((yn - m) ** 2).mean()))
    sharp = float(np.sqrt(v.mean()))
    return {
        "num_transitions": int(y.shape[0]),
        "dims": _dim_names(model, d),
        "levels": levels,
        "coverage": coverage,
        "expected_coverage": {key(k): expected_coverage(k) for k in levels},
        "coverage_per_dim": per_dim,
        "reliability": {
            "expected": _floats(p),
            "observed": _floats(observed),
            "mixture_observed": None if mixture is None else _floats(mixture),
        },
        "calibration_error": float(np.abs(observed - p).mean()),
        "mixture_calibration_error": (None if mixture is None
                                      else float(np.abs(mixture - p).mean())),
        "sharpness": sharp,
        "rmse": rmse,
        "spread_skill_ratio": sharp / rmse if rmse > 0 else None,
    }


# ----------------------------------------------------------------------------------------
# k-step (open-loop) error
# ----------------------------------------------------------------------------------------


def trajectories_from_transitions(transitions: Transition
                                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rearranges scanned rollout data [T, N, ...] into trajectories for k_step_errors.

    Returns:
      obs [N, T + 1, O] with obs[:, t] = transitions.obs[t] and obs[:, T] =
      next_obs[T - 1]; actions [N, T, A]; episode_end [N, T]. Under auto-reset,
      obs[:, t + 1] after an episode end is the next episode's first observation, which
      the end flag marks.
    """
    obs = np.asarray(transitions.obs)
    if obs.ndim != 3:
        raise ValueError(f"expected transitions with [T, N, O] observations, got {obs.shape}")
    seq = np.concatenate([obs, np.asarray(transitions.next_obs)[-1:]], 0)
    return (seq.swapaxes(0, 1), np.asarray(transitions.action).swapaxes(0, 1),
            np.asarray(transitions.episode_end).swapaxes(0, 1))


def _zero_reward(obs, action, next_obs):
    return jnp.zeros((), obs.dtype)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5))
def _kstep_chunk(model, propagation, p, sample, horizon, t_len, state, acts, seq, ends,
                 scale2, rows, starts, live, key, index):
    """Window sums of C starts (rows [C], starts [C]) over K = horizon steps.

    acts [N, T + K, A], seq [N, T + K + 1, O] and ends [N, T + K + 1] (episode ends
    before each step) are padded so every window can be gathered; returns the valid-window
    sums of squared error, baseline squared error and particle variance ([K, O] each), the
    window counts [K], the per-window normalised error [C, K] and validity [C, K].
    """
    o = seq.shape[-1]
    win = starts[:, None] + jnp.arange(1, horizon + 1)[None, :]  # [C, K] index of s_{t+j}
    a = acts[rows[:, None], win - 1]  # [C, K, A]
    s0 = seq[rows, starts]  # [C, O]
    target = seq[rows[:, None], win]  # [C, K, O]
    valid = ((win <= t_len) & (ends[rows[:, None], win] == ends[rows, starts][:, None])
             & live[:, None]).astype(jnp.float32)  # [C, K]
    c = rows.shape[0]
    out = rollout_particles(
        model, state, jnp.repeat(s0, p, 0), jnp.repeat(a, p, 0), jax.random.fold_in(key, index),
        reward_fn=_zero_reward, propagation=propagation, sample=sample)
    pred = out.obs[:, 1:].reshape(c, p, horizon, o)  # particle b = start * P + i
    xbar = pred.mean(1)  # [C, K, O]
    err2 = (xbar - target) ** 2
    base2 = (s0[:, None] - target) ** 2
    w = valid[..., None]
    per_window = (err2 / scale2).mean(-1)  # [C, K]
    return ((w * err2).sum(0), (w * base2).sum(0), (w * pred.var(1)).sum(0), valid.sum(0),
            per_window, valid)


def _check_kstep_inputs(model: EnsembleModel, obs, actions, ks: Sequence[int], propagation: str,
                        episode_end, num_particles: int | None, start_stride: int,
                        chunk_size: int):
    """Checks and converts :func:`k_step_errors`' inputs.

    Returns:
      (obs float32 [N, T + 1, O], actions float32 [N, T, A], episode_end float32 [N, T]
      (zeros if None), ks sorted unique ints in [1, T], p particles per start).

    Raises:
      ValueError: mismatched shapes, an empty batch, k outside [1, T], an unknown
        propagation or particle count, or start_stride / chunk_size < 1.
    """
    obs = np.asarray(obs, np.float32)
    actions = np.asarray(actions, np.float32)
    if obs.ndim != 3 or actions.ndim != 3:
        raise ValueError(f"expected obs [N, T + 1, O] and actions [N, T, A], got obs "
                         f"{obs.shape} and actions {actions.shape}")
    n, t_plus_1, o = obs.shape
    t_len = t_plus_1 - 1
    if o != model.obs_size or actions.shape[-1] != model.action_size:
        raise ValueError(f"model expects obs [..., {model.obs_size}] and actions [..., "
                         f"{model.action_size}], got {obs.shape} and {actions.shape}")
    if actions.shape[:2] != (n, t_len):
        raise ValueError(f"actions {actions.shape} must be [N, T, A] = [{n}, {t_len}, A] for "
                         f"obs {obs.shape} (obs has one more step than actions)")
    if n == 0 or t_len < 1:
        raise ValueError(f"no trajectories to evaluate (obs {obs.shape})")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1 or ks[-1] > t_len:
        raise ValueError(f"ks must lie in [1, T = {t_len}], got {ks}")
    if episode_end is None:
        episode_end = np.zeros((n, t_len))
    episode_end = np.asarray(episode_end, np.float32)
    if episode_end.shape != (n, t_len):
        raise ValueError(f"episode_end {episode_end.shape} must be [N, T] = [{n}, {t_len}]")
    if propagation not in PROPAGATIONS:
        raise ValueError(f"unknown propagation {propagation!r}; valid: {', '.join(PROPAGATIONS)}")
    num_members = model.num_members
    p = num_particles or (1 if propagation == "expectation" else num_members)
    check_propagation(propagation, p, num_members)
    if start_stride < 1 or chunk_size < 1:
        raise ValueError("start_stride and chunk_size must be >= 1")
    return obs, actions, episode_end, ks, p


def _padded_trajectories(obs: np.ndarray, actions: np.ndarray, episode_end: np.ndarray,
                         horizon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Copies padded by K = ``horizon`` steps so every start can gather K steps.

    Args:
      obs [N, T + 1, O], actions [N, T, A], episode_end [N, T].

    Returns:
      (acts [N, T + K, A] zero-padded, seq [N, T + K + 1, O] repeating the last
      observation, ends [N, T + K + 1]: the number of episode ends before each step).
      Padded steps are masked by :func:`_kstep_chunk` (t + j <= T).
    """
    n, _, o = obs.shape
    acts = np.concatenate([actions, np.zeros((n, horizon, actions.shape[-1]), np.float32)], 1)
    seq = np.concatenate([obs, np.broadcast_to(obs[:, -1:], (n, horizon, o))], 1)
    ends = np.concatenate([np.zeros((n, 1)), np.cumsum(episode_end > 0.5, 1)], 1)
    ends = np.concatenate([ends, np.broadcast_to(ends[:, -1:], (n, horizon))], 1)
    return acts, seq, ends


def _kstep_sums(model: EnsembleModel, state: ModelState, propagation: str, p: int,
                sample: bool, horizon: int, t_len: int, acts, seq, ends, scale2: np.ndarray,
                start_stride: int, chunk_size: int, key: PRNGKey):
    """Runs :func:`_kstep_chunk` over all starts (n, t), t = 0, stride, ... < T, in chunks.

    The last chunk is padded (dead starts) so that all chunks share one compile; chunk
    i folds ``i`` into ``key``.

    Returns:
      (sums: [err2, base2, var] each float64 [K, O], count float64 [K], per-window
      normalised error float64 [S, K] and validity bool [S, K] of the S chunked starts).
    """
    n, o = seq.shape[0], seq.shape[-1]
    rows_all, starts_all = np.meshgrid(np.arange(n), np.arange(0, t_len, start_stride),
                                       indexing="ij")
    rows_all, starts_all = rows_all.reshape(-1), starts_all.reshape(-1)
    total = rows_all.size
    chunk = min(chunk_size, total)
    sums = [np.zeros((horizon, o)) for _ in range(3)]
    count = np.zeros(horizon)
    windows = []  # (per-window nmse, validity) for medians
    for i, begin in enumerate(range(0, total, chunk)):
        r, s = rows_all[begin:begin + chunk], starts_all[begin:begin + chunk]
        live = np.ones(chunk, bool)
        if r.size < chunk:  # pad the last chunk: one compile for all chunks
            live[r.size:] = False
            r = np.concatenate([r, np.zeros(chunk - r.size, r.dtype)])
            s = np.concatenate([s, np.zeros(chunk - s.size, s.dtype)])
        e2, b2, var, cnt, pw, val = _kstep_chunk(
            model, propagation, int(p), bool(sample), horizon, t_len, state, acts, seq, ends,
            scale2.astype(np.float32), r, s, live, key, np.int32(i))
        for acc, x in zip(sums, (e2, b2, var)):
            acc += np.asarray(x, np.float64)
        count += np.asarray(cnt, np.float64)
        windows.append((np.asarray(pw, np.float64), np.asarray(val) > 0))
    pw = np.concatenate([w[0] for w in windows])
    val = np.concatenate([w[1] for w in windows])
    return sums, count, pw, val


def _kstep_curve(sums, count: np.ndarray, pw: np.ndarray, val: np.ndarray,
                 scale2: np.ndarray):
    """The error curve over j = 1..K from the window sums (see :func:`_kstep_sums`).

    Args:
      sums: [err2, base2, var] each [K, O]; count [K]; pw [S, K] and val [S, K] the
        per-window normalised errors and validity; scale2 [O] training-data variance.

    Returns:
      (curve: JSON-ready dict of lists over j (None where no window counts),
      mse_d [K, O] and nmse_d [K, O]).
    """
    horizon = count.shape[0]
    safe = np.maximum(count, 1.0)[:, None]
    mse_d = sums[0] / safe
    nmse_d = mse_d / scale2
    base_nmse = (sums[1] / safe / scale2).mean(-1)
    spread = (sums[2] / safe / scale2).mean(-1)
    median = np.array([np.median(pw[val[:, j], j]) if val[:, j].any() else np.nan
                       for j in range(horizon)])
    none_if_empty = lambda x: [None if c == 0 else float(v) for v, c in zip(x, count)]
    curve = {
        "k": list(range(1, horizon + 1)),
        "num_windows": count.astype(int).tolist(),
        "mse": none_if_empty(mse_d.mean(-1)),
        "nmse": none_if_empty(nmse_d.mean(-1)),
        "nmse_median": none_if_empty(median),
        "baseline_nmse": none_if_empty(base_nmse),
        "spread_nvar": none_if_empty(spread),
    }
    return curve, mse_d, nmse_d


def _kstep_table(ks: Sequence[int], curve: dict, count: np.ndarray, mse_d: np.ndarray,
                 nmse_d: np.ndarray) -> dict:
    """The rows k of ``curve`` (plus rmse and per-dim errors [O]) keyed by ``str(k)``."""
    return {
        str(k): {
            "num_windows": int(count[k - 1]),
            "mse": curve["mse"][k - 1],
            "nmse": curve["nmse"][k - 1],
            "nmse_median": curve["nmse_median"][k - 1],
            "rmse": None if count[k - 1] == 0 else float(np.sqrt(mse_d[k - 1].mean())),
            "baseline_nmse": curve["baseline_nmse"][k - 1],
            "spread_nvar": curve["spread_nvar"][k - 1],
            "mse_per_dim": None if count[k - 1] == 0 else _floats(mse_d[k - 1]),
            "nmse_per_dim": None if count[k - 1] == 0 else _floats(nmse_d[k - 1]),
        }
        for k in ks
    }


def k_step_errors(model: EnsembleModel, state: ModelState, obs: Array, actions: Array,
                  ks: Sequence[int] = DEFAULT_KS, propagation: str = "ts_inf", *,
                  episode_end: Array | None = None, key: PRNGKey | None = None,
                  num_particles: int | None = None, sample: bool = True,
                  start_stride: int = 1, chunk_size: int = 512) -> dict:
    """Open-loop (compounding) prediction error after k model steps.

    From every start (n, t) (every ``start_stride``-th t) the model is rolled out with
    ``rollout_particles`` on the true actions a[n, t .. t+K-1], K = max(ks), with P
    particles; the prediction after j steps is the particle mean xbar_j. A window
    (n, t, j) counts iff t + j <= T and no episode ends within it (episode_end[n, t'] = 0
    for t <= t' < t + j). Over the counted windows, per step j = 1..K:

    * ``mse_per_dim`` = mean (xbar_j - s_{t+j})^2 in data units;
    * ``nmse`` = mean_d mse_per_dim[d] / sigma_d^2 with sigma_d the training-data std of
      observation dim d (``state.input_norm``), i.e. the error in units of the state's
      spread; ``nmse_median``: median over windows of the per-window nmse;
    * ``baseline_nmse``: the same for the constant prediction s_t (no model);
    * ``spread_nvar``: mean particle variance / sigma_d^2 (the model's own uncertainty
      about the k-step prediction; compare with nmse).

    Args:
      obs: [N, T + 1, O] observation sequences; obs[n, t + 1] follows action[n, t] unless
        episode_end[n, t] = 1 (then it is the first observation of the next episode).
      actions: [N, T, A].
      ks: steps at which errors are tabulated (the curve for all j <= K is also returned).
      propagation: ``"ts_inf"``, ``"ts1"`` or ``"expectation"`` (see ``mbjax.models.rollout``).
      episode_end: [N, T] 1.0 where the episode ends after step t; None = no ends.
      key: PRNG key of sampling / TS-1 (default PRNGKey(0)); same key, same numbers.
      num_particles: particles per start (default: E for TS modes, 1 for expectation);
        a multiple of E for TS modes.
      sample: sample s' ~ N(mu, sigma^2) in TS modes (probabilistic models).
      start_stride: use every ``start_stride``-th start time (fewer windows, faster).
      chunk_size: starts per compiled batch (memory vs speed; results do not depend on it
        except through the random stream of sampling).

    Returns:
      A JSON-ready dict with ``ks``, ``curve`` (all j) and ``table`` (the ks).

    Raises:
      ValueError: mismatched shapes, an empty batch, or k outside [1, T].
    """
    obs, actions, episode_end, ks, p = _check_kstep_inputs(
        model, obs, actions, ks, propagation, episode_end, num_particles, start_stride,
        chunk_size)
    n, t_plus_1, o = obs.shape
    t_len = t_plus_1 - 1
    key = jax.random.PRNGKey(0) if key is None else key
    horizon = ks[-1]
    acts, seq, ends = _padded_trajectories(obs, actions, episode_end, horizon)
    scale2 = np.asarray(state.input_norm.std, np.float64)[:o] ** 2
    sums, count, pw, val = _kstep_sums(model, state, propagation, p, sample, horizon, t_len,
                                       acts, seq, ends, scale2, start_stride, chunk_size, key)
    if count[0] == 0:
        raise ValueError("no window of the trajectories is free of episode ends")
    curve, mse_d, nmse_d = _kstep_curve(sums, count, pw, val, scale2)
    return {
        "ks": ks,
        "propagation": propagation,
        "num_particles": int(p),
        "sample": bool(sample and model.config.probabilistic and propagation != "expectation"),
        "num_trajectories": int(n),
        "trajectory_length": int(t_len),
        "start_stride": int(start_stride),
        "obs_std": _floats(np.sqrt(scale2)),
        "curve": curve,
        "table": _kstep_table(ks, curve, count, mse_d, nmse_d),
    }
