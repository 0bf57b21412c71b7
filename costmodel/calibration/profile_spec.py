"""`CalibrationProfile`: what `paraplan profile` measured on a device (GEMM and attention throughput,
memory bandwidth, collective times per size and group size), and the look-ups the cost model makes.

Look-ups interpolate between measured points and return None where nothing was measured, so the
caller falls back to its analytical default. Collective curves are interpolated piecewise-linearly in
log(bytes)-log(time), and extrapolated above the largest size with the last segment's bandwidth;
`fit_alpha_beta` fits the ring all-reduce alpha-beta model (Thakur et al. 2005) to all curves."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from ..atomic import write_text_atomic
from ..specs import Spec
from ..specs._base import read_json, shown_path, validate_spec
from .constants import check_constants, measured_rate_scale
from .profile_points import (
    MEM_OPS,
    AttentionPoint,
    CollectivePoint,
    GemmPoint,
    HostPoint,
    MemBwPoint,
    MemOpPoint,
    OptimizerPoint,
)

__all__ = [
    "GemmPoint", "AttentionPoint", "MemBwPoint", "MemOpPoint", "OptimizerPoint", "MEM_OPS", "CollectivePoint",
    "HostPoint", "CalibrationProfile", "save_profile", "load_profile", "profile_provenance",
]


class CalibrationProfile(Spec):
    """Measured curves of one device; JSON via `save_profile` / `load_profile`."""

    version: int = 1
    device: str = Field(description="'cpu' or the CUDA device name, e.g. 'NVIDIA H200'")
    gpu: str | None = Field(default=None, description="catalog GPU this profile calibrates, e.g. 'cpu', 'h200'")
    torch_version: str
    cuda_version: str | None = Field(default=None, description="torch.version.cuda of the measuring build")
    driver_version: str | None = Field(default=None, description="GPU driver (nvidia-smi)")
    backend: Literal["gloo", "nccl"] | None = None
    created_utc: str = ""
    seed: int = 0
    threads: int | None = None
    model: str | None = Field(default=None, description="model whose GEMM shapes were measured")
    gemm: tuple[GemmPoint, ...] = ()
    attention: tuple[AttentionPoint, ...] = ()
    mem_bw: tuple[MemBwPoint, ...] = ()
    mem_ops: tuple[MemOpPoint, ...] = ()
    optimizer: tuple[OptimizerPoint, ...] = ()
    collectives: tuple[CollectivePoint, ...] = ()
    host: HostPoint | None = Field(default=None, description="eager host cost per block (CPU profiles)")
    # closed loop: constants fitted by `paraplan calibrate`; EfficiencyModel overrides and
    # `measured_rate_scale` (costmodel.calibration.constants). Empty for a plain `paraplan profile`.
    constants: dict[str, float] = Field(default_factory=dict, description="fitted cost-model constants")
    fit: dict[str, Any] = Field(default_factory=dict, description="how the constants were fitted (data, error)")

    @field_validator("constants")
    @classmethod
    def _check_constants(cls, value: dict[str, float]) -> dict[str, float]:
        return check_constants(value)  # closed loop

    # ---------------------------------------------------------------- compute look-ups
    def gemm_flops_per_s(self, m: int, n: int, k: int, dtype: str) -> float | None:
        """Achieved FLOP/s of an (m,k)x(k,n) GEMM: inverse-distance weighting in log2(m,n,k) over the
        4 nearest measured shapes of `dtype` (geometric mean); None if `dtype` was not measured."""
        pts = [(np.log2([p.m, p.n, p.k]), p.flops_per_s) for p in self.gemm if p.dtype == dtype]
        return _scaled(_idw(pts, np.log2([m, n, k])), self)

    def attention_flops_per_s(self, batch: int, heads: int, seq: int, head_dim: int, dtype: str) -> float | None:
        """Achieved FLOP/s of causal SDPA, interpolated in log2(batch*heads, seq, head_dim)."""
        pts = [(np.log2([p.batch * p.heads, p.seq, p.head_dim]), p.flops_per_s)
               for p in self.attention if p.dtype == dtype]
        return _scaled(_idw(pts, np.log2([batch * heads, seq, head_dim])), self)

    def attention_bwd_flops_per_s(self, batch: int, heads: int, seq: int, head_dim: int, dtype: str) -> float | None:
        """Achieved FLOP/s of the attention backward (2.5x the forward's FLOPs), interpolated as the
        forward; None where no backward was measured."""
        pts = [(np.log2([p.batch * p.heads, p.seq, p.head_dim]), 2.5 * p.flops_per_s * p.time_s / p.bwd_time_s)
               for p in self.attention if p.dtype == dtype and p.bwd_time_s]
        return _scaled(_idw(pts, np.log2([batch * heads, seq, head_dim])), self)

    def has_mem_op(self, op: str) -> bool:
        """Whether memory-bound operator `op` was measured."""
        return any(p.op == op for p in self.mem_ops)

    def mem_op_bw_bytes_per_s(self, op: str, nbytes: Any) -> Any:
        """Achieved bytes/s of operator `op` (forward) on `nbytes` per kernel: piecewise-linear in
        log(bytes)-log(bandwidth) between measured sizes, clamped at the ends; numbers or arrays; None
        when `op` was not measured."""
        pts = sorted((p.nbytes, p.bw_bytes_per_s) for p in self.mem_ops if p.op == op)
        if not pts:
            return None
        arr = np.log(np.array(pts))
        x = np.log(np.maximum(np.asarray(nbytes, dtype=float), 1.0))
        out = np.exp(np.interp(x, arr[:, 0], arr[:, 1])) * measured_rate_scale(self)
        return out if isinstance(out, np.ndarray) and out.ndim else float(out)

    def mem_op_bwd_ratio(self, op: str, nbytes: Any) -> Any:
        """Backward seconds over forward seconds of operator `op` on `nbytes` per kernel (autograd's
        backward of the same torch op, timed by the profiler): piecewise-linear in log(bytes) between
        measured sizes, clamped at the ends; None when its backward was not measured."""
        pts = sorted((p.nbytes, p.bwd_time_s / p.time_s) for p in self.mem_ops
                     if p.op == op and p.bwd_time_s and p.time_s > 0)
        if not pts:
            return None
        arr = np.array(pts)
        out = np.interp(np.log(np.maximum(np.asarray(nbytes, dtype=float), 1.0)), np.log(arr[:, 0]), arr[:, 1])
        return out if isinstance(out, np.ndarray) and out.ndim else float(out)

    def optimizer_param_s(self, impl: str) -> float | None:
        """Seconds per parameter of one AdamW step of `impl`, at the largest measured size."""
        pts = [p for p in self.optimizer if p.impl == impl]
        if not pts:
            return None
        best = max(pts, key=lambda p: p.params)
        return best.time_s / best.params / measured_rate_scale(self)

    def mem_bw_bytes_per_s(self) -> float | None:
        """Streaming bandwidth: the measurement at the largest buffer (out of cache)."""
        if not self.mem_bw:
            return None
        return _scaled(max(self.mem_bw, key=lambda p: p.nbytes).bw_bytes_per_s, self)

    # ---------------------------------------------------------------- communication look-ups
    def cpu_cost_profile(self) -> CalibrationProfile | None:
        """This profile with every collective's wall time replaced by the CPU seconds it cost (what a
        collective takes from cores other workers could use); None unless every point has `cpu_s`."""
        if not self.collectives or any(p.cpu_s is None for p in self.collectives):
            return None
        points = tuple(p.model_copy(update={"time_s": max(p.cpu_s, 1e-9), "samples_s": ()}) for p in self.collectives)
        return self.model_copy(update={"collectives": points})

    def collective_curve(self, op: str, group_size: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(sizes in bytes, seconds) measured for `op` over `group_size` ranks, sorted; None if absent."""
        pts = sorted((p.nbytes, p.time_s) for p in self.collectives if p.op == op and p.group_size == group_size)
        if not pts:
            return None
        arr = np.array(pts)
        return arr[:, 0], arr[:, 1]

    def collective_times_s(self, op: str, nbytes: np.ndarray | float, group_size: int) -> np.ndarray | None:
        """Vectorised `collective_time_s`."""
        curve = self.collective_curve(op, group_size)
        if curve is None:
            return None
        sizes, times = curve
        b = np.maximum(np.asarray(nbytes, dtype=float), 1.0)
        if len(sizes) == 1:
            return np.maximum(times[0], times[0] * b / sizes[0])
        t = np.exp(np.interp(np.log(b), np.log(sizes), np.log(times)))  # clamps below the smallest size
        slope = (sizes[-1] - sizes[-2]) / max(times[-1] - times[-2], 1e-12)
        bw_last = slope if times[-1] > times[-2] else sizes[-1] / times[-1]
        return np.where(b > sizes[-1], times[-1] + (b - sizes[-1]) / bw_last, t)

    def collective_time_s(self, op: str, nbytes: float, group_size: int) -> float | None:
        """Seconds for `op` on a `nbytes` buffer over `group_size` ranks, interpolated from the
        measured curve; None when that (op, group_size) was not measured."""
        t = self.collective_times_s(op, nbytes, group_size)
        return None if t is None else float(t)

    def fit_alpha_beta(self, op: str = "all_reduce", *, min_nbytes: float = 0.0,
                       group_sizes: tuple[int, ...] | None = None) -> tuple[float, float] | None:
        """(bw_bytes_per_s, latency_s) of the ring model fitted to the measured `op` curves by least
        squares on relative error: all_reduce t = 2(n-1)/n B/bw + 2(n-1) a; reduce_scatter/all_gather
        t = (n-1)/n B/bw + (n-1) a. None if fewer than two points or no positive bandwidth fits."""
        factor = 2.0 if op == "all_reduce" else 1.0
        rows, ts = [], []
        for p in self.collectives:
            if p.op != op or p.group_size < 2 or p.nbytes < min_nbytes:
                continue
            if group_sizes is not None and p.group_size not in group_sizes:
                continue
            n = p.group_size
            rows.append([factor * (n - 1) / n * p.nbytes, factor * (n - 1)])
            ts.append(p.time_s)
        if len(rows) < 2:
            return None
        a, t = np.array(rows), np.array(ts)
        w = a / t[:, None]
        coef, *_ = np.linalg.lstsq(w, np.ones_like(t), rcond=None)
        if coef[1] < 0:  # latency cannot be negative: refit bandwidth alone
            coef = np.array([np.linalg.lstsq(w[:, :1], np.ones_like(t), rcond=None)[0][0], 0.0])
        if coef[0] <= 0:
            return None
        return float(1.0 / coef[0]), float(coef[1])


def _scaled(rate: float | None, profile: CalibrationProfile) -> float | None:
    """A measured rate times the fitted `measured_rate_scale` (1 if none)."""
    return None if rate is None else rate * measured_rate_scale(profile)


def _idw(pts: list[tuple[np.ndarray, float]], x: np.ndarray) -> float | None:
    if not pts:
        return None
    d = np.array([np.linalg.norm(p - x) for p, _ in pts])
    vals = np.log([v for _, v in pts])
    if d.min() < 1e-9:
        return float(np.exp(vals[d.argmin()]))
    near = np.argsort(d)[:4]
    w = 1.0 / d[near] ** 2
    return float(np.exp(np.sum(w * vals[near]) / w.sum()))


def profile_provenance(profile: CalibrationProfile) -> str:
    """One line saying where and with what a profile was measured."""
    parts = [profile.device + (f" ({profile.gpu})" if profile.gpu and profile.gpu != profile.device else ""),
             profile.created_utc[:10] or "undated", f"torch {profile.torch_version}"]
    if profile.cuda_version:
        parts.append(f"CUDA {profile.cuda_version}")
    if profile.driver_version:
        parts.append(f"driver {profile.driver_version}")
    return ", ".join(parts)


def save_profile(profile: CalibrationProfile, path: str | os.PathLike[str]) -> Path:
    """Write `profile` as JSON atomically (temp file + rename)."""
    return write_text_atomic(path, profile.model_dump_json(indent=1))


def load_profile(path: str | os.PathLike[str]) -> CalibrationProfile:
    """Read a profile JSON; a missing, malformed or invalid file raises ValueError naming it."""
    data = read_json(path, what="calibration file", hint="create it with `paraplan profile`")
    return validate_spec(CalibrationProfile, data, where=f"calibration file {shown_path(path)}")
