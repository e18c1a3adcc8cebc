import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One torch thread: the suite's networks are small, and CI has two cores shared with
    the n_jobs=2 tests; more threads only add contention."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
