import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped on CPU, run in device sessions)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
