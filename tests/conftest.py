"""Fixtures shared by the test modules."""

import os

# The Triton kernels are tested on the CPU through Triton's interpreter.  Triton decides per @triton.jit
# function, when it is defined, whether it is interpreted, and importing torch (or another test module)
# may import Triton first: so the switch is set here, before anything is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch

import pocl_workaround

_POCL_NOTE = pocl_workaround.install()  # before anything loads OpenCL


def pytest_report_header(config):
    return [_POCL_NOTE] if _POCL_NOTE else []


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for modules of tiny models: fastest there, and on a busy 2-core runner two
    threads stall on each other far longer than the work takes (no test here asserts speed)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
