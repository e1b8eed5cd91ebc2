#!/usr/bin/env bash
# The device check (#33): run on a GPU machine with torch and transformers (no downloads), from the repository
# root, with only the working tree sent. Writes results/device_check/<timestamp>/; about 10 minutes.
#   bash scripts/device_check.sh [OUT_DIR]
#   bash scripts/device_check.sh --cpu-only OUT_DIR     # the parts that need no GPU (CI runs this on CPU)
set -uo pipefail
cd "$(dirname "$0")/.."
CPU_ONLY=0
if [ "${1:-}" = "--cpu-only" ]; then CPU_ONLY=1; shift; fi
if [ $# -gt 1 ]; then echo "usage: $0 [--cpu-only] [OUT_DIR]" >&2; exit 2; fi
OUT="${1:-results/device_check/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT" || { echo "cannot create $OUT" >&2; exit 2; }
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
PY="${PYTHON:-python}"
status=0
run() {  # name, command...: run one part, log it, remember a failure, go on
  local name=$1; shift
  echo "== $name: $*"
  if ! timeout 300 "$@" > "$OUT/$name.log" 2>&1; then echo "!! $name failed (see $OUT/$name.log)"; status=1; fi
  tail -n 3 "$OUT/$name.log"
}
run tree "$PY" -m selfdistill.eval.device_check tree --out "$OUT"
if [ "$CPU_ONLY" = 1 ]; then exit $status; fi
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)" || { echo "no CUDA device" >&2; exit 3; }
run lossless "$PY" -m selfdistill.eval.device_check lossless --device cuda --out "$OUT"
run gated_pass "$PY" -m selfdistill.eval.device_check gated_pass --device cuda --out "$OUT"
run bench_train "$PY" scripts/bench_train.py --device cuda --dtype bfloat16 --hidden_size 576 --num_layers 30 \
    --steps 5 --out "$OUT/bench_train"
run train_full "$PY" scripts/online_distill.py --config configs/tiny.yaml --use_cpu false --max_steps 20 \
    --output_dir "$OUT/run_full" --save_steps 20
run train_gated "$PY" scripts/online_distill.py --config configs/tiny.yaml --use_cpu false --max_steps 20 \
    --adapter gated_lora --k_min 2 --ntp_weight 0 --output_dir "$OUT/run_gated" --save_steps 20
run train_fsdp2 accelerate launch --num_processes 1 --use_fsdp --fsdp_version 2 scripts/online_distill.py \
    --config configs/tiny.yaml --use_cpu false --max_steps 20 --output_dir "$OUT/run_fsdp2" --save_steps 20
echo "results in $OUT (status $status)"
exit $status
