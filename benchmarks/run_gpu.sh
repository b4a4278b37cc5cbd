#!/usr/bin/env bash
# GPU benchmark batch for a lent accelerator machine (see README "Benchmarks").
# The machine has its own jax (CUDA); mujoco/mjx/brax/tyro travel as wheels in .whl/.
# Results land in $OUT (or benchmarks/results when OUT is unset).
set -uo pipefail
OUT=${OUT:-benchmarks/results}
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import jax; print(jax.__version__, jax.devices())" | tee -a "$OUT/gpu.txt"
timeout 95 python3 benchmarks/planner_throughput.py --no-mbrl --repeats 3 \
  --out "$OUT/planner_throughput_gpu.json" 2>&1 | grep -v -i warp | tail -25
timeout 85 python3 benchmarks/env_throughput.py \
  --envs pendulum cartpole_swingup halfcheetah \
  --batch-sizes 1 256 4096 16384 --max-mjx-batch 4096 --mjx-steps 20 --steps 500 \
  --overhead-batch 1024 --repeats 3 --out "$OUT/env_throughput_gpu.json" 2>&1 \
  | grep -v -i warp | tail -25
# The hand at GPU scale (issue #17): MJX physics steps/s at 1024 / 4096 hands and true-
# dynamics planning at PDDM's N 700 and N 4096; then two iterations of the paper-sized
# PDDM Baoding preset (3 x 2x500, MPPI N 700, 30 hands) and one true-dynamics iteration.
timeout 180 python3 benchmarks/hand_scaling.py --batch-sizes 256 1024 4096 \
  --plan-sizes 700 4096 --native-plan-sizes --compare-tasks --repeats 3 \
  --out "$OUT/hand_scaling_gpu.json" 2>&1 | grep -v -i warp | tail -25
timeout 150 python3 -m mbjax.cli train pddm-hand-baoding --num-iterations 2 --num-seeds 1 \
  --out-dir "$OUT/runs" --run-name pddm-hand-baoding-gpu 2>&1 | tail -15
timeout 90 python3 -m mbjax.cli train true-dynamics-hand-baoding --num-iterations 1 \
  --out-dir "$OUT/runs" --run-name true-dynamics-hand-baoding-gpu 2>&1 | tail -15
