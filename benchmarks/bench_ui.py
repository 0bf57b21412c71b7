"""UI re-planning latency: how long the Plan page takes to show results after an input change, for a
64-node cluster (llama3-70b on 64 x 8 H100), headless through streamlit's AppTest (the app's real
script run: sidebar, validation, search, table and charts).

- cold: an input value not seen before in this session (a new `planner.search`);
- cached: an input value seen before (st.cache_data keyed on the specs' JSON: no search);
- page switch: Plan -> Plan detail -> Plan with the same inputs (cached search and estimates).

Run: `python -m benchmarks ui` (or `make bench`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["main", "measure"]

APP = str(Path(__file__).resolve().parent.parent / "ui" / "app.py")
PROBLEM = {"model_preset": "llama3-70b", "cluster_preset": "dgx-h100", "nodes": 64, "global_batch": 1024,
           "seq_len": 4096}


def _timed(at, action=None) -> float:  # noqa: ANN001 (AppTest)
    t0 = time.perf_counter()
    if action is not None:
        action()
    at.run(timeout=1800)
    elapsed = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError(at.exception[0].value)
    return elapsed


def measure() -> Iterator[tuple[str, float]]:
    """(change, seconds) per Plan-page rerun, for each kind of input change in turn."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=1800)
    for key, value in PROBLEM.items():
        at.session_state[key] = value
    yield "first load (cold search)", _timed(at)
    yield "nodes 64 -> 32 (cold search)", _timed(at, lambda: at.number_input(key="nodes").set_value(32))
    yield "nodes 32 -> 64 (cached)", _timed(at, lambda: at.number_input(key="nodes").set_value(64))
    yield "global batch 1024 -> 2048 (cold search)", _timed(
        at, lambda: at.number_input(key="global_batch").set_value(2048))
    yield "global batch 2048 -> 1024 (cached)", _timed(at, lambda: at.number_input(key="global_batch").set_value(1024))
    yield "Plan -> Plan detail (cached search, new estimate)", _timed(at, lambda: at.switch_page("views/detail.py"))
    yield "Plan detail -> Plan (cached)", _timed(at, lambda: at.switch_page("views/plan.py"))


def main() -> None:
    for name, seconds in measure():
        print(f"   ui re-plan, 64 nodes: {name:50s} {seconds:8.3f} s", flush=True)


if __name__ == "__main__":
    main()
