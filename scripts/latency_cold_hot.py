"""Each part of one random network of the block search's check, timed for a CPU train step with the cache
emptied between forward and backward (as the latency table does) and without, next to the whole network.

    OMP_NUM_THREADS=1 python scripts/latency_cold_hot.py [NETWORK_INDEX (0-9, default 7)]
"""

from __future__ import annotations

import random
import sys
from dataclasses import replace

from effnet.plan import expand
from effnet.search import latency
from effnet.search.blocks import BlockSettings, apply, describe, random_genome
from effnet.zoo import model_config


def main(index: int = 7, tries: int = 3, batch: int = 32) -> None:
    s = BlockSettings(output="unused")
    base = model_config(s.base, width=s.width, depth=s.depth, resolution=s.resolution)
    rng = random.Random(s.seed + 1)  # the check's networks (effnet.search.blocks.check_table)
    genome = [random_genome(len(base.spec.stages), rng) for _ in range(index + 1)][index]
    config = latency._timed(replace(base, spec=apply(base.spec, genome)))
    plan = expand(config)
    cold = latency.torch_timer("cpu", "train-step", clock="thread")
    hot = latency.torch_timer("cpu", "train-step", clock="thread", evict_mib=0)
    print(describe(genome))
    names = ["stem"] + [f"{b.block.value} e{b.expand_ratio} k{b.kernel} s{b.stride} {b.in_channels}->{b.out_channels}"
                        for b in plan.blocks] + ["head"]
    sums = [0.0, 0.0]
    for name, (_, build) in zip(names, latency.plan_entries(plan, config.resolution)):
        module, x = latency._part(build, batch)
        tc, th = (min(t(module, x) for _ in range(tries)) * 1e3 for t in (cold, hot))
        sums = [sums[0] + tc, sums[1] + th]
        print(f"{name:36s} cold {tc:7.3f} ms  hot {th:7.3f} ms  penalty {tc - th:6.3f} ms")
    net, x = latency._network(config, batch)
    print(f"parts: cold {sums[0]:.2f} ms, hot {sums[1]:.2f} ms; whole {min(cold(net, x) for _ in range(tries)) * 1e3:.2f} ms")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
