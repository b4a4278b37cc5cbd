#!/usr/bin/env bash
# GPU benchmark batch for a lent accelerator machine (see README "Benchmarks"); ~10 min.
#
#   bash benchmarks/run_gpu.sh             # on the GPU machine: results in $OUT
#   bash benchmarks/run_gpu.sh --dry-run   # any machine (CPU): every program of the batch
#                                          # compiled and run once at tiny sizes (~8 min on
#                                          # 2 CPU cores), results in a temporary folder
#
# The machine has its own jax (CUDA); mujoco/mjx/brax/tyro travel as wheels in .whl/.
# Results land in $OUT (or benchmarks/results when OUT is unset), named *_gpu.json; the
# device kind and TF32 setting are recorded inside each file (machine_info).
# Each step has its own timeout, and a failed step does not stop the batch; the exit
# status is the number of failed steps.
set -uo pipefail
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; elif [ -n "${1:-}" ]; then
  echo "usage: bash benchmarks/run_gpu.sh [--dry-run]" >&2; exit 2
fi
# pick FULL DRY: the argument for the real batch, or for the dry run
pick() { if [ "$DRY" = 1 ]; then echo "$2"; else echo "$1"; fi; }
if [ "$DRY" = 1 ]; then
  OUT=$(mktemp -d /tmp/mbjax-gpu-dry-run.XXXXXX)
else
  OUT=${OUT:-benchmarks/results}
fi
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}
FAILED=0
step() {  # step NAME TIMEOUT_S COMMAND...: runs, keeps the last lines, counts failures
  local name=$1 limit=$2; shift 2
  echo "=== $name (timeout ${limit} s)"
  timeout "$limit" "$@" 2>&1 | grep -v -i warp | tail -25
  local rc=${PIPESTATUS[0]}
  if [ "$rc" != 0 ]; then echo "=== $name FAILED (exit $rc)"; FAILED=$((FAILED + 1)); fi
}
if [ "$DRY" = 0 ]; then
  nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
fi
python3 -c "import jax; print(jax.__version__, jax.devices())" | tee -a "$OUT/gpu.txt"

# Planner throughput: the three model settings and every planner kind (gradient, iLQR,
# iCEM...), each against the matmul ceiling measured at the same precision.
step planners "$(pick 80 300)" python3 benchmarks/planner_throughput.py --no-mbrl \
  $(pick "--repeats 3" "--repeats 1 --settings small --num-envs 1") \
  --out "$OUT/planner_throughput_gpu.json"
step planner-kinds "$(pick 40 300)" python3 benchmarks/planner_throughput.py --kinds \
  --repeats "$(pick 3 1)" --out "$OUT/planner_kinds_gpu.json"
step envs "$(pick 50 300)" python3 benchmarks/env_throughput.py \
  --envs pendulum cartpole_swingup halfcheetah \
  --batch-sizes $(pick "1 256 4096 16384" "1 4") --max-mjx-batch "$(pick 4096 4)" \
  --mjx-steps "$(pick 20 2)" --steps "$(pick 500 10)" --overhead-batch "$(pick 1024 4)" \
  --repeats "$(pick 3 1)" --out "$OUT/env_throughput_gpu.json"
# Model training epochs (ensemble sizes of PETS / PDDM), no mbrl-lib on the GPU machine.
step model-training "$(pick 50 300)" python3 benchmarks/model_training.py --quick --no-mbrl \
  --transitions "$(pick 10000 500)" --out "$OUT/model_training_gpu.json"
# The hand at GPU scale (issue #17): MJX physics steps/s at 1024 / 4096 hands and true-
# dynamics planning at PDDM's N 700 and N 4096; then an iteration of the paper-sized
# PDDM Baoding preset (3 x 2x500, MPPI N 700, 30 hands) and a true-dynamics iteration.
step hand-scaling "$(pick 140 400)" python3 benchmarks/hand_scaling.py \
  --batch-sizes $(pick "256 1024 4096" "2") --plan-sizes $(pick "700 4096" "4") \
  --native-plan-sizes --compare-tasks \
  --compare-batch "$(pick 256 2)" --env-work "$(pick 2048 4)" --horizon "$(pick 7 2)" \
  --repeats "$(pick 3 1)" --out "$OUT/hand_scaling_gpu.json"
step pddm-hand-baoding "$(pick 110 400)" python3 -m mbjax.cli train pddm-hand-baoding \
  --num-iterations "$(pick 2 1)" --num-seeds 1 \
  $(pick "" "--num-envs 1 --planner.population 8 --env.episode-length 4 --model-train.max-epochs 1 --prefill-episodes 1") \
  --out-dir "$OUT/runs" --run-name pddm-hand-baoding-gpu
step true-dynamics-hand "$(pick 50 300)" python3 -m mbjax.cli train true-dynamics-hand-baoding \
  --num-iterations 1 $(pick "" "--num-envs 1 --planner.population 4 --env.episode-length 3") \
  --out-dir "$OUT/runs" --run-name true-dynamics-hand-baoding-gpu
# MBPO: one HalfCheetah epoch at the published settings (1000 env steps, 100k model
# rollouts per model fit); rollouts vs k, state bytes and checkpoint wait.
step mbpo-epoch "$(pick 80 400)" python3 -m mbjax.cli train mbpo-halfcheetah \
  --num-iterations 1 \
  $(pick "" "--steps-per-iteration 20 --model-train-every 10 --rollouts-per-step 2 --init-steps 20 --updates-per-step 1 --model-train.max-epochs 1 --eval-envs 1 --env.episode-length 20 --buffer-capacity 1000 --sac.batch-size 8") \
  --out-dir "$OUT/runs" --run-name mbpo-halfcheetah-gpu
step mbpo-costs "$(pick 40 300)" python3 benchmarks/mbpo_costs.py \
  --preset "$(pick mbpo mbpo-cpu)" --starts "$(pick 100000 64)" --repeats "$(pick 3 1)" \
  $(pick "" "--memory-presets mbpo-cpu") --out "$OUT/mbpo_costs_gpu.json"
echo "=== done: $FAILED failed step(s); results in $OUT"
exit "$FAILED"
