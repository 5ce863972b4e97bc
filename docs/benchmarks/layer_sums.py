"""Print the per-layer sum against the whole forward, one row per ``effnet profile --measure --format json`` file.

    python3 docs/benchmarks/layer_sums.py docs/benchmarks/gpu-h100/layers-*.json
"""

import json
import sys

print("| file | model | dtype | batch | per-layer method | whole forward ms (median) | per-layer sum ms | sum / whole "
      "| minima sum / fastest | kernels busy / whole |")
print("|---|---|---|---:|---|---:|---:|---:|---:|---:|")
for path in sys.argv[1:]:
    with open(path) as f:
        m = json.load(f)["measurement"]
    whole, s, mins, busy = m["whole"]["median_s"], m["per_layer_sum_s"], m["per_layer_min_sum_s"], m["busy_sum_s"]
    print(f"| {path.rsplit('/', 1)[-1]} | {m['model']} | {m['dtype']} | {m['batch_size']} | {m['per_layer']} "
          f"| {whole * 1e3:.3f} | {s * 1e3:.3f} | {s / whole:.1%} | {mins / m['whole']['min_s']:.1%} "
          f"| {'-' if busy is None else f'{busy / whole:.1%}'} |")
