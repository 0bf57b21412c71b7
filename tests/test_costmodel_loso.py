"""Leave-one-source-out: each source is scored with constants fitted on the others only."""

from __future__ import annotations

from costmodel.calibration.published import find_data_dir
from costmodel.calibration.published.h200 import h200_cases
from costmodel.calibration.published.loso import leave_one_source_out, step_errors
from costmodel.calibration.published.table2 import megatron_table2_cases
from costmodel.calibration.published.validate import VALIDATION_EFFICIENCY, all_cases


def test_loso_fits_without_the_left_out_source() -> None:
    data = find_data_dir()
    cases = megatron_table2_cases(data)[:4] + h200_cases(data)
    res = leave_one_source_out(cases, names=("gemm_max_efficiency",), max_evals=6)
    assert list(res.table["source"]) == ["megatron2021", "h200-executor"]
    assert set(res.folds) == {"megatron2021", "h200-executor", "(all sources)"}
    for row in res.table.itertuples():
        assert 0 <= row.left_out < 1 and 0 <= row.defaults < 1
    # the fold that leaves megatron2021 out was fitted on the H200 rows alone
    assert res.folds["megatron2021"] != res.folds["(all sources)"]


def test_every_shipped_set_is_priced() -> None:
    cases, skipped = all_cases(find_data_dir())
    sources = {c.origin for c in cases}
    assert sources == {"megatron2021", "vtrain", "mosaicml", "h200-executor"} and not skipped
    stacks = {c.training.stack for c in cases}
    assert stacks == {"megatron", "deepspeed", "composer", "paraplan"}
    assert len(step_errors(cases[:5], VALIDATION_EFFICIENCY)) == 5
