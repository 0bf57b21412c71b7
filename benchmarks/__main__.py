"""Run every benchmark module (`python -m benchmarks [name ...]`), in name order.

Each `benchmarks/bench_<area>.py` defines `main() -> None`; new modules are picked up automatically."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import benchmarks


def main(argv: list[str]) -> int:
    names = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_"))
    wanted = [a.removeprefix("bench_").replace("-", "_") for a in argv]  # gpu-speed = bench_gpu_speed
    if wanted:
        names = [n for n in names if n.removeprefix("bench_") in wanted]
    for name in names:
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        importlib.import_module(f"benchmarks.{name}").main()
        print(f"   ({time.perf_counter() - t0:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
