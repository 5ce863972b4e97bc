"""The OpenCL backend: our kernels (:mod:`effnet.runtime.opencl_kernels`) built and queued by pyopencl.

Buffers stay on the device from the input upload to the output download.  At compile time each
node becomes zero or more *steps* (a kernel with its arguments already set), with these fusions:
BatchNorm and activations are folded by the graph passes; a depthwise conv followed by SE also
writes the squeeze (one work group per plane); SE's gate is applied while the next pointwise conv
reads its input; a residual ``add`` right after a pointwise conv runs in that conv's epilogue.
Running is then one enqueue per step and one blocking read.

Contexts, queues and built programs are cached per device, so a second ``compile`` builds nothing.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field

import numpy as np

from effnet.runtime.graph import Graph, Node
from effnet.runtime.opencl_kernels import ACT_IDS, PW_ROWS, GemmTile, program_source
from effnet.runtime.ops import pads

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
    out = []
    try:
        platforms = cl.get_platforms()
    except cl.Error:  # pyopencl raises when the ICD loader finds no platform at all
        platforms = []
    for p in platforms:
        for d in p.get_devices():
            out.append((p.name.strip(), d.name.strip(), cl.device_type.to_string(d.type)))
    return out


def _all_devices():
    try:
        platforms = cl.get_platforms()
    except cl.Error:
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


def _pow2_at_most(n: int) -> int:
    return 1 << (max(1, n).bit_length() - 1)


@dataclass
class _Step:
    node: int  # graph node this step belongs to (for the per-node time table)
    kernel: object
    global_size: tuple[int, ...]
    local_size: tuple[int, ...] | None


@dataclass
class _Plan:
    steps: list[_Step]
    input: object
    output: object
    buffers: list


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
        self.reduce_size = _pow2_at_most(min(256, self.device.max_work_group_size))
        self.line = _pow2_at_most(min(128, self.device.max_work_group_size))  # group size of 1-D kernels
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
        self._plans: dict[int, _Plan] = {}

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
            self._plans[batch] = _Planner(self, batch).plan()
        return self._plans[batch]


class _Planner:
    """Turns the graph into argument-bound kernel steps for one batch size."""

    def __init__(self, engine: OpenCLEngine, batch: int) -> None:
        self.e, self.n, self.g = engine, batch, engine.graph
        self.users = self.g.consumers()
        self.buf: dict[int, object] = {}  # node -> buffer holding its output
        self.gated: dict[int, tuple[object, object]] = {}  # SE node -> (input buffer, gate) to fold into a read
        self.pooled: dict[int, object] = {}  # dwconv node -> its planes' means, for the SE after it
        self.skip: set[int] = set()  # nodes computed inside another node's step
        self.steps: list[_Step] = []
        self.owned: list = []  # every buffer made here: kernels hold raw handles, so keep the objects alive

    def alloc(self, floats: int):
        buf = cl.Buffer(self.e.state.context, cl.mem_flags.READ_WRITE, 4 * max(1, floats))
        self.owned.append(buf)
        return buf

    def out_buffer(self, node: Node):
        return self.alloc(self.n * math.prod(node.shape))

    def w(self, node: Node, name: str):
        return self.e.weights.get((node.index, name), self.e.dummy)

    def step(self, node: int, name: str, args: list, gsize, lsize=None) -> None:
        """One kernel launch.  Without ``lsize`` the first axis runs in groups of ``LINE`` (global size
        rounded up; kernels check bounds), so no driver picks a tiny group that divides an odd size."""
        k = cl.Kernel(self.e.program, name)
        k.set_args(*[np.int32(a) if isinstance(a, (int, bool, np.integer)) else a for a in args])
        gsize = tuple(int(v) for v in gsize)
        if lsize is None:
            line = self.e.line
            gsize = (-(-gsize[0] // line) * line, *gsize[1:])
            lsize = (line, *(1 for _ in gsize[1:]))
        self.steps.append(_Step(node, k, gsize, tuple(int(v) for v in lsize)))

    def only_reader(self, node: Node, op: str) -> Node | None:
        u = self.users[node.index]
        if len(u) == 1 and self.g.nodes[u[0]].op == op:
            return self.g.nodes[u[0]]
        return None

    def plan(self):
        g = self.g
        self.buf[0] = self.out_buffer(g.nodes[0])
        for node in g.nodes[1:]:
            if node.index not in self.skip:
                getattr(self, f"op_{node.op}")(node)
        return _Plan(self.steps, self.buf[0], self.buf[len(g) - 1], self.owned)

    def op_identity(self, node: Node) -> None:
        self.buf[node.index] = self.buf[node.inputs[0]]

    def _conv_geometry(self, node: Node):
        c, h, w = self.g.nodes[node.inputs[0]].shape
        o, oh, ow = node.shape
        top, _, left, _ = pads(node.attrs, (c, h, w))
        return c, h, w, o, oh, ow, node.attrs["kernel"], node.attrs["stride"], top, left

    def op_conv(self, node: Node) -> None:
        c, h, w, o, oh, ow, k, s, pt, pl = self._conv_geometry(node)
        y = self.buf[node.index] = self.out_buffer(node)
        a = node.attrs
        self.step(node.index, "conv2d", [self.buf[node.inputs[0]], self.w(node, "weight"), self.w(node, "bias"), y,
                                         c, h, w, o, oh, ow, k, s, pt, pl, ACT_IDS[a["act"]], a["bias"]],
                  (oh * ow, -(-o // 4), self.n))

    def op_dwconv(self, node: Node) -> None:
        c, h, w, _, oh, ow, k, s, pt, pl = self._conv_geometry(node)
        y = self.buf[node.index] = self.out_buffer(node)
        a = node.attrs
        args = [self.buf[node.inputs[0]], self.w(node, "weight"), self.w(node, "bias"), y]
        geo = [c, h, w, oh, ow, k, s, pt, pl, ACT_IDS[a["act"]], a["bias"]]
        if self.only_reader(node, "se") is not None:  # write the squeeze too, while the plane is at hand
            pooled = self.pooled[node.index] = self.alloc(self.n * c)
            ls = self.e.reduce_size
            self.step(node.index, "dwconv_pool", [*args, pooled, *geo, cl.LocalMemory(4 * ls)],
                      (self.n * c * ls,), (ls,))
        else:
            total = self.n * c * oh * ow
            self.step(node.index, "dwconv", [*args, *geo, total], (total,))

    def _pool(self, node: int, x, c: int, hw: int):
        pooled, ls = self.alloc(self.n * c), self.e.reduce_size
        self.step(node, "avgpool", [x, pooled, hw, cl.LocalMemory(4 * ls)], (self.n * c * ls,), (ls,))
        return pooled

    def op_se(self, node: Node) -> None:
        c, h, w = node.shape
        sq, x = node.attrs["squeeze_channels"], self.buf[node.inputs[0]]
        pooled = self.pooled.get(node.inputs[0]) or self._pool(node.index, x, c, h * w)
        s, gate = self.alloc(self.n * sq), self.alloc(self.n * c)
        self.step(node.index, "se_reduce", [pooled, self.w(node, "reduce.weight"), self.w(node, "reduce.bias"), s,
                                            c, sq, ACT_IDS[node.attrs["act"]]], (sq, self.n))
        self.step(node.index, "se_expand", [s, self.w(node, "expand.weight"), self.w(node, "expand.bias"), gate,
                                            c, sq], (c, self.n))
        if self.only_reader(node, "pwconv") is not None:
            self.gated[node.index] = (x, gate)  # the pointwise conv scales its input as it reads it
        else:
            y = self.buf[node.index] = self.out_buffer(node)
            total = self.n * c * h * w
            self.step(node.index, "scale_channels", [x, gate, y, h * w, total], (total,))

    def op_pwconv(self, node: Node) -> None:
        src = node.inputs[0]
        x, gate = self.gated.get(src, (self.buf.get(src), None))
        c = self.g.nodes[src].shape[0]
        o, h, w = node.shape
        p = h * w
        a, act2, res = node.attrs, 0, None
        add = self.only_reader(node, "add")
        if add is not None and add.index == node.index + 1:
            other = add.inputs[1] if add.inputs[0] == node.index else add.inputs[0]
            if other != node.index and other < node.index:  # the shortcut is ready: add it in the epilogue
                res, act2 = self.buf[other], ACT_IDS[add.attrs["act"]]
                self.skip.add(add.index)
        y = self.out_buffer(node)
        self.buf[node.index] = y
        if res is not None:
            self.buf[add.index] = y
        args = [x, self.w(node, "weight"), self.w(node, "bias"), self.e.dummy if gate is None else gate,
                self.e.dummy if res is None else res, y,
                c, o, p, self.n * p, ACT_IDS[a["act"]], act2, a["bias"], gate is not None, res is not None]
        if self.e.cpu:
            self.step(node.index, "pw_rows", args, (-(-self.n * p // 8), -(-o // PW_ROWS)))
            return
        tile = self._tile(o, self.n * p)
        lx, ly = tile.local_size
        gsize = (-(-self.n * p // tile.tn) * lx, -(-o // tile.tm) * ly)
        self.step(node.index, tile.name, args, gsize, (lx, ly))

    def _tile(self, rows: int, cols: int) -> GemmTile:
        """The largest tile that still gives every compute unit a work group or two."""
        units = self.e.device.max_compute_units
        for t in self.e.tiles:
            if -(-rows // t.tm) * -(-cols // t.tn) >= 2 * units:
                return t
        return self.e.tiles[-1]

    def op_batchnorm(self, node: Node) -> None:
        c, h, w = node.shape
        y = self.buf[node.index] = self.out_buffer(node)
        total = self.n * c * h * w
        self.step(node.index, "channel_affine", [self.buf[node.inputs[0]], self.w(node, "scale"),
                                                 self.w(node, "shift"), y, c, h * w, 0, total], (total,))

    def op_activation(self, node: Node) -> None:
        total = self.n * math.prod(node.shape)
        y = self.buf[node.index] = self.out_buffer(node)
        self.step(node.index, "activation", [self.buf[node.inputs[0]], y, total, ACT_IDS[node.attrs["kind"]]],
                  (total,))

    def op_add(self, node: Node) -> None:
        total = self.n * math.prod(node.shape)
        y = self.buf[node.index] = self.out_buffer(node)
        a, b = (self.buf[i] for i in node.inputs)
        self.step(node.index, "add", [a, b, y, total, ACT_IDS[node.attrs["act"]]], (total,))

    def op_global_avgpool(self, node: Node) -> None:
        c, h, w = self.g.nodes[node.inputs[0]].shape
        self.buf[node.index] = self._pool(node.index, self.buf[node.inputs[0]], c, h * w)

    def op_linear(self, node: Node) -> None:
        (i,), (o,) = self.g.nodes[node.inputs[0]].shape, node.shape
        y = self.buf[node.index] = self.out_buffer(node)
        self.step(node.index, "linear", [self.buf[node.inputs[0]], self.w(node, "weight"), self.w(node, "bias"),
                                         y, i, o, ACT_IDS[node.attrs["act"]], node.attrs["bias"]], (o, self.n))
