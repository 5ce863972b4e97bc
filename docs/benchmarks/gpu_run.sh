#!/usr/bin/env bash
# The GPU runs behind docs/benchmarks/efficiency.md, as one command on a machine with one CUDA GPU.
# Usage (repository root): OUT=/some/dir bash docs/benchmarks/gpu_run.sh; tar czf gpu.tgz -C $OUT work
# Writes JSON, markdown, PNGs and versions under $OUT/work.  Each step has a time limit so that a
# slow step leaves the others' results; bench writes its JSON after every case.
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1
W=$OUT/work
mkdir -p "$W"
export EFFNET_CACHE_DIR=$W/cache  # the measured ceilings land next to the results
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  python3 -c "import torch, torchvision, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'cudnn', torch.backends.cudnn.version(), 'torchvision', torchvision.__version__, 'triton', triton.__version__)"
  grep -m1 "model name" /proc/cpuinfo
} > "$W/versions.txt" 2>&1
cat "$W/versions.txt"

# 1. ceilings, and per-layer times (torch.profiler kernel records, labelled by module) of EfficientNet-B0,
#    MobileNetV2 and ResNet-50: batch 256 bf16 channels_last (GPU-bound) and batch 1 fp32 eager
#    (launch-bound); the JSON holds every layer and the whole-forward timing.  Then the forward-hook
#    method at batch 1, for comparison.  layer_sums.py prints the per-layer sum against the whole forward.
for model in efficientnet_b0 mobilenet_v2_100 torchvision:resnet50; do
  tag=${model#torchvision:}
  timeout 120 python3 -m effnet profile "$model" --measure --device cuda --dtype bfloat16 --batch-size 256 \
    --channels-last --roofline "$W/roofline-$tag-bf16-b256.png" --format json > "$W/layers-$tag-bf16-b256.json" 2>>"$W/stderr.txt"
  timeout 150 python3 -m effnet profile "$model" --measure --device cuda --format json > "$W/layers-$tag-fp32-b1.json" 2>>"$W/stderr.txt"
done
# EfficientNet-B0 at batch 1, twice more: the launch-bound case moves with the host, so it is repeated.
for run in 2 3; do
  timeout 150 python3 -m effnet profile efficientnet_b0 --measure --device cuda --format json \
    > "$W/layers-efficientnet_b0-fp32-b1-run$run.json" 2>>"$W/stderr.txt"
done
timeout 90 python3 -m effnet profile efficientnet_b0 --measure --device cuda --per-layer hooks --format json \
  > "$W/layers-efficientnet_b0-fp32-b1-hooks.json" 2>>"$W/stderr.txt"
python3 docs/benchmarks/layer_sums.py "$W"/layers-*.json | tee "$W/layer-sums.md"
grep -v "USDT\|Warning" "$W/stderr.txt" | tail -20

[ -n "${PROFILE_ONLY:-}" ] && exit 0  # PROFILE_ONLY=1: the per-layer times alone (about 3 minutes)

# 2. eager and channels_last, fp32 and bf16, batch 1 and 256
timeout 200 python3 -m effnet bench --device cuda --modes eager,channels_last --dtypes float32,bfloat16 \
  --batch-sizes 1,256 --runs 15 --warmup 3 --out "$W/eager" 2>&1 | grep -v Warning

# 3. torch.compile (of the channels_last model), bf16: the headline setting at batch 256, then batch 1
export TORCHINDUCTOR_COMPILE_THREADS=16
timeout 150 python3 -m effnet bench --device cuda --modes compile --dtypes bfloat16 --batch-sizes 256 \
  --runs 15 --warmup 3 --no-ceilings --out "$W/compile256" 2>&1 | grep -v Warning
timeout 90 python3 -m effnet bench --device cuda --modes compile --dtypes bfloat16 --batch-sizes 1 \
  --runs 15 --warmup 3 --no-ceilings --out "$W/compile1" 2>&1 | grep -v Warning
