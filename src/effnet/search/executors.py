"""The candidate runner: one small interface, two engines.

An :class:`Executor` takes a top-level function and a list of JSON-ready jobs and yields each
result as it finishes.  :class:`LocalExecutor` runs them in this process (one device) or in a
process pool with one worker per device, so several GPUs each train one candidate at a time.
:class:`RayExecutor` submits them as Ray tasks (one GPU each when the cluster has GPUs) to whatever
cluster ``ray.init(address=...)`` reaches.  The search code sees only ``executor.run(fn, jobs)``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Protocol

Job = dict
Result = dict
_DEVICE: str | None = None  # the device a pool worker owns, set once by its initializer


class Executor(Protocol):
    """Runs ``fn(job, device)`` for each job; yields results in completion order."""

    parallelism: int  # candidates it runs at once (a sequential search hands it this many per round)

    def run(self, fn: Callable[[Job, str], Result], jobs: Sequence[Job]) -> Iterator[Result]: ...


def _take_device(queue) -> None:
    global _DEVICE
    _DEVICE = queue.get()
    if _DEVICE.startswith("cuda:"):  # the worker sees one GPU only, so nothing it runs spills onto another
        os.environ["CUDA_VISIBLE_DEVICES"] = _DEVICE.split(":", 1)[1]
        _DEVICE = "cuda"


def _call(fn: Callable[[Job, str], Result], job: Job) -> Result:
    assert _DEVICE is not None, "pool worker without a device"
    return fn(job, _DEVICE)


class LocalExecutor:
    """This machine: one worker process per device (``["cuda:0", "cuda:1"]``), or in-process for one."""

    def __init__(self, devices: Sequence[str]) -> None:
        if not devices:
            raise ValueError("LocalExecutor needs at least one device")
        self.devices = list(devices)
        self.parallelism = len(self.devices)

    def run(self, fn: Callable[[Job, str], Result], jobs: Sequence[Job]) -> Iterator[Result]:
        if len(self.devices) == 1:  # no pool: no start-up cost, and exceptions keep their traceback
            for job in jobs:
                yield fn(job, self.devices[0])
            return
        ctx = mp.get_context("spawn")  # CUDA cannot be used in a forked child
        queue = ctx.Queue()
        for d in self.devices:
            queue.put(d)
        with ProcessPoolExecutor(len(self.devices), mp_context=ctx, initializer=_take_device,
                                 initargs=(queue,)) as pool:
            pending = {pool.submit(_call, fn, job) for job in jobs}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    yield f.result()


def _ray_call(fn: Callable[[Job, str], Result], job: Job) -> Result:
    import ray

    return fn(job, "cuda" if ray.get_gpu_ids() else "cpu")  # Ray sets CUDA_VISIBLE_DEVICES to the task's GPU


class RayExecutor:
    """Ray tasks on the cluster ``ray.init(address)`` reaches (None: a local one), ``gpus`` GPUs per task."""

    def __init__(self, address: str | None = None, gpus: float = 1.0, cpus: float = 1.0) -> None:
        try:
            import ray
        except ImportError:
            raise ValueError("--executor ray needs Ray: pip install 'effnet[search]'") from None
        self.ray = ray
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        resources = ray.cluster_resources()
        has_gpus = resources.get("GPU", 0) > 0
        self.parallelism = max(1, int(resources.get("GPU", 0) // gpus if has_gpus else resources.get("CPU", 1) // cpus))
        self.task = ray.remote(num_gpus=gpus if has_gpus else 0, num_cpus=cpus)(_ray_call)

    def run(self, fn: Callable[[Job, str], Result], jobs: Sequence[Job]) -> Iterator[Result]:
        pending = [self.task.remote(fn, job) for job in jobs]
        while pending:
            done, pending = self.ray.wait(pending, num_returns=1)
            yield self.ray.get(done[0])


def make_executor(name: str, devices: Sequence[str], address: str | None = None) -> Executor:
    """``"local"`` (default) or ``"ray"``."""
    if name == "local":
        return LocalExecutor(devices)
    if name == "ray":
        return RayExecutor(address)
    raise ValueError(f"unknown executor {name!r}; allowed: local, ray")
