"""Ensemble dynamics models: fitting known dynamics, uncertainty, propagation, failure modes."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbjax.models import (
    EnsembleConfig,
    EnsembleModel,
    ModelTrainConfig,
    ModelTrainingError,
    make_model_trainer,
    raise_if_failed,
)
from mbjax.models.rollout import rollout, rollout_particles
from mbjax.types import Transition

O, A = 3, 2


def linear_system(seed=0):
    ka, kb = jax.random.split(jax.random.PRNGKey(seed))
    a_mat = jnp.eye(O) + 0.1 * jax.random.normal(ka, (O, O))
    b_mat = 0.5 * jax.random.normal(kb, (O, A))
    return a_mat, b_mat


def linear_data(key, n, noise, system, capacity=None, shift=0.0):
    a_mat, b_mat = system
    k1, k2, k3 = jax.random.split(key, 3)
    s = jax.random.normal(k1, (n, O)) + shift
    a = jax.random.uniform(k2, (n, A), minval=-1, maxval=1)
    clean = s @ a_mat.T + a @ b_mat.T
    ns = clean + noise * jax.random.normal(k3, (n, O))
    zeros = jnp.zeros(n)
    data = Transition(obs=s, action=a, reward=zeros, next_obs=ns, done=zeros, truncated=zeros)
    if capacity is not None and capacity > n:  # pad like a partly filled buffer
        data = jax.tree_util.tree_map(
            lambda x: jnp.concatenate([x, jnp.zeros((capacity - n,) + x.shape[1:])]), data)
    return data, clean


def small_model(probabilistic, members=5, elites=5):
    cfg = EnsembleConfig(num_members=members, num_elites=elites, hidden_sizes=(64, 64),
                         probabilistic=probabilistic, weight_decay=())
    return EnsembleModel(O, A, cfg)


@pytest.mark.slow  # > 8 s: kept out of the quick loop (CI runs it)
def test_deterministic_ensemble_learns_linear_dynamics():
    system = linear_system(0)
    data, _ = linear_data(jax.random.PRNGKey(1), 3000, 0.01, system)
    model = small_model(False)
    trainer = make_model_trainer(model, ModelTrainConfig(batch_size=64, max_epochs=60))
    state, metrics = jax.jit(trainer.train)(trainer.init(jax.random.PRNGKey(2)), data, 3000,
                                            jax.random.PRNGKey(3))
    raise_if_failed(metrics)
    test, clean = linear_data(jax.random.PRNGKey(4), 1000, 0.0, system)
    pred = model.predict(state, test.obs, test.action)
    delta_var = jnp.var(clean - test.obs)
    nmse = jnp.mean((pred.next_obs_mean - clean) ** 2) / delta_var
    assert nmse < 1e-3, nmse
    assert int(metrics["model/num_holdout"]) == 600 and int(metrics["model/epochs"]) >= 5


@pytest.fixture(scope="module")
def gaussian_fit():
    system = linear_system(1)
    noise = 0.05
    data, _ = linear_data(jax.random.PRNGKey(5), 4000, noise, system)
    model = small_model(True)
    trainer = make_model_trainer(model, ModelTrainConfig(
        batch_size=64, max_epochs=150, early_stopping=False, learning_rate=3e-3))
    state, metrics = jax.jit(trainer.train)(trainer.init(jax.random.PRNGKey(6)), data, 4000,
                                            jax.random.PRNGKey(7))
    raise_if_failed(metrics)
    return model, state, system, noise


def test_gaussian_head_recovers_noise_std_and_is_calibrated(gaussian_fit):
    model, state, system, noise = gaussian_fit
    test, _ = linear_data(jax.random.PRNGKey(8), 2000, noise, system)
    pred = model.predict(state, test.obs, test.action)
    mean_std = float(pred.next_obs_std.mean())
    assert abs(mean_std - noise) / noise < 0.10, mean_std
    z = jnp.abs(test.next_obs - pred.next_obs_mean) / pred.next_obs_std
    coverage = float(jnp.mean(z < 1.0))
    assert abs(coverage - 0.6827) < 0.07, coverage


def test_members_differ_and_disagree_more_off_distribution(gaussian_fit):
    model, state, system, _ = gaussian_fit
    on, _ = linear_data(jax.random.PRNGKey(9), 500, 0.0, system)
    off, _ = linear_data(jax.random.PRNGKey(9), 500, 0.0, system, shift=6.0)
    p_on = model.predict(state, on.obs, on.action)
    p_off = model.predict(state, off.obs, off.action)
    dis_on = jnp.std(p_on.next_obs_mean, axis=0).mean()
    dis_off = jnp.std(p_off.next_obs_mean, axis=0).mean()
    assert dis_on > 0  # members differ (bootstrap + init)
    assert dis_off > 5 * dis_on, (dis_on, dis_off)


def _member_tagged_model(members=5):
    """A deterministic model whose member e predicts s' = s + (e + 1) exactly."""
    model = EnsembleModel(1, 1, EnsembleConfig(num_members=members, num_elites=members,
                                               hidden_sizes=(4,), probabilistic=False,
                                               weight_decay=()))
    state = model.init(jax.random.PRNGKey(0))
    layers = [dict(layer) for layer in state.params.layers]
    layers[-1]["w"] = jnp.zeros_like(layers[-1]["w"])
    layers[-1]["b"] = jnp.arange(1.0, members + 1).reshape(members, 1, 1)
    return model, state.replace(params=state.params.replace(layers=layers))


def test_ts_inf_assigns_each_member_p_over_e_particles():
    model, state = _member_tagged_model(5)
    reward_fn = lambda o, a, n: n[0]
    out = rollout(model, state, jnp.zeros(1), jnp.zeros((4, 1)), jax.random.PRNGKey(0),
                  num_particles=10, reward_fn=reward_fn, propagation="ts_inf")
    steps = np.diff(np.asarray(out.obs[:, :, 0]), axis=1)  # [P, H] member tag per step
    assert np.all(steps == steps[:, :1])  # a particle keeps its member
    counts = np.bincount(steps[:, 0].astype(int), minlength=6)[1:]
    np.testing.assert_array_equal(counts, [2, 2, 2, 2, 2])


def test_ts1_resamples_members_each_step_with_equal_shares():
    model, state = _member_tagged_model(5)
    out = rollout(model, state, jnp.zeros(1), jnp.zeros((6, 1)), jax.random.PRNGKey(1),
                  num_particles=10, reward_fn=lambda o, a, n: n[0], propagation="ts1")
    steps = np.diff(np.asarray(out.obs[:, :, 0]), axis=1).astype(int)
    for t in range(steps.shape[1]):
        np.testing.assert_array_equal(np.bincount(steps[:, t], minlength=6)[1:], [2] * 5)
    assert not np.all(steps == steps[:, :1])  # members change along a particle's path


def test_expectation_equals_mean_of_member_predictions(gaussian_fit):
    model, state, system, _ = gaussian_fit
    obs0 = jnp.array([0.3, -0.2, 0.1])
    act = jnp.array([[0.5, -0.5]])
    out = rollout(model, state, obs0, act, jax.random.PRNGKey(0), num_particles=3,
                  reward_fn=lambda o, a, n: jnp.sum(n), propagation="expectation")
    members = model.predict(state, obs0[None], act)
    expected = members.next_obs_mean.mean(0)[0]
    np.testing.assert_allclose(out.obs[0, 1], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.reward[0, 0], jnp.sum(expected), rtol=1e-5)


def test_disagreement_output_matches_member_spread(gaussian_fit):
    model, state, _, _ = gaussian_fit
    obs0 = jnp.zeros((5, O))
    acts = jnp.zeros((5, 2, A))
    out = rollout_particles(model, state, obs0, acts, jax.random.PRNGKey(0),
                            reward_fn=lambda o, a, n: 0.0, propagation="ts_inf",
                            sample=False, with_disagreement=True)
    members = model.predict(state, obs0, acts[:, 0])
    expected = jnp.std(members.next_obs_mean, axis=0).mean(-1)
    np.testing.assert_allclose(out.disagreement[:, 0], expected, rtol=1e-5)
    # With disagreement on, TS-inf still moves particle b with member b mod 5.
    np.testing.assert_allclose(out.obs[:, 1], members.next_obs_mean[jnp.arange(5), jnp.arange(5)],
                               rtol=1e-5, atol=1e-6)


def test_training_traces_once_across_growing_buffer():
    system = linear_system(2)
    data, _ = linear_data(jax.random.PRNGKey(0), 512, 0.01, system)
    model = small_model(True, members=3, elites=2)
    trainer = make_model_trainer(model, ModelTrainConfig(batch_size=32, max_epochs=2))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def train(state, data, n, key):
        return trainer.train(state, data, n, key)

    state = trainer.init(jax.random.PRNGKey(1))
    for n in (64, 128, 300, 512):
        state, metrics = train(state, data, jnp.int32(n), jax.random.PRNGKey(n))
        assert int(metrics["model/num_train"] + metrics["model/num_holdout"]) == n
    assert state.elites.shape == (2,)


def test_nan_data_raises_naming_the_iteration():
    system = linear_system(3)
    data, _ = linear_data(jax.random.PRNGKey(0), 256, 0.01, system)
    data = data.replace(next_obs=data.next_obs.at[17, 1].set(jnp.nan))
    model = small_model(False, members=2, elites=2)
    trainer = make_model_trainer(model, ModelTrainConfig(batch_size=32, max_epochs=2))
    state0 = trainer.init(jax.random.PRNGKey(1))
    state, metrics = jax.jit(trainer.train)(state0, data, 256, jax.random.PRNGKey(2))
    with pytest.raises(ModelTrainingError, match="iteration 7.*NaN or inf"):
        raise_if_failed(metrics, iteration=7)
    # Params were not touched: no silent NaN params.
    for leaf in jax.tree_util.tree_leaves(state.params):
        assert np.all(np.isfinite(leaf))
    # NaN beyond the valid rows is ignored (unused capacity may hold anything).
    _, ok = jax.jit(trainer.train)(state0, data, 16, jax.random.PRNGKey(2))
    raise_if_failed(ok)


def test_diverging_loss_raises_and_keeps_finite_params():
    system = linear_system(4)
    data, _ = linear_data(jax.random.PRNGKey(0), 256, 0.01, system)
    model = small_model(True, members=2, elites=2)
    trainer = make_model_trainer(model, ModelTrainConfig(batch_size=32, max_epochs=5,
                                                         learning_rate=1e8))
    state, metrics = jax.jit(trainer.train)(trainer.init(jax.random.PRNGKey(1)), data, 256,
                                            jax.random.PRNGKey(2))
    with pytest.raises(ModelTrainingError, match="iteration 2.*diverged"):
        raise_if_failed(metrics, iteration=2)
    for leaf in jax.tree_util.tree_leaves(state.params):
        assert np.all(np.isfinite(leaf))


def test_bad_model_config_values():
    with pytest.raises(ValueError, match="num_elites"):
        EnsembleConfig(num_members=3, num_elites=5)
    with pytest.raises(ValueError, match="activation"):
        EnsembleConfig(activation="sigmoidal")
    with pytest.raises(ValueError, match="learning_rate"):
        ModelTrainConfig(learning_rate=0.0)
    with pytest.raises(ValueError, match="multiple of the ensemble size"):
        model, state = _member_tagged_model(5)
        rollout(model, state, jnp.zeros(1), jnp.zeros((2, 1)), jax.random.PRNGKey(0),
                num_particles=7, reward_fn=lambda o, a, n: 0.0)
    model = small_model(False)
    with pytest.raises(ValueError, match="model expects obs"):
        model.predict(model.init(jax.random.PRNGKey(0)), jnp.zeros((4, O + 1)), jnp.zeros((4, A)))


def _spoil_members(state, bad):
    """Adds 1e3 (normalised target units) to the output bias of the members ``bad``: a
    few epochs of Adam at 1e-3 cannot undo it, so those members stay far worse."""
    layers = [dict(layer) for layer in state.params.layers]
    offset = jnp.zeros(layers[-1]["b"].shape[0]).at[jnp.asarray(bad)].set(1e3)
    layers[-1]["b"] = layers[-1]["b"] + offset[:, None, None]
    return state.replace(params=state.params.replace(layers=layers))


@pytest.mark.parametrize("early_stopping", [False, True])
def test_elites_are_the_best_members_not_the_first(early_stopping):
    system = linear_system(5)
    data, _ = linear_data(jax.random.PRNGKey(0), 256, 0.01, system)
    model = small_model(False, members=5, elites=2)
    trainer = make_model_trainer(model, ModelTrainConfig(
        batch_size=32, max_epochs=3, early_stopping=early_stopping))
    state = _spoil_members(trainer.init(jax.random.PRNGKey(1)), bad=[0, 1, 2])
    state, metrics = jax.jit(trainer.train)(state, data, 256, jax.random.PRNGKey(2))
    raise_if_failed(metrics)
    assert sorted(state.elites.tolist()) == [3, 4]
    # The elites are also the best members on fresh data.
    test, _ = linear_data(jax.random.PRNGKey(3), 500, 0.0, system)
    pred = model.predict(state, test.obs, test.action)
    member_mse = jnp.mean((pred.next_obs_mean - test.next_obs) ** 2, axis=(1, 2))
    assert float(jnp.max(member_mse[state.elites])) < 1e-3 * float(jnp.min(member_mse[:3]))


def test_learning_rate_argument_may_be_traced_and_vmapped():
    system = linear_system(6)
    data, _ = linear_data(jax.random.PRNGKey(0), 256, 0.01, system)
    model = small_model(True, members=2, elites=1)
    cfg = ModelTrainConfig(batch_size=32, max_epochs=3, learning_rate=1e-3)
    trainer = make_model_trainer(model, cfg)
    state0 = trainer.init(jax.random.PRNGKey(1))
    key = jax.random.PRNGKey(2)
    train = jax.jit(trainer.train)
    default, _ = train(state0, data, 256, key)
    same, _ = train(state0, data, 256, key, jnp.asarray(cfg.learning_rate))
    chex.assert_trees_all_equal(default.params, same.params)
    lrs = jnp.array([cfg.learning_rate, 1e-2])
    sweep = jax.jit(jax.vmap(trainer.train, in_axes=(None, None, None, None, 0)))
    both, _ = sweep(state0, data, 256, key, lrs)
    fast, _ = train(state0, data, 256, key, lrs[1])
    for i, single in enumerate((same, fast)):
        run_i = jax.tree_util.tree_map(lambda x, i=i: x[i], both.params)
        chex.assert_trees_all_close(run_i, single.params, rtol=1e-5, atol=1e-6)
    gap = max(float(jnp.max(jnp.abs(leaf[0] - leaf[1])))
              for leaf in jax.tree_util.tree_leaves(both.params))
    assert gap > 1e-2, gap


def test_early_stopping_stops_after_patience_and_restores_the_best_weights():
    """A fitted ensemble trained on with a step size that only makes it worse (Adam 3.0):
    no member ever improves on its incoming weights, so training stops after exactly
    ``patience`` epochs and every member is restored to those weights (bit for bit),
    while the same steps without early stopping wreck the model."""
    system = linear_system(7)
    data, _ = linear_data(jax.random.PRNGKey(0), 512, 0.01, system)
    model = small_model(False, members=3, elites=3)
    cfg = ModelTrainConfig(batch_size=32, max_epochs=40, patience=3)
    trainer = make_model_trainer(model, cfg)
    train = jax.jit(trainer.train)
    fitted, _ = train(trainer.init(jax.random.PRNGKey(1)), data, 512, jax.random.PRNGKey(2))
    after, metrics = train(fitted, data, 512, jax.random.PRNGKey(3), 3.0)
    assert int(metrics["model/epochs"]) == cfg.patience
    chex.assert_trees_all_equal(after.params, fitted.params)
    wrecked, _ = jax.jit(make_model_trainer(model, ModelTrainConfig(
        batch_size=32, max_epochs=3, early_stopping=False)).train)(
        fitted, data, 512, jax.random.PRNGKey(3), 3.0)
    test, _ = linear_data(jax.random.PRNGKey(9), 500, 0.0, system)

    def mse(state):
        pred = model.predict(state, test.obs, test.action).next_obs_mean
        return float(jnp.mean((pred - test.next_obs) ** 2))

    assert mse(fitted) < 1e-4  # measured 2.8e-5
    assert mse(wrecked) > 100 * mse(fitted), (mse(wrecked), mse(fitted))


@pytest.mark.parametrize("propagation", ["ts_inf", "expectation"])
def test_known_next_obs_sets_the_task_entries_of_every_predicted_step(gaussian_fit,
                                                                      propagation):
    """Entry 0 is a known clock (+0.25 per step): rolled out, it reads 0.25 t exactly
    whatever the model predicts, the rest is the model's, and rewards see the clock."""
    model, state, _, _ = gaussian_fit
    clock = lambda o, n: n.at[0].set(o[0] + 0.25)
    kwargs = dict(reward_fn=lambda o, a, n: n[0], propagation=propagation, sample=False)
    obs0, acts = jnp.zeros((5, O)), jnp.full((5, 4, A), 0.3)
    out = rollout_particles(model, state, obs0, acts, jax.random.PRNGKey(0),
                            known_next_obs=clock, **kwargs)
    plain = rollout_particles(model, state, obs0, acts, jax.random.PRNGKey(0), **kwargs)
    np.testing.assert_allclose(out.obs[:, :, 0], np.tile(0.25 * np.arange(5), (5, 1)),
                               atol=1e-6)
    np.testing.assert_allclose(out.reward, np.tile(0.25 * np.arange(1, 5), (5, 1)), atol=1e-6)
    assert np.abs(np.asarray(plain.obs[:, 1:, 0]) - 0.25 * np.arange(1, 5)).max() > 1e-2
    # The first step's other entries are the model's prediction from the same start.
    np.testing.assert_allclose(out.obs[:, 1, 1:], plain.obs[:, 1, 1:], rtol=1e-5, atol=1e-6)
