"""Planning for the OpenCL engine: a graph and a batch size -> buffers and argument-bound kernel steps.

Fusions made here (the graph passes have already folded BatchNorm and activations): a depthwise
conv read only by an SE also writes the squeeze; an SE read only by a pointwise conv leaves its gate
to be applied while that conv reads its input; a residual ``add`` right after a pointwise conv that
is its only reader runs in the conv's epilogue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from effnet.runtime.graph import Node
from effnet.runtime.opencl_kernels import ACT_IDS, PW_ROWS, GemmTile
from effnet.runtime.ops import pads

try:
    import pyopencl as cl
except ImportError:  # planning only happens once an engine exists, which needs pyopencl
    cl = None


@dataclass
class Step:
    node: int  # graph node this step belongs to (for the per-node time table)
    kernel: object
    global_size: tuple[int, ...]
    local_size: tuple[int, ...] | None


@dataclass
class Plan:
    steps: list[Step]
    input: object
    output: object
    buffers: list  # every device buffer of the plan: kernels hold raw handles, so keep the objects alive


class _Slot:
    """A buffer the plan needs, before memory is given to it (see :meth:`Planner.assign_memory`)."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.first = self.last = -1  # first and last step that touch it
        self.buffer = None


class Planner:
    """Turns the graph into argument-bound kernel steps for one batch size."""

    def __init__(self, engine, batch: int) -> None:
        self.e, self.n, self.g = engine, batch, engine.graph
        self.users = self.g.consumers()
        self.buf: dict[int, object] = {}  # node -> buffer holding its output
        self.gated: dict[int, tuple[object, object]] = {}  # SE node -> (input buffer, gate) to fold into a read
        self.pooled: dict[int, object] = {}  # dwconv node -> its planes' means, for the SE after it
        self.skip: set[int] = set()  # nodes computed inside another node's step
        self.steps: list[Step] = []
        self.args: list[list] = []  # per step, its arguments (slots until memory is assigned)

    def alloc(self, floats: int) -> _Slot:
        return _Slot(4 * max(1, floats))

    def out_buffer(self, node: Node):
        return self.alloc(self.n * math.prod(node.shape))

    def w(self, node: Node, name: str):
        return self.e.weights.get((node.index, name), self.e.dummy)

    def step(self, node: int, name: str, args: list, gsize, lsize=None) -> None:
        """One kernel launch.  Without ``lsize`` the first axis runs in groups of ``LINE`` (global size
        rounded up; kernels check bounds), so no driver picks a tiny group that divides an odd size."""
        k = cl.Kernel(self.e.program, name)
        for a in args:
            if isinstance(a, _Slot):
                a.first = len(self.steps) if a.first < 0 else a.first
                a.last = len(self.steps)
        self.args.append([np.int32(a) if isinstance(a, (int, bool, np.integer)) else a for a in args])
        gsize = tuple(int(v) for v in gsize)
        if lsize is None:
            line = self.e.line
            gsize = (-(-gsize[0] // line) * line, *gsize[1:])
            lsize = (line, *(1 for _ in gsize[1:]))
        self.steps.append(Step(node, k, gsize, tuple(int(v) for v in lsize)))

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
        inp, out = self.buf[0], self.buf[len(g) - 1]
        owned = self.assign_memory(pinned=(inp, out))
        for step, args in zip(self.steps, self.args):
            step.kernel.set_args(*[a.buffer if isinstance(a, _Slot) else a for a in args])
        return Plan(self.steps, inp.buffer, out.buffer, owned)

    def assign_memory(self, pinned: tuple[_Slot, ...]) -> list:
        """Give each slot a device buffer, reusing one whose last reader has already been queued.

        The queue is in order, so a buffer is free for the next writer as soon as the last step that
        reads it has been enqueued.  Input and output keep buffers of their own (the host writes and
        reads them around the steps).  Best fit among free buffers, else a new one.
        """
        ctx, flags = self.e.state.context, cl.mem_flags.READ_WRITE
        slots = {id(a): a for args in self.args for a in args if isinstance(a, _Slot)}
        for p in pinned:
            slots.setdefault(id(p), p)
        owned, free = [], []
        for p in pinned:
            p.buffer = cl.Buffer(ctx, flags, p.nbytes)
            owned.append(p.buffer)
        order = sorted((s for s in slots.values() if s.buffer is None), key=lambda s: s.first)
        live: list[_Slot] = []
        for s in order:
            for done in [d for d in live if d.last < s.first]:
                live.remove(done)
                free.append(done.buffer)
            fits = [b for b in free if b.size >= s.nbytes]
            if fits:
                s.buffer = min(fits, key=lambda b: b.size)
                free.remove(s.buffer)
            else:
                s.buffer = cl.Buffer(ctx, flags, s.nbytes)
                owned.append(s.buffer)
            live.append(s)
        return owned

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
        elif self.e.cpu:  # rows of 8 pixels as vectors
            total = self.n * c * oh * -(-ow // 8)
            self.step(node.index, "dwconv_row8", [*args, *geo, total], (total,))
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
        ls = min(self.e.reduce_size, 64)
        self.step(node.index, "se_reduce", [pooled, self.w(node, "reduce.weight"), self.w(node, "reduce.bias"), s,
                                            c, sq, ACT_IDS[node.attrs["act"]], cl.LocalMemory(4 * ls)],
                  (self.n * sq * ls,), (ls,))
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
        a, act2, res = node.attrs, None, None
        add = self.only_reader(node, "add")
        if add is not None and add.index == node.index + 1:
            other = add.inputs[1] if add.inputs[0] == node.index else add.inputs[0]
            if other != node.index and other < node.index:  # the shortcut is ready: add it in the epilogue
                res, act2 = self.buf[other], add.attrs["act"]
                self.skip.add(add.index)
        y = self.out_buffer(node)
        self.buf[node.index] = y
        if res is not None:
            self.buf[add.index] = y
        self._pointwise(node, x, gate, res, y, c, o, p, a["act"], act2)

    def _pointwise(self, node: Node, x, gate, res, y, c: int, o: int, p: int, act: str | None,
                   act2: str | None) -> None:
        """out[n, o, p] = act2(act(W x[n, :, p] * gate[n] + b) + res); GEMM tiles on GPUs, vector rows on CPUs."""
        dummy, a2 = self.e.dummy, ACT_IDS[act2]
        args = [x, self.w(node, "weight"), self.w(node, "bias"), dummy if gate is None else gate,
                dummy if res is None else res, y, c, o, p, self.n * p, ACT_IDS[act], a2, node.attrs["bias"],
                gate is not None, res is not None]
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
        """A fully connected layer is a pointwise conv over one pixel: the same GEMM kernels."""
        (i,), (o,) = self.g.nodes[node.inputs[0]].shape, node.shape
        y = self.buf[node.index] = self.out_buffer(node)
        self._pointwise(node, self.buf[node.inputs[0]], None, None, y, i, o, 1, node.attrs["act"], None)
