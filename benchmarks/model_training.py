"""Ensemble model training and rollout speed, and a side-by-side with mbrl-lib.

For each ensemble size E, hidden width W (``--depth`` hidden layers, default 4) and
minibatch size B, on the default JAX device:

* **time per training epoch** of ``make_model_trainer(...).train`` over ``--transitions``
  random transitions (obs 18, action 6: HalfCheetah's sizes), probabilistic (Gaussian NLL)
  head, per-member bootstrap on, ``early_stopping=False`` (no holdout, no evaluation),
  Adam with the PETS per-layer weight decay. Compilation is excluded: a 1-epoch call and a
  (1 + k)-epoch call are each compiled once and timed ``--repeats`` times (interleaved);
  time/epoch = (min T(1 + k) - min T(1)) / k. The 1-epoch call time (incl. the per-call
  setup: normalisers, bootstrap draw) is reported too;
* **GFLOP/s** of that epoch (useful matmul FLOPs only: forward + 2 x backward =
  6 * E * n * sum_l d_in * d_out) and its fraction of a **dense matmul ceiling** measured
  in the same run: the ensemble-shaped batched matmul [E, B, W] x [E, W, W] in a jitted
  loop;
* **time per rollout batch**, PETS planning-shaped: ``--candidates`` (500) action
  sequences x ``--particles`` (20) particles, horizon ``--horizon`` (30), TS-inf, with a
  reward function, one jitted ``rollout_particles`` call (particles are rounded up to a
  multiple of E, e.g. 21 for E = 7).

When mbrl-lib (``mbrl`` 0.2.0, PyTorch) is importable, its ``GaussianMLP`` ensemble is
trained at the reference sizes (E = 5, 4 x 200, B = 32 and 256, unless ``--mbrl-all``)
by its own ``ModelTrainer`` for one epoch over the same number of random transitions:
built with ``mbrl.util.common.create_one_dim_tr_model`` (SiLU, deterministic=False,
learned log-variance bounds like ours, input normalisation, delta targets), iterated with
``get_basic_buffer_iterators(val_ratio=0, bootstrap_permutes=False)`` (bootstrap with
replacement, reshuffled each epoch, no validation set) and
``ModelTrainer.train(num_epochs=1, evaluate=False)``, Adam lr 1e-3 with weight decay
5e-5. Each mbrl-lib measurement runs in a fresh subprocess with ``torch`` set to
``--torch-threads`` (default 2) threads, once with the default environment and once with
glibc malloc tuned for PyTorch on CPU (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_...``,
``MALLOC_TOP_PAD_``, set before the process starts). On a GPU device it uses CUDA.
The ratio printed is mbrl-lib time / ours (> 1: we are faster).

Install the comparison (optional; mbrl 0.2.0 pins hydra-core 1.0.3, which does not import
on Python 3.11, so it is installed without its dependencies):
  pip install -e '.[bench]' && pip install --no-deps mbrl==0.2.0

Usage:
  python benchmarks/model_training.py            # full sweep (E 1 5 7, W 64 200 500, B 32 256)
  python benchmarks/model_training.py --quick    # E = 5, W = 200 only, fewer repeats
  python benchmarks/model_training.py --no-mbrl --members 5 --widths 200

Writes benchmarks/results/model_training_<device>.json and .png and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _output import write_result

OBS, ACT = 18, 6  # HalfCheetah
TUNED_MALLOC = {
    "MALLOC_MMAP_THRESHOLD_": "33554432",
    "MALLOC_TRIM_THRESHOLD_": "17179869184",
    "MALLOC_TOP_PAD_": "536870912",
}


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _mlp_macs(members: int, width: int, depth: int, out: int = 2 * OBS) -> int:
    """Multiply-accumulates of one forward pass of one sample through all E members."""
    sizes = (OBS + ACT,) + (width,) * depth + (out,)
    return members * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


# --------------------------------------------------------------------------------------
# Ours (JAX)
# --------------------------------------------------------------------------------------
def _random_transitions(n: int, seed: int = 0):
    import jax
    import jax.numpy as jnp

    from mbjax.types import Transition

    k = jax.random.split(jax.random.PRNGKey(seed), 3)
    obs = jax.random.normal(k[0], (n, OBS))
    action = jax.random.uniform(k[1], (n, ACT), minval=-1.0, maxval=1.0)
    next_obs = obs + 0.1 * jax.random.normal(k[2], (n, OBS))
    z = jnp.zeros(n)
    return Transition(obs=obs, action=action, reward=z, next_obs=next_obs, done=z,
                      truncated=z)


def _model(members: int, width: int, depth: int):
    from mbjax.models import EnsembleConfig, EnsembleModel

    wd = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4) if depth == 4 else (5e-5,)
    cfg = EnsembleConfig(num_members=members, num_elites=members,
                         hidden_sizes=(width,) * depth, weight_decay=wd)
    return EnsembleModel(OBS, ACT, cfg)


def matmul_ceiling(members: int, batch: int, width: int, iters: int = 20,
                   repeats: int = 5) -> float:
    """GFLOP/s of [E, B, W] x [E, W, W] (einsum 'ebi,eio->ebo'), chained in a jitted loop."""
    import jax
    import jax.numpy as jnp

    x = jax.random.normal(jax.random.PRNGKey(0), (members, batch, width))
    w = jax.random.normal(jax.random.PRNGKey(1), (members, width, width)) / width ** 0.5

    @jax.jit
    def run(x, w):
        body = lambda _, x: jnp.einsum("ebi,eio->ebo", x, w)
        return jax.lax.fori_loop(0, iters, body, x)

    jax.block_until_ready(run(x, w))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(run(x, w))
        best = min(best, time.perf_counter() - t0)
    return 2.0 * members * batch * width * width * iters / best / 1e9


def time_training(members: int, width: int, depth: int, batch: int, n: int, extra_epochs: int,
                  repeats: int) -> dict:
    import jax

    from mbjax.models import ModelTrainConfig, make_model_trainer

    model = _model(members, width, depth)
    data = _random_transitions(n)
    calls, compile_s = {}, {}
    for epochs in (1, 1 + extra_epochs):
        trainer = make_model_trainer(model, ModelTrainConfig(
            batch_size=batch, max_epochs=epochs, early_stopping=False, bootstrap=True))
        state = trainer.init(jax.random.PRNGKey(1))
        fn = jax.jit(trainer.train)
        t0 = time.perf_counter()
        _, metrics = jax.block_until_ready(fn(state, data, n, jax.random.PRNGKey(2)))
        compile_s[epochs] = time.perf_counter() - t0
        assert int(metrics["model/epochs"]) == epochs and not bool(metrics["model/loss_nonfinite"])
        calls[epochs] = (fn, state)
    times = {e: [] for e in calls}
    load_before = _load()
    for r in range(repeats):
        for epochs, (fn, state) in calls.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(state, data, n, jax.random.PRNGKey(3 + r)))
            times[epochs].append(time.perf_counter() - t0)
    k = 1 + extra_epochs
    per_epoch = (min(times[k]) - min(times[1])) / extra_epochs
    per_epoch_median = (statistics.median(times[k]) - statistics.median(times[1])) / extra_epochs
    flops = 6.0 * _mlp_macs(members, width, depth) * n
    return {
        "members": members, "width": width, "depth": depth, "batch": batch, "transitions": n,
        "steps_per_epoch": -(-n // batch),
        "epoch_s": per_epoch, "epoch_s_median": per_epoch_median,
        "one_epoch_call_s": min(times[1]), "compile_and_run_1_epoch_s": compile_s[1],
        "epoch_gflop": flops / 1e9, "gflops": flops / per_epoch / 1e9,
        "load_avg": [load_before, _load()],
    }


def time_rollout(members: int, width: int, depth: int, candidates: int, particles: int,
                 horizon: int, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp

    from mbjax.models.rollout import rollout_particles
    from mbjax.utils.bench import time_call

    model = _model(members, width, depth)
    state = model.init(jax.random.PRNGKey(0))
    particles = -(-particles // members) * members  # TS-inf: a multiple of E
    b = candidates * particles
    obs0 = jnp.zeros((b, OBS))
    plans = jax.random.uniform(jax.random.PRNGKey(1), (candidates, horizon, ACT), minval=-1,
                               maxval=1)
    actions = jnp.repeat(plans, particles, axis=0)
    reward_fn = lambda o, a, o2: -jnp.sum(o2 ** 2) - 0.1 * jnp.sum(a ** 2)

    @jax.jit
    def plan_returns(state, obs0, actions, key):
        r = rollout_particles(model, state, obs0, actions, key, reward_fn=reward_fn,
                              propagation="ts_inf")
        return r.reward.sum(-1).reshape(candidates, particles).mean(-1)

    load_before = _load()
    first, median = time_call(lambda: plan_returns(state, obs0, actions,
                                                   jax.random.PRNGKey(2)), repeats)
    # TS-inf: every particle-step is one member forward (mean + log-variance head).
    flops = 2.0 * _mlp_macs(1, width, depth) * b * horizon
    return {
        "members": members, "width": width, "depth": depth, "candidates": candidates,
        "particles": particles, "horizon": horizon, "rollout_s": median,
        "compile_and_run_s": first, "gflop": flops / 1e9, "gflops": flops / median / 1e9,
        "load_avg": [load_before, _load()],
    }


# --------------------------------------------------------------------------------------
# mbrl-lib (PyTorch), always in a subprocess
# --------------------------------------------------------------------------------------
def mbrl_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("torch", "mbrl", "hydra"))


def mbrl_worker(args) -> None:
    """Runs in a fresh process: times mbrl-lib's ModelTrainer epochs, prints one JSON line."""
    import mbrl.models
    import mbrl.util.common
    import numpy as np
    import omegaconf
    import torch
    from mbrl.util.replay_buffer import ReplayBuffer

    torch.set_num_threads(args.torch_threads)
    device = args.mbrl_device
    cfg = omegaconf.OmegaConf.create({
        # _recursive_: False, as with hydra 1.0 which mbrl 0.2.0 was written for (hydra 1.3
        # would instantiate activation_fn_cfg before GaussianMLP sees it).
        "dynamics_model": {
            "_target_": "mbrl.models.GaussianMLP", "_recursive_": False, "device": device,
            "num_layers": args.depth, "ensemble_size": args.members, "hid_size": args.width,
            "in_size": "???", "out_size": "???", "deterministic": False,
            "propagation_method": "fixed_model", "learn_logvar_bounds": True,
            "activation_fn_cfg": {"_target_": "torch.nn.SiLU"},
        },
        "algorithm": {"learned_rewards": False, "target_is_delta": True, "normalize": True},
        "overrides": {},
    })
    cfg.dynamics_model.in_size = OBS + ACT
    cfg.dynamics_model.out_size = OBS
    model = mbrl.util.common.create_one_dim_tr_model(cfg, (OBS,), (ACT,))
    rng = np.random.default_rng(0)
    n = args.transitions
    buffer = ReplayBuffer(n, (OBS,), (ACT,), rng=rng)
    obs = rng.normal(size=(n, OBS)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(n, ACT)).astype(np.float32)
    nxt = obs + 0.1 * rng.normal(size=(n, OBS)).astype(np.float32)
    for i in range(n):
        buffer.add(obs[i], act[i], nxt[i], 0.0, False, False)
    model.update_normalizer(buffer.get_all())
    train_iter, val_iter = mbrl.util.common.get_basic_buffer_iterators(
        buffer, args.batch, val_ratio=0.0, ensemble_size=args.members,
        shuffle_each_epoch=True, bootstrap_permutes=False)
    assert val_iter is None
    trainer = mbrl.models.ModelTrainer(model, optim_lr=1e-3, weight_decay=5e-5)

    def epoch():
        trainer.train(train_iter, dataset_val=None, num_epochs=1, evaluate=False, silent=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    epoch()  # warm-up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"epoch_s": min(times), "epoch_s_median": statistics.median(times),
                      "times": times, "torch": torch.__version__,
                      "torch_threads": torch.get_num_threads(), "device": device}))


def time_mbrl(members: int, width: int, depth: int, batch: int, n: int, repeats: int,
              threads: int, device: str, tuned_malloc: bool, timeout: float) -> dict:
    env = dict(os.environ)
    if tuned_malloc:
        env.update(TUNED_MALLOC)
    else:
        for k in TUNED_MALLOC:
            env.pop(k, None)
    cmd = [sys.executable, __file__, "--mbrl-worker", "--members", str(members), "--widths",
           str(width), "--depth", str(depth), "--batch-sizes", str(batch), "--transitions",
           str(n), "--repeats", str(repeats), "--torch-threads", str(threads),
           "--mbrl-device", device]
    load_before = _load()
    row = {"members": members, "width": width, "depth": depth, "batch": batch,
           "transitions": n, "tuned_malloc": tuned_malloc, "torch_threads": threads,
           "device": device}
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**row, "error": f"timed out after {timeout:.0f} s"}
    if out.returncode != 0:
        return {**row, "error": out.stderr.strip().splitlines()[-1:] or "failed"}
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["gflops"] = 6.0 * _mlp_macs(members, width, depth) * n / res["epoch_s"] / 1e9
    return {**row, **res, "load_avg": [load_before, _load()]}


# --------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", nargs="*", type=int, default=None)
    parser.add_argument("--widths", nargs="*", type=int, default=None)
    parser.add_argument("--batch-sizes", nargs="*", type=int, default=[32, 256])
    parser.add_argument("--depth", type=int, default=4, help="hidden layers")
    parser.add_argument("--transitions", type=int, default=10_000)
    parser.add_argument("--extra-epochs", type=int, default=2,
                        help="k: time/epoch = (T(1 + k) - T(1)) / k")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--candidates", type=int, default=500)
    parser.add_argument("--particles", type=int, default=20)
    parser.add_argument("--horizon", type=int, default=30)
    parser.add_argument("--no-rollout", action="store_true")
    parser.add_argument("--no-mbrl", action="store_true")
    parser.add_argument("--mbrl-all", action="store_true",
                        help="run mbrl-lib at every swept size, not only E=5, W=200")
    parser.add_argument("--mbrl-repeats", type=int, default=None,
                        help="timed mbrl-lib epochs (default: --repeats)")
    parser.add_argument("--mbrl-timeout", type=float, default=900.0)
    parser.add_argument("--torch-threads", nargs="*", type=int, default=[2],
                        help="mbrl-lib runs once per value (and per malloc setting)")
    parser.add_argument("--cpus", default=None,
                        help="pin this process and its children to these CPUs, e.g. 0,1")
    parser.add_argument("--mbrl-device", default=None, help="default: cuda on GPU, else cpu")
    parser.add_argument("--quick", action="store_true",
                        help="E=5, W=200 only; 3 repeats; rollout at E=5, W=200")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--mbrl-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.members = args.members or ([5] if args.quick else [1, 5, 7])
    args.widths = args.widths or ([200] if args.quick else [64, 200, 500])
    args.repeats = args.repeats or (3 if args.quick else 5)

    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    if args.mbrl_worker:
        args.members, args.width, args.batch = args.members[0], args.widths[0], \
            args.batch_sizes[0]
        args.torch_threads = args.torch_threads[0]
        args.mbrl_device = args.mbrl_device or "cpu"
        mbrl_worker(args)
        return

    import jax

    import mbjax  # noqa: F401  (XLA flags before JAX starts)
    from mbjax.utils.bench import machine_info

    info = machine_info()
    info["load_avg_start"] = _load()
    info["cpus_usable"] = len(os.sched_getaffinity(0))
    gpu = jax.default_backend() == "gpu"
    mbrl_device = args.mbrl_device or ("cuda" if gpu else "cpu")
    run_mbrl = not args.no_mbrl and mbrl_available()
    if not args.no_mbrl and not run_mbrl:
        print("mbrl-lib not installed (pip install -e '.[bench]' && pip install --no-deps "
              "mbrl==0.2.0): skipping the comparison", flush=True)

    train_rows, ceilings, rollouts, mbrl_rows = [], [], [], []
    for members in args.members:
        for width in args.widths:
            for batch in args.batch_sizes:
                r = time_training(members, width, args.depth, batch, args.transitions,
                                  args.extra_epochs, args.repeats)
                c = matmul_ceiling(members, batch, width)
                r["ceiling_gflops"] = c
                r["ceiling_fraction"] = r["gflops"] / c
                ceilings.append({"members": members, "batch": batch, "width": width,
                                 "gflops": c})
                train_rows.append(r)
                print(f"train E={members} W={width:3d} B={batch:3d}: {r['epoch_s']:.3f} s/epoch"
                      f" ({r['gflops']:.1f} GFLOP/s, {100 * r['ceiling_fraction']:.0f}% of "
                      f"{c:.0f}), load {r['load_avg'][1][0]}", flush=True)
                if run_mbrl and (args.mbrl_all or (members == 5 and width == 200)):
                    for threads, tuned in [(t, m) for t in args.torch_threads
                                           for m in (False, True)]:
                        m = time_mbrl(members, width, args.depth, batch, args.transitions,
                                      args.mbrl_repeats or args.repeats, threads, mbrl_device,
                                      tuned, args.mbrl_timeout)
                        if "epoch_s" in m:
                            m["ratio_vs_ours"] = m["epoch_s"] / r["epoch_s"]
                            print(f"  mbrl-lib ({_variant(m)}): {m['epoch_s']:.3f} s/epoch -> "
                                  f"ours is {m['ratio_vs_ours']:.2f}x faster", flush=True)
                        else:
                            print(f"  mbrl-lib: {m['error']}", flush=True)
                        mbrl_rows.append(m)
            if not args.no_rollout:
                ro = time_rollout(members, width, args.depth, args.candidates, args.particles,
                                  args.horizon, args.repeats)
                rows_per_member = args.candidates * ro["particles"] // members
                ro["ceiling_gflops"] = matmul_ceiling(members, rows_per_member, width,
                                                      iters=5, repeats=3)
                ro["ceiling_fraction"] = ro["gflops"] / ro["ceiling_gflops"]
                rollouts.append(ro)
                print(f"rollout E={members} W={width:3d}: {ro['rollout_s']:.3f} s per "
                      f"{args.candidates}x{ro['particles']}x{args.horizon} batch "
                      f"({ro['gflops']:.1f} GFLOP/s), load {ro['load_avg'][1][0]}", flush=True)

    info["load_avg_end"] = _load()
    result = {"machine": info, "settings": {k: v for k, v in vars(args).items()
                                            if k not in ("out", "mbrl_worker")},
              "training": train_rows, "mbrl_lib": mbrl_rows, "rollout": rollouts,
              "matmul_ceiling": ceilings}
    _print_tables(result)
    write_result(result, "model_training", args.out, lambda png: _plot(result, png))


def _variant(m: dict) -> str:
    return (f"{m['device']}, {m['torch_threads']} thread{'s' if m['torch_threads'] > 1 else ''}"
            f"{', tuned malloc' if m['tuned_malloc'] else ''}")


def _print_tables(result) -> None:
    from rich.console import Console
    from rich.table import Table

    info = result["machine"]
    console = Console(width=180)
    t = Table(title=f"ensemble training, time per epoch ({result['settings']['transitions']} "
                    f"transitions) on {info['device_kind']} ({info['cpu']}, "
                    f"{info['cpus_usable']} usable cores, load {info['load_avg_start'][0]} -> "
                    f"{info['load_avg_end'][0]})")
    for c in ("E", "width", "batch", "steps", "s/epoch", "1-epoch call s", "GFLOP/s",
              "ceiling GFLOP/s", "of ceiling"):
        t.add_column(c, justify="right")
    for r in result["training"]:
        t.add_row(str(r["members"]), str(r["width"]), str(r["batch"]),
                  str(r["steps_per_epoch"]), f"{r['epoch_s']:.3f}",
                  f"{r['one_epoch_call_s']:.3f}", f"{r['gflops']:.1f}",
                  f"{r['ceiling_gflops']:.1f}", f"{100 * r['ceiling_fraction']:.0f}%")
    console.print(t)
    if result["mbrl_lib"]:
        t = Table(title="mbjax vs mbrl-lib GaussianMLP ensemble, same sizes, one epoch "
                        "(ratio = mbrl-lib time / mbjax time; > 1: mbjax faster)")
        for c in ("E", "width", "batch", "mbjax s", "mbrl-lib setting", "mbrl-lib s",
                  "mbrl-lib GFLOP/s", "ratio"):
            t.add_column(c, justify="right")
        ours = {(r["members"], r["width"], r["batch"]): r for r in result["training"]}
        for m in result["mbrl_lib"]:
            o = ours[(m["members"], m["width"], m["batch"])]
            ok = "epoch_s" in m
            t.add_row(str(m["members"]), str(m["width"]), str(m["batch"]),
                      f"{o['epoch_s']:.3f}", _variant(m),
                      f"{m['epoch_s']:.3f}" if ok else str(m.get("error")),
                      f"{m['gflops']:.1f}" if ok else "-",
                      f"{m['ratio_vs_ours']:.2f}x" if ok else "-")
        console.print(t)
    if result["rollout"]:
        t = Table(title="rollout batch (TS-inf, candidates x particles x horizon)")
        for c in ("E", "width", "shape", "s/batch", "GFLOP/s", "ceiling GFLOP/s", "of ceiling"):
            t.add_column(c, justify="right")
        for r in result["rollout"]:
            t.add_row(str(r["members"]), str(r["width"]),
                      f"{r['candidates']}x{r['particles']}x{r['horizon']}",
                      f"{r['rollout_s']:.3f}", f"{r['gflops']:.1f}",
                      f"{r['ceiling_gflops']:.1f}", f"{100 * r['ceiling_fraction']:.0f}%")
        console.print(t)


def _plot(result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mbjax.utils.bench import save_figure, style_axes

    info = result["machine"]
    fig, axes = plt.subplots(1, 3 if result["rollout"] else 2, figsize=(15, 4.5))
    ax = axes[0]
    for members in sorted({r["members"] for r in result["training"]}):
        for batch in sorted({r["batch"] for r in result["training"]}):
            pts = sorted((r["width"], r["epoch_s"]) for r in result["training"]
                         if r["members"] == members and r["batch"] == batch)
            ax.plot(*zip(*pts), "-" if batch == 256 else "--", marker="o",
                    label=f"E={members}, B={batch}")
    style_axes(ax, xlog=10, ylog=10, xlabel="hidden width (4 layers)", ylabel="s / epoch",
               title=f"time per epoch, {result['settings']['transitions']} transitions",
               legend=7)

    ax = axes[1]
    ref = [r for r in result["training"] if r["members"] == 5 and r["width"] == 200]
    variants = list(dict.fromkeys(_variant(m) for m in result["mbrl_lib"]))
    series = [("mbjax", [r["epoch_s"] for r in ref])]
    for v in variants:
        by_b = {m["batch"]: m.get("epoch_s", float("nan")) for m in result["mbrl_lib"]
                if _variant(m) == v and (m["members"], m["width"]) == (5, 200)}
        series.append((f"mbrl-lib ({v})", [by_b.get(r["batch"], float("nan")) for r in ref]))
    width = 0.8 / len(series)
    for i, (label, ys) in enumerate(series):
        ax.bar([x + (i - (len(series) - 1) / 2) * width for x in range(len(ref))], ys, width,
               label=label)
    ax.set_xticks(range(len(ref)), [f"B={r['batch']}" for r in ref])
    style_axes(ax, ylog=10, ylabel="s / epoch", title="E=5, 4x200: mbjax vs mbrl-lib",
               grid=False, legend=6)

    if result["rollout"]:
        ax = axes[2]
        for members in sorted({r["members"] for r in result["rollout"]}):
            pts = sorted((r["width"], r["rollout_s"]) for r in result["rollout"]
                         if r["members"] == members)
            ax.plot(*zip(*pts), marker="o", label=f"E={members}")
        r0 = result["rollout"][0]
        style_axes(ax, xlog=10, ylog=10, xlabel="hidden width (4 layers)",
                   ylabel="s / rollout batch",
                   title=f"TS-inf rollout {r0['candidates']} x P x {r0['horizon']}", legend=7)
    cores = info.get("cpus_usable", info["cpu_count"])
    save_figure(fig, path, f"mbjax model training on {info['device_kind']} ({cores} cores, "
                           f"load {info['load_avg_start'][0]})")


if __name__ == "__main__":
    main()
