"""Named training presets: published settings (cited) and CPU-sized variants.

``get(name)`` returns a ``TrainConfig``; ``mbjax train <name> --any.field value`` starts
from it. Full-size presets reproduce the papers' settings (GPU-sized); the ``*-cpu``
variants shrink population, model and iterations to run in minutes on a 2-core CPU.
"""

from __future__ import annotations

import dataclasses

from mbjax.models.ensemble import EnsembleConfig, pddm_ensemble_config
from mbjax.models.training import ModelTrainConfig
from mbjax.training.config import EnvConfig, PlannerConfig, TrainConfig

# PETS (Chua et al. 2018, App. A): 5 probabilistic members of 4 x 200 swish (HalfCheetah;
# 3 x 200 for cartpole), CEM with 500 candidates, 50 elites, 5 iterations, horizon 30,
# 20 particles propagated with TS-inf; Adam 1e-3; model trained on all data each iteration.
_PETS_MODEL = EnsembleConfig(num_members=5, num_elites=5, hidden_sizes=(200, 200, 200, 200))
_PETS_PLANNER = PlannerConfig(kind="cem", horizon=30, population=500, num_elites=50,
                              iterations=5, alpha=0.1, num_particles=20, propagation="ts_inf")
# PDDM (Nagabandi et al. 2019): 3 deterministic members of 2 x 500 (MSE on normalised
# deltas), filtered MPPI N = 700, H = 7, beta = 0.6, kappa = 20, sigma = 0.9; ~30 rollouts
# per iteration; retrain from scratch is an option (False here, as their released code).
_PDDM_PLANNER = PlannerConfig(kind="mppi", horizon=7, population=700, iterations=1,
                              kappa=20.0, beta=0.6, sigma=0.9, num_particles=3)
_PDDM_TRAIN = ModelTrainConfig(batch_size=500, max_epochs=40, early_stopping=False)

# CPU-sized variants: a small model, a few hundred candidates, pendulum by default.
_CPU_MODEL_DET = EnsembleConfig(num_members=3, num_elites=3, hidden_sizes=(64, 64),
                                activation="silu", probabilistic=False, weight_decay=())
_CPU_MODEL_PROB = EnsembleConfig(num_members=3, num_elites=3, hidden_sizes=(64, 64),
                                 weight_decay=())
_CPU_TRAIN = ModelTrainConfig(batch_size=64, max_epochs=20, early_stopping=True,
                              patience=5)
_CPU_ENV = EnvConfig(name="pendulum")

PRESETS: dict[str, TrainConfig] = {
    "pets": TrainConfig(preset="pets", env=EnvConfig(name="halfcheetah"), model=_PETS_MODEL,
                        model_train=ModelTrainConfig(batch_size=32, max_epochs=5,
                                                     early_stopping=False),
                        planner=_PETS_PLANNER, num_iterations=100),
    "pddm": TrainConfig(preset="pddm", env=EnvConfig(name="halfcheetah"),
                        model=pddm_ensemble_config(500), model_train=_PDDM_TRAIN,
                        planner=_PDDM_PLANNER, num_envs=30, num_iterations=100),
    "icem": TrainConfig(preset="icem", env=EnvConfig(name="halfcheetah"), model=_PETS_MODEL,
                        planner=PlannerConfig(kind="icem", horizon=30, population=300,
                                              num_elites=10, iterations=3,
                                              noise_exponent=2.0, num_particles=5),
                        num_iterations=100),
    "gradient-mpc": TrainConfig(preset="gradient-mpc", env=EnvConfig(name="halfcheetah"),
                                model=_PETS_MODEL,
                                planner=PlannerConfig(kind="gradient", horizon=30,
                                                      population=8, iterations=20,
                                                      num_particles=5,
                                                      propagation="ts_inf"),
                                num_iterations=100),
    "random-shooting": TrainConfig(preset="random-shooting", env=EnvConfig(name="halfcheetah"),
                                   model=pddm_ensemble_config(500), model_train=_PDDM_TRAIN,
                                   planner=PlannerConfig(kind="random_shooting", horizon=10,
                                                         population=1000, num_particles=3),
                                   num_iterations=100),
    "true-dynamics-mpc": TrainConfig(preset="true-dynamics-mpc",
                                     env=EnvConfig(name="halfcheetah"),
                                     planner=dataclasses.replace(_PDDM_PLANNER),
                                     true_dynamics=True, num_iterations=3),
    # --- CPU-sized (minutes on a 2-core CPU; pendulum swing-up by default) -------------
    # The quickstart's main job: 3 vmapped seeds x 2 envs, 10 iterations of 200 steps;
    # learns the swing-up (return ~ -120..-250 from random starts) in ~2-3 min on 2 cores.
    "pddm-cpu": TrainConfig(preset="pddm-cpu", env=_CPU_ENV, model=_CPU_MODEL_DET,
                            model_train=_CPU_TRAIN,
                            planner=PlannerConfig(kind="mppi", horizon=25, population=128,
                                                  kappa=1.0, beta=0.7, sigma=1.0,
                                                  num_particles=3),
                            num_envs=2, num_iterations=10, num_seeds=3),
    "pets-cpu": TrainConfig(preset="pets-cpu", env=_CPU_ENV, model=_CPU_MODEL_PROB,
                            model_train=_CPU_TRAIN,
                            planner=PlannerConfig(kind="cem", horizon=25, population=100,
                                                  num_elites=10, iterations=3,
                                                  num_particles=6),
                            num_envs=2, num_iterations=8),
    "icem-cpu": TrainConfig(preset="icem-cpu", env=_CPU_ENV, model=_CPU_MODEL_PROB,
                            model_train=_CPU_TRAIN,
                            planner=PlannerConfig(kind="icem", horizon=25, population=100,
                                                  num_elites=10, iterations=3,
                                                  num_particles=3),
                            num_envs=2, num_iterations=8),
    "gradient-mpc-cpu": TrainConfig(preset="gradient-mpc-cpu", env=_CPU_ENV,
                                    model=_CPU_MODEL_DET, model_train=_CPU_TRAIN,
                                    planner=PlannerConfig(kind="gradient", horizon=25,
                                                          population=4, iterations=10,
                                                          learning_rate=0.1,
                                                          num_particles=3),
                                    num_envs=2, num_iterations=8),
    "random-shooting-cpu": TrainConfig(preset="random-shooting-cpu", env=_CPU_ENV,
                                       model=_CPU_MODEL_DET, model_train=_CPU_TRAIN,
                                       planner=PlannerConfig(kind="random_shooting",
                                                             horizon=25, population=256,
                                                             num_particles=3),
                                       num_envs=2, num_iterations=8),
    "true-dynamics-mpc-cpu": TrainConfig(preset="true-dynamics-mpc-cpu", env=_CPU_ENV,
                                         planner=PlannerConfig(kind="mppi", horizon=25,
                                                               population=128, kappa=1.0,
                                                               beta=0.7, sigma=1.0),
                                         true_dynamics=True, num_envs=2, num_iterations=2),
}

DEFAULT_PRESET = "pddm-cpu"


def names() -> list[str]:
    return list(PRESETS)


def get(name: str) -> TrainConfig:
    """The preset ``name``; an unknown name lists the valid ones."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return PRESETS[name]
