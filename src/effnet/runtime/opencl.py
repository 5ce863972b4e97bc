"""The OpenCL backend: our kernels (:mod:`effnet.runtime.opencl_kernels`) built and queued by pyopencl.

Buffers stay on the device from the input upload to the output download.  At compile time each
node becomes zero or more *steps* (a kernel with its arguments already set), with these fusions:
BatchNorm and activations are folded by the graph passes; a depthwise conv followed by SE also
writes the squeeze (one work group per plane); SE's gate is applied while the next pointwise conv
reads its input; a residual ``add`` right after a pointwise conv runs in that conv's epilogue.
Buffers are reused once their last reader is queued.  Running is then one enqueue per step and one
blocking read.

Contexts, queues and built programs are cached per device, so a second ``compile`` builds nothing.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import numpy as np

from effnet.runtime.graph import Graph
from effnet.runtime.opencl_kernels import GemmTile, program_source
from effnet.runtime.opencl_plan import Plan, Planner

try:
    import pyopencl as cl
except ImportError:  # the engine says what to install when it is asked for
    cl = None

INSTALL_HINT = 'pip install "effnet[opencl]"'
# Candidate GEMM tiles, largest first; those the device cannot run (work-group size, local memory) are dropped.
TILES = (GemmTile(64, 64, 16, 4, 4), GemmTile(32, 32, 16, 4, 4), GemmTile(16, 16, 16, 2, 2))


class OpenCLUnavailable(OSError):
    """No pyopencl, no OpenCL platform, or no device matching the request."""


def _require_cl():
    if cl is None:
        raise OpenCLUnavailable(f"the OpenCL backend needs pyopencl, which is not installed: {INSTALL_HINT}")
    return cl


def devices() -> list[tuple[str, str, str]]:
    """Every OpenCL device: (platform name, device name, type), in selection-index order."""
    _require_cl()
    return [(d.platform.name.strip(), d.name.strip(), cl.device_type.to_string(d.type)) for d in _all_devices()]


def _all_devices():
    try:
        platforms = cl.get_platforms()
    except cl.Error:  # pyopencl raises when the ICD loader finds no platform at all
        platforms = []
    return [d for p in platforms for d in p.get_devices()]


def select_device(device: int | str | None = None):
    """The device by index, by a substring of its platform or device name, or (None) the first GPU."""
    _require_cl()
    found = _all_devices()
    if not found:
        raise OpenCLUnavailable(f"no OpenCL platform or device found: {INSTALL_HINT} (PoCL runs on the CPU)")
    if device is None:
        gpus = [d for d in found if d.type & cl.device_type.GPU]
        return (gpus or found)[0]
    if isinstance(device, int) and not isinstance(device, bool):
        if not 0 <= device < len(found):
            raise OpenCLUnavailable(f"no OpenCL device {device}: there are {len(found)} (0..{len(found) - 1})")
        return found[device]
    if isinstance(device, str):
        key = device.lower()
        for d in found:
            if key in d.name.lower() or key in d.platform.name.lower():
                return d
        names = ", ".join(d.name.strip() for d in found)
        raise OpenCLUnavailable(f"no OpenCL device matches {device!r}; found: {names}")
    raise TypeError(f"device must be an index, a name substring or None, got {type(device).__name__}")


@dataclass
class _DeviceState:
    context: object
    queue: object
    profiling_queue: object | None = None
    programs: dict = field(default_factory=dict)


_STATE: dict[int, _DeviceState] = {}
_BUILDS = {"count": 0}


def cache_info() -> dict:
    """How many programs have been built in this process, and how many are cached."""
    return {"builds": _BUILDS["count"], "programs": sum(len(s.programs) for s in _STATE.values())}


def _state(dev) -> _DeviceState:
    key = dev.int_ptr
    if key not in _STATE:
        ctx = cl.Context([dev])
        _STATE[key] = _DeviceState(ctx, cl.CommandQueue(ctx))
    return _STATE[key]


def _program(state: _DeviceState, source: str):
    key = hashlib.sha256(source.encode()).hexdigest()
    if key not in state.programs:
        try:
            state.programs[key] = cl.Program(state.context, source).build()
        except cl.RuntimeError as e:
            dev = state.context.devices[0].name.strip()
            if "unknown target CPU" in str(e):  # PoCL's LLVM is older than this CPU and cannot name it
                raise OpenCLUnavailable(f"PoCL cannot compile for this CPU ({dev}): its LLVM does not know the "
                                        "CPU model; use a newer PoCL or another OpenCL platform") from None
            raise OpenCLUnavailable(f"building the runtime's OpenCL kernels failed on {dev}: "
                                    f"{str(e).strip().splitlines()[-1]}") from None
        _BUILDS["count"] += 1
    return state.programs[key]


def device_tiles(dev) -> tuple[GemmTile, ...]:
    """The GEMM tiles this device can run, from CL_DEVICE_MAX_WORK_GROUP_SIZE and CL_DEVICE_LOCAL_MEM_SIZE."""
    fits = tuple(t for t in TILES if t.threads <= dev.max_work_group_size
                 and t.local_bytes + 4 * t.tk <= dev.local_mem_size
                 and all(s <= m for s, m in zip(t.local_size, dev.max_work_item_sizes)))
    if not fits:
        raise OpenCLUnavailable(f"device {dev.name.strip()} is too small for the pointwise kernels "
                                f"(max work-group size {dev.max_work_group_size})")
    return fits


def pow2_at_most(n: int) -> int:
    return 1 << (max(1, n).bit_length() - 1)


class OpenCLEngine:
    """A graph planned for one device; per batch size, buffers and argument-bound kernels are made once."""

    backend = "opencl"

    def __init__(self, graph: Graph, device: int | str | None = None, *, pointwise: str | None = None) -> None:
        """``pointwise``: "gemm" (local-memory tiles, for GPUs) or "rows" (vector rows, for CPUs);
        None picks by device type."""
        _require_cl()
        if pointwise not in (None, "gemm", "rows"):
            raise ValueError(f'pointwise must be "gemm", "rows" or None, got {pointwise!r}')
        self.graph = graph
        self.device = select_device(device)
        self.state = _state(self.device)
        self.tiles = device_tiles(self.device)
        self.program = _program(self.state, program_source(self.tiles))
        self.reduce_size = pow2_at_most(min(256, self.device.max_work_group_size))
        self.line = pow2_at_most(min(128, self.device.max_work_group_size))  # group size of 1-D kernels
        # CPUs (PoCL) take the barrier-free pointwise kernel; GPUs the local-memory GEMM.
        self.cpu = bool(self.device.type & cl.device_type.CPU) if pointwise is None else pointwise == "rows"
        mf = cl.mem_flags
        ctx = self.state.context
        self.weights: dict[tuple[int, str], object] = {}
        for n in graph.nodes:
            params = dict(n.params)
            if n.op == "batchnorm":  # run as a per-channel affine map
                scale = n.params["weight"] / np.sqrt(n.params["running_var"] + n.attrs["eps"])
                params = {"scale": scale, "shift": n.params["bias"] - n.params["running_mean"] * scale}
            for k, v in params.items():
                self.weights[n.index, k] = cl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR,
                                                     hostbuf=np.ascontiguousarray(v, dtype=np.float32))
        self.dummy = cl.Buffer(ctx, mf.READ_ONLY, 4)
        self._plans: dict[int, Plan] = {}

    @property
    def device_name(self) -> str:
        return f"{self.device.name.strip()} ({self.device.platform.name.strip()})"

    # -- running ----------------------------------------------------------------------------------------------
    def run(self, x: np.ndarray, queue=None) -> np.ndarray:
        plan = self._plan(x.shape[0])
        queue = queue or self.state.queue
        cl.enqueue_copy(queue, plan.input, x, is_blocking=False)
        for s in plan.steps:
            cl.enqueue_nd_range_kernel(queue, s.kernel, s.global_size, s.local_size)
        result = np.empty((x.shape[0], *self.graph.output_shape), dtype=np.float32)
        cl.enqueue_copy(queue, result, plan.output, is_blocking=True)
        return result

    def run_resident(self, x: np.ndarray, repeats: int) -> float:
        """Median seconds of the kernels alone (input already on the device, no read back), by host clock."""
        plan, queue = self._plan(x.shape[0]), self.state.queue
        cl.enqueue_copy(queue, plan.input, x, is_blocking=True)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for s in plan.steps:
                cl.enqueue_nd_range_kernel(queue, s.kernel, s.global_size, s.local_size)
            queue.finish()
            times.append(time.perf_counter() - t0)
        return float(np.median(times))

    def profile(self, x: np.ndarray, repeats: int = 5) -> dict[int, float]:
        """Median seconds per node over ``repeats`` runs, from OpenCL profiling events (device time)."""
        if self.state.profiling_queue is None:
            props = cl.command_queue_properties.PROFILING_ENABLE
            self.state.profiling_queue = cl.CommandQueue(self.state.context, properties=props)
        queue = self.state.profiling_queue
        plan = self._plan(x.shape[0])
        cl.enqueue_copy(queue, plan.input, x, is_blocking=True)
        runs = []
        for _ in range(repeats + 1):
            events = [(s.node, cl.enqueue_nd_range_kernel(queue, s.kernel, s.global_size, s.local_size))
                      for s in plan.steps]
            queue.finish()
            per: dict[int, float] = {}
            for node, e in events:
                per[node] = per.get(node, 0.0) + (e.profile.end - e.profile.start) * 1e-9
            runs.append(per)
        runs = runs[1:]  # the first run pays for first-launch work
        return {k: float(np.median([r[k] for r in runs])) for k in runs[0]}

    # -- planning ---------------------------------------------------------------------------------------------
    def _plan(self, batch: int):
        if batch not in self._plans:
            self._plans[batch] = Planner(self, batch).plan()
        return self._plans[batch]
