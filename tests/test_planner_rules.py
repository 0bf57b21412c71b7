"""The planner's bulk rules agree with costmodel.plan_problems, plan by plan, on a grid."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
from pydantic import ValidationError

from costmodel import ParallelPlan, TrainingSpec, get_cluster, load_model, plan_problems
from planner.constraints import SCHEDULES
from planner.rules import RULES, bulk_problems

GRID = dict(tp=(1, 2, 3, 4, 8), pp=(1, 2, 3, 5), cp=(1, 2, 3), dp=(1, 2, 3, 4), mb=(1, 2, 3),
            v=(1, 2, 3), schedule=SCHEDULES, sp=(False, True))
CASES = [
    ("tiny-llama", "dgx-a100", 1, 24, 64),      # GQA heads 4 / kv 2, ffn 176, 4 layers, 8 GPUs
    ("t5-base", "dgx-a100", 2, 36, 512),        # encoder-decoder: no cp; 24 layers
    ("tiny-gpt", "dgx-h100", 1, 12, 96),        # seq_len > max_seq_len
    ("gpt3-1.3b", "dgx-a100", 4, 48, 2048),
]


def _grid_plans(explicit: bool, num_layers: int):
    plans, cols = [], {k: [] for k in GRID}
    for values in itertools.product(*GRID.values()):
        row = dict(zip(GRID, values, strict=True))
        stages = row["pp"] * row["v"]
        split = None
        if explicit and stages <= num_layers:
            split = tuple([num_layers // stages] * (stages - 1) + [num_layers - (stages - 1) * (num_layers // stages)])
        try:
            plan = ParallelPlan(dp=row["dp"], tp=row["tp"], pp=row["pp"], cp=row["cp"],
                                micro_batch_size=row["mb"], virtual_stages=row["v"],
                                schedule=row["schedule"], sequence_parallel=row["sp"], layers_per_stage=split)
        except ValidationError:
            continue  # structurally invalid plans are never generated
        plans.append(plan)
        for k in GRID:
            cols[k].append(SCHEDULES.index(row[k]) if k == "schedule" else row[k])
    return plans, {k: np.asarray(v) for k, v in cols.items()}


@pytest.mark.parametrize("explicit", [False, True])
@pytest.mark.parametrize("name,cluster_name,nodes,batch,seq", CASES)
def test_bulk_rules_agree_with_plan_problems(name, cluster_name, nodes, batch, seq, explicit):
    model = load_model(name)
    cluster = get_cluster(cluster_name, nodes=nodes)
    training = TrainingSpec(global_batch_size=batch, seq_len=seq)
    plans, cols = _grid_plans(explicit, model.total_layers)
    cols["explicit_split"] = np.full(len(plans), explicit)
    masks = bulk_problems(model, cluster, training, cols)
    field_of = {r.code: r.field for r in RULES}
    fired = Counter()
    for i, plan in enumerate(plans):
        expected = Counter(p.field for p in plan_problems(model, cluster, training, plan))
        got = Counter(field_of[code] for code, mask in masks.items() if mask[i])
        assert got == expected, (plan.short(), got, expected)
        fired.update(code for code, mask in masks.items() if mask[i])
    # the grid exercises most rules (so agreement is not vacuous)
    assert len(fired) >= 5


def test_every_rule_fires_somewhere_on_the_grid():
    seen = set()
    for name, cluster_name, nodes, batch, seq in CASES:
        model = load_model(name)
        training = TrainingSpec(global_batch_size=batch, seq_len=seq)
        _, cols = _grid_plans(False, model.total_layers)
        masks = bulk_problems(model, get_cluster(cluster_name, nodes=nodes), training, cols)
        seen |= {code for code, mask in masks.items() if mask.any()}
    expert_rules = {"ep_dp", "ep_moe", "ep_experts"}   # on their own grid: tests/test_planner_moe.py
    assert seen == {r.code for r in RULES} - expert_rules
