"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest
import torch

# No process outlives the test run, whether it ends or is interrupted (tests/child_processes.py).
pytest_plugins = ["child_processes"]


@pytest.fixture
def one_torch_thread():
    """Toy-sized models only lose from intra-op threads, and on a busy shared machine spinning
    OpenMP threads slow them down many times over; the caller's setting comes back after.
    Modules of small-model stories use it: `pytestmark = pytest.mark.usefixtures(...)`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
