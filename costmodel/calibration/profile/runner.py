"""`run_profile`: measure this machine and return a `CalibrationProfile` (what `paraplan profile` runs)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

import torch
from tqdm import tqdm

from ...catalog import list_gpus, load_model
from ...specs import ModelSpec
from ..profile_spec import CalibrationProfile
from .compute import TORCH_DTYPES, gemm_shapes, measure_gemms, measure_mem_bw
from .dist_bench import OPS, run_collectives
from .host_point import measure_host
from .operators import (
    fp8_supported,
    measure_attention,
    measure_fp8_gemms,
    measure_mem_ops,
    measure_optimizer_steps,
)
from .provenance import cuda_version, driver_version

__all__ = ["ProfileConfig", "run_profile", "catalog_gpu_name", "DEFAULT_SIZES_BYTES"]

DEFAULT_SIZES_BYTES: tuple[int, ...] = tuple(1024 * 4**i for i in range(9))  # 1 KiB .. 64 MiB


@dataclass(frozen=True)
class ProfileConfig:
    """What to measure. None fields take device-dependent defaults (CPU: fp32, 512 tokens, GEMMs of
    at most 1 GFLOP, memory-bound operators on 64 and 512 tokens, AdamW over 1M parameters; GPU: bf16
    (+ fp8 GEMMs where the GPU has them), 8192 tokens, 1 TFLOP, operators on 2048-32768 tokens, AdamW over
    64M parameters). `nprocs` None: collectives over 2 processes on CPU, over every visible GPU when
    there are several (none on one GPU)."""

    model: str = "gpt3-125m"
    device: str = "auto"
    dtypes: tuple[str, ...] | None = None
    tokens: int | None = None
    max_gemm_flop: float | None = None
    attention_seqs: tuple[int, ...] | None = None
    mem_sizes_bytes: tuple[int, ...] = (1 << 20, 16 << 20, 64 << 20)
    nprocs: tuple[int, ...] | None = (2,)
    mem_op_tokens: tuple[int, ...] | None = None
    optimizer_params: int | None = None
    fp8: bool | None = None
    """fp8 GEMMs: None = when the GPU supports them (compute capability 8.9+)"""
    shape_models: tuple[str, ...] | None = None
    """more models whose GEMM and attention shapes are measured, so that other models interpolate between
    measured shapes; None: on a GPU gpt3-1.3b, llama3-8b and llama3-70b, on CPU none"""
    ops: tuple[str, ...] = OPS
    sizes_bytes: tuple[int, ...] = DEFAULT_SIZES_BYTES
    threads: int | None = None
    repeats: int = 5
    warmup: int = 1
    seed: int = 0
    timeout_s: float = 120.0
    progress: bool = True
    extra: dict[str, str] = field(default_factory=dict)
    host: bool | None = None
    """measure the eager host cost per block (costmodel.calibration.profile.host); None: on CPU only"""

    def check(self) -> None:
        """ValueError naming the field for bad settings."""
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device: {self.device!r} is not one of auto, cpu, cuda")
        for d in self.dtypes or ():
            if d not in TORCH_DTYPES:
                raise ValueError(f"dtype: {d!r} is not one of {', '.join(TORCH_DTYPES)}")
        if any(n < 2 for n in self.nprocs or ()):
            raise ValueError(f"nprocs: {self.nprocs} - collectives need at least 2 processes (or none)")
        if any(s <= 0 for s in self.sizes_bytes):
            raise ValueError(f"sizes: {self.sizes_bytes} must all be positive byte counts")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads={self.threads} must be >= 1 (or None for torch's default)")
        if not 1 <= self.repeats <= 1000:
            raise ValueError(f"repeats={self.repeats} must be in 1..1000")
        if self.tokens is not None and not 1 <= self.tokens <= 1 << 20:
            raise ValueError(f"tokens={self.tokens} must be in 1..{1 << 20} (GEMM rows; more would not fit in memory)")
        if self.threads is not None and self.threads > 1024:
            raise ValueError(f"threads={self.threads} must be at most 1024")


def catalog_gpu_name(device_name: str) -> str | None:
    """The catalog GPU a device name matches ('NVIDIA H200' -> 'h200'); 'cpu' for CPU."""
    low = device_name.lower().replace(" ", "")
    if low == "cpu":
        return "cpu"
    for name in sorted(list_gpus(), key=len, reverse=True):
        if name.split("-")[0] in low:
            return name
    return None


def run_profile(config: ProfileConfig | None = None) -> CalibrationProfile:
    """Measure GEMMs over `config.model`'s layer shapes, causal SDPA, streaming bandwidth and the
    collectives over each `config.nprocs` local processes; returns the profile (not yet saved)."""
    cfg = config or ProfileConfig()
    cfg.check()
    model = load_model(cfg.model)
    cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if cuda and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' requested but torch sees no GPU; use --device cpu")
    device = torch.device("cuda" if cuda else "cpu")
    dtypes = cfg.dtypes or (("bf16",) if cuda else ("fp32",))
    tokens = cfg.tokens or (8192 if cuda else 512)
    max_flop = cfg.max_gemm_flop or (1e12 if cuda else 1e9)
    seqs = list(cfg.attention_seqs or sorted({min(model.max_seq_len, s) for s in ((256, 512) if not cuda
                                                                                   else (1024, 4096))}))
    shapes = gemm_shapes(model, tokens=tokens, max_flop=max_flop, backward=True)
    extra = cfg.shape_models if cfg.shape_models is not None else (
        ("gpt3-1.3b", "llama3-8b", "llama3-70b") if cuda else ())
    for other in extra:
        shapes += [s for s in gemm_shapes(load_model(other), tokens=tokens, max_flop=max_flop, backward=True)
                   if s not in shapes]
    if cfg.nprocs is None:
        gpus = torch.cuda.device_count() if cuda else 0
        cfg = replace(cfg, nprocs=(gpus,) if gpus >= 2 else (() if cuda else (2,)))
    threads_before = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        attn_models = [model] + [m for m in map(load_model, extra)
                                 if (m.num_heads, m.kv_channels) != (model.num_heads, model.kv_channels)]
        return _measure(cfg, model, cuda, device, dtypes, seqs, shapes, attn_models)
    finally:
        torch.set_num_threads(threads_before)


def _measure(cfg: ProfileConfig, model: ModelSpec, cuda: bool, device: torch.device, dtypes: tuple[str, ...],
             seqs: list[int], shapes: list[tuple[int, int, int]], attn_models: list[ModelSpec]) -> CalibrationProfile:
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    fp8 = fp8_supported(device) if cfg.fp8 is None else cfg.fp8
    op_tokens = list(cfg.mem_op_tokens or ((2048, 8192, 32768) if cuda else (64, 512)))
    n_coll = len(cfg.nprocs) * len(cfg.ops) * len(cfg.sizes_bytes)
    total = (len(dtypes) * (len(shapes) + len(seqs) * len(attn_models)) + len(cfg.mem_sizes_bytes) + n_coll + 8 * len(op_tokens) + 2
             + (len(shapes) if fp8 else 0))
    bar = tqdm(total=total, desc="profile", unit="pt", disable=not cfg.progress, leave=False)
    gemm, attn = [], []
    for dt in dtypes:
        for pt in measure_gemms(shapes, dt, device=device, repeats=cfg.repeats, gen=gen):
            gemm.append(pt)
            bar.update()
        for spec in attn_models:
            for pt in measure_attention(spec, seqs=seqs, batch=1, dtype=TORCH_DTYPES[dt], dtype_name=dt,
                                        device=device, repeats=cfg.repeats, gen=gen):
                attn.append(pt)
                bar.update()
    if fp8:
        for pt in measure_fp8_gemms(shapes, device=device, repeats=cfg.repeats, gen=gen):
            gemm.append(pt)
            bar.update()
    mem = []
    for pt in measure_mem_bw(list(cfg.mem_sizes_bytes), device=device, repeats=cfg.repeats):
        mem.append(pt)
        bar.update()
    mem_ops = []
    for pt in measure_mem_ops(model, tokens=op_tokens, dtype=TORCH_DTYPES[dtypes[0]], device=device,
                              repeats=cfg.repeats, gen=gen):
        mem_ops.append(pt)
        bar.update()
    optimizer = tuple(measure_optimizer_steps(params=cfg.optimizer_params or ((64 << 20) if cuda else (1 << 20)),
                                              device=device, repeats=cfg.repeats))
    bar.update(2)
    coll = []
    backend = "nccl" if cuda else "gloo"
    for n in cfg.nprocs:
        ops = [op for op in cfg.ops if op != "send_recv" or n == min(cfg.nprocs)]
        bar.total -= (len(cfg.ops) - len(ops)) * len(cfg.sizes_bytes)
        coll += run_collectives(nprocs=n, ops=ops, sizes=list(cfg.sizes_bytes), backend=backend,
                                warmup=cfg.warmup, repeats=cfg.repeats, seed=cfg.seed,
                                timeout_s=cfg.timeout_s, on_point=lambda _: bar.update())
    host = None
    if cfg.host if cfg.host is not None else not cuda:
        host = measure_host(model, repeats=max(10, cfg.repeats), tp=bool(cfg.nprocs), procs=cfg.nprocs,
                            timeout_s=cfg.timeout_s)
    bar.close()
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    return CalibrationProfile(
        device=name, gpu=catalog_gpu_name(name), torch_version=torch.__version__, cuda_version=cuda_version(cuda),
        driver_version=driver_version(cuda),
        backend=backend if coll else None, created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        seed=cfg.seed, threads=torch.get_num_threads(), model=model.name,
        gemm=tuple(gemm), attention=tuple(attn), mem_bw=tuple(mem), mem_ops=tuple(mem_ops), optimizer=optimizer,
        collectives=tuple(coll), host=host)
