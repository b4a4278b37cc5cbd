"""The model-diagnostics job: data, training, evaluation, ``metrics.json`` and plots.

:func:`run_diagnostics` (``DiagnosticsConfig``, the ``mbjax diagnostics`` command)
collects random-policy data, trains an ensemble (or loads one with
:func:`load_ensemble`), evaluates it on held-out episodes with the metrics of
``mbjax.models.diagnostics`` (one-step error and likelihood, k-step error, calibration)
and writes the report with :func:`write_report`: ``metrics.json`` and PNG plots.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import jax
import numpy as np
from rich.console import Console
from rich.table import Table

import mbjax.envs as envs
from mbjax import checkpoint
from mbjax.models.diagnostics import (
    DEFAULT_KS,
    calibration,
    k_step_errors,
    one_step_metrics,
    trajectories_from_transitions,
)
from mbjax.models.ensemble import EnsembleConfig, EnsembleModel, load_model, save_model
from mbjax.models.rollout import PROPAGATIONS
from mbjax.models.training import ModelTrainConfig, make_model_trainer, raise_if_failed
from mbjax.types import PRNGKey, Transition
from mbjax.utils.bench import machine_info, save_figure, style_axes

# ----------------------------------------------------------------------------------------
# Report: JSON and plots
# ----------------------------------------------------------------------------------------


def _jsonable(x):
    """numpy/jax scalars and arrays to lists/floats; NaN and inf to None."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.ndarray, jax.Array)):
        return _jsonable(np.asarray(x).tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    return x


def write_report(metrics: dict, out_dir: str | Path, title: str = "") -> dict[str, Path]:
    """Writes ``metrics.json`` and the plots of the sections present in ``metrics``.

    Sections (any subset): ``"k_step"`` (from :func:`k_step_errors`) ->
    ``kstep_error.png`` (normalised error vs k, log scale, with the copy-the-start
    baseline and the particles' spread); ``"calibration"`` (from :func:`calibration`) ->
    ``calibration.png`` (reliability diagram with the diagonal, and per-dim 1/2 sigma
    coverage); ``"one_step"`` (from :func:`one_step_metrics`) -> ``one_step.png``
    (per-dim normalised MSE and R^2). Other keys are stored in the JSON only.

    Returns:
      {"json": path, and "kstep_error" / "calibration" / "one_step": path of each plot}.
    """
    if not isinstance(metrics, dict):
        raise TypeError(f"metrics must be a dict of sections, got {type(metrics).__name__}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "metrics.json"}
    paths["json"].write_text(json.dumps(_jsonable(metrics), indent=2, allow_nan=False))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prefix = f"{title}: " if title else ""
    if "k_step" in metrics:
        paths["kstep_error"] = out / "kstep_error.png"
        _plot_kstep(plt, metrics["k_step"], paths["kstep_error"], prefix)
    if "calibration" in metrics:
        paths["calibration"] = out / "calibration.png"
        _plot_calibration(plt, metrics["calibration"], paths["calibration"], prefix)
    if "one_step" in metrics:
        paths["one_step"] = out / "one_step.png"
        _plot_one_step(plt, metrics["one_step"], paths["one_step"], prefix)
    return paths


def _nan(values):
    return np.array([np.nan if v is None else v for v in values], np.float64)


def _plot_kstep(plt, ks: dict, path: Path, prefix: str) -> None:
    curve = ks["curve"]
    k = np.asarray(curve["k"])
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(k, _nan(curve["nmse"]), "-", color="C0", label="model (mean of particles)")
    ax.plot(k, _nan(curve["nmse_median"]), ":", color="C0", label="model, median window")
    ax.plot(k, _nan(curve["baseline_nmse"]), "--", color="C3", label="baseline: s_t held fixed")
    if any(v for v in curve["spread_nvar"] if v):
        ax.plot(k, _nan(curve["spread_nvar"]), "-.", color="C2", label="particle spread (var)")
    marks = np.asarray(ks["ks"]) - 1
    ax.plot(k[marks], _nan(curve["nmse"])[marks], "o", color="C0")
    style_axes(ax, ylog=10, xlabel="k (open-loop model steps)",
               ylabel="MSE / Var[s] (mean over obs dims)",
               title=f"{prefix}k-step error ({ks['propagation']}, {ks['num_particles']} particles)",
               legend=8)
    save_figure(fig, path)


def _plot_calibration(plt, cal: dict, path: Path, prefix: str) -> None:
    rel = cal["reliability"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.4),
                                  gridspec_kw={"width_ratios": [1, 1.4]})
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    exp = [0.0, *rel["expected"], 1.0]
    ax.plot(exp, [0.0, *rel["observed"], 1.0], "o-", ms=3, label="moment-matched Gaussian")
    if rel.get("mixture_observed") is not None:
        ax.plot(exp, [0.0, *rel["mixture_observed"], 1.0], "s-", ms=3, alpha=0.7,
                label="ensemble mixture")
    for lv, cov in cal["coverage"].items():
        e = cal["expected_coverage"][lv]
        ax.plot([e], [cov], "*", ms=12, color="C3")
        ax.annotate(f"{lv}σ: {cov:.1%} (exp. {e:.1%})", (e, cov), textcoords="offset points",
                    xytext=(-150, 2) if e > 0.8 else (8, -12), fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("expected coverage of central interval")
    ax.set_ylabel("observed fraction inside")
    ax.set_title(f"{prefix}reliability (error {cal['calibration_error']:.3f})", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    dims = cal["dims"]
    x = np.arange(len(dims))
    width = 0.8 / max(len(cal["coverage_per_dim"]), 1)
    for i, (lv, cov) in enumerate(cal["coverage_per_dim"].items()):
        ax2.bar(x + i * width - 0.4 + width / 2, cov, width, label=f"{lv}σ", color=f"C{i}")
        ax2.axhline(cal["expected_coverage"][lv], color=f"C{i}", ls="--", lw=1)
    ax2.set_xticks(x)
    ax2.set_xticklabels(dims, rotation=90, fontsize=7)
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("fraction inside mu ± kσ")
    ax2.set_title("per-dimension coverage (dashed: expected)", fontsize=10)
    ax2.legend(fontsize=8, loc="lower right")
    save_figure(fig, path)


def _plot_one_step(plt, one: dict, path: Path, prefix: str) -> None:
    dims = one["dims"]
    x = np.arange(len(dims))
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    ax.bar(x, _nan(one["nmse_per_dim"]), color="C0")
    ax.set_yscale("log")
    ax.set_ylabel("MSE / Var[Δs]")
    ax.set_title(f"{prefix}one-step error per dimension (mean {one['nmse']:.3g})")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax2.bar(x, _nan(one["r2_per_dim"]), color="C2")
    ax2.set_ylabel("R²")
    ax2.set_ylim(min(0.0, np.nanmin(_nan(one["r2_per_dim"]))), 1.0)
    ax2.set_xticks(x)
    ax2.set_xticklabels(dims, rotation=90, fontsize=7)
    save_figure(fig, path)


# ----------------------------------------------------------------------------------------
# The command-line job
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DiagnosticsConfig:
    """Model diagnostics: train an ensemble on random-policy data, evaluate on held-out
    episodes (one-step error and NLL, k-step error, calibration); writes JSON + PNGs."""

    env: str = "cartpole_swingup"
    """Registered environment name (see ``mbjax envs``)."""
    num_envs: int = 16
    """Parallel environments collecting random-policy data."""
    steps: int = 500
    """Control steps per environment."""
    episode_length: int = 0
    """Steps per episode; 0 = the task's default."""
    eval_envs: int = 4
    """Environments whose episodes are held out for evaluation (the rest train)."""
    members: int = 7
    """Ensemble members."""
    elites: int = 5
    """Elite members (lowest holdout MSE; stored, the metrics use all members)."""
    hidden_sizes: tuple[int, ...] = (200, 200, 200, 200)
    """Hidden layer widths of each member."""
    probabilistic: bool = True
    """Gaussian NLL head (PETS/MBPO); False = deterministic MSE head (PDDM)."""
    weight_decay: float = 5e-5
    """L2 weight decay of every layer; 0 = none."""
    epochs: int = 50
    """Maximum training epochs (early stopping on a 20 % holdout of the train split)."""
    batch_size: int = 256
    """Minibatch size."""
    learning_rate: float = 1e-3
    """Adam learning rate."""
    ks: tuple[int, ...] = DEFAULT_KS
    """Open-loop horizons k at which k-step errors are tabulated."""
    propagation: str = "ts_inf"
    """Particle propagation of the k-step rollouts: ts_inf, ts1 or expectation."""
    num_particles: int = 0
    """Particles per k-step start; 0 = one per member (1 for expectation)."""
    sample: bool = True
    """Sample s' ~ N(mu, sigma^2) in the k-step rollouts (probabilistic models)."""
    start_stride: int = 1
    """Use every n-th start time of the held-out trajectories for k-step errors."""
    seed: int = 0
    """Seed of the PRNG key; the same seed gives the same numbers."""
    out_dir: str = "runs"
    """Parent folder of the run directory."""
    model_path: str = ""
    """Load this saved model (``save_model`` checkpoint) instead of training one; its
    stored configuration replaces members/hidden_sizes/probabilistic/weight_decay."""
    save: bool = True
    """Save the trained model into the run directory (``<run>/model``)."""

    def validate(self) -> None:
        """Raises ValueError naming the first bad field. Called by ``run_diagnostics``
        (not at construction, so the CLI can report it like the other commands)."""
        for field in ("num_envs", "steps", "eval_envs", "members", "elites", "epochs",
                      "batch_size", "start_stride"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")
        if self.eval_envs >= self.num_envs:
            raise ValueError(f"eval_envs ({self.eval_envs}) must be < num_envs "
                             f"({self.num_envs}) so some environments are left to train on")
        if self.elites > self.members:
            raise ValueError(f"elites ({self.elites}) must be <= members ({self.members})")
        if self.episode_length < 0 or self.num_particles < 0:
            raise ValueError("episode_length and num_particles must be >= 0")
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ValueError(f"hidden_sizes must be positive, got {self.hidden_sizes}")
        if self.weight_decay < 0 or self.learning_rate <= 0:
            raise ValueError("weight_decay must be >= 0 and learning_rate > 0")
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"ks must be >= 1, got {self.ks}")
        if max(self.ks) > self.steps:
            raise ValueError(f"max(ks) = {max(self.ks)} exceeds steps = {self.steps}")
        if self.propagation not in PROPAGATIONS:
            raise ValueError(f"unknown propagation {self.propagation!r}; valid: "
                             f"{', '.join(PROPAGATIONS)}")


def collect_random_data(env_name: str, num_envs: int, steps: int, key: PRNGKey,
                        episode_length: int = 0):
    """Random-policy transitions [T, N, ...] of ``num_envs`` auto-resetting envs.

    Returns:
      (transitions [steps, num_envs, ...], the unwrapped env).
    """
    base = envs.make(env_name)
    env = envs.wrap_for_training(base, episode_length=episode_length or None,
                                 num_envs=num_envs)
    policy = envs.uniform_random_policy(env)

    @jax.jit
    def run(key):
        key_reset, key_roll = jax.random.split(key)
        return envs.rollout(env, policy, env.reset(key_reset), key_roll, steps)[1]

    return jax.block_until_ready(run(key)), base


def _flat(tr: Transition) -> Transition:
    return jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[2:]), tr)


def load_ensemble(path: str | Path, key: PRNGKey | None = None):
    """Rebuilds the model from a ``save_model`` checkpoint's stored config and loads it.

    Returns:
      (model, state).
    """
    meta = checkpoint.read_metadata(path).get("metadata", {})
    if meta.get("kind") != "EnsembleModel":
        raise checkpoint.CheckpointError(f"{path} does not hold an EnsembleModel checkpoint")
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()}
    model = EnsembleModel(meta["obs_size"], meta["action_size"], EnsembleConfig(**cfg))
    key = jax.random.PRNGKey(0) if key is None else key
    try:
        template = make_model_trainer(model).init(key)
        return model, load_model(path, model, template)
    except checkpoint.CheckpointError:
        return model, load_model(path, model, model.init(key))  # saved without optimizer


def run_diagnostics(cfg: DiagnosticsConfig, console=None) -> dict:
    """Collects data, trains (or loads) an ensemble, evaluates it, writes the report.

    Data: ``cfg.num_envs`` envs x ``cfg.steps`` random-policy steps; the last
    ``cfg.eval_envs`` envs' episodes are held out. Writes ``metrics.json``,
    ``kstep_error.png``, ``calibration.png`` and ``one_step.png`` (and ``model/``) into
    ``<out_dir>/diagnostics-<env>-seed<seed>`` and returns the metrics dict (with
    ``run_dir``).
    """
    cfg.validate()
    console = console or Console()
    key = jax.random.PRNGKey(cfg.seed)
    key_data, key_init, key_train, key_eval = jax.random.split(key, 4)
    out = Path(cfg.out_dir) / f"diagnostics-{cfg.env.replace('/', '_')}-seed{cfg.seed}"

    console.print(f"[bold]mbjax diagnostics[/] {cfg.env} on {jax.devices()[0].device_kind}: "
                  f"{cfg.num_envs} envs x {cfg.steps} random-policy steps "
                  f"({cfg.eval_envs} envs held out)")
    t0 = time.perf_counter()
    with console.status("collecting data (compiling the env)..."):
        tr, base = collect_random_data(cfg.env, cfg.num_envs, cfg.steps, key_data,
                                       cfg.episode_length)
    collect_s = time.perf_counter() - t0
    n_train_envs = cfg.num_envs - cfg.eval_envs
    train_tr = jax.tree_util.tree_map(lambda x: x[:, :n_train_envs], tr)
    eval_tr = jax.tree_util.tree_map(lambda x: x[:, n_train_envs:], tr)
    train_flat = _flat(train_tr)
    n_train = int(train_flat.obs.shape[0])

    t0 = time.perf_counter()
    train_metrics = {}
    if cfg.model_path:
        model, state = load_ensemble(cfg.model_path, key_init)
        if (model.obs_size, model.action_size) != (base.observation_size, base.action_size):
            raise ValueError(
                f"model at {cfg.model_path} is for obs/action sizes {model.obs_size}/"
                f"{model.action_size}; {cfg.env} has {base.observation_size}/"
                f"{base.action_size}")
        console.print(f"loaded {cfg.model_path} ({model.num_members} members, hidden "
                      f"{model.config.hidden_sizes})")
    else:
        wd = (cfg.weight_decay,) if cfg.weight_decay > 0 else ()
        model = EnsembleModel(base.observation_size, base.action_size, EnsembleConfig(
            num_members=cfg.members, num_elites=cfg.elites, hidden_sizes=cfg.hidden_sizes,
            probabilistic=cfg.probabilistic, weight_decay=wd))
        trainer = make_model_trainer(model, ModelTrainConfig(
            learning_rate=cfg.learning_rate, batch_size=cfg.batch_size,
            max_epochs=cfg.epochs))
        with console.status(f"training {cfg.members} members on {n_train} transitions..."):
            state, m = jax.jit(trainer.train)(trainer.init(key_init), train_flat, n_train,
                                              key_train)
            state = jax.block_until_ready(state)
        raise_if_failed(m)
        train_metrics = {k.removeprefix("model/"): np.asarray(v).item() for k, v in m.items()}
        if cfg.save:
            save_model(out / "model", model, state)
    train_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    with console.status("evaluating..."):
        eval_flat = _flat(eval_tr)
        one = one_step_metrics(model, state, eval_flat)
        one_train = one_step_metrics(model, state, train_flat)
        cal = calibration(model, state, eval_flat)
        obs_seq, act_seq, ends = trajectories_from_transitions(eval_tr)
        ks = k_step_errors(model, state, obs_seq, act_seq, cfg.ks, cfg.propagation,
                           episode_end=ends, key=key_eval,
                           num_particles=cfg.num_particles or None, sample=cfg.sample,
                           start_stride=cfg.start_stride)
    eval_s = time.perf_counter() - t0

    metrics = {
        "config": dataclasses.asdict(cfg),
        "machine": machine_info(),
        "env": cfg.env,
        "model": {"obs_size": model.obs_size, "action_size": model.action_size,
                  **dataclasses.asdict(model.config)},
        "data": {"train_transitions": n_train,
                 "eval_transitions": int(eval_flat.obs.shape[0]),
                 "eval_episode_ends": int(np.asarray(eval_tr.episode_end).sum())},
        "training": train_metrics,
        "timing_s": {"collect_with_compile": collect_s, "train_with_compile": train_s,
                     "evaluate_with_compile": eval_s},
        "one_step": one,
        "one_step_train": {k: one_train[k] for k in ("nmse", "r2", "nll_moment_matched",
                                                       "nll_mixture")},
        "calibration": cal,
        "k_step": ks,
    }
    paths = write_report(metrics, out, title=cfg.env)
    _print_summary(console, metrics)
    console.print("wrote " + ", ".join(str(p) for p in paths.values()))
    metrics["run_dir"] = str(out)
    return metrics


def _print_summary(console, metrics: dict) -> None:
    fmt = lambda v: "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
    one, cal, ks = metrics["one_step"], metrics["calibration"], metrics["k_step"]
    table = Table(title=f"model diagnostics: {metrics['env']} (held-out episodes)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("one-step MSE (data units)", fmt(one["mse"]))
    table.add_row("one-step MSE / Var[Δs] (held-out | train)",
                  f"{fmt(one['nmse'])} | {fmt(metrics['one_step_train']['nmse'])}")
    table.add_row("one-step R²", fmt(one["r2"]))
    table.add_row("NLL moment-matched (nats/dim)", fmt(one["nll_moment_matched"]))
    table.add_row("NLL mixture | member mean (nats/dim)",
                  f"{fmt(one['nll_mixture'])} | {fmt(one['nll_member_mean'])}")
    for lv, cov in cal["coverage"].items():
        table.add_row(f"coverage {lv}σ (expected {cal['expected_coverage'][lv]:.1%})",
                      f"{cov:.1%}")
    table.add_row("calibration error | spread/skill", f"{fmt(cal['calibration_error'])} | "
                  f"{fmt(cal['spread_skill_ratio'])}")
    for k, row in ks["table"].items():
        table.add_row(f"{k}-step MSE / Var[s] (baseline)",
                      f"{fmt(row['nmse'])} ({fmt(row['baseline_nmse'])})")
    console.print(table)
