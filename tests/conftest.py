import os
import tempfile

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_configure(config):
    # measured choices (autotune, CPU dispatch) go to a private folder, not the user's ~/.cache/csd_fast
    os.environ.setdefault("CSD_FAST_CACHE", tempfile.mkdtemp(prefix="csd-fast-test-cache-"))
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped on CPU, run in device sessions)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
