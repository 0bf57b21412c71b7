"""Suite-wide settings: one compute thread per process (the suite runs 2 workers on 2 cores, and
multi-process tests start several ranks; oversubscribed BLAS threads make tiny steps 40-100x slower)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
