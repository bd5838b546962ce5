#!/usr/bin/env bash
# One prepared benchmark for a GPU machine (about 5-7 minutes on one H100/H200-class GPU; nothing is
# installed or downloaded: full-size SD 1.5 with random weights built from the shipped configs).
#
#   bench/gpu.sh              # on the GPU machine, from the repository root, with .venv present
#   bench/gpu.sh --dry-run    # the same script on a CPU at toy sizes: checks the wiring in a few minutes
#
# Prints: the two-pass portrait (pass 1: 3 ControlNets x 30 steps, pass 2: tile + canny x 20 steps) in
# s/image at 512x512, ours vs bare diffusers; LoRA training steps/s at 512x512 (rank 128, gradient
# checkpointing); peak GPU memory of each. Each stage has its own time limit so one slow stage cannot
# take the whole budget; the summary says which stages finished.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} OMP_WAIT_POLICY=PASSIVE PORTRAIT_NO_PROGRESS=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

DEVICE=cuda SIZE=512 STEPS1=30 STEPS2=20 CNETS=3 REPEAT=2 TRAIN_STEPS=20 TRAIN_RES=512 LIMIT=240
if [ "${1:-}" = "--dry-run" ]; then
  DEVICE=cpu SIZE=64 STEPS1=2 STEPS2=2 CNETS=1 REPEAT=1 TRAIN_STEPS=1 TRAIN_RES=64 LIMIT=900
fi
OUT=${OUT:-/tmp/portrait-bench-gpu}
mkdir -p "$OUT"
echo "portrait bench/gpu.sh: device=$DEVICE size=$SIZE steps=$STEPS1+$STEPS2 controlnets=$CNETS ($(date -u +%FT%TZ))"
"$PY" - <<'PYEOF'
import torch
print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}"
      + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
PYEOF

status=()
run() {  # name, then the command
  local name=$1; shift
  echo; echo "=== $name"
  local t0=$SECONDS
  timeout "$LIMIT" "$@"
  local rc=$?
  status+=("$name: rc=$rc in $((SECONDS - t0)) s$([ $rc = 124 ] && echo ' (time limit)')")
}

run "two-pass portrait, SD 1.5 ${SIZE}x${SIZE}" \
  "$PY" bench/generate.py --device "$DEVICE" --size "$SIZE" --steps "$STEPS1" --steps2 "$STEPS2" \
  --controlnets "$CNETS" --repeat "$REPEAT" --no-train --out "$OUT/generate"
run "LoRA training, SD 1.5 ${TRAIN_RES}x${TRAIN_RES}" \
  "$PY" bench/train.py --device "$DEVICE" --steps "$TRAIN_STEPS" --resolution "$TRAIN_RES"

echo; echo "=== summary"
printf '%s\n' "${status[@]}"
echo "SDXL size: not measured by this script (bench/generate.py builds SD 1.5 only)."
