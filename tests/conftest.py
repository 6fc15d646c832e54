"""Fixtures shared by several test modules."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny scenes on a shared 2-core machine: one intra-op thread avoids OpenMP/torch pool contention and is
    several times faster. Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
