"""`estimate_batch` computes the same numbers as `estimate`, plan by plan, from the same code."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from costmodel import (
    ParallelPlan,
    TrainingSpec,
    estimate,
    estimate_batch,
    get_cluster,
    load_model,
    plan_problems,
)
from costmodel.step.batch import BATCH_COLUMNS

FIELDS = {"compute_s": "time", "tp_comm_s": "time", "cp_comm_s": "time", "dp_comm_s": "time",
          "pp_comm_s": "time", "bubble_s": "time", "optimizer_s": "time", "parameters_bytes": "memory",
          "gradients_bytes": "memory", "optimizer_bytes": "memory", "activations_bytes": "memory",
          "buffers_bytes": "memory", "peak_bytes": "memory"}


def _frame():
    rows = []
    for dp, tp, pp, cp, mb, sched, z, rc, sp in itertools.product(
            [1, 2, 4], [1, 2, 8], [1, 2, 4], [1, 2], [1, 2, 4], ["1f1b", "gpipe", "zero-bubble", "interleaved-1f1b"],
            [0, 1, 2, 3], ["none", "selective", "full"], [False, True]):
        v = 2 if sched == "interleaved-1f1b" else 1
        rows.append(dict(dp=dp, tp=tp, pp=pp, cp=cp, micro_batch_size=mb, schedule=sched, virtual_stages=v,
                         zero_stage=z, recompute=rc, sequence_parallel=sp))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("name", ["llama2-7b", "t5-base"])
def test_batch_equals_estimate_plan_by_plan(name):
    model = load_model(name)
    cluster = get_cluster("dgx-h100", nodes=8)
    training = TrainingSpec(global_batch_size=64, seq_len=512)
    df = _frame()
    out = estimate_batch(model, cluster, training, df)
    assert set(BATCH_COLUMNS) <= set(out) and all(len(out[c]) == len(df) for c in BATCH_COLUMNS)
    rng = np.random.default_rng(0)
    checked = 0
    for i in rng.permutation(len(df))[:400]:
        plan_kwargs = df.iloc[i].to_dict()
        try:
            plan = ParallelPlan(**plan_kwargs)
        except ValueError:
            assert not out["valid"][i]
            continue
        problems = plan_problems(model, cluster, training, plan)
        assert out["valid"][i] == (not problems), (plan_kwargs, problems)
        if problems:
            assert np.isnan(out["step_time_s"][i])
            continue
        est = estimate(model, cluster, training, plan)
        assert out["step_time_s"][i] == pytest.approx(est.step_time_s, rel=1e-9)
        assert out["tokens_per_s"][i] == pytest.approx(est.tokens_per_s, rel=1e-9)
        assert out["mfu"][i] == pytest.approx(est.mfu, rel=1e-9) and out["hfu"][i] == pytest.approx(est.hfu, rel=1e-9)
        for col, part in FIELDS.items():
            assert out[col][i] == pytest.approx(getattr(getattr(est, part), col), rel=1e-9, abs=1e-12), col
        assert bool(out["fits"][i]) == est.fits
        checked += 1
    assert checked > 50


def test_batch_accepts_dicts_aliases_and_defaults():
    model = load_model("gpt3-13b")
    cluster = get_cluster("dgx-a100", nodes=2)
    training = TrainingSpec(global_batch_size=32, seq_len=2048)
    out = estimate_batch(model, cluster, training, {"dp": np.array([2, 4]), "tp": np.array([8, 4]),
                                                    "mb": np.array([1, 2]), "recompute": np.array([2, 0])})
    est = estimate(model, cluster, training, ParallelPlan(dp=2, tp=8, recompute="full"))
    assert out["step_time_s"][0] == pytest.approx(est.step_time_s, rel=1e-9)
    with pytest.raises(ValueError, match="recompute"):
        estimate_batch(model, cluster, training, {"dp": [1], "recompute": ["sometimes"]})
    with pytest.raises(ValueError, match="tp"):
        estimate_batch(model, cluster, training, {"dp": [1], "tp": [0]})


def test_large_groups_take_the_deduplicated_path_and_still_agree():
    """Thousands of rows per degree group: block costs are priced once per distinct knob combination."""
    model = load_model("gpt3-13b")
    cluster = get_cluster("dgx-a100", nodes=4)
    training = TrainingSpec(global_batch_size=256, seq_len=2048)
    rng = np.random.default_rng(1)
    n = 4000
    sched = rng.choice([0, 1, 2, 3], n)
    frame = {"dp": np.full(n, 2), "tp": np.full(n, 4), "pp": np.full(n, 4), "micro_batch_size": rng.choice([1, 2, 4], n),
             "schedule": sched, "virtual_stages": np.where(sched == 2, 2, 1), "zero_stage": rng.choice([0, 1, 3], n),
             "recompute": rng.choice([0, 1, 2], n), "sequence_parallel": rng.choice([0, 1], n)}
    out = estimate_batch(model, cluster, training, frame)
    assert out["valid"].all()
    names = {0: "gpipe", 1: "1f1b", 2: "interleaved-1f1b", 3: "zero-bubble"}
    for i in rng.choice(n, 40, replace=False):
        plan = ParallelPlan(dp=2, tp=4, pp=4, micro_batch_size=int(frame["micro_batch_size"][i]),
                            schedule=names[int(sched[i])], virtual_stages=int(frame["virtual_stages"][i]),
                            zero_stage=int(frame["zero_stage"][i]),
                            recompute=["none", "selective", "full"][int(frame["recompute"][i])],
                            sequence_parallel=bool(frame["sequence_parallel"][i]))
        est = estimate(model, cluster, training, plan)
        assert out["step_time_s"][i] == pytest.approx(est.step_time_s, rel=1e-9)
        assert out["peak_bytes"][i] == pytest.approx(est.memory.peak_bytes, rel=1e-9)
