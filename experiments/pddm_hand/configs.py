"""Configurations of the PDDM dexterous-hand study: the paper's recipe and CPU-sized runs.

PDDM (Nagabandi et al. 2019) on the Baoding task: an ensemble of 3 deterministic MLPs of
2 x 500 ReLU units (MSE on normalised state deltas, ``pddm_ensemble_config()``),
filtered MPPI with N = 700 candidates, horizon H = 7, beta = 0.6, kappa = 20,
sigma = 0.9 (``pddm_mppi_config()``; 0.3 on hand_baoding, see ``TASK_SIGMA``), 3
particles per candidate (``ObjectiveConfig``), ~30 trajectories per iteration, a 40 ms
control step. ``gpu_config`` is that recipe on our hand; ``cpu_config`` shrinks it to
minutes on a 2-core CPU. ``ABLATIONS`` lists the variants of each ablation (applied on
top of either scale).
"""

from __future__ import annotations

import dataclasses

from mbjax.agents import MPCConfig
from mbjax.planners import MPPIConfig, pddm_mppi_config, switch_planner
from mbjax.runner import presets

RESULTS_DIR = "experiments/pddm_hand/results"


def task_sigma(task: str) -> float:
    """The MPPI noise sigma used on ``task`` (``mbjax.runner.presets.HAND_SIGMA``, where
    the measurement behind it is noted, or PDDM's 0.9)."""
    return presets.hand_sigma(task)


def pddm_planner(population: int | None = None, horizon: int | None = None,
                 sigma: float | None = None) -> MPPIConfig:
    """PDDM's filtered MPPI spec (``pddm_mppi_config()``) with the given changes."""
    spec, _ = pddm_mppi_config()
    return dataclasses.replace(spec, horizon=horizon or spec.horizon,
                               population=population or spec.population,
                               sigma=float(spec.sigma if sigma is None else sigma))


def _study_config(task: str, cpu: bool, preset: str) -> MPCConfig:
    """The package's PDDM hand preset (``mbjax presets``: pddm-hand-*) as this study ran
    it: results under RESULTS_DIR, and the fresh auto-reset the committed results were
    produced with (the presets restart a dropped episode from its cached first state)."""
    cfg = presets.get(presets.hand_preset_name("pddm", task, cpu))
    return dataclasses.replace(cfg, preset=preset, out_dir=RESULTS_DIR,
                               env=dataclasses.replace(cfg.env, reset_mode="fresh"))


def gpu_config(task: str = "hand_baoding") -> MPCConfig:
    """The paper-sized recipe: 30 hands x 1 episode (100 steps, 4 s) per iteration."""
    return _study_config(task, False, "pddm-hand-gpu")


def cpu_config(task: str = "hand_track") -> MPCConfig:
    """CPU-sized: 2 hands x 1 episode per iteration, N = 128, 2 x 200 members, 3 seeds."""
    return _study_config(task, True, "pddm-hand-cpu")


def scale_config(scale: str, task: str) -> MPCConfig:
    if scale == "gpu":
        return gpu_config(task)
    if scale == "cpu":
        return cpu_config(task)
    raise ValueError(f"scale must be 'cpu' or 'gpu', got {scale!r}")


def _planner(kind: str | None = None, **changes):
    """A transform of the planner spec: ``kind`` switches planners (carrying over the
    shared fields, as ``--planner.kind``), then ``changes`` apply."""

    def apply(c):
        spec = c.planner if kind is None else switch_planner(c.planner, kind)
        return dataclasses.replace(c, planner=dataclasses.replace(spec, **changes))

    return apply


def _model(**changes):
    return lambda c: dataclasses.replace(c, model=dataclasses.replace(c.model, **changes))


def _members(n: int):
    def apply(c):
        model = dataclasses.replace(c.model, num_members=n, num_elites=n)
        objective = dataclasses.replace(c.objective, num_particles=n)
        return dataclasses.replace(c, model=model, objective=objective)

    return apply


#: ablation -> {variant label: config transform}. The first variant is the reference.
ABLATIONS = {
    # PDDM's Fig. 7-style planner comparison: the filter (beta) and reward weighting
    # (kappa); beta = 1 removes the filter, kappa -> 0 makes the update a plain average.
    "planner": {
        "PDDM (beta 0.6, kappa 20)": lambda c: c,
        "no filter (beta 1)": _planner(beta=1.0),
        "no reward weighting (kappa 1e-3)": _planner(kappa=1e-3),
        "random shooting": _planner(kind="random_shooting"),
        "CEM": _planner(kind="cem", num_elites=16, iterations=3),
    },
    "horizon": {
        "H = 7": lambda c: c,
        "H = 1": _planner(horizon=1),
        "H = 3": _planner(horizon=3),
        "H = 15": _planner(horizon=15),
    },
    "model_size": {
        "2 x 200": lambda c: c,
        "2 x 64": _model(hidden_sizes=(64, 64)),
        "2 x 500": _model(hidden_sizes=(500, 500)),
    },
    "ensemble": {
        "3 members": lambda c: c,
        "1 member": _members(1),
        "5 members": _members(5),
    },
}


def ablation_configs(which: str, base: MPCConfig, variants: list[str] | None = None
                     ) -> dict[str, MPCConfig]:
    """Configs of one ablation (optionally a subset of its variants), named runs."""
    if which not in ABLATIONS:
        raise KeyError(f"unknown ablation {which!r}; valid: {', '.join(ABLATIONS)}")
    table = ABLATIONS[which]
    chosen = variants or list(table)
    bad = [v for v in chosen if v not in table]
    if bad:
        raise KeyError(f"unknown variant(s) {bad} of {which!r}; valid: {list(table)}")
    out = {}
    for label in chosen:
        cfg = table[label](base)
        if cfg == base:  # the reference: the main run itself (same name, same config)
            out[label] = cfg
            continue
        slug = "".join(ch if ch.isalnum() else "-" for ch in label.lower()).strip("-")
        while "--" in slug:
            slug = slug.replace("--", "-")
        out[label] = dataclasses.replace(
            cfg, run_name=f"{base.default_run_name.removesuffix(f'-seed{base.seed}')}-"
                          f"{which}-{slug}")
    return out
