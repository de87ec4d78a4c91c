import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Test models are tiny: they gain nothing from threads, and on a shared CPU extra threads stall."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
