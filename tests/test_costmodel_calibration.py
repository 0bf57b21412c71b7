"""CalibrationProfile: look-ups, interpolation, the alpha-beta fit and the JSON file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from costmodel.calibration.profile_spec import (
    AttentionPoint,
    CalibrationProfile,
    CollectivePoint,
    GemmPoint,
    MemBwPoint,
    load_profile,
    save_profile,
)

BW, ALPHA = 2e9, 50e-6


def _ring_ar(nbytes: float, n: int) -> float:
    return 2 * (n - 1) / n * nbytes / BW + 2 * (n - 1) * ALPHA


def synthetic_profile(*, gpu: str = "cpu", group_sizes: tuple[int, ...] = (2, 4)) -> CalibrationProfile:
    sizes = [1024 * 4**i for i in range(9)]
    coll = [CollectivePoint(op="all_reduce", group_size=n, nbytes=s, time_s=_ring_ar(s, n))
            for n in group_sizes for s in sizes]
    gemm = [GemmPoint(m=m, n=1024, k=1024, dtype="fp32", time_s=2 * m * 1024 * 1024 / r, flops_per_s=r)
            for m, r in ((64, 1e10), (256, 2e10), (1024, 4e10))]
    attn = [AttentionPoint(batch=1, heads=8, seq=s, head_dim=64, dtype="fp32", time_s=1.0, flops_per_s=r)
            for s, r in ((128, 5e9), (512, 8e9))]
    mem = [MemBwPoint(nbytes=b, time_s=b / r, bw_bytes_per_s=r) for b, r in ((3e6, 4e10), (2e8, 1.5e10))]
    return CalibrationProfile(device="cpu", gpu=gpu, torch_version="test", backend="gloo", gemm=tuple(gemm),
                              attention=tuple(attn), mem_bw=tuple(mem), collectives=tuple(coll))


def test_compute_lookups_exact_interpolated_and_missing() -> None:
    p = synthetic_profile()
    assert p.gemm_flops_per_s(256, 1024, 1024, "fp32") == pytest.approx(2e10)
    mid = p.gemm_flops_per_s(512, 1024, 1024, "fp32")
    assert 2e10 < mid < 4e10
    assert p.gemm_flops_per_s(256, 1024, 1024, "bf16") is None
    assert p.attention_flops_per_s(1, 8, 128, 64, "fp32") == pytest.approx(5e9)
    assert 5e9 < p.attention_flops_per_s(1, 8, 256, 64, "fp32") < 8e9
    assert p.attention_flops_per_s(1, 8, 256, 64, "fp16") is None
    assert p.mem_bw_bytes_per_s() == pytest.approx(1.5e10)
    empty = CalibrationProfile(device="cpu", torch_version="x")
    assert empty.mem_bw_bytes_per_s() is None and empty.gemm_flops_per_s(1, 1, 1, "fp32") is None


def test_collective_curve_interpolates_and_extrapolates() -> None:
    p = synthetic_profile()
    assert p.collective_time_s("all_reduce", 65536, 2) == pytest.approx(_ring_ar(65536, 2))
    for s in (3000.0, 5e5, 3e7):  # between measured sizes: within the log-log chord's error
        assert p.collective_time_s("all_reduce", s, 4) == pytest.approx(_ring_ar(s, 4), rel=0.1)
    big = 1 << 28  # beyond the largest size: the last segment's bandwidth
    assert p.collective_time_s("all_reduce", big, 2) == pytest.approx(_ring_ar(big, 2), rel=0.01)
    assert p.collective_time_s("all_reduce", 1e6, 8) is None
    assert p.collective_time_s("all_gather", 1e6, 2) is None
    sizes = np.array([1e3, 1e5, 1e7])
    assert np.allclose(p.collective_times_s("all_reduce", sizes, 2),
                       [p.collective_time_s("all_reduce", s, 2) for s in sizes])


def test_alpha_beta_fit_recovers_the_link() -> None:
    bw, alpha = synthetic_profile().fit_alpha_beta("all_reduce")
    assert bw == pytest.approx(BW, rel=1e-6) and alpha == pytest.approx(ALPHA, rel=1e-6)
    assert CalibrationProfile(device="cpu", torch_version="x").fit_alpha_beta() is None


def test_save_and_load_round_trip(tmp_path) -> None:
    p = synthetic_profile()
    path = save_profile(p, tmp_path / "sub" / "profile.json")
    assert load_profile(path) == p
    assert not list((tmp_path / "sub").glob(".*.tmp"))


def test_load_errors_name_the_file_and_field(tmp_path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_profile(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_profile(bad)
    data = json.loads(synthetic_profile().model_dump_json())
    data["collectives"][0]["time_s"] = -1
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="collectives.0.time_s"):
        load_profile(bad)
    data = json.loads(synthetic_profile().model_dump_json())
    data["devcie"] = "typo"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="devcie"):
        load_profile(bad)
