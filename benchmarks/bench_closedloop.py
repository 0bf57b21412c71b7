"""Closed loop: held-out error of the constants fitted on vTrain's A100 measurements, and
this host's eager-PyTorch host cost per Transformer block (what `paraplan profile` adds for CPU hosts).

For three random 70/30 splits, fit on 70 % and report the mean |error| on the held-out 30 %, before
(the documented defaults with vTrain's no-bucketing setting) and after the fit. Host cost: small-llama's
block forward + backward on 8 tokens (CPU time, best of 10, 1 thread), plain / recomputed / tensor
parallel over 2 Gloo ranks (+ sequence parallel), aten ops per block, and the CPU a 128-token block
costs with 4 workers at once vs alone. The local predicted-vs-measured sweep is a CLI run, not a
benchmark: `paraplan validate --local` (docs/VALIDATION.md).

    python -m benchmarks closedloop"""

from __future__ import annotations

import time

from costmodel.calibration.calibrate import VTRAIN_FIT_NAMES, calibrate
from costmodel.calibration.fit_data import vtrain_observations
from costmodel.calibration.published.validate import VALIDATION_EFFICIENCY

SEEDS = (0, 1, 2)


def host_cost() -> None:
    from costmodel import load_model
    from costmodel.calibration.profile.host_point import measure_host

    t0 = time.process_time()
    h = measure_host(load_model("small-llama"), repeats=10, procs=(4,))
    ms = 1e3
    print(f"host per block fwd+bwd (small-llama, {h.tokens} tokens, CPU time, best of 10): plain {h.block_s * ms:.2f} ms "
          f"({h.aten_ops_per_block} aten ops, {h.block_s / h.aten_ops_per_block * 1e6:.1f} us/op); full recompute "
          f"{h.block_full_recompute_s / h.block_s:.2f}x; selective {h.block_selective_recompute_s / h.block_s:.2f}x; "
          f"TP over 2 ranks {h.block_tp_s / h.block_s:.2f}x; TP+SP {h.block_tp_sp_s / h.block_s:.2f}x")
    print(f"   CPU per block on {h.concurrency_tokens} tokens: alone {h.block_cpu_s * ms:.1f} ms, 4 workers at once "
          f"{h.concurrent_block_cpu_s[4] * ms:.1f} ms ({h.concurrent_block_cpu_s[4] / h.block_cpu_s:.2f}x); "
          f"benchmark CPU {time.process_time() - t0:.1f} s (this process)")
    us = 1e6
    print(f"   TP per token (8 -> 512 tokens): {h.tp_token_s * us:.1f} us, with SP {h.tp_sp_token_s * us:.1f} us; "
          f"AdamW step: {h.optimizer_param_s * 1e9:.2f} ns per parameter, per tensor {h.optimizer_tensor_s * us:.1f} us "
          f"plain, {h.optimizer_tp_tensor_s * us:.1f} us TP DTensor (2 ranks), "
          f"{h.optimizer_sharded_tensor_s * us:.1f} us FSDP2 DTensor (4 ranks)")


def main() -> None:
    host_cost()
    obs = vtrain_observations()
    if not obs:
        print("closedloop: vTrain data not found; skipped")
        return
    for seed in SEEDS:
        t0 = time.perf_counter()
        fit, profile = calibrate(
            obs,
            names=VTRAIN_FIT_NAMES,
            efficiency=VALIDATION_EFFICIENCY,
            test_fraction=0.3,
            seed=seed,
            max_evals=200,
            max_fit_rows=300,
            source="vtrain",
        )
        print(
            f"vTrain seed {seed}: {len(obs)} runs, held-out {fit.after_test.n}: mean |error| "
            f"{fit.before_test.mean_abs:.1%} -> {fit.after_test.mean_abs:.1%} (max {fit.after_test.max_abs:.1%}); "
            f"fit part {fit.before_fit.mean_abs:.1%} -> {fit.after_fit.mean_abs:.1%}; "
            f"{fit.evaluations} evaluations, {time.perf_counter() - t0:.0f} s"
        )
        print("   constants: " + ", ".join(f"{k}={v:.3g}" for k, v in sorted(profile.constants.items())))


if __name__ == "__main__":
    main()
