"""Training an ensemble inside ``jit``: bootstrap minibatches, holdout early stopping, elites.

``make_model_trainer(model, config)`` returns ``ModelTrainer(init, train)``:

* ``init(key) -> ModelState`` (params, normalisers, Adam state);
* ``train(state, data, num_valid, key, learning_rate=None) -> (state, metrics)`` where
  ``data`` is a pytree of transitions with a fixed leading capacity axis [C, ...] whose
  first ``num_valid`` rows are valid (a replay buffer flattened with ``mbjax.buffers``).
  Shapes never depend on ``num_valid``, so a growing buffer never recompiles.
  ``learning_rate`` (a float or a traced scalar, e.g. one per seed under ``vmap``)
  replaces ``config.learning_rate`` for this call; None keeps the config's.

One call (MBPO, Janner et al. 2019, App. C; PETS, Chua et al. 2018):
1. fit input/target normalisers on the valid rows;
2. split off a random holdout set of min(ratio * n, max_holdout) rows;
3. each member gets a bootstrap resample (with replacement) of the training rows, drawn
   once per call and reshuffled every epoch;
4. epochs of Adam minibatch steps (``lax.while_loop``: the number of minibatches follows
   the data) until ``max_epochs`` or early stopping: after each epoch the held-out MSE of
   every member is compared with its best; a member improves when its relative gain
   exceeds ``improvement_threshold``; training stops after ``patience`` epochs in which no
   member improved, and each member keeps its best parameters;
5. elites = the ``num_elites`` members with the lowest held-out MSE; without early
   stopping (no holdout) the ``num_elites`` members with the lowest training loss, the
   mean over the minibatches of the last epoch of each member's loss on its own
   bootstrap rows, (1 / M) sum_b L_e(batch_b) (the quantity Adam minimised, weight decay
   excluded).

Bad data and the NaN policy:

* Rows at or beyond ``num_valid`` are ignored exactly: they are replaced by zeros before
  anything reads them, so NaN, inf or any garbage there (unused buffer capacity) gives
  bit for bit the result of the same data with those rows zeroed.
* NaN or inf in a valid row skips the update: the whole state (params, normalisers,
  optimizer state, elites, holdout losses) is returned unchanged, and
  ``model/data_nonfinite`` is set.
* Finite values too large for float32 statistics are treated the same way: a valid row
  whose model inputs [s, a] or regression targets (s' - s or s' [, r]) exceed
  :data:`MAX_ABS_DATA` = 1e18 in absolute value (whose squares, summed into a variance,
  would overflow float32's 3.4e38), or fitted normalisers that are not finite, skip the
  update and keep the state; ``model/data_nonfinite`` (the update was skipped for bad
  data) and ``model/data_overflow`` (the reason: overflow) are both set. Such values are
  a bug (a diverging simulator, an uninitialised buffer), not data to learn from.
* Non-finite losses (divergence) are never applied; ``model/loss_nonfinite`` is set.

:func:`raise_if_failed` turns any of these flags into an error that names the iteration
and the problem.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mbjax.models.base import BuiltModel, register_model
from mbjax.models.ensemble import EnsembleConfig, EnsembleModel, ModelState
from mbjax.networks.normalizer import fit_normalizer
from mbjax.sharding import shard_along_data
from mbjax.types import Array, PRNGKey


@dataclasses.dataclass(frozen=True)
class ModelTrainConfig:
    """How an ensemble is fitted. Defaults: MBPO's model training (Janner et al. 2019)."""

    learning_rate: float = 1e-3  # PETS and MBPO: Adam, 1e-3
    batch_size: int = 256  # MBPO: 256 (PETS HalfCheetah: 32)
    max_epochs: int = 100  # upper bound per call (MBPO stops early long before)
    holdout_ratio: float = 0.2  # MBPO: 20 % held out ...
    max_holdout: int = 5000  # ... at most 5000 transitions
    patience: int = 5  # MBPO: stop after 5 epochs ...
    improvement_threshold: float = 0.01  # ... without a 1 % improvement of any member
    early_stopping: bool = True  # False: exactly max_epochs, no holdout (PDDM-style)
    bootstrap: bool = True  # per-member bootstrap resampling (PETS)
    retrain_from_scratch: bool = False  # True: re-initialise params each call (PDDM)

    def __post_init__(self):
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.batch_size < 1 or self.max_epochs < 1 or self.patience < 1:
            raise ValueError("batch_size, max_epochs and patience must be >= 1")
        if not 0.0 <= self.holdout_ratio < 1.0:
            raise ValueError(f"holdout_ratio must be in [0, 1), got {self.holdout_ratio}")
        if self.early_stopping and (self.holdout_ratio == 0 or self.max_holdout < 1):
            raise ValueError("early_stopping needs holdout_ratio > 0 and max_holdout >= 1")


class ModelTrainer(NamedTuple):
    init: Any
    train: Any
    optimizer: optax.GradientTransformation


class ModelTrainingError(RuntimeError):
    """Model training met non-finite data or losses."""


def _model_inputs(data) -> tuple[Array, Array, Array, Array, Array]:
    return data.obs, data.action, data.next_obs, data.reward, data.done


class _Rows(NamedTuple):
    """The fields of the data the model reads, leaves [C, ...] (see :func:`_zero_invalid`)."""

    obs: Array
    action: Array
    next_obs: Array
    reward: Array
    done: Array


# Valid rows whose model inputs or targets exceed this magnitude skip the update (see the
# module docstring): |x| <= 1e18 keeps every squared deviation below 4e36, so float32
# normaliser statistics (weighted means of them) stay finite.
MAX_ABS_DATA = 1e18

# Adam's hyper-parameters (optax defaults; PETS and MBPO use plain Adam).
_B1, _B2, _EPS = 0.9, 0.999, 1e-8


def _guarded_adam_step(optimizer, learning_rate: float | Array, grads, opt_state, params,
                       finite: Array):
    """One ``optax.adam`` step, applied only where ``finite`` (else nothing changes).

    The moments come from ``optimizer.update`` (so ``opt_state`` stays optax's); the
    parameter step is then computed from the stored new moments, with optax's formula
    p - lr * m_hat / (sqrt(v_hat) + eps). Reading the stored moments (rather than letting
    XLA recompute them from the old ones inside the parameter update) lets every buffer
    be updated in place inside the training loop.
    """
    keep = lambda new, old: jnp.where(finite, new, old)
    _, new_opt = optimizer.update(grads, opt_state, params)
    new_opt = jax.tree_util.tree_map(keep, new_opt, opt_state)
    adam = new_opt[0]
    bc1 = 1 - _B1 ** adam.count
    bc2 = 1 - _B2 ** adam.count
    step = lambda m, v: -learning_rate * ((m / bc1) / (jnp.sqrt(v / bc2) + _EPS))
    updates = jax.tree_util.tree_map(step, adam.mu, adam.nu)
    new_params = jax.tree_util.tree_map(keep, optax.apply_updates(params, updates), params)
    return new_params, new_opt


def _all_finite(tree, valid: Array) -> Array:
    """bool []: no leaf [C, ...] of ``tree`` has a NaN/inf in a row where ``valid`` [C]."""
    ok = jnp.array(True)
    for x in jax.tree_util.tree_leaves(tree):
        bad = ~jnp.isfinite(x.reshape(x.shape[0], -1)).all(-1)
        ok = ok & ~jnp.any(bad & valid)
    return ok


def _zero_invalid(data, valid: Array) -> _Rows:
    """The model's fields of ``data`` (leaves [C, ...]), rows where not ``valid`` [C] zero.

    Every later step (normalisers, holdout MSE, minibatch losses and their gradients)
    then reads only finite values in the rows it ignores: a weight-0 row holding NaN
    would otherwise poison a masked sum (0 * NaN = NaN), and its gradient too.
    """
    def zero(x):
        keep = valid.reshape((-1,) + (1,) * (x.ndim - 1))
        return jnp.where(keep, x, jnp.zeros((), x.dtype))
    return _Rows(*(zero(x) for x in _model_inputs(data)))


def _within_range(model: EnsembleModel, data, valid: Array) -> Array:
    """bool []: the valid rows' model inputs and targets are all <= MAX_ABS_DATA in
    magnitude (NaN compares False, so callers also need :func:`_all_finite`)."""
    obs, action, next_obs, reward, _ = _model_inputs(data)
    ok = jnp.array(True)
    for x in (obs, action, model.targets(obs, action, next_obs, reward)):
        big = ~(jnp.abs(x.reshape(x.shape[0], -1)) <= MAX_ABS_DATA).all(-1)
        ok = ok & ~jnp.any(big & valid)
    return ok


def _normalizers_finite(state: ModelState) -> Array:
    """bool []: every statistic of the input and target normalisers is finite."""
    ok = jnp.array(True)
    for x in jax.tree_util.tree_leaves((state.input_norm, state.target_norm)):
        ok = ok & jnp.all(jnp.isfinite(x))
    return ok


# ---------------------------------------------------------------------------------------
# The steps of one ``train`` call, as pure functions (``make_model_trainer`` closes over
# the model, the optimizer and the config). E = num_members, C = the data's capacity.


def _minibatch_loss(model: EnsembleModel, params, state: ModelState, batch, weight: Array):
    """Summed member losses (+ weight decay) of one minibatch, for ``jax.grad``.

    Args:
      batch: (obs, action, next_obs, reward, done) with leaves [E, B, ...].
      weight: float32 [E, B], 0 for padded slots.

    Returns:
      (scalar total, (loss [E], mse [E])) with ``loss`` the data loss of each member.
    """
    obs, action, next_obs, reward, done = batch
    loss, mse = model.member_losses(params, state.input_norm, state.target_norm, obs,
                                    action, next_obs, reward, done, weight)
    total = loss + model.weight_decay_penalty(params)
    return jnp.sum(total), (loss, mse)


def _holdout_mse(model: EnsembleModel, params, state: ModelState, data, rows: Array,
                 weight: Array) -> Array:
    """MSE per member [E] on the held-out rows [H] (shared by all members), weights [H]."""
    num_members = model.config.num_members
    obs, action, next_obs, reward, done = jax.tree_util.tree_map(
        lambda x: x[rows], _model_inputs(data))
    e_b = lambda x: jnp.broadcast_to(x, (num_members,) + x.shape)
    _, mse = model.member_losses(
        params, state.input_norm, state.target_norm, e_b(obs), e_b(action),
        e_b(next_obs), e_b(reward), e_b(done), e_b(weight))
    return mse


def _fit_normalizers(model: EnsembleModel, state: ModelState, data, valid: Array
                     ) -> ModelState:
    """``state`` with input [O + A] and target [D] normalisers fitted on the valid [C] rows."""
    obs, action, next_obs, reward, _ = _model_inputs(data)
    inputs = jnp.concatenate([obs, action], axis=-1)
    targets = model.targets(obs, action, next_obs, reward)
    return state.replace(input_norm=fit_normalizer(inputs, valid),
                         target_norm=fit_normalizer(targets, valid))


def _holdout_split(cfg: ModelTrainConfig, key: PRNGKey, valid: Array, n: Array):
    """A random order of the rows (valid first) whose first ``n_hold`` are held out.

    Args:
      valid: bool [C], the first ``n`` rows; n: int32 [].

    Returns:
      (order int [C], n_hold int32 [], n_train int32 [], hold_rows int [H] or None,
      hold_weight float32 [H] or None) with H = min(max_holdout, C) and weight 1 on the
      first ``n_hold`` held-out slots; no holdout (None) without early stopping.
    """
    capacity = valid.shape[0]
    order = jnp.argsort(jnp.where(valid, jax.random.uniform(key, (capacity,)), jnp.inf))
    hold_rows = hold_weight = None
    if cfg.early_stopping:
        n_hold = jnp.minimum((cfg.holdout_ratio * n).astype(jnp.int32), cfg.max_holdout)
        n_hold = jnp.where(n >= 2, jnp.maximum(n_hold, 1), 0)
        max_hold = min(cfg.max_holdout, capacity)
        hold_rows = order[:max_hold]
        hold_weight = (jnp.arange(max_hold) < n_hold).astype(jnp.float32)
    else:
        n_hold = jnp.zeros((), jnp.int32)
    n_train = jnp.maximum(n - n_hold, 0)
    return order, n_hold, n_train, hold_rows, hold_weight


def _bootstrap_positions(cfg: ModelTrainConfig, key: PRNGKey, num_members: int,
                         rows: Array, n_train: Array) -> Array:
    """int [E, C]: member e trains on train-row positions ``boot[e, :n_train]``.

    A resample with replacement of 0..n_train-1 per member (``bootstrap``), else the
    identity ``rows`` = 0..C-1 (int32 [C]) for every member.
    """
    capacity = rows.shape[0]
    if cfg.bootstrap:
        return jax.random.randint(key, (num_members, capacity), 0, jnp.maximum(n_train, 1))
    return jnp.broadcast_to(rows, (num_members, capacity))


class _Fit(NamedTuple):
    """What the epochs of one ``train`` call read: the trainer's static parts and arrays.

    Attributes:
      model, optimizer, cfg: the trainer's model, ``optax.adam`` and config.
      grad_fn: ``jax.grad`` of :func:`_minibatch_loss` (with aux) for ``model``.
      lr: Adam's step size, a float or a scalar array.
      state: the ModelState with this call's normalisers (read by the losses).
      data: the transitions, leaves [C, ...].
      rows: int32 [C], the row indices 0..C-1.
      data_ok: bool [], no NaN/inf in the valid rows.
      order: int [C], the holdout split's row order (held-out rows first).
      n_hold, n_train: int32 [], numbers of held-out and training rows.
      hold_rows, hold_weight: int [H] and float32 [H], or None without early stopping.
      boot: int [E, C], bootstrap positions (see :func:`_bootstrap_positions`).
      key_epochs: PRNG key, folded with the epoch index.
      num_batches: int32 [], minibatches per epoch, ceil(n_train / batch_size).
      padded: static int, C rounded up to whole minibatches.
    """

    model: EnsembleModel
    optimizer: optax.GradientTransformation
    cfg: ModelTrainConfig
    grad_fn: Any
    lr: Any
    state: ModelState
    data: Any
    rows: Array
    data_ok: Array
    order: Array
    n_hold: Array
    n_train: Array
    hold_rows: Array | None
    hold_weight: Array | None
    boot: Array
    key_epochs: PRNGKey
    num_batches: Array
    padded: int


def _epoch_rows(fit: _Fit, key: PRNGKey) -> Array:
    """int [E, padded]: the data rows of one epoch's minibatches, per member.

    A per-member random order of the bootstrap positions 0..n_train-1 (valid positions
    first), resolved to data rows; padded with row 0 to whole minibatches.
    """
    num_members, capacity = fit.boot.shape
    rows = fit.rows
    keys = jax.random.split(key, num_members)
    bits = jax.vmap(lambda k: jax.random.bits(k, (capacity,), jnp.uint32))(keys)
    sort_keys = jnp.where(rows < fit.n_train, bits >> 1, jnp.uint32(0xFFFFFFFF))
    _, shuffle = jax.lax.sort(
        (sort_keys, jnp.broadcast_to(rows, sort_keys.shape)), dimension=1,
        is_stable=False, num_keys=1)
    positions = jnp.take_along_axis(fit.boot, shuffle, axis=1)
    epoch_rows = fit.order[(fit.n_hold + positions) % capacity]
    return jnp.pad(epoch_rows, ((0, 0), (0, fit.padded - capacity)))


def _minibatch_step(fit: _Fit, epoch_rows: Array, carry):
    """One iteration of the minibatch loop: apply the previous step, then take a gradient.

    The optimizer step for minibatch b is applied at the start of iteration b + 1 (and
    after the loop for the last one): the update is then the only reader of the old
    params, so XLA updates params and Adam moments in place instead of copying every
    loop-carried buffer each step.

    Args:
      epoch_rows: int [E, padded], see :func:`_epoch_rows`.
      carry: (b int32 [], params, opt_state, grads, finite bool [], loss_sum [E],
        bad bool []).

    Returns:
      The next carry.
    """
    b, params, opt_state, grads, finite, loss_sum, bad = carry
    params, opt_state = _guarded_adam_step(fit.optimizer, fit.lr, grads, opt_state, params,
                                           finite)
    batch_size = fit.cfg.batch_size
    start = b * batch_size
    idx = jax.lax.dynamic_slice_in_dim(epoch_rows, start, batch_size, 1)
    pos = start + jnp.arange(batch_size)
    weight = jnp.broadcast_to((pos < fit.n_train).astype(jnp.float32), idx.shape)
    # [E, B, ...]; split over the mesh's data devices (gradients all-reduced)
    batch = shard_along_data(
        jax.tree_util.tree_map(lambda x: x[idx], _model_inputs(fit.data)), axis=1)
    grads, (loss, _) = fit.grad_fn(params, fit.state, batch, weight)
    # Only the data loss decides whether a step is applied: the weight-decay term is
    # finite whenever the params are (and they stay finite).
    finite = jnp.isfinite(jnp.sum(loss))
    return (b + 1, params, opt_state, grads, finite,
            loss_sum + jnp.where(finite, loss, 0.0), bad | ~finite)


def _run_epoch(fit: _Fit, params, opt_state, key: PRNGKey):
    """One epoch of Adam minibatch steps over every member's bootstrap rows.

    Returns:
      (params, opt_state, mean minibatch loss [E], bad bool [] = a non-finite loss met).
    """
    epoch_rows = _epoch_rows(fit, key)
    num_members = fit.model.config.num_members
    init = (jnp.zeros((), jnp.int32), params, opt_state,
            jax.tree_util.tree_map(jnp.zeros_like, params), jnp.array(False),
            jnp.zeros(num_members), jnp.array(False))
    _, params, opt_state, grads, finite, loss_sum, bad = jax.lax.while_loop(
        lambda c: c[0] < fit.num_batches, functools.partial(_minibatch_step, fit, epoch_rows),
        init)
    params, opt_state = _guarded_adam_step(fit.optimizer, fit.lr, grads, opt_state, params,
                                           finite)
    return params, opt_state, loss_sum / jnp.maximum(fit.num_batches, 1), bad


def _evaluate(fit: _Fit, params) -> Array:
    """Held-out MSE per member [E]; zeros without early stopping."""
    if not fit.cfg.early_stopping:
        return jnp.zeros(fit.model.config.num_members)
    return _holdout_mse(fit.model, params, fit.state, fit.data, fit.hold_rows,
                        fit.hold_weight)


def _keep_improved(cfg: ModelTrainConfig, cur: Array, params, best_params,
                   best_loss: Array, since: Array):
    """Early stopping's bookkeeping after an epoch with held-out MSE ``cur`` [E].

    A member improves when its relative gain over ``best_loss`` [E] exceeds
    ``improvement_threshold``; it then keeps ``params``. ``since`` (int32 []) counts the
    epochs in which no member improved.

    Returns:
      (best_params, best_loss [E], since).
    """
    gain = (best_loss - cur) / jnp.maximum(jnp.abs(best_loss), 1e-12)
    improved = (gain > cfg.improvement_threshold) & jnp.isfinite(cur)
    best_loss = jnp.where(improved, cur, best_loss)
    best_params = jax.tree_util.tree_map(
        lambda new, old: jnp.where(
            improved.reshape((-1,) + (1,) * (new.ndim - 1)), new, old),
        params, best_params)
    since = jnp.where(jnp.any(improved), 0, since + 1)
    return best_params, best_loss, since


def _epoch_continues(fit: _Fit, carry) -> Array:
    """bool []: below max_epochs and patience, with finite data and training rows."""
    epoch, _, _, _, _, since, _, _ = carry
    cfg = fit.cfg
    return (epoch < cfg.max_epochs) & (since < cfg.patience) & fit.data_ok & (fit.n_train > 0)


def _epoch_step(fit: _Fit, carry):
    """One epoch and its early-stopping update.

    Args:
      carry: (epoch int32 [], params, opt_state, best_params, best_loss [E],
        since int32 [], train_loss [E], bad bool []).

    Returns:
      The next carry.
    """
    epoch, params, opt_state, best_params, best_loss, since, _, bad = carry
    params, opt_state, train_loss, bad_epoch = _run_epoch(
        fit, params, opt_state, jax.random.fold_in(fit.key_epochs, epoch))
    if fit.cfg.early_stopping:
        best_params, best_loss, since = _keep_improved(
            fit.cfg, _evaluate(fit, params), params, best_params, best_loss, since)
    else:
        best_params = params
    return (epoch + 1, params, opt_state, best_params, best_loss, since, train_loss,
            bad | bad_epoch)


def _fit_epochs(fit: _Fit):
    """The epoch loop from ``fit.state``'s params.

    Returns:
      (epochs int32 [], opt_state, best_params, best_loss [E], train_loss [E] of the last
      epoch, bad bool [] = a non-finite loss met).
    """
    num_members = fit.model.config.num_members
    best_loss0 = _evaluate(fit, fit.state.params)
    init = (jnp.zeros((), jnp.int32), fit.state.params, fit.state.opt_state, fit.state.params,
            best_loss0, jnp.zeros((), jnp.int32), jnp.zeros(num_members), jnp.array(False))
    epochs, _, opt_state, best_params, best_loss, _, train_loss, bad = jax.lax.while_loop(
        functools.partial(_epoch_continues, fit), functools.partial(_epoch_step, fit), init)
    return epochs, opt_state, best_params, best_loss, train_loss, bad


def _finish(fit: _Fit, overflow: Array, epochs: Array, opt_state, best_params,
            best_loss: Array, train_loss: Array, bad: Array):
    """The trained state (best params, elites) and the metrics of one ``train`` call.

    Elites: the ``num_elites`` members with the lowest held-out MSE, or, without early
    stopping, the lowest last-epoch training loss [E]. ``overflow``: bool [], the valid
    rows were finite but too large (see the module docstring).

    Returns:
      (ModelState, metrics dict of scalars).
    """
    ranking = best_loss if fit.cfg.early_stopping else train_loss
    elites = jnp.argsort(ranking)[: fit.model.config.num_elites].astype(jnp.int32)
    state = fit.state.replace(params=best_params, opt_state=opt_state, elites=elites,
                              holdout_loss=best_loss)
    metrics = {
        "model/epochs": epochs,
        "model/train_loss": jnp.mean(train_loss),
        "model/holdout_mse": jnp.mean(best_loss),
        "model/holdout_mse_elites": jnp.mean(best_loss[elites]),
        "model/num_train": fit.n_train,
        "model/num_holdout": fit.n_hold,
        "model/data_nonfinite": ~fit.data_ok,
        "model/data_overflow": overflow,
        "model/loss_nonfinite": bad,
    }
    return state, metrics


def _train(model: EnsembleModel, optimizer: optax.GradientTransformation, grad_fn,
           cfg: ModelTrainConfig, state: ModelState, data, num_valid: Array, key: PRNGKey,
           learning_rate: float | Array | None):
    """One ``train`` call (see the module docstring): data leaves [C, ...], n valid rows.

    Bad valid rows (NaN/inf, or beyond MAX_ABS_DATA) return ``state`` unchanged.

    Returns:
      (ModelState, metrics) as ``ModelTrainer.train``.
    """
    lr = cfg.learning_rate if learning_rate is None else learning_rate
    capacity = data.obs.shape[0]
    n = jnp.minimum(jnp.asarray(num_valid, jnp.int32), capacity)
    rows = jnp.arange(capacity)
    valid = rows < n
    key_init, key_split, key_boot, key_epochs = jax.random.split(key, 4)
    state_in = state

    if cfg.retrain_from_scratch:
        params = model.init_params(key_init)
        state = state.replace(params=params, opt_state=optimizer.init(params))

    data = _zero_invalid(data, valid)  # the ignored rows: exactly zeros from here on
    finite = _all_finite(_model_inputs(data), valid)
    state = _fit_normalizers(model, state, data, valid)
    overflow = finite & ~(_within_range(model, data, valid) & _normalizers_finite(state))
    data_ok = finite & ~overflow
    order, n_hold, n_train, hold_rows, hold_weight = _holdout_split(cfg, key_split, valid, n)
    boot = _bootstrap_positions(cfg, key_boot, model.config.num_members, rows, n_train)
    fit = _Fit(
        model=model, optimizer=optimizer, cfg=cfg, grad_fn=grad_fn, lr=lr, state=state,
        data=data, rows=rows, data_ok=data_ok, order=order, n_hold=n_hold, n_train=n_train,
        hold_rows=hold_rows, hold_weight=hold_weight, boot=boot, key_epochs=key_epochs,
        num_batches=(n_train + cfg.batch_size - 1) // cfg.batch_size,
        # Row positions are padded to whole minibatches so every step is a static-size
        # dynamic_slice; padded slots carry weight 0.
        padded=-(-capacity // cfg.batch_size) * cfg.batch_size)
    state, metrics = _finish(fit, overflow, *_fit_epochs(fit))
    # Bad data: keep every field of the incoming state (the epochs did not run, but the
    # normalisers were refitted, params re-initialised, elites and holdout re-ranked).
    state = jax.tree_util.tree_map(lambda new, old: jnp.where(data_ok, new, old), state,
                                   state_in)
    return state, metrics


def make_model_trainer(model: EnsembleModel, config: ModelTrainConfig | None = None
                       ) -> ModelTrainer:
    """Builds ``init``/``train`` for ``model``; see the module docstring."""
    cfg = config or ModelTrainConfig()
    optimizer = optax.adam(cfg.learning_rate, b1=_B1, b2=_B2, eps=_EPS)
    # Only the gradient is used (the finite check looks at the data loss in aux), so
    # XLA drops the forward of the weight-decay penalty and keeps its gradient c * W,
    # which fuses into the Adam update.
    grad_fn = jax.grad(functools.partial(_minibatch_loss, model), has_aux=True)

    def init(key: PRNGKey) -> ModelState:
        return model.init(key, optimizer)

    def train(state: ModelState, data, num_valid: Array, key: PRNGKey,
              learning_rate: float | Array | None = None):
        """Fits ``state`` to the first ``num_valid`` rows of ``data``; see module doc.

        ``learning_rate``: Adam's step size for this call (a float or a scalar array, may
        be traced); None = ``config.learning_rate``.
        """
        return _train(model, optimizer, grad_fn, cfg, state, data, num_valid, key,
                      learning_rate)

    return ModelTrainer(init=init, train=train, optimizer=optimizer)


def raise_if_failed(metrics: dict, iteration: int | None = None) -> None:
    """Raises ``ModelTrainingError`` if a ``train`` call met bad data or losses.

    Bad data: NaN/inf (``model/data_nonfinite``) or finite values beyond MAX_ABS_DATA
    (``model/data_overflow``, also setting ``model/data_nonfinite``; models that do not
    report it are read without it). Call it on the host after each training call (or
    after a vmapped batch of them).
    """
    where = f" at iteration {iteration}" if iteration is not None else ""
    skipped = np.asarray(metrics["model/data_nonfinite"]).astype(bool)
    overflow = np.asarray(metrics.get("model/data_overflow", False)).astype(bool)
    problems = []
    if bool(np.any(skipped & ~overflow)):
        problems.append("the data contain NaN or inf (obs, action, next_obs, reward or "
                        "done)")
    if bool(np.any(overflow)):
        problems.append(f"the data contain values that would overflow the float32 "
                        f"normaliser statistics (|x| > {MAX_ABS_DATA:.0e} in the model "
                        "inputs [obs, action] or targets, or a non-finite fitted mean/std)")
    if problems:
        raise ModelTrainingError(
            f"model training{where}: {'; and '.join(problems)}; the update was skipped "
            "and the model state kept. Check the environment or the code that filled the "
            "buffer.")
    if bool(jnp.any(metrics["model/loss_nonfinite"])):
        raise ModelTrainingError(
            f"model training{where}: the loss became NaN or inf (diverged); those updates "
            "were not applied. Lower the learning rate or check data scales.")


def build_ensemble(spec: EnsembleConfig, obs_size: int, action_size: int,
                   train_config: ModelTrainConfig | None = None) -> BuiltModel:
    """The built-in model: an ``EnsembleModel`` with ``make_model_trainer``'s init/train."""
    model = EnsembleModel(obs_size, action_size, spec)
    trainer = make_model_trainer(model, train_config)
    return BuiltModel(model=model, init=trainer.init, train=trainer.train)


register_model(EnsembleConfig, build_ensemble)
