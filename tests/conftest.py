import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # CI runs on 2 cores; small models are fastest (and deterministic) on one thread.
    torch.set_num_threads(1)
    yield
