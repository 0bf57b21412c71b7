"""Reading a CUDA run's profiler trace (no GPU here, so a trace written in torch.profiler's Chrome format
by hand, with the fields a CUDA trace has): kernels get a '(GPU)' lane per rank, NCCL kernels by their
collective, other kernels by the CPU interval that launched them; memory follows the CUDA allocator.
The CPU path is tested on a real run (tests/test_ui_run.py)."""

from __future__ import annotations

import json

from ui.trace import read_run_trace


def _x(name, ts, dur, *, tid=1, cat="cpu_op", **args):
    return {"ph": "X", "cat": cat, "name": name, "pid": 1, "tid": tid, "ts": ts, "dur": dur, "args": args}


def test_cuda_trace_gets_a_gpu_lane_with_kernels_in_the_timeline_kinds(tmp_path):
    events = [
        _x("paraplan:step", 1000.0, 1000.0, cat="user_annotation"),
        _x("aten::mm", 1010.0, 100.0),
        _x("cudaLaunchKernel", 1020.0, 5.0, cat="cuda_runtime", correlation=7),
        _x("autograd::engine::evaluate_function: MmBackward0", 1200.0, 200.0),
        _x("cudaLaunchKernel", 1210.0, 5.0, cat="cuda_runtime", correlation=8),
        _x("paraplan:optimizer", 1500.0, 100.0, cat="user_annotation"),
        _x("aten::_foreach_add_", 1510.0, 50.0),
        _x("cudaLaunchKernel", 1515.0, 5.0, cat="cuda_runtime", correlation=9),
        _x("sm90_gemm_kernel", 1030.0, 150.0, tid=7, cat="kernel", correlation=7),
        _x("sm90_gemm_kernel", 1220.0, 250.0, tid=7, cat="kernel", correlation=8),
        _x("ncclDevKernel_AllReduce_Sum_f32_RING_LL", 1480.0, 30.0, tid=8, cat="kernel", correlation=99),
        _x("multi_tensor_apply_kernel", 1520.0, 600.0, tid=7, cat="kernel", correlation=9),  # ends after the CPU range
        {"ph": "i", "name": "[memory]", "pid": 1, "tid": 1, "ts": 1015.0,
         "args": {"Total Allocated": 4e9, "Device Type": 1}},
        {"ph": "i", "name": "[memory]", "pid": 1, "tid": 1, "ts": 1016.0,
         "args": {"Total Allocated": 1e3, "Device Type": 0}},
        {"ph": "i", "name": "[memory]", "pid": 1, "tid": 1, "ts": 1300.0,
         "args": {"Total Allocated": 6e9, "Device Type": 1}},
    ]
    (tmp_path / "trace").mkdir()
    (tmp_path / "trace" / "rank0.json").write_text(json.dumps({"traceEvents": events}))
    step = read_run_trace(tmp_path, lanes={0: "stage 0 · rank 0"})
    gpu = step.events[step.events["lane"] == "stage 0 · rank 0 (GPU)"].sort_values("start_ms")
    assert list(gpu["kind"]) == ["fwd", "bwd", "dp_comm", "optimizer"]
    cpu = step.events[step.events["lane"] == "stage 0 · rank 0"]
    assert set(cpu["kind"]) == {"fwd", "bwd", "optimizer"}
    assert step.step_ms == (1520.0 + 600.0 - 1000.0) / 1e3  # the last kernel's end
    assert list(step.memory["allocated_bytes"]) == [4e9, 6e9]  # the CUDA allocator, not the CPU's
