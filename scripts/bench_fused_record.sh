#!/usr/bin/env bash
# The fused engine's run of record on one GPU, every part in one call, most important first; rows append to
# $OUT/rows.jsonl as they come, logs to $OUT/log.txt (tables: python scripts/bench_fused_report.py $OUT/rows.jsonl).
#   OUT=/tmp/out PYTHONPATH=src bash scripts/bench_fused_record.sh
set -u
export PYTHONPATH=${PYTHONPATH:-src} PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
LOG=$OUT/log.txt
run() { local box=$1; shift; echo "== $* (box ${box}s) $(date +%T)" >> "$LOG"
        env "$@" timeout "$box" python scripts/bench_fused.py >> "$LOG" 2>&1; echo "rc $?" >> "$LOG"; }
# 1. the depthwise-in-project kernel on the GPU: forbidden in the record if it fails its check
run 100 PARTS=check CHECK=dwp
if ! grep -q '"part": "check_dwp"' "$OUT/rows.jsonl" || grep '"part": "check_dwp"' "$OUT/rows.jsonl" | grep -q '"ok": false'
then export DW_PROJECT=0; fi
echo "DW_PROJECT=${DW_PROJECT:-auto}" >> "$LOG"
# 2. the table: torchvision + compile, BN-folded effnet + compile, fused (tuned), one at a time on the idle GPU
run "${BOX_BASELINES:-400}" PARTS=baselines COMPILE_LIMIT_S="${COMPILE_LIMIT_S:-200}"
# 3. the unfused per-layer profile of B0 next to the fused per-block and per-kernel times
echo "== effnet profile $(date +%T)" >> "$LOG"
timeout 90 python -m effnet profile efficientnet_b0 --batch-size 256 --dtype bfloat16 --channels-last --measure \
  --device cuda --by-block --format json > "$OUT/profile_b0_b256.json" 2>> "$LOG"; echo "rc $?" >> "$LOG"
run 60 PARTS=blocks,profile
# 4. the depthwise-in-project path allowed vs forbidden, same process (tuning cached by step 2)
[ "${DW_PROJECT:-}" = 0 ] || run 120 PARTS=fused ONLY=mobilenet_v2_100,efficientnet_b0 B0_BATCHES=256 DWP_COMPARE=1
# 5. correctness of every block type and path, and whole models, bf16 vs float32
run 150 PARTS=check CHECK=blocks,models,trained
