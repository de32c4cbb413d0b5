#!/usr/bin/env bash
# The GPU check of the training path (issue 15, item 9), one prepared run on a CUDA machine:
#   1. tests/test_device.py with MARL_TEST_DEVICE=cuda (the same tests CI runs on the CPU);
#   2. the obstacle recipe (configs/swarm8_obstacles_dagger.yaml, seed 0) on the GPU, alone on it, beside the
#      same recipe on 2 of the machine's CPU cores started at the same moment (time to the same policy, a ratio);
#   3. then, sharing the GPU: the recipe with 8x the DAgger swarms and 8x the minibatch (what a GPU affords),
#      and the recipe followed by PPO at 512 swarms with a decaying BC term everywhere (RL at GPU scale);
#   4. the simulator's throughput on the GPU against 2 CPU cores;
#   5. the held-out evaluation (seed 1000, densities 0.2-0.8, 32 episodes) of every policy that finished.
# Every job has a deadline, so the results come back inside the machine's limit.
#
#     bash scripts/gpu_check.sh OUT_DIR [SECONDS]      # default 540 s; results in OUT_DIR/gpu_check.tgz
set -u
OUT=${1:?usage: gpu_check.sh OUT_DIR [SECONDS]}
BUDGET=${2:-540}
PY=${PYTHON:-python3}
DEV=${DEV:-cuda}  # DEV=cpu rehearses the script on a machine without a GPU
export PYTHONUNBUFFERED=1
R="$OUT/gpu_check"
mkdir -p "$R/runs"
T0=$(date +%s)
left() { local s=$((BUDGET - ($(date +%s) - T0) - ${1:-0})); echo $((s > 1 ? s : 1)); }
stamp() { echo "$(($(date +%s) - T0)) s: $*" | tee -a "$R/timeline.txt"; }
# Pin each job to its own cores where there are 16 (the GPU machine); run unpinned elsewhere.
on() { local cores=$1; shift; if [ "$(nproc)" -ge 16 ]; then taskset -c "$cores" "$@"; else "$@"; fi; }
RECIPE=swarm8_obstacles_dagger
COMMON=(--no-progress seed=0 train.threads=2 logging.tensorboard=false)
read -r -a EXTRA <<< "${EXTRA:-}"  # key=value overrides for every run (a rehearsal's tiny sizes)

{ nvidia-smi -L; nproc; date -u; $PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } \
    > "$R/machine.txt" 2>&1

# The CPU twin first, on cores 0-1, so both recipes start together.
stamp "start cpu2 recipe"
(on 0,1 timeout "$(left 75)" $PY -m marl train $RECIPE --run-dir "$R/runs/cpu2_s0" "${COMMON[@]}" "${EXTRA[@]}" \
    > "$R/cpu2_s0.log" 2>&1; stamp "cpu2 recipe exit $?") &

stamp "pytest cuda"
MARL_TEST_DEVICE=$DEV on 2-5 timeout 150 $PY -m pytest -q -p no:cacheprovider tests/test_device.py \
    > "$R/pytest_cuda.log" 2>&1
stamp "pytest cuda exit $?"

stamp "start gpu recipe"
on 2-5 timeout "$(left 150)" $PY -m marl train $RECIPE --run-dir "$R/runs/gpu_s0" "${COMMON[@]}" "${EXTRA[@]}" \
    train.device=$DEV > "$R/gpu_s0.log" 2>&1
stamp "gpu recipe exit $?"

stamp "start gpu variants"
(on 6-9 timeout "$(left 75)" $PY -m marl train $RECIPE --run-dir "$R/runs/gpu_wide_s0" "${COMMON[@]}" "${EXTRA[@]}" \
    train.device=$DEV pretrain.num_envs=256 pretrain.batch=1024 > "$R/gpu_wide_s0.log" 2>&1
 stamp "gpu wide exit $?") &
(on 10-13 timeout "$(left 75)" $PY -m marl train $RECIPE --run-dir "$R/runs/gpu_ppo_s0" "${COMMON[@]}" "${EXTRA[@]}" \
    train.device=$DEV train.num_envs=512 train.total_agent_steps=500000000 train.lr=1e-4 train.checkpoint_every=2 \
    pretrain.critic_warmup_updates=10 pretrain.bc.coef=10 pretrain.bc.decay=0.99 agent.init_log_std=-2.3 \
    train.anneal.collision_steps=0 > "$R/gpu_ppo_s0.log" 2>&1
 stamp "gpu ppo exit $?") &

stamp "sim throughput"
for dev in $DEV cpu; do
  for envs in 1024 16384; do
    on 14,15 timeout 60 $PY -m marl bench sim --envs $envs --drones 8 --threads 2 --device $dev --json \
        > "$R/sim_${dev}_${envs}.json" 2>&1
  done
done
stamp "sim throughput done"
wait
stamp "training done"

# Each policy as a weights-only checkpoint (the trainer's carries envs and replay), then its held-out
# evaluation on the CPU cores, one process per policy.
cores=(0,1 2,3 4,5 6,7 8,9 10,11)
i=0
for run in "$R"/runs/*; do
  name=$(basename "$run")
  ckpt="$run/checkpoints/latest.pt"
  [ -f "$ckpt" ] || continue
  $PY -c "import sys, torch; from marl.zoo import weights_only
torch.save(weights_only(torch.load(sys.argv[1], map_location='cpu', weights_only=True)), sys.argv[2])" \
      "$ckpt" "$run/policy.pt" || continue
  on "${cores[i++]}" timeout "$(left 10)" $PY -m marl bench policies --policies "$run/policy.pt" --densities 0.2,0.4,0.6,0.8 \
      --episodes 32 --seed 1000 --json "$R/bench_${name}.json" > "$R/bench_${name}.log" 2>&1 &
done
wait
stamp "evaluation done"

# Back: logs, metrics, pretrain records, evaluations and the policies' checkpoints (small), in one archive.
(cd "$OUT" && tar czf gpu_check.tgz --exclude=checkpoints gpu_check)
stamp "archived"
