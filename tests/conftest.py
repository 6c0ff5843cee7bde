import sys
from pathlib import Path

import pytest

# Test modules import shared fixtures from each other (e.g. `from test_data import PHOTOS`).
sys.path.insert(0, str(Path(__file__).parent / "unit"))


@pytest.fixture()
def one_thread():
    """For tests of tiny networks: one thread is faster than two and immune to oversubscription.
    Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
