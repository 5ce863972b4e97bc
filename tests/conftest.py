"""Fixtures shared by the test modules."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for modules of tiny models: fastest there, and on a busy 2-core runner two
    threads stall on each other far longer than the work takes (no test here asserts speed)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
