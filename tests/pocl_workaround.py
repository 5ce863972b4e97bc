"""Make PoCL compile on CPUs its bundled LLVM does not know, for the test suite only.

The PoCL that ships with pyopencl's wheels (3.0, LLVM 14) asks LLVM for the host CPU's name; on CPUs
newer than LLVM 14 (AMD Zen 5, for one) the answer is "generic", which its own clang then rejects
("unknown target CPU 'generic'", pocl/pocl#1049), so no kernel builds.  PoCL has no setting for the
CPU name.  When a probe shows this, the suite registers a private copy of that libpocl whose
"generic" literal reads "znver3" (a target every x86-64-v3 machine runs) through OCL_ICD_VENDORS,
before anything loads OpenCL.  Users meet the engine's one-line error instead
(effnet.runtime.opencl); nothing here touches the installed package.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

_PROBE = """
import pyopencl as cl
ctx = cl.Context(cl.get_platforms()[0].get_devices()[:1])
cl.Program(ctx, "__kernel void f(__global float *a) { a[0] = 1; }").build()
"""
# Where LLVM's "generic" CPU-name literal lives in that build, with the bytes before it as an anchor.
_ANCHORS = (b"msp430i2xxgeneric\0", b" __generic\0 generic\0")


def _builds() -> tuple[bool, str]:
    run = subprocess.run([sys.executable, "-c", _PROBE], check=False, capture_output=True, text=True, timeout=300)
    return run.returncode == 0, run.stderr


def install() -> str | None:
    """Register the patched PoCL when the installed one cannot build a kernel here; returns why, or None."""
    if "OCL_ICD_VENDORS" in os.environ:
        return None
    try:
        import pyopencl
    except ImportError:
        return None  # the suite then checks the missing-pyopencl error instead
    ok, err = _builds()
    if ok or "generic" not in err:
        return None
    libs = sorted(Path(pyopencl.__file__).parent.glob(".libs/libpocl-*.so"))
    if not libs:
        return None
    lib = libs[0]
    root = Path(tempfile.mkdtemp(prefix="effnet-pocl-"))
    (root / "pyopencl" / ".libs").mkdir(parents=True)
    (root / "vendors").mkdir()
    # libpocl finds its own helpers (hwloc, the kernel library) relative to itself.
    (root / "pocl_binary_distribution").symlink_to(lib.parents[2] / "pocl_binary_distribution")
    data = bytearray(lib.read_bytes())
    for anchor in _ANCHORS:
        at = data.index(anchor) + len(anchor) - len(b"generic\0")
        data[at:at + 8] = b"znver3\0\0"
    patched = root / "pyopencl" / ".libs" / lib.name
    patched.write_bytes(data)
    (root / "vendors" / "pocl.icd").write_text(str(patched))
    os.environ["OCL_ICD_VENDORS"] = str(root / "vendors")
    ok, err = _builds()
    if not ok:
        raise RuntimeError(f"the PoCL workaround did not help: {err.strip().splitlines()[-1:]}")
    return "PoCL's LLVM does not know this CPU; tests use a copy that targets znver3"
