"""Named training presets: published settings (cited) and CPU-sized variants.

``get(name)`` returns an agent's config (``mbjax.agents``: ``MPCConfig``, ``MBPOConfig``,
``DistillConfig``, ...); ``mbjax train <name> --any.field value`` starts from it.
``register_preset(name, config)`` adds a user's own. Full-size presets reproduce the
papers' settings (GPU-sized); the ``*-cpu`` variants shrink population, model and
iterations to run in minutes on a 2-core CPU.
"""

from __future__ import annotations

import dataclasses

from mbjax.agents import (
    DistillConfig,
    EnvConfig,
    MBPOConfig,
    MPCConfig,
    ObjectiveConfig,
    RunConfig,
    SACConfig,
)
from mbjax.agents.mpc import PDDM_MPPI
from mbjax.envs.hand.native import SUPPORTED_TASKS
from mbjax.models.ensemble import EnsembleConfig, pddm_ensemble_config
from mbjax.models.training import ModelTrainConfig
from mbjax.planners import (
    CEMConfig,
    GradientConfig,
    ICEMConfig,
    MPPIConfig,
    RandomShootingConfig,
)
from mbjax.utils.registry import unknown_name_message

# PETS (Chua et al. 2018, App. A): 5 probabilistic members of 4 x 200 swish (HalfCheetah;
# 3 x 200 for cartpole), CEM with 500 candidates, 50 elites, 5 iterations, horizon 30,
# 20 particles propagated with TS-inf; Adam 1e-3; model trained on all data each iteration.
_PETS_MODEL = EnsembleConfig(num_members=5, num_elites=5, hidden_sizes=(200, 200, 200, 200))
_PETS_PLANNER = CEMConfig(horizon=30, population=500, num_elites=50, iterations=5, alpha=0.1)
_PETS_OBJECTIVE = ObjectiveConfig(num_particles=20, propagation="ts_inf")
# PDDM (Nagabandi et al. 2019): 3 deterministic members of 2 x 500 (MSE on normalised
# deltas), filtered MPPI N = 700, H = 7, beta = 0.6, kappa = 20, sigma = 0.9; ~30 rollouts
# per iteration; retrain from scratch is an option (False here, as their released code).
_PDDM_PLANNER = PDDM_MPPI
_PDDM_OBJECTIVE = ObjectiveConfig(num_particles=3)
_PDDM_TRAIN = ModelTrainConfig(batch_size=500, max_epochs=40, early_stopping=False)

# CPU-sized variants: a small model, a few hundred candidates, pendulum by default.
_CPU_MODEL_DET = EnsembleConfig(num_members=3, num_elites=3, hidden_sizes=(64, 64),
                                activation="silu", probabilistic=False, weight_decay=())
_CPU_MODEL_PROB = EnsembleConfig(num_members=3, num_elites=3, hidden_sizes=(64, 64),
                                 weight_decay=())
_CPU_TRAIN = ModelTrainConfig(batch_size=64, max_epochs=20, early_stopping=True,
                              patience=5)
_CPU_ENV = EnvConfig(name="pendulum")
_CPU_MPPI = MPPIConfig(horizon=25, population=128, kappa=1.0, beta=0.7, sigma=1.0)

_CHEETAH = EnvConfig(name="halfcheetah")


def cpu_mpc(name: str, model: EnsembleConfig, planner, num_particles: int,
            num_iterations: int = 8, num_seeds: int = 1) -> MPCConfig:
    """A CPU-sized MPC preset: pendulum, 2 envs, the small model fitted with early stop."""
    return MPCConfig(preset=name, env=_CPU_ENV, model=model, model_train=_CPU_TRAIN,
                     planner=planner, objective=ObjectiveConfig(num_particles=num_particles),
                     num_envs=2, num_iterations=num_iterations, num_seeds=num_seeds)



PRESETS: dict[str, RunConfig] = {
    "pets": MPCConfig(preset="pets", env=_CHEETAH, model=_PETS_MODEL,
                      model_train=ModelTrainConfig(batch_size=32, max_epochs=5,
                                                   early_stopping=False),
                      planner=_PETS_PLANNER, objective=_PETS_OBJECTIVE, num_iterations=100),
    "pddm": MPCConfig(preset="pddm", env=_CHEETAH, model=pddm_ensemble_config(500),
                      model_train=_PDDM_TRAIN, planner=_PDDM_PLANNER,
                      objective=_PDDM_OBJECTIVE, num_envs=30, num_iterations=100),
    "icem": MPCConfig(preset="icem", env=_CHEETAH, model=_PETS_MODEL,
                      planner=ICEMConfig(horizon=30, population=300, num_elites=10,
                                         iterations=3, noise_exponent=2.0),
                      objective=ObjectiveConfig(num_particles=5), num_iterations=100),
    "gradient-mpc": MPCConfig(preset="gradient-mpc", env=_CHEETAH, model=_PETS_MODEL,
                              planner=GradientConfig(horizon=30, num_restarts=8,
                                                     iterations=20),
                              objective=ObjectiveConfig(num_particles=5), num_iterations=100),
    "random-shooting": MPCConfig(preset="random-shooting", env=_CHEETAH,
                                 model=pddm_ensemble_config(500), model_train=_PDDM_TRAIN,
                                 planner=RandomShootingConfig(horizon=10, population=1000),
                                 objective=_PDDM_OBJECTIVE, num_iterations=100),
    "true-dynamics-mpc": MPCConfig(preset="true-dynamics-mpc", env=_CHEETAH,
                                   planner=_PDDM_PLANNER, true_dynamics=True,
                                   num_iterations=3),
    # --- CPU-sized (minutes on a 2-core CPU; pendulum swing-up by default) -------------
    # The quickstart's main job: 3 vmapped seeds x 2 envs, 10 iterations of 200 steps;
    # learns the swing-up (return ~ -120..-250 from random starts) in ~2-3 min on 2 cores.
    "pddm-cpu": cpu_mpc("pddm-cpu", _CPU_MODEL_DET, _CPU_MPPI, 3, num_iterations=10,
                        num_seeds=3),
    "pets-cpu": cpu_mpc("pets-cpu", _CPU_MODEL_PROB, CEMConfig(
        horizon=25, population=100, num_elites=10, iterations=3), 6),
    "icem-cpu": cpu_mpc("icem-cpu", _CPU_MODEL_PROB, ICEMConfig(
        horizon=25, population=100, num_elites=10, iterations=3), 3),
    "gradient-mpc-cpu": cpu_mpc("gradient-mpc-cpu", _CPU_MODEL_DET, GradientConfig(
        horizon=25, num_restarts=4, iterations=10, learning_rate=0.1), 3),
    "random-shooting-cpu": cpu_mpc("random-shooting-cpu", _CPU_MODEL_DET,
                                   RandomShootingConfig(horizon=25, population=256), 3),
    "true-dynamics-mpc-cpu": MPCConfig(preset="true-dynamics-mpc-cpu", env=_CPU_ENV,
                                       planner=_CPU_MPPI, true_dynamics=True, num_envs=2,
                                       num_iterations=2),
}

# --- Policies from models (mbjax.agents): MBPO, SAC, MPC + terminal value, distillation ----
# MBPO (Janner et al. 2019, App. C, and the released configs github.com/jannerm/mbpo,
# examples/config/{hopper,halfcheetah}.py): epochs of 1000 env steps, 5000 random initial
# steps, model (7 members / 5 elites, 4 x 200 swish) retrained every 250 steps, 100k
# branched rollouts per retraining (400 per env step), model buffer = one epoch of
# rollouts, SAC batches of 5 % real data; Hopper: k 1 -> 15 over epochs 20 -> 150,
# G = 20 updates per env step, target entropy -1; HalfCheetah: k = 1, G = 40, target -3.
# SAC (Haarnoja et al. 2018b, Table 1): Adam 3e-4, batch 256, (256, 256), tau 5e-3,
# gamma 0.99, one update per env step.

_MBPO_HOPPER = MBPOConfig(sac=SACConfig(target_entropy=-1.0))
_CPU_SAC = SACConfig(hidden_sizes=(64, 64))
# CPU-sized MBPO on the pendulum: epochs of one 200-step episode, 400 random steps,
# model refit every 50 steps, 1000 rollouts per refit, k 1 -> 5 over epochs 0 -> 5, G = 10.
# Measured (experiments/mbpo): eval return >= -300 after 1800 env steps (400 random
# included) on 3/3 seeds.
_MBPO_CPU = MBPOConfig(
    preset="mbpo-cpu", env=_CPU_ENV, sac=_CPU_SAC,
    model=EnsembleConfig(num_members=7, num_elites=5, hidden_sizes=(64, 64), weight_decay=()),
    model_train=_CPU_TRAIN, steps_per_iteration=200, num_iterations=10, init_steps=400,
    updates_per_step=10, model_train_every=50, rollouts_per_step=20,
    rollout_schedule=(0, 5, 1, 5), buffer_capacity=20_000, num_seeds=3)

PRESETS.update({
    "mbpo": dataclasses.replace(_MBPO_HOPPER, preset="mbpo"),
    "mbpo-halfcheetah": MBPOConfig(
        preset="mbpo-halfcheetah", env=EnvConfig(name="halfcheetah"),
        sac=SACConfig(target_entropy=-3.0), num_iterations=400, updates_per_step=40,
        rollout_schedule=(20, 150, 1, 1)),
    "sac": MBPOConfig(preset="sac", model_based=False, updates_per_step=1,
                      model_train_every=1000),
    # Plan with the learned model over a short horizon, the SAC critic (trained as in
    # MBPO) as terminal value (the notes' "plan with a terminal value function"; LOOP,
    # Sikchi et al. 2021, plans H = 3 with a SAC critic). No single published setting.
    "mpc-value": dataclasses.replace(
        _MBPO_HOPPER, preset="mpc-value", acting="mpc",
        planner=CEMConfig(horizon=5, population=500, num_elites=50, iterations=5),
        objective=ObjectiveConfig(num_particles=7, discount=0.99)),
    # DAgger distillation of PDDM's filtered MPPI on the true simulator (teacher) into a
    # (256, 256) MLP student.
    "mpc-distill": DistillConfig(
        preset="mpc-distill", env=EnvConfig(name="halfcheetah"),
        planner=_PDDM_PLANNER, hidden_sizes=(256, 256),
        student_updates=2000, num_envs=16, num_iterations=10, eval_envs=8),
    # --- CPU-sized (pendulum) ----------------------------------------------------------
    "mbpo-cpu": _MBPO_CPU,
    # SAC alone at SAC's own update rate (G = 1); 30 epochs of 200 steps.
    "sac-cpu": dataclasses.replace(_MBPO_CPU, preset="sac-cpu", model_based=False,
                                   updates_per_step=1, model_train_every=200,
                                   num_iterations=30),
    "mpc-value-cpu": dataclasses.replace(
        _MBPO_CPU, preset="mpc-value-cpu", acting="mpc", num_seeds=1,
        planner=CEMConfig(horizon=5, population=64, num_elites=8, iterations=3),
        objective=ObjectiveConfig(num_particles=7, discount=0.99)),
    "mpc-distill-cpu": DistillConfig(preset="mpc-distill-cpu"),
})


def _locomotion_cpu(env: str, model_based: bool) -> MBPOConfig:
    """MBPO / SAC on a brax locomotion env at a budget 2 CPU cores finish in ~1 h
    (experiments/mbpo/brax_locomotion.py): the published env settings (5000 random
    steps, epochs of 1000 steps, rollout schedule, target entropy, 7 x 4 x 200 ensemble,
    5 % real data) for 25 epochs = 30k env steps, with three cuts that keep the cost
    down: SAC (128, 128) instead of (256, 256), G = 10 instead of 20 (Hopper) / 40
    (HalfCheetah), and the model refit + 100k branched rollouts once per epoch (F = 1000,
    M = 100) instead of every 250 steps (M = 400); model fits stop after 20 epochs.
    SAC (``model_based=False``) keeps its own G = 1 and the same networks."""
    base = PRESETS["mbpo-halfcheetah" if env == "halfcheetah" else "mbpo"]
    algo = "mbpo" if model_based else "sac"
    return dataclasses.replace(
        base, preset=f"{algo}-{env}-cpu", model_based=model_based,
        sac=dataclasses.replace(base.sac, hidden_sizes=(128, 128)),
        model_train=ModelTrainConfig(max_epochs=20),
        num_iterations=25, updates_per_step=10 if model_based else 1,
        model_train_every=1000, rollouts_per_step=100, buffer_capacity=30_000,
        num_seeds=3)


PRESETS.update({f"{algo}-{env}-cpu": _locomotion_cpu(env, algo == "mbpo")
                for env in ("hopper", "halfcheetah") for algo in ("mbpo", "sac")})

# --- The 24-DoF hand (mbjax.envs.hand: hand_track, hand_baoding, hand_cube) ------------
# PDDM's recipe (Nagabandi et al. 2019, Sec. 4-5 and App.; the _PDDM_* settings above) at
# the paper's size, and CPU-sized variants that run in minutes on 2 cores; the same
# budgets for PETS (its ensemble, CEM and TS-inf at PDDM's H = 7: the hand's 40 ms control
# step), MBPO / SAC and MPC on the simulator. Every hand preset restarts an episode that
# ends early (a drop) from its first state (env.reset_mode "cached": no mjx.make_data per
# step under vmap); each iteration's episodes still start from fresh draws.
HAND_TASKS = ("hand_track", "hand_baoding", "hand_cube")
HAND_ALGORITHMS = ("pddm", "pets", "mbpo", "sac", "true-dynamics")
#: MPPI noise where PDDM's sigma = 0.9 throws the objects: our actions map [-1, 1] onto
#: each joint's whole range, so 0.9 moves the wrist up to +-0.45 rad per step; on
#: hand_baoding planning on the simulator (N = 64, H = 7) dropped a ball in 1 of 2
#: episodes at 0.9, in none at 0.3 (experiments/pddm_hand, true-dynamics runs).
HAND_SIGMA = {"hand_baoding": 0.3}
_HAND_PAPER_ENVS = 30  # PDDM: ~30 trajectories per model update
_HAND_CPU_MODEL_DET = EnsembleConfig(num_members=3, num_elites=3, hidden_sizes=(200, 200),
                                     activation="relu", probabilistic=False,
                                     weight_decay=())
_HAND_CPU_TRAIN = ModelTrainConfig(batch_size=256, max_epochs=60, early_stopping=True,
                                   patience=5)


def hand_sigma(task: str) -> float:
    """The MPPI noise of the hand presets on ``task`` (``HAND_SIGMA`` or PDDM's 0.9)."""
    return HAND_SIGMA.get(task, _PDDM_PLANNER.sigma)


def hand_preset_name(algorithm: str, task: str, cpu: bool) -> str:
    """E.g. ``pddm-hand-baoding`` (paper size) and ``pddm-hand-baoding-cpu``."""
    return f"{algorithm}-{task.replace('_', '-')}" + ("-cpu" if cpu else "")


def hand_preset(algorithm: str, task: str, cpu: bool) -> RunConfig:
    """The hand preset of ``algorithm`` (``HAND_ALGORITHMS``) on ``task`` at the paper's
    size (``cpu=False``: GPU-sized) or CPU-sized. Sizes (paper / CPU):

    * pddm: 3 x 2 x 500 deterministic ensemble, MPPI N 700 H 7 beta 0.6 kappa 20, 3
      particles, 30 hands x 1 episode (100 steps) per iteration, 100 iterations, 3 seeds /
      3 x 2 x 200, N 128, 2 hands, 10 iterations.
    * pets: 5 x 4 x 200 probabilistic, CEM 500 / 50 elites / 5 its at H 7, 20 TS-inf
      particles (Chua et al. 2018, App. A) / 3 x 2 x 200, CEM 128 / 13 / 3, 6 particles.
    * mbpo, sac: MBPO's HalfCheetah settings (Janner et al. 2019; k = 1, G = 40, the
      published schedule otherwise; SAC with G = 1) with epochs of 1000 steps = 10 hand
      episodes / epochs of 200 steps, 400 random steps, G = 10, SAC (128, 128).
    * true-dynamics: PDDM's MPPI on the simulator, N 700, 30 hands (MJX) / on the ball
      tasks N 256, 2 hands, planning on native MuJoCo rollouts (``objective.simulator``
      "mujoco"; the episodes still step the MJX task env), on the cube N 64 on MJX (native
      box contacts differ from MJX's: ``mbjax.envs.hand.native``).
    """
    if task not in HAND_TASKS:
        raise KeyError(unknown_name_message("hand task", task, list(HAND_TASKS)))
    name = hand_preset_name(algorithm, task, cpu)
    env = EnvConfig(name=task, reset_mode="cached")
    mppi = dataclasses.replace(_PDDM_PLANNER, sigma=hand_sigma(task),
                               population=(128 if algorithm == "pddm" else 64) if cpu
                               else _PDDM_PLANNER.population)
    mpc = dict(preset=name, env=env, num_envs=2 if cpu else _HAND_PAPER_ENVS,
               prefill_episodes=2 if cpu else 1, episodes_per_iteration=1,
               num_iterations=10 if cpu else 100, num_seeds=3,
               buffer_capacity=20_000 if cpu else 400_000,
               checkpoint_every=0 if cpu else 10)
    if algorithm == "pddm":
        return MPCConfig(model=_HAND_CPU_MODEL_DET if cpu else pddm_ensemble_config(500),
                         model_train=_HAND_CPU_TRAIN if cpu else _PDDM_TRAIN,
                         planner=mppi, objective=_PDDM_OBJECTIVE, **mpc)
    if algorithm == "pets":
        model = (EnsembleConfig(num_members=3, num_elites=3, hidden_sizes=(200, 200),
                                weight_decay=()) if cpu else _PETS_MODEL)
        planner = (CEMConfig(horizon=7, population=128, num_elites=13, iterations=3)
                   if cpu else dataclasses.replace(_PETS_PLANNER, horizon=7))
        objective = (ObjectiveConfig(num_particles=6, propagation="ts_inf") if cpu
                     else _PETS_OBJECTIVE)
        return MPCConfig(model=model, model_train=_HAND_CPU_TRAIN if cpu else
                         ModelTrainConfig(batch_size=32, max_epochs=5, early_stopping=False),
                         planner=planner, objective=objective, **mpc)
    if algorithm == "true-dynamics":
        native = cpu and task in SUPPORTED_TASKS  # native MuJoCo rollouts: faster on CPU
        if native:
            mppi = dataclasses.replace(mppi, population=256)
        return MPCConfig(planner=mppi, true_dynamics=True,
                         objective=ObjectiveConfig(simulator="mujoco" if native else "jax"),
                         **dict(mpc, prefill_episodes=0, num_iterations=1 if cpu else 3,
                                num_seeds=1))
    if algorithm in ("mbpo", "sac"):
        model_based = algorithm == "mbpo"
        base = PRESETS["mbpo-halfcheetah"]
        if not cpu:
            return dataclasses.replace(
                base, preset=name, env=env, sac=SACConfig(), model_based=model_based,
                updates_per_step=base.updates_per_step if model_based else 1,
                num_iterations=100, num_seeds=3, checkpoint_every=10)
        return dataclasses.replace(
            base, preset=name, env=env, model_based=model_based,
            sac=SACConfig(hidden_sizes=(128, 128)),
            model=EnsembleConfig(num_members=7, num_elites=5, hidden_sizes=(200, 200),
                                 weight_decay=()),
            model_train=_HAND_CPU_TRAIN, steps_per_iteration=200, init_steps=400,
            updates_per_step=10 if model_based else 1, model_train_every=200,
            rollouts_per_step=20, rollout_schedule=(0, 1, 1, 1), buffer_capacity=20_000,
            num_iterations=10, num_seeds=3, checkpoint_every=0)
    raise KeyError(unknown_name_message("hand algorithm", algorithm, list(HAND_ALGORITHMS)))


PRESETS.update({hand_preset_name(a, t, cpu): hand_preset(a, t, cpu)
                for a in HAND_ALGORITHMS for t in HAND_TASKS for cpu in (False, True)})

DEFAULT_PRESET = "pddm-cpu"


def names() -> list[str]:
    return list(PRESETS)


def register_preset(name: str, config: RunConfig, replace: bool = False) -> None:
    """Adds ``config`` (any registered agent's config) as preset ``name``: ``mbjax train
    NAME`` and sweeps can then start from it. A taken name is an error unless
    ``replace``."""
    if not isinstance(config, RunConfig):
        raise TypeError(f"a preset is an agent config (mbjax.agents.RunConfig), got "
                        f"{type(config).__name__}")
    if name in PRESETS and not replace:
        raise ValueError(f"preset {name!r} already exists; pick another name")
    PRESETS[name] = dataclasses.replace(config, preset=name)


def get(name: str) -> RunConfig:
    """The preset ``name``; an unknown name lists the valid ones (with a did-you-mean)."""
    if name not in PRESETS:
        raise KeyError(unknown_name_message("preset", name, names()))
    return PRESETS[name]
