"""Parsing of bandwidth and latency strings given by users ("400Gbps", "50 GB/s", "2us").

Network rates are decimal and in bits (400 Gb/s = 50e9 bytes/s); memory-style rates in bytes
(GB/s = 1e9 bytes/s, GiB/s = 2**30 bytes/s)."""

from __future__ import annotations

import re

__all__ = ["parse_bandwidth", "parse_latency", "format_bandwidth"]

_NUM = r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*"
_BW_UNITS: dict[str, float] = {
    "bps": 1 / 8, "b/s": 1 / 8,
    "kbps": 1e3 / 8, "kb/s": 1e3 / 8, "mbps": 1e6 / 8, "mb/s": 1e6 / 8,
    "gbps": 1e9 / 8, "gb/s": 1e9 / 8, "tbps": 1e12 / 8, "tb/s": 1e12 / 8,
}
_BYTE_UNITS: dict[str, float] = {
    "B/s": 1.0, "KB/s": 1e3, "MB/s": 1e6, "GB/s": 1e9, "TB/s": 1e12,
    "KiB/s": 2.0**10, "MiB/s": 2.0**20, "GiB/s": 2.0**30, "TiB/s": 2.0**40,
    "Bps": 1.0, "KBps": 1e3, "MBps": 1e6, "GBps": 1e9, "TBps": 1e12,
}
_TIME_UNITS: dict[str, float] = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_bandwidth(text: str | float | int, *, what: str = "bandwidth") -> float:
    """Bytes per second from '400Gbps', '400 Gb/s' (bits), '50GB/s', '50 GiB/s' (bytes) or a bare
    number of bytes/s. Upper-case B means bytes, lower-case b bits. Raises ValueError naming `what`."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        s = str(text).strip()
        m = re.fullmatch(_NUM + r"([A-Za-z/]*)\s*", s)
        if not m:
            raise ValueError(f"{what}: cannot parse {text!r}; use e.g. '400Gbps', '50GB/s' or bytes/s")
        number, unit = float(m.group(1)), m.group(2)
        if not unit:
            value = number
        elif unit in _BYTE_UNITS:
            value = number * _BYTE_UNITS[unit]
        elif "B" not in unit and unit.lower() in _BW_UNITS:
            value = number * _BW_UNITS[unit.lower()]
        else:
            raise ValueError(f"{what}: unknown unit {unit!r} in {text!r}; use Gbps, Gb/s (bits) or GB/s, GiB/s (bytes)")
    if value == 0:
        raise ValueError(f"{what}: {text!r} is a zero bandwidth; give a positive rate")
    if not value > 0:
        raise ValueError(f"{what}: {text!r} must be a positive bandwidth")
    return value


def parse_latency(text: str | float | int, *, what: str = "latency") -> float:
    """Seconds from '5us', '0.01 ms', '1e-5' (bare numbers are seconds). Raises ValueError naming `what`."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        m = re.fullmatch(_NUM + r"([a-zµ]*)\s*", str(text).strip())
        if not m or (m.group(2) and m.group(2) not in _TIME_UNITS):
            raise ValueError(f"{what}: cannot parse {text!r}; use e.g. '5us', '0.01ms' or seconds")
        value = float(m.group(1)) * _TIME_UNITS.get(m.group(2) or "s", 1.0)
    if value < 0:
        raise ValueError(f"{what}: {text!r} must be >= 0")
    return value


def format_bandwidth(bw_bytes_per_s: float) -> str:
    """'25.0 GB/s' style, for messages."""
    for unit, scale in (("TB/s", 1e12), ("GB/s", 1e9), ("MB/s", 1e6), ("KB/s", 1e3)):
        if bw_bytes_per_s >= scale:
            return f"{bw_bytes_per_s / scale:.3g} {unit}"
    return f"{bw_bytes_per_s:.3g} B/s"
