"""The model trainer's bad-data policy: NaN/inf or overflowing values among the valid rows
skip the whole update (every field of the state kept, reported in the metrics); anything in
the rows beyond ``num_valid`` is ignored exactly (as if those rows were zero)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbjax.models.ensemble import EnsembleConfig, EnsembleModel
from mbjax.models.training import ModelTrainConfig, ModelTrainingError, make_model_trainer
from mbjax.models.training import raise_if_failed as check_training
from mbjax.types import Transition

O, A = 3, 2
N, CAPACITY = 50, 64


def _data(n=N, capacity=CAPACITY, seed=0):
    """A nonlinear system's transitions; rows >= n are zero (unused buffer capacity)."""
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(seed), 4)
    s = jax.random.normal(k1, (capacity, O))
    a = jax.random.uniform(k2, (capacity, A), minval=-1, maxval=1)
    ns = s + 0.3 * jnp.tanh(s) + 0.2 * a[:, :1] + 0.01 * jax.random.normal(k3, (capacity, O))
    done = (jax.random.uniform(k4, (capacity,)) < 0.2).astype(jnp.float32)
    data = Transition(obs=s, action=a, reward=jnp.sum(s, -1), next_obs=ns, done=done,
                      truncated=jnp.zeros(capacity))
    return jax.tree_util.tree_map(lambda x: x.at[n:].set(0.0), data)


@functools.cache  # one compiled train per config, shared by the tests
def _trainer(probabilistic=True, heads=False, **train_kw):
    cfg = EnsembleConfig(num_members=3, num_elites=2, hidden_sizes=(16,), weight_decay=(),
                         probabilistic=probabilistic, learn_reward=heads,
                         learn_termination=heads)
    model = EnsembleModel(O, A, cfg)
    trainer = make_model_trainer(model, ModelTrainConfig(batch_size=16, max_epochs=3,
                                                         **train_kw))
    return model, trainer, jax.jit(trainer.train)


def _set(data, field, row, value):
    x = getattr(data, field)
    return data.replace(**{field: x.at[(row, 0) if x.ndim > 1 else row].set(value)})


def _assert_trees_equal(a, b):
    """Bit-for-bit equal pytrees (NaN equals NaN)."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _trained_state(trainer, train):
    """A state after one clean call: fitted normalisers, Adam moments, elites, holdout."""
    state, metrics = train(trainer.init(jax.random.PRNGKey(1)), _data(), N,
                           jax.random.PRNGKey(2))
    check_training(metrics)
    return state


# ---------------------------------------------------------------------------------------
# 1. NaN/inf among the valid rows: the whole state stays as it was.

# The trainer configs (each compiled once per session, shared with the tests below).
_GAUSSIAN = (True, False, ())
_FROM_SCRATCH = (True, False, (("retrain_from_scratch", True),))
_HEADS_NO_BOOTSTRAP_NO_ES = (True, True, (("bootstrap", False), ("early_stopping", False)))
_DETERMINISTIC = (False, False, ())


def _trainer_for(config):
    probabilistic, heads, train_kw = config
    return _trainer(probabilistic, heads, **dict(train_kw))


@pytest.mark.parametrize("config", [_GAUSSIAN, _FROM_SCRATCH, _HEADS_NO_BOOTSTRAP_NO_ES],
                         ids=["default", "from_scratch", "heads_no_bootstrap_no_es"])
@pytest.mark.parametrize("bad", [("next_obs", jnp.nan), ("obs", jnp.inf),
                                 ("reward", -jnp.inf)], ids=["nan", "inf", "reward_inf"])
def test_nonfinite_valid_rows_keep_the_whole_state(config, bad):
    field, value = bad
    model, trainer, train = _trainer_for(config)
    state = _trained_state(trainer, train)
    probe = _data(n=8, capacity=8, seed=9)
    before = model.predict(state, probe.obs, probe.action)

    bad_data = _set(_data(seed=3), field, 17, value)
    new_state, metrics = train(state, bad_data, N, jax.random.PRNGKey(4))

    # params, normalisers, optimizer state, elites and holdout losses: all unchanged
    after = model.predict(new_state, probe.obs, probe.action)
    assert np.all(np.isfinite(after.next_obs_mean))
    _assert_trees_equal(after, before)
    _assert_trees_equal(new_state, state)
    assert bool(metrics["model/data_nonfinite"])
    assert not bool(metrics["model/data_overflow"])
    with pytest.raises(ModelTrainingError, match="iteration 3.*NaN or inf"):
        check_training(metrics, iteration=3)


# ---------------------------------------------------------------------------------------
# 2. Rows beyond num_valid are ignored exactly: NaN/inf there == zeros there.

@pytest.mark.parametrize("config", [_GAUSSIAN, _DETERMINISTIC, _HEADS_NO_BOOTSTRAP_NO_ES],
                         ids=["gaussian", "deterministic", "heads_no_bootstrap_no_es"])
def test_invalid_rows_nan_give_exactly_the_zeroed_result(config):
    """Holdout MSE (early stopping: the held-out slots past n_hold), the padded last
    minibatch (no bootstrap: its weight-0 slots are invalid rows), normalisers."""
    _, trainer, train = _trainer_for(config)
    state0 = trainer.init(jax.random.PRNGKey(1))
    clean = _data()
    # Unused capacity holding garbage: NaN, +inf, -inf in every field.
    garbage = jnp.where(jnp.arange(CAPACITY) % 3 == 0, jnp.nan,
                        jnp.where(jnp.arange(CAPACITY) % 3 == 1, jnp.inf, -jnp.inf))
    dirty = jax.tree_util.tree_map(
        lambda x: jnp.where((jnp.arange(CAPACITY) >= N).reshape((-1,) + (1,) * (x.ndim - 1)),
                            garbage.reshape((-1,) + (1,) * (x.ndim - 1)), x), clean)
    key = jax.random.PRNGKey(2)
    ref_state, ref_metrics = train(state0, clean, N, key)
    state, metrics = train(state0, dirty, N, key)

    check_training(ref_metrics)
    check_training(metrics)
    _assert_trees_equal(metrics, ref_metrics)
    _assert_trees_equal(state, ref_state)
    assert np.isfinite(float(metrics["model/train_loss"]))


def test_invalid_rows_overflowing_values_are_ignored_too():
    _, trainer, train = _trainer_for(_GAUSSIAN)
    state0 = trainer.init(jax.random.PRNGKey(1))
    clean = _data()
    huge = jax.tree_util.tree_map(lambda x: x.at[N:].set(3e38), clean)
    ref_state, ref_metrics = train(state0, clean, N, jax.random.PRNGKey(2))
    state, metrics = train(state0, huge, N, jax.random.PRNGKey(2))
    check_training(metrics)
    _assert_trees_equal(metrics, ref_metrics)
    _assert_trees_equal(state, ref_state)


# ---------------------------------------------------------------------------------------
# 3. Finite values that would overflow float32 statistics: skipped like non-finite data.

@pytest.mark.parametrize("field, value", [("obs", 1e30), ("next_obs", -1e30),
                                          ("action", 1e19)])
def test_overflowing_values_skip_the_update_and_are_reported(field, value):
    model, trainer, train = _trainer_for(_GAUSSIAN)
    state = _trained_state(trainer, train)
    probe = _data(n=8, capacity=8, seed=9)
    before = model.predict(state, probe.obs, probe.action)

    new_state, metrics = train(state, _set(_data(seed=3), field, 5, value), N,
                               jax.random.PRNGKey(4))

    for leaf in jax.tree_util.tree_leaves((new_state.input_norm, new_state.target_norm)):
        assert np.all(np.isfinite(leaf))
    _assert_trees_equal(model.predict(new_state, probe.obs, probe.action), before)
    _assert_trees_equal(new_state, state)
    assert bool(metrics["model/data_nonfinite"])  # the same "bad data, skipped" flag
    assert bool(metrics["model/data_overflow"])  # ... and why
    with pytest.raises(ModelTrainingError, match=r"iteration 4.*overflow.*1e\+?18"):
        check_training(metrics, iteration=4)


def test_large_values_below_the_limit_train_normally():
    _, trainer, train = _trainer_for(_GAUSSIAN)
    state = trainer.init(jax.random.PRNGKey(1))
    data = _set(_data(), "obs", 5, 1e15)
    state, metrics = train(state, data, N, jax.random.PRNGKey(2))
    check_training(metrics)
    assert not bool(metrics["model/data_overflow"])
    for leaf in jax.tree_util.tree_leaves((state.input_norm, state.target_norm)):
        assert np.all(np.isfinite(leaf))


def test_raise_if_failed_reads_metrics_without_the_overflow_flag():
    """Other models' metrics (registered families) need not report ``data_overflow``."""
    ok = {"model/data_nonfinite": np.array(False), "model/loss_nonfinite": np.array(False)}
    check_training(ok)
    with pytest.raises(ModelTrainingError, match="NaN or inf"):
        check_training(dict(ok, **{"model/data_nonfinite": np.array([False, True])}))
    with pytest.raises(ModelTrainingError, match="overflow"):
        check_training(dict(ok, **{"model/data_nonfinite": np.array([False, True]),
                                    "model/data_overflow": np.array([False, True])}))
