"""Fixtures shared by the test modules."""

import os

# The Triton kernels are tested on the CPU through Triton's interpreter.  Triton decides per @triton.jit
# function, when it is defined, whether it is interpreted, and importing torch (or another test module)
# may import Triton first: so the switch is set here, before anything is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")
# Under pytest-xdist (`-n auto`) every worker has one core's share: one torch thread, in its
# subprocesses too (two OpenMP threads per worker would spin on each other's core).
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest
import torch

import pocl_workaround

_POCL_NOTE = pocl_workaround.install()  # before anything loads OpenCL
if "PYTEST_XDIST_WORKER" in os.environ:
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Slow tests first: under pytest-xdist the long runs start at once and the short tests fill the
    workers around them, instead of one long test finishing alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


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


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory):
    """30 images per digit written as 8x8 PNG files in root/<digit>/: a small image folder data set."""
    import numpy as np
    from PIL import Image

    from effnet.train.data import load_digits

    root = tmp_path_factory.mktemp("digits")
    images, targets = load_digits()
    for d in range(10):
        (root / str(d)).mkdir()
        for j, i in enumerate(np.flatnonzero(targets.numpy() == d)[:30]):
            Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(root / str(d) / f"{j}.png")
    return root
