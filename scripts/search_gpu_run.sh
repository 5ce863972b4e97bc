#!/usr/bin/env bash
# The GPU runs of docs/search.md in one call: every part time-boxed, results packed into $OUT after each.
#
#   OUT=/tmp/out bash scripts/search_gpu_run.sh                  # on a machine with 2 GPUs
#   OUT=/tmp/out DEVICE=cpu EPOCHS=1 LIMIT=1 BUDGET=4 CHECK=2 BATCH=2 SCALE=4 PY=python bash scripts/search_gpu_run.sh  # rehearsal
#
# 1. candidates per hour, 1 GPU vs 2: the same small compound grid (photos proxy, EPOCHS epochs) run
#    with CUDA_VISIBLE_DEVICES=0, then 0,1 (the LocalExecutor's one worker per GPU);
# 2. the latency table's check on the GPU, train-step and inference (CHECK random networks, batch BATCH);
# 3. a short block search with the GPU's train-step latency, then the searched network vs the
#    compound-scaled base and EfficientNet-B0 at the proxy resolution (scripts/compare_searched.py).
# In two calls: PARTS=1, then PARTS="2 3" with WORK set to a carried folder holding the first call's
# results.tgz unpacked (part 3 compares against part 1's compound run).
# What comes back (7 files): log.txt, env.txt, cph.json, check-{train-step,inference}.json, compare.md, results.tgz
# (every results folder, checkpoints left out).
set -u
OUT=${OUT:?set OUT to the folder results go to}
DEVICE=${DEVICE:-cuda}          # cuda, or cpu for a rehearsal
EPOCHS=${EPOCHS:-6}             # training budget of every candidate (the proxy is calibrated at 8)
LIMIT=${LIMIT:-2}               # grid points of the compound step 1 (+ base + single-dimension x2)
BUDGET=${BUDGET:-6}             # block search candidates (the base included)
POP=${POP:-4}                   # regularised evolution: population (<= BUDGET)
CHECK=${CHECK:-10}              # networks of each latency check
BATCH=${BATCH:-32}              # batch of the latency table
SCALE=${SCALE:-1}               # multiplies every time box (a rehearsal on a slow CPU needs more)
PARTS=${PARTS:-"1 2 3"}          # which parts run (two calls: PARTS=1, then PARTS="2 3")
STEP=${STEP:-0.1}               # grid step of the compound run of part 1
# Time boxes (seconds, times SCALE). Seen on 2 x H100 (docs/search.md): a candidate of 6 epochs trains
# in 25-33 s alone and 32-41 s beside another; the train-step check needs more than 35 s.
BOX_1GPU=${BOX_1GPU:-100} BOX_2GPU=${BOX_2GPU:-70} BOX_CHECK=${BOX_CHECK:-35} BOX_SEARCH=${BOX_SEARCH:-75}
BOX_COMPARE=${BOX_COMPARE:-55}
WORK=${WORK:-runs/gpu}
PY=${PY:-python3}
export PYTHONPATH=src PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$WORK"
box() { "$PY" -c "import sys; print(max(1, round(float(sys.argv[1]) * float(sys.argv[2]))))" "$1" "$SCALE"; }
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/log.txt"; }
pack() {  # written aside first: a part killed mid-tar leaves the last whole archive (and no 9th file) in $OUT
    tar czf /tmp/results.tgz.part --exclude='*.safetensors' --exclude='*.pt' -C "$WORK" . 2>/dev/null \
        && cp /tmp/results.tgz.part "$OUT/results.tgz"
}
run() {  # seconds, command...: time-boxed, output to the log
    local limit; limit=$(box "$1"); shift
    log "+ (limit ${limit} s) $*"
    timeout "$limit" "$@" 2>&1 | tee -a "$OUT/log.txt"
    local rc=${PIPESTATUS[0]}
    log "exit $rc"
    return "$rc"
}

{ date; uname -a; nvidia-smi -L 2>/dev/null; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null
  "$PY" -c "import torch, torchvision, sys; print('python', sys.version.split()[0], 'torch', torch.__version__,
'torchvision', torchvision.__version__, 'cuda', torch.version.cuda, 'gpus', torch.cuda.device_count(),
[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])"; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt" | tee -a "$OUT/log.txt"

# 1. candidates per hour, 1 GPU vs 2 GPUs: the same grid, the same recipe, separate folders.
GRID=(search compound --data photos --epochs "$EPOCHS" --step "$STEP" --gamma 1.05 1.45 --limit "$LIMIT" --phi-max 1
      --multiples 2)
rate() {  # name, visible devices, time box
    local start end
    start=$(date +%s.%N)
    CUDA_VISIBLE_DEVICES=$2 run "$3" "$PY" -m effnet "${GRID[@]}" --output "$WORK/compound-$1" --device "$DEVICE"
    end=$(date +%s.%N)
    "$PY" - "$WORK/compound-$1" "$1" "$start" "$end" "$2" >> "$WORK/cph.jsonl" <<'EOF'
import json, sys
from pathlib import Path
folder, name, start, end, visible = sys.argv[1:]
done = list(Path(folder, "candidates").glob("*.json"))
wall = float(end) - float(start)
train = sum(json.loads(f.read_text())["train_s"] for f in done)
print(json.dumps({"run": name, "visible_devices": visible, "candidates": len(done), "wall_s": round(wall, 1),
                  "candidates_per_hour": round(3600 * len(done) / wall, 1), "train_s_sum": round(train, 1),
                  "finished": Path(folder, "summary.json").exists()}))
EOF
    tail -1 "$WORK/cph.jsonl" | tee -a "$OUT/log.txt"
    cp "$WORK/cph.jsonl" "$OUT/cph.json"
    pack
}
part() { [[ " $PARTS " == *" $1 "* ]]; }
if part 1; then
    if [ "$DEVICE" = cuda ]; then rate 1gpu 0 "$BOX_1GPU"; rate 2gpu 0,1 "$BOX_2GPU"; else rate 1cpu "" "$BOX_1GPU"; fi
fi

# 2. the latency table's check on the device: train-step (the search's T), then inference.
CHECK_DEVICE=$DEVICE; [ "$DEVICE" = cuda ] && CHECK_DEVICE=cuda:0
for mode in train-step inference; do
    part 2 || break
    run "$BOX_CHECK" "$PY" -m effnet search blocks --output "$WORK/check-$mode" --check-only --device "$CHECK_DEVICE" \
        --latency "$mode" --latency-table-batch "$BATCH" --check "$CHECK" --cache "$WORK/latency-cache"
    cp "$WORK/check-$mode/latency_check.json" "$OUT/check-$mode.json" 2>/dev/null
    pack
done

# 3. a short block search with the device's train-step latency (the table of part 2 is reused), then the
#    searched network vs the compound run's closest-accuracy network, the base, and EfficientNet-B0.
part 3 || { log "done"; exit 0; }
run "$BOX_SEARCH" "$PY" -m effnet search blocks --output "$WORK/blocks" --data photos --epochs "$EPOCHS" --device "$DEVICE" \
    --latency train-step --latency-table-batch "$BATCH" --budget "$BUDGET" --population "$POP" --sample 2 --check 0 \
    --cache "$WORK/latency-cache"
pack
COMPOUND=$WORK/compound-2gpu
[ -f "$COMPOUND/summary.json" ] || COMPOUND=$WORK/compound-1gpu
[ -f "$COMPOUND/summary.json" ] || COMPOUND=$WORK/compound-1cpu
run "$BOX_COMPARE" "$PY" scripts/compare_searched.py "$WORK/blocks" "$COMPOUND" --device "$CHECK_DEVICE" --b0 \
    --batches 1 "$BATCH" --modes inference train-step --runs 30 --rounds 3 --json "$WORK/compare.json" \
    --markdown "$WORK/compare.md"
cp "$WORK/compare.md" "$OUT/" 2>/dev/null
pack
log "done"
