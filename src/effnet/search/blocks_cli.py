"""The ``effnet search blocks`` sub-command (parser and runner)."""

from __future__ import annotations

import argparse
from pathlib import Path

from effnet.search.blocks import METHODS, BlockSettings, check_table, search_blocks
from effnet.search.candidate import device_name
from effnet.search.latency import CLOCKS, LatencyTable, resolve_clock, torch_timer
from effnet.search.options import add_common, devices, executor_from, recipe_from


def add_block_parser(sub) -> None:
    b = sub.add_parser("blocks", help="latency-aware search over per-stage block type, kernel, expansion, repeats",
                       description="Per stage: MBConv or Fused-MBConv, kernel 3 or 5, expansion 1/4/6, repeats "
                                   "-1/0/+1; reward A*(T/T0)^w with T from a per-device latency lookup table.")
    add_common(b)
    s = BlockSettings(output="")
    b.add_argument("--budget", type=int, default=s.budget, help="candidates trained (the base included)")
    b.add_argument("--method", default=s.method, choices=METHODS)
    b.add_argument("--population", type=int, default=s.population, help="regularised evolution: population size")
    b.add_argument("--sample", type=int, default=s.sample, help="regularised evolution: tournament size")
    b.add_argument("-w", "--reward-exponent", type=float, default=s.w, help="w of A*(T/T0)^w")
    b.add_argument("--latency", default=s.latency, choices=("train-step", "inference"),
                   help="what T measures: forward + backward, or inference forward")
    b.add_argument("--latency-table-batch", type=int, default=s.latency_batch, help="batch of the timed blocks")
    b.add_argument("--latency-clock", default="auto", choices=CLOCKS,
                   help="wall clock; the thread's CPU time (CPU with one torch thread: time preempted by "
                        "other processes left out); or graph (CUDA: each part and network replayed as one CUDA "
                        "graph, the device's time without per-op launch cost); auto: thread there, graph on a GPU, else wall")
    b.add_argument("--cache", default="~/.cache/effnet/latency", help="folder of the per-device latency tables")
    b.add_argument("--check", type=int, default=s.check,
                   help="random networks whose predicted latency is checked against the measured one (0: skip)")
    b.add_argument("--check-only", action="store_true",
                   help="only build the latency table and check it on --check random networks (no training)")
    b.set_defaults(_run=_run_blocks)


def _run_blocks(args: argparse.Namespace) -> int:
    devs = devices(args.device, args.gpus)
    settings = BlockSettings(args.output, args.base, args.base_width, args.base_depth, args.base_resolution,
                             recipe_from(args), args.budget, args.method, args.population, args.sample,
                             args.reward_exponent, args.latency, args.latency_table_batch, args.check, args.seed)
    clock = resolve_clock(devs[0], args.latency_clock)
    table = LatencyTable.open(Path(args.cache).expanduser(), device_name(devs[0]), args.latency,
                              args.latency_table_batch, clock)
    timer = torch_timer(devs[0], args.latency, clock=clock)
    if args.check_only:
        check_table(settings, table, timer)
        return 0
    search_blocks(settings, executor_from(args), table, timer)
    return 0
