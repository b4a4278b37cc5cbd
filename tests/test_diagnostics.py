"""Model diagnostics on a known linear-Gaussian system with hand-built exact ensembles.

s' = A s + B a + sigma eps. An MLP with one ReLU layer represents the linear map exactly
(x = relu(x) - relu(-x)), so the predictor below is the true conditional distribution
(or a chosen perturbation of it) without any training.
"""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbjax.jobs.diagnostics import DiagnosticsConfig, run_diagnostics, write_report
from mbjax.models import EnsembleConfig, EnsembleModel, EnsembleParams, ModelState
from mbjax.models.diagnostics import (
    calibration,
    expected_coverage,
    k_step_errors,
    moment_matched,
    one_step_metrics,
    trajectories_from_transitions,
)
from mbjax.networks.normalizer import Normalizer
from mbjax.types import Transition

O, A = 3, 2
SIGMA = 0.1


def system(seed=0):
    """A stable A (0.95 x an orthogonal matrix) and B (numpy: no eager JAX compiles)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(O, O)))
    return (0.95 * q).astype(np.float32), (0.5 * rng.normal(size=(O, A))).astype(np.float32)


def exact_model(a_mat, b_mat, std=SIGMA, members=1, probabilistic=True, offsets=None):
    """An ensemble whose member e predicts N(A s + B a + offsets[e], std^2) exactly."""
    d_in = O + A
    model = EnsembleModel(O, A, EnsembleConfig(
        num_members=members, num_elites=members, hidden_sizes=(2 * d_in,), activation="relu",
        probabilistic=probabilistic, weight_decay=()))
    lin = np.concatenate([(a_mat - np.eye(O)).T, b_mat.T])  # x @ lin = delta, [d_in, O]
    w1 = np.concatenate([np.eye(d_in), -np.eye(d_in)], 1)
    w2 = np.concatenate([lin, -lin])  # [2 d_in, O]
    b2 = np.zeros((members, O)) if offsets is None else np.asarray(offsets)
    if probabilistic:  # log-variance head: zero weights, bias log(std^2)
        w2 = np.concatenate([w2, np.zeros((2 * d_in, O))], 1)
        b2 = np.concatenate([b2, np.full((members, O), math.log(std ** 2))], 1)
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    stack = lambda x: f32(np.broadcast_to(x, (members,) + x.shape))
    d = model.regression_size
    params = EnsembleParams(
        layers=[{"w": stack(w1), "b": f32(np.zeros((members, 1, 2 * d_in)))},
                {"w": stack(w2), "b": f32(b2[:, None, :])}],
        max_logvar=f32(np.full((members, d), 10.0)),
        min_logvar=f32(np.full((members, d), -20.0)))
    identity = lambda n: Normalizer(mean=f32(np.zeros(n)), std=f32(np.ones(n)))
    state = ModelState(params=params, input_norm=identity(O + A), target_norm=identity(d),
                       elites=jnp.asarray(np.arange(members, dtype=np.int32)), opt_state=None,
                       holdout_loss=f32(np.zeros(members)))
    return model, state


def gaussian_data(seed, n, a_mat, b_mat, sigma=SIGMA, offsets=None):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n, O))
    a = rng.uniform(-1.0, 1.0, size=(n, A))
    noise = sigma * rng.normal(size=(n, O))
    if offsets is not None:  # a mixture: each row drawn from a random component
        noise = noise + np.asarray(offsets)[rng.integers(0, len(offsets), n)]
    ns = s @ a_mat.T + a @ b_mat.T + noise
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    z = f32(np.zeros(n))
    return Transition(obs=f32(s), action=f32(a), reward=z, next_obs=f32(ns), done=z,
                      truncated=z)


def trajectories(seed, n, t, a_mat, b_mat):
    """Noise-free trajectories obs [N, T + 1, O], actions [N, T, A] (numpy)."""
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n, O))
    acts = rng.uniform(-1.0, 1.0, size=(n, t, A))
    seq = [s]
    for i in range(t):
        s = s @ a_mat.T + acts[:, i] @ b_mat.T
        seq.append(s)
    return np.stack(seq, 1).astype(np.float32), acts.astype(np.float32)


def test_moment_matching_is_mean_of_vars_plus_var_of_means():
    mean = np.array([[0.0, 1.0], [2.0, 1.0]])  # [E=2, D=2]
    std = np.array([[1.0, 0.5], [3.0, 0.5]])
    m, v = moment_matched(mean, std)
    np.testing.assert_allclose(m, [1.0, 1.0])
    np.testing.assert_allclose(v, [(1 + 9) / 2 + 1.0, 0.25])


def test_correct_predictor_is_calibrated():
    a_mat, b_mat = system()
    model, state = exact_model(a_mat, b_mat, members=3)
    data = gaussian_data(1, 5000, a_mat, b_mat)
    cal = calibration(model, state, data)
    assert abs(cal["coverage"]["1"] - 0.6827) < 0.02, cal["coverage"]
    assert abs(cal["coverage"]["2"] - 0.9545) < 0.01, cal["coverage"]
    assert cal["expected_coverage"]["1"] == pytest.approx(0.682689, abs=1e-6)
    assert expected_coverage(2.0) == pytest.approx(0.954500, abs=1e-6)
    assert len(cal["coverage_per_dim"]["1"]) == O
    rel = cal["reliability"]
    dev = np.abs(np.array(rel["observed"]) - np.array(rel["expected"]))
    assert dev.max() < 0.03 and cal["calibration_error"] < 0.015
    assert np.abs(np.array(rel["mixture_observed"]) - np.array(rel["expected"])).max() < 0.03
    assert cal["spread_skill_ratio"] == pytest.approx(1.0, abs=0.03)


def test_over_and_under_confident_predictors_are_flagged():
    a_mat, b_mat = system()
    data = gaussian_data(2, 3000, a_mat, b_mat)
    narrow = calibration(*exact_model(a_mat, b_mat, std=SIGMA / 2), data)
    wide = calibration(*exact_model(a_mat, b_mat, std=SIGMA * 2), data)
    # P(|Z| <= 1/2) = 0.383, P(|Z| <= 2) = 0.954 at "1 sigma".
    assert abs(narrow["coverage"]["1"] - 0.383) < 0.03
    assert abs(wide["coverage"]["1"] - 0.954) < 0.02
    assert narrow["spread_skill_ratio"] < 0.6 < 1.7 < wide["spread_skill_ratio"]
    assert narrow["calibration_error"] > 0.1 and wide["calibration_error"] > 0.1


def test_mixture_of_members_matches_mixture_data():
    """Data drawn from the members' mixture: the exact mixture is calibrated, and the
    moment-matched Gaussian (mean of vars + var of means) is a close approximation."""
    a_mat, b_mat = system()
    offsets = [[-0.2, 0.0, 0.1], [0.2, 0.0, -0.1]]
    model, state = exact_model(a_mat, b_mat, std=0.05, members=2, offsets=offsets)
    data = gaussian_data(3, 4000, a_mat, b_mat, sigma=0.05,
                         offsets=offsets)
    cal = calibration(model, state, data)
    assert cal["mixture_calibration_error"] < 0.015
    one = one_step_metrics(model, state, data)
    assert one["nll_mixture"] < one["nll_moment_matched"]
    # A member alone misses half of the mass: much worse likelihood than the mixture.
    assert min(one["nll_members"]) > one["nll_mixture"] + 1.0


def test_nll_is_lowest_for_the_true_noise_std():
    a_mat, b_mat = system()
    data = gaussian_data(4, 3000, a_mat, b_mat)
    nll = {}
    for scale in (0.5, 1.0, 2.0):
        out = one_step_metrics(*exact_model(a_mat, b_mat, std=SIGMA * scale), data)
        nll[scale] = out["nll_moment_matched"]
        assert out["nll_member_mean"] == pytest.approx(nll[scale], abs=1e-5)
    assert nll[1.0] < nll[0.5] and nll[1.0] < nll[2.0]
    # Identity normalisers: nats/dim of N(0, sigma^2) = 0.5 log(2 pi sigma^2) + 0.5.
    assert nll[1.0] == pytest.approx(0.5 * math.log(2 * math.pi * SIGMA ** 2) + 0.5, abs=0.03)


def test_one_step_errors_of_the_true_mean():
    a_mat, b_mat = system()
    model, state = exact_model(a_mat, b_mat, members=2)
    data = gaussian_data(5, 4000, a_mat, b_mat)
    one = one_step_metrics(model, state, data)
    assert one["mse"] == pytest.approx(SIGMA ** 2, rel=0.06)
    np.testing.assert_allclose(one["member_nmse"], one["nmse"], rtol=1e-6)
    delta = np.asarray(data.next_obs) - np.asarray(data.obs)  # R^2 of the regression target
    np.testing.assert_allclose(1.0 - np.array(one["r2_per_dim"]),
                               np.array(one["mse_per_dim"]) / delta.var(0), rtol=1e-4)
    np.testing.assert_allclose(one["r2_per_dim"], 1.0 - SIGMA ** 2 / delta.var(0), atol=0.01)
    assert one["num_transitions"] == 4000 and len(one["mse_per_dim"]) == O
    # A deterministic single model has no likelihood.
    det = one_step_metrics(*exact_model(a_mat, b_mat, probabilistic=False), data)
    assert det["nll_members"] is None and det["nll_moment_matched"] is None
    assert det["mse"] == pytest.approx(one["mse"], rel=1e-5)


@pytest.mark.parametrize("propagation", ["ts_inf", "ts1", "expectation"])
def test_k_step_error_of_a_perfect_model_is_zero(propagation):
    a_mat, b_mat = system()
    model, state = exact_model(a_mat, b_mat, members=2, probabilistic=False)
    obs, acts = trajectories(6, 4, 30, a_mat, b_mat)
    out = k_step_errors(model, state, obs, acts, (1, 5, 10, 20), propagation)
    for k in ("1", "5", "10", "20"):
        assert out["table"][k]["nmse"] < 1e-9, (k, out["table"][k])
        assert out["table"][k]["num_windows"] == 4 * (30 - int(k) + 1)
    assert out["table"]["10"]["baseline_nmse"] > 0.1  # not a trivial system


def test_k_step_error_grows_for_a_perturbed_model():
    a_mat, b_mat = system()
    wrong = a_mat + 0.03 * np.random.default_rng(7).normal(size=(O, O)).astype(np.float32)
    model, state = exact_model(wrong, b_mat, members=2, probabilistic=False)
    obs, acts = trajectories(8, 4, 30, a_mat, b_mat)
    out = k_step_errors(model, state, obs, acts, (1, 5, 10, 20))
    nmse = [out["table"][k]["nmse"] for k in ("1", "5", "10", "20")]
    assert nmse[0] > 1e-4 and all(b > 1.5 * a for a, b in zip(nmse, nmse[1:])), nmse
    assert len(out["curve"]["nmse"]) == 20


def test_k_step_excludes_windows_across_episode_ends():
    a_mat, b_mat = system()
    model, state = exact_model(a_mat, b_mat, probabilistic=False)
    obs, acts = trajectories(9, 3, 40, a_mat, b_mat)
    # An auto-reset after step 20: obs[:, 21] starts a new (random) episode.
    seq = [np.random.default_rng(10).normal(size=(3, O))]
    for i in range(21, 40):
        seq.append(seq[-1] @ a_mat.T + acts[:, i] @ b_mat.T)
    obs[:, 21:] = np.stack(seq, 1)
    ends = np.zeros((3, 40))
    ends[:, 20] = 1.0
    out = k_step_errors(model, state, obs, acts, (1, 5), episode_end=ends)
    assert out["table"]["1"]["nmse"] < 1e-9 and out["table"]["5"]["nmse"] < 1e-9
    assert out["table"]["1"]["num_windows"] == 3 * 39  # 40 starts, one crosses the end
    assert out["table"]["5"]["num_windows"] == 3 * (36 - 5)
    crossed = k_step_errors(model, state, obs, acts, (1, 5))  # ends not marked
    assert crossed["table"]["1"]["nmse"] > 1e-3


def test_k_step_sampling_spread_and_determinism():
    a_mat, b_mat = system()
    model, state = exact_model(a_mat, b_mat, members=2)
    obs, acts = trajectories(11, 2, 12, a_mat, b_mat)
    run = lambda key: k_step_errors(model, state, obs, acts, (1, 10), key=key,
                                    num_particles=8)
    a, b = run(jax.random.PRNGKey(0)), run(jax.random.PRNGKey(0))
    assert a == b
    # Particles sample sigma-noise: the spread grows with k from ~sigma^2 at k = 1.
    spread = a["curve"]["spread_nvar"]
    assert 0.3 * SIGMA ** 2 < spread[0] < 3 * SIGMA ** 2 and spread[9] > spread[0]


def test_trajectories_from_scanned_transitions():
    t, n = 5, 2
    obs = np.arange(t * n * O, dtype=np.float32).reshape(t, n, O)
    z = np.zeros((t, n))
    done = z.copy()
    done[2, 1] = 1.0
    tr = Transition(obs=obs, action=np.ones((t, n, A)), reward=z, next_obs=obs + 100.0,
                    done=done, truncated=z)
    seq, acts, ends = trajectories_from_transitions(tr)
    assert seq.shape == (n, t + 1, O) and acts.shape == (n, t, A) and ends.shape == (n, t)
    np.testing.assert_array_equal(seq[:, :t], obs.swapaxes(0, 1))
    np.testing.assert_array_equal(seq[:, t], obs[-1] + 100.0)
    assert ends[1, 2] == 1.0 and ends.sum() == 1.0


def test_write_report_writes_json_and_plots(tmp_path):
    a_mat, b_mat = system()
    model, state = exact_model(a_mat, b_mat, members=2)
    data = gaussian_data(12, 500, a_mat, b_mat)
    obs, acts = trajectories(13, 2, 12, a_mat, b_mat)
    metrics = {"one_step": one_step_metrics(model, state, data),
               "calibration": calibration(model, state, data),
               "k_step": k_step_errors(model, state, obs, acts, (1, 5, 10)),
               "extra": {"nan": float("nan"), "arr": np.arange(3)}}
    paths = write_report(metrics, tmp_path / "report", title="linear")
    assert set(paths) == {"json", "kstep_error", "calibration", "one_step"}
    for p in paths.values():
        assert p.exists() and p.stat().st_size > 1000, p
    loaded = json.loads(paths["json"].read_text())
    assert loaded["extra"] == {"nan": None, "arr": [0, 1, 2]}
    assert loaded["k_step"]["ks"] == [1, 5, 10]
    assert set(loaded["calibration"]["coverage"]) == {"1", "2"}
    # Sections are optional.
    only = write_report({"calibration": metrics["calibration"]}, tmp_path / "cal")
    assert set(only) == {"json", "calibration"}


def test_bad_inputs_fail_clearly():
    a_mat, b_mat = system()
    model, state = exact_model(a_mat, b_mat)
    data = gaussian_data(14, 10, a_mat, b_mat)
    with pytest.raises(ValueError, match="different batch shapes"):
        one_step_metrics(model, state, data.replace(action=data.action[:7]))
    with pytest.raises(ValueError, match="model expects obs"):
        calibration(model, state, data.replace(obs=jnp.zeros((10, O + 1))))
    with pytest.raises(ValueError, match="next_obs"):
        one_step_metrics(model, state, data.replace(next_obs=data.next_obs[:, :2]))
    empty = jax.tree_util.tree_map(lambda x: x[:0], data)
    with pytest.raises(ValueError, match="empty"):
        one_step_metrics(model, state, empty)
    with pytest.raises(ValueError, match="empty"):
        calibration(model, state, empty)
    with pytest.raises(ValueError, match="levels"):
        calibration(model, state, data, levels=(0.0,))
    with pytest.raises(ValueError, match="grid"):
        calibration(model, state, data, grid=(0.5, 1.0))
    obs, acts = trajectories(15, 2, 8, a_mat, b_mat)
    with pytest.raises(ValueError, match="one more step"):
        k_step_errors(model, state, obs, acts[:, :7], (1,))
    with pytest.raises(ValueError, match="ks must lie"):
        k_step_errors(model, state, obs, acts, (1, 9))
    with pytest.raises(ValueError, match="ks must lie"):
        k_step_errors(model, state, obs, acts, (0,))
    with pytest.raises(ValueError, match="no trajectories"):
        k_step_errors(model, state, obs[:0], acts[:0], (1,))
    with pytest.raises(ValueError, match="episode_end"):
        k_step_errors(model, state, obs, acts, (1,), episode_end=jnp.zeros((2, 9)))
    with pytest.raises(ValueError, match="propagation"):
        k_step_errors(model, state, obs, acts, (1,), "ts2")
    with pytest.raises(ValueError, match="multiple of the ensemble size"):
        k_step_errors(*exact_model(a_mat, b_mat, members=2), obs, acts, (1,),
                      num_particles=3)
    with pytest.raises(ValueError, match="free of episode ends"):
        k_step_errors(model, state, obs, acts, (1,), episode_end=jnp.ones((2, 8)))
    with pytest.raises(TypeError, match="dict"):
        write_report([1, 2], "/tmp/never")


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="eval_envs"):
        DiagnosticsConfig(num_envs=4, eval_envs=4).validate()
    with pytest.raises(ValueError, match="elites"):
        DiagnosticsConfig(members=3, elites=5).validate()
    with pytest.raises(ValueError, match="max\\(ks\\)"):
        DiagnosticsConfig(steps=20, ks=(1, 30)).validate()
    with pytest.raises(ValueError, match="propagation"):
        DiagnosticsConfig(propagation="mean").validate()
    with pytest.raises(ValueError, match="steps"):
        DiagnosticsConfig(steps=0).validate()


@pytest.mark.slow
def test_run_diagnostics_end_to_end_and_reload(tmp_path):
    """The CLI job on pendulum (tiny), then again from the saved model (~15-50 s)."""
    cfg = DiagnosticsConfig(env="pendulum", num_envs=3, eval_envs=1, steps=60, members=2,
                            elites=1, hidden_sizes=(16,), epochs=3, batch_size=32,
                            ks=(1, 5), out_dir=str(tmp_path))
    from rich.console import Console

    console = Console(quiet=True)
    out = run_diagnostics(cfg, console=console)
    run_dir = tmp_path / "diagnostics-pendulum-seed0"
    assert out["run_dir"] == str(run_dir)
    for name in ("metrics.json", "kstep_error.png", "calibration.png", "one_step.png"):
        assert (run_dir / name).stat().st_size > 1000, name
    assert out["data"] == {"train_transitions": 120, "eval_transitions": 60,
                           "eval_episode_ends": 0}
    assert out["k_step"]["table"]["5"]["num_windows"] == 56
    assert "device_kind" in out["machine"]
    # Reloading the saved model reproduces the metrics (same data, same keys).
    again = run_diagnostics(dataclasses.replace(cfg, model_path=str(run_dir / "model"),
                                                out_dir=str(tmp_path / "again")),
                            console=console)
    assert again["one_step"]["nmse"] == pytest.approx(out["one_step"]["nmse"], rel=1e-6)
    assert again["calibration"]["coverage"] == out["calibration"]["coverage"]


def test_config_parses_as_cli_flags():
    import tyro

    cfg = tyro.cli(DiagnosticsConfig, args=[
        "--env", "pendulum", "--ks", "1", "5", "--hidden-sizes", "32", "32",
        "--no-probabilistic", "--model-path", "/some/model"])
    assert cfg.ks == (1, 5) and cfg.hidden_sizes == (32, 32) and not cfg.probabilistic
    assert cfg.model_path == "/some/model"
    cfg.validate()
