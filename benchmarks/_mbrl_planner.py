"""mbrl-lib 0.2.0 side of benchmarks/planner_throughput.py (run in a subprocess so the
malloc environment variables and torch threads apply from process start).

Builds mbrl-lib's GaussianMLP ensemble (TS-inf propagation, "fixed_model") wrapped in
OneDTransitionRewardModel + ModelEnv with a known reward function, and its
TrajectoryOptimizerAgent with CEM / MPPI / iCEM at the given settings; times
``agent.act(obs)`` (one planning call, replan every step) and prints one JSON line.
"""

import argparse
import json
import time

import numpy as np


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--optimizer", default="cem", choices=["cem", "mppi", "icem"])
    p.add_argument("--obs", type=int, default=18)
    p.add_argument("--act", type=int, default=6)
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=200)
    p.add_argument("--deterministic", action="store_true")
    p.add_argument("--population", type=int, default=500)
    p.add_argument("--elites", type=int, default=50)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--horizon", type=int, default=30)
    p.add_argument("--particles", type=int, default=20)
    p.add_argument("--calls", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import gymnasium as gym
    import omegaconf
    import torch
    from mbrl.models import GaussianMLP, ModelEnv, OneDTransitionRewardModel
    from mbrl.planning import create_trajectory_optim_agent_for_model

    torch.set_num_threads(args.threads)
    obs_space = gym.spaces.Box(-np.inf, np.inf, (args.obs,), np.float32)
    act_space = gym.spaces.Box(-1.0, 1.0, (args.act,), np.float32)

    class _Spaces:
        observation_space, action_space = obs_space, act_space

    net = GaussianMLP(in_size=args.obs + args.act, out_size=args.obs, device="cpu",
                      num_layers=args.layers, ensemble_size=args.members,
                      hid_size=args.hidden, deterministic=args.deterministic,
                      propagation_method="fixed_model",
                      activation_fn_cfg={"_target_": "torch.nn.SiLU"})
    dyn = OneDTransitionRewardModel(net, target_is_delta=True, normalize=False,
                                    learned_rewards=False)

    def reward_fn(act, next_obs):  # x-velocity-like reward with an action cost
        return next_obs[:, :1] - 0.1 * (act**2).sum(-1, keepdim=True)

    def termination_fn(act, next_obs):
        return torch.zeros(next_obs.shape[0], 1, dtype=torch.bool)

    model_env = ModelEnv(_Spaces(), dyn, termination_fn, reward_fn,
                         generator=torch.Generator().manual_seed(0))
    lb, ub = [-1.0] * args.act, [1.0] * args.act
    if args.optimizer == "cem":
        opt = {"_target_": "mbrl.planning.CEMOptimizer", "num_iterations": args.iterations,
               "elite_ratio": args.elites / args.population, "population_size": args.population,
               "alpha": 0.1, "return_mean_elites": True, "clipped_normal": False}
    elif args.optimizer == "mppi":
        opt = {"_target_": "mbrl.planning.MPPIOptimizer", "num_iterations": args.iterations,
               "population_size": args.population, "gamma": 20.0, "sigma": 0.9, "beta": 0.6}
    else:
        opt = {"_target_": "mbrl.planning.ICEMOptimizer", "num_iterations": args.iterations,
               "elite_ratio": args.elites / args.population, "population_size": args.population,
               "population_decay_factor": 1.25, "colored_noise_exponent": 2.0,
               "keep_elite_frac": 0.3, "alpha": 0.1, "return_mean_elites": True}
    opt.update(device="cpu", lower_bound="???", upper_bound="???")
    cfg = omegaconf.OmegaConf.create({
        "_target_": "mbrl.planning.TrajectoryOptimizerAgent", "action_lb": lb,
        "action_ub": ub, "planning_horizon": args.horizon, "replan_freq": 1,
        "verbose": False, "optimizer_cfg": opt, "_recursive_": False})
    agent = create_trajectory_optim_agent_for_model(model_env, cfg,
                                                    num_particles=args.particles)
    obs = np.zeros(args.obs, np.float32)
    agent.act(obs)  # warm-up
    times = []
    for _ in range(args.calls):
        t0 = time.perf_counter()
        agent.act(obs)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"median_s": float(np.median(times)), "times": times,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
