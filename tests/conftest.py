"""Shared test fixtures."""

import pytest
import torch


@pytest.fixture()
def one_thread():
    """Tiny inputs run fastest on one thread; on a loaded shared VM torch's OpenMP threads can wait several
    milliseconds per operation for a busy core (seen: 300x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
