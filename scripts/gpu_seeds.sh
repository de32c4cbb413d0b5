#!/usr/bin/env bash
# One lease of the GPU machine (one H200, 16 cores), second prepared run after scripts/gpu_check.sh:
#   1. the obstacle recipe (configs/swarm8_obstacles_dagger.yaml, seed 0) on the GPU beside the same recipe on 2
#      CPU cores, started together, then the held-out evaluation of both (seed 1000, densities 0.2-0.8, 32
#      episodes): the time to the same policy, and whether the GPU's policy is as good (issue 15, item 9);
#   2. tests/test_device.py with MARL_TEST_DEVICE=cuda, on its own 2 cores meanwhile;
#   3. the other 10 cores train seeds of the PPO recipe among 0.8 m columns (swarm_dense_gaps_rl), 2 cores each:
#      seeds 3 and 4 from zoo:swarm_dense_gaps as shipped, and seeds 0-2 from the annealed runs given in
#      ANNEALED (run directories carried along: the recipe's full path, swarm_dense_gaps_decay then PPO).
#      Runs cut by the deadline keep their last checkpoint and are resumed at home (`marl train --resume`).
# Every job has a deadline, so the results come back inside the machine's limit.
#
#     ANNEALED="runs/decay_s0 runs/decay_s1 runs/decay_s2" bash scripts/gpu_seeds.sh OUT_DIR [SECONDS]
# Results: OUT_DIR/recipe.tgz (logs, metrics, evaluations) and OUT_DIR/seeds.tgz (the PPO runs and checkpoints).
set -u
OUT=${1:?usage: gpu_seeds.sh OUT_DIR [SECONDS]}
BUDGET=${2:-540}
PY=${PYTHON:-python3}
DEV=${DEV:-cuda}  # DEV=cpu rehearses the script on a machine without a GPU
read -r -a ANNEALED <<< "${ANNEALED:-}"
read -r -a EXTRA <<< "${EXTRA:-}"  # key=value overrides for every run (a rehearsal's tiny sizes)
export PYTHONUNBUFFERED=1
R="$OUT/recipe"
S="$OUT/seeds"
mkdir -p "$R/runs" "$S"
T0=$(date +%s)
left() { local s=$((BUDGET - ($(date +%s) - T0) - ${1:-0})); echo $((s > 1 ? s : 1)); }
stamp() { echo "$(($(date +%s) - T0)) s: $*" | tee -a "$R/timeline.txt"; }
on() { local cores=$1; shift; if [ "$(nproc)" -ge 16 ]; then taskset -c "$cores" "$@"; else "$@"; fi; }
COMMON=(--no-progress train.threads=2 logging.tensorboard=false)

{ nvidia-smi -L; nproc; date -u; $PY -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"; } \
    > "$R/machine.txt" 2>&1

# Seeds of the PPO recipe first: they need the most time.
ppo() {  # cores name seed [override ...]
  local cores=$1 name=$2 seed=$3; shift 3
  (on "$cores" timeout "$(left 40)" $PY -m marl train swarm_dense_gaps_rl --run-dir "$S/$name" seed="$seed" \
      "${COMMON[@]}" "${EXTRA[@]}" "$@" > "$S/$name.log" 2>&1; stamp "$name exit $?") &
}
ppo 6,7 rl_s3 3
ppo 8,9 rl_s4 4
cores=(10,11 12,13 14,15)
for i in "${!ANNEALED[@]}"; do
  ppo "${cores[i]}" "decay_rl_s$i" "$i" pretrain.init_from="${ANNEALED[i]}"
done

stamp "start recipe: cpu2 and $DEV"
for dev in cpu $DEV; do
  c=$([ "$dev" = cpu ] && echo 0,1 || echo 2,3)
  (on $c timeout "$(left 60)" $PY -m marl train swarm8_obstacles_dagger --run-dir "$R/runs/${dev}_s0" seed=0 \
      "${COMMON[@]}" "${EXTRA[@]}" train.device="$dev" > "$R/${dev}_s0.log" 2>&1
   stamp "recipe $dev exit $?"
   $PY -c "import sys, torch; from marl.zoo import weights_only
torch.save(weights_only(torch.load(sys.argv[1], map_location='cpu', weights_only=True)), sys.argv[2])" \
       "$R/runs/${dev}_s0/checkpoints/latest.pt" "$R/runs/${dev}_s0/policy.pt" &&
   on $c timeout "$(left 20)" $PY -m marl bench policies --policies "$R/runs/${dev}_s0/policy.pt" \
       --densities 0.2,0.4,0.6,0.8 --episodes 32 --seed 1000 --json "$R/bench_${dev}_s0.json" \
       > "$R/bench_${dev}_s0.log" 2>&1
   stamp "bench $dev exit $?") &
done

stamp "pytest $DEV"
MARL_TEST_DEVICE=$DEV on 4,5 timeout 200 $PY -m pytest -q -p no:cacheprovider tests/test_device.py \
    > "$R/pytest_device.log" 2>&1
stamp "pytest $DEV exit $?"
wait
stamp "all done"

(cd "$OUT" && tar czf recipe.tgz --exclude=checkpoints recipe && rm -rf recipe)
(cd "$OUT" && tar czf seeds.tgz --exclude=best.pt seeds && rm -rf seeds)
ls -la "$OUT"
