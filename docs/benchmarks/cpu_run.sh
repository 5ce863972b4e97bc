#!/usr/bin/env bash
# The CPU run behind docs/benchmarks/efficiency.md (a few minutes on 2 cores).
# Usage (repository root, effnet installed): bash docs/benchmarks/cpu_run.sh [OUT_DIR]
# THREADS=1 pins torch to one thread (use it when other work shares the cores).
set -u
OUT=${1:-docs/benchmarks/cpu}
mkdir -p "$OUT"
export EFFNET_CACHE_DIR=$OUT/cache  # ceilings measured afresh for this run, kept with the results
rm -f "$OUT/cache/ceilings.json"
threads=${THREADS:+--threads $THREADS}
export OMP_NUM_THREADS=${THREADS:-$(nproc)}
{ grep -m1 "model name" /proc/cpuinfo; echo "cores: $(nproc --all)"; uptime; python -c "import torch, torchvision; \
print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'threads', torch.get_num_threads())"; } \
  > "$OUT/versions.txt"
cat "$OUT/versions.txt"
effnet bench --device cpu $threads --out "$OUT"
for model in efficientnet_b0 mobilenet_v2_100 torchvision:resnet50; do
  tag=${model#torchvision:}
  effnet profile "$model" --measure --device cpu --roofline "$OUT/roofline-$tag-fp32-b1.png" --format markdown \
    > "$OUT/profile-$tag-fp32-b1.md"
  head -14 "$OUT/profile-$tag-fp32-b1.md"
done
uptime >> "$OUT/versions.txt"
