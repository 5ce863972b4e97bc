"""Fixtures shared by the test modules."""

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
