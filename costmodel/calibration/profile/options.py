"""Parsing of the profiler's command-line values: buffer sizes, process counts, collective names.
Message sizes use binary units (1KB = 1024 B), as nccl-tests and the Gloo benchmarks do."""

from __future__ import annotations

import os
import re

from .dist_bench import OPS

__all__ = ["parse_size", "parse_sizes", "parse_nprocs", "parse_ops", "max_local_procs", "MAX_SIZE_BYTES"]

MAX_SIZE_BYTES = 16 << 30
"""Largest collective buffer measured (nccl-tests go to 8 GiB by default)."""


def max_local_procs() -> int:
    """Processes one machine may start for a measurement: 4 per CPU core, at least 8 (each is a full
    torch process; more would swap rather than measure)."""
    return max(8, 4 * (os.cpu_count() or 1))

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}


def parse_size(text: str, *, what: str = "--sizes") -> int:
    """Bytes from '64MB', '1 KiB', '4096'."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"{what}: cannot parse size {text!r}; use e.g. 1KB, 64MB or a byte count")
    value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value <= 0:
        raise ValueError(f"{what}: size {text!r} must be positive")
    if value > MAX_SIZE_BYTES:
        raise ValueError(f"{what}: size {text!r} exceeds the {MAX_SIZE_BYTES >> 30} GiB a collective is measured at")
    return value


def parse_sizes(text: str) -> tuple[int, ...]:
    """'1KB-64MB' (powers of 4 from LO up to HI) or '1KB,1MB,16MB'."""
    if "-" in text and "," not in text:
        lo_s, hi_s = text.split("-", 1)
        lo, hi = parse_size(lo_s), parse_size(hi_s)
        if hi < lo:
            raise ValueError(f"--sizes: {text!r} has HI < LO")
        out, s = [], lo
        while s <= hi:
            out.append(s)
            s *= 4
        return tuple(out)
    return tuple(sorted({parse_size(t) for t in text.split(",") if t.strip()}))


def parse_nprocs(text: str) -> tuple[int, ...]:
    """'2' or '2,4'; '0' means no collectives."""
    try:
        values = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--nprocs: cannot parse {text!r}; use e.g. 2 or 2,4") from None
    if values == [0]:
        return ()
    if any(v < 2 for v in values):
        raise ValueError(f"--nprocs: {text!r} - each process count must be >= 2 (or 0 to skip)")
    if max(values) > max_local_procs():
        raise ValueError(f"--nprocs: {max(values)} processes exceed the {max_local_procs()} this machine runs "
                         "(4 per CPU core)")
    return tuple(sorted(set(values)))


def parse_ops(text: str | None) -> tuple[str, ...]:
    """Comma-separated collective names (default: all of OPS)."""
    if not text:
        return OPS
    ops = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [o for o in ops if o not in OPS]
    if bad:
        raise ValueError(f"--ops: unknown {bad}; choose from {', '.join(OPS)}")
    return ops
