"""Suite-wide settings: one compute thread per process (the suite runs 2 workers on 2 cores, and
multi-process tests start several ranks; oversubscribed BLAS threads make tiny steps 40-100x slower)."""

from __future__ import annotations

import os
import sys

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op torch thread in the test process (restored after), when the test uses torch."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
