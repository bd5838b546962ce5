#!/usr/bin/env bash
# One prepared benchmark for a GPU machine (about 7-9 minutes on one H100/H200-class GPU; nothing is
# installed or downloaded: full-size SD 1.5 with random weights built from the shipped configs).
#
#   bench/gpu.sh              # on the GPU machine, from the repository root, with .venv present
#   bench/gpu.sh --dry-run    # the same script on a CPU at toy sizes: checks the wiring in a few minutes
#
# Prints: the two-pass portrait (pass 1: 3 ControlNets x 30 steps, pass 2: tile + canny x 20 steps) in
# s/image at 512x512, ours vs bare diffusers; LoRA training steps/s at 512x512 (rank 128, gradient
# checkpointing); `portrait create` (4 candidates in one call) at 512x512 SD 1.5 + FaceID + openpose and at
# 1024x1024 SDXL + InstantID, s/image ours vs bare diffusers; the same two-pass portrait at SDXL size
# (1024x1024) last; peak GPU memory of each.
# Each stage has a time cap and all share one budget (BUDGET s), so the script ends in time even if a
# stage is slow; the summary says which stages finished. Exit 1 if any stage failed.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} OMP_WAIT_POLICY=PASSIVE PORTRAIT_NO_PROGRESS=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

DEVICE=cuda SIZE=512 XL_SIZE=1024 STEPS1=30 STEPS2=20 CNETS=3 REPEAT=2 TRAIN_STEPS=20 TRAIN_RES=512 TOY= CAPX=1
BUDGET=540   # seconds for all stages together (< 10 min with start-up); each stage also has its own cap
if [ "${1:-}" = "--dry-run" ]; then
  DEVICE=cpu SIZE=128 XL_SIZE=128 STEPS1=4 STEPS2=4 CNETS=1 REPEAT=1 TRAIN_STEPS=1 TRAIN_RES=64 TOY=--toy BUDGET=2400 CAPX=5
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
failed=0
START=$SECONDS
run() {  # name, cap in seconds, then the command
  local name=$1 cap=$(($2 * CAPX)); shift 2
  local left=$((BUDGET - (SECONDS - START)))
  [ $cap -lt $left ] || cap=$left
  echo; echo "=== $name (limit ${cap} s)"
  if [ $cap -lt 30 ]; then status+=("$name: skipped, time budget spent"); return; fi
  local t0=$SECONDS
  timeout "$cap" "$@"
  local rc=$?
  [ $rc = 0 ] || failed=1
  status+=("$name: rc=$rc in $((SECONDS - t0)) s$([ $rc = 124 ] && echo ' (time limit)')")
}

run "two-pass portrait, SD 1.5 ${SIZE}x${SIZE}" 180 \
  "$PY" bench/generate.py --device "$DEVICE" --size "$SIZE" --steps "$STEPS1" --steps2 "$STEPS2" \
  --controlnets "$CNETS" --repeat "$REPEAT" --no-train --out "$OUT/generate"
run "LoRA training, SD 1.5 ${TRAIN_RES}x${TRAIN_RES}" 150 \
  "$PY" bench/train.py --device "$DEVICE" --steps "$TRAIN_STEPS" --resolution "$TRAIN_RES"
run "create, SD 1.5 ${SIZE}x${SIZE} + FaceID" 90 \
  "$PY" bench/create.py --device "$DEVICE" --arch sd15 --size "$SIZE" --steps "$STEPS1" --repeat 1
run "create, SDXL ${XL_SIZE}x${XL_SIZE} + InstantID" 150 \
  "$PY" bench/create.py --device "$DEVICE" --arch sdxl $TOY --size "$XL_SIZE" --steps "$STEPS1" --repeat 1
run "two-pass portrait, SDXL ${XL_SIZE}x${XL_SIZE}" 240 \
  "$PY" bench/generate.py --device "$DEVICE" --arch sdxl $TOY --size "$XL_SIZE" --steps "$STEPS1" \
  --steps2 "$STEPS2" --controlnets "$CNETS" --repeat 1 --no-train --out "$OUT/generate-sdxl"

echo; echo "=== summary"
printf '%s\n' "${status[@]}"
echo "total $((SECONDS - START)) s"
exit $failed
