"""Checkpoints: DCP save/load round trip, atomic commit, corrupt/missing checkpoints, pipeline-chunk names."""

from __future__ import annotations

import json

import pytest
import torch

from costmodel import ParallelPlan, TrainingSpec, load_model
from executor.checkpoint import (
    TRAINER_STATE_FILE,
    capture_rng,
    latest_checkpoint,
    load_checkpoint,
    merged_model_view,
    read_trainer_state,
    resolve_checkpoint,
    restore_rng,
    save_checkpoint,
)
from executor.data import BatchSource, load_corpus
from executor.engine import build_engine
from executor.model import build_model
from executor.pipeline import split_model

MODEL = load_model("tiny-llama")
TRAINING = TrainingSpec(global_batch_size=4, seq_len=32, dtype="fp32")
STATE = {"seed": 0, "plan": ParallelPlan().model_dump(mode="json"), "world_size": 1}


def _engine(seed: int = 0):
    return build_engine(MODEL, ParallelPlan(), TRAINING, device=torch.device("cpu"), seed=seed)


def _steps(engine, steps):
    source = BatchSource(load_corpus(), seed=0, global_batch_size=4, seq_len=32)
    return [engine.train_step(*source.batch(s), lr=1e-3) for s in steps]


def test_round_trip_continues_exactly(tmp_path):
    ref = _engine()
    _steps(ref, [1, 2])
    save_checkpoint(ref.model_parts, ref.optimizer, root=tmp_path, step=2, trainer_state=STATE)
    expected = _steps(ref, [3, 4])
    fresh = _engine(seed=123)  # different initial weights: everything must come from the checkpoint
    state = load_checkpoint(fresh.model_parts, fresh.optimizer, latest_checkpoint(tmp_path))
    assert state["step"] == 2
    assert _steps(fresh, [3, 4]) == expected  # bitwise: same weights, same Adam moments, same step count


def test_checkpoint_killed_mid_write_keeps_the_previous_one(tmp_path):
    engine = _engine()
    _steps(engine, [1])
    save_checkpoint(engine.model_parts, engine.optimizer, root=tmp_path, step=1, trainer_state=STATE)

    def die() -> None:
        raise KeyboardInterrupt("killed while writing")

    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(engine.model_parts, engine.optimizer, root=tmp_path, step=2, trainer_state=STATE,
                        before_commit=die)
    assert latest_checkpoint(tmp_path).name == "step-00000001"
    assert (tmp_path / ".tmp-step-00000002").is_dir()  # the half-written one, ignored
    save_checkpoint(engine.model_parts, engine.optimizer, root=tmp_path, step=3, trainer_state=STATE, keep=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000003"]  # leftovers and old ones pruned


def test_resolve_checkpoint_accepts_run_dir_and_rejects_bad_ones(tmp_path):
    engine = _engine()
    run = tmp_path / "run"
    step_dir = save_checkpoint(engine.model_parts, engine.optimizer, root=run / "checkpoints", step=5,
                               trainer_state=STATE)
    assert resolve_checkpoint(run) == step_dir == resolve_checkpoint(step_dir)
    with pytest.raises(ValueError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope")
    with pytest.raises(ValueError, match="no complete checkpoint"):
        resolve_checkpoint(tmp_path)
    (step_dir / ".metadata").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt"):
        resolve_checkpoint(step_dir)
    (step_dir / TRAINER_STATE_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        read_trainer_state(step_dir)
    (step_dir / TRAINER_STATE_FILE).write_text(json.dumps({"step": 5}))
    with pytest.raises(ValueError, match="missing seed"):
        read_trainer_state(step_dir)


def test_merged_view_of_interleaved_chunks_keeps_full_model_names():
    plan = ParallelPlan(pp=2, virtual_stages=2, schedule="interleaved-1f1b")
    full = {n for n, _ in build_model(MODEL, device="meta").named_parameters()}
    names: set[str] = set()
    for rank in range(2):
        parts = [part for _, part in split_model(build_model(MODEL, device="meta"), plan, pp_rank=rank)]
        assert len(parts) == 2
        view_names = {n for n, _ in merged_model_view(parts).named_parameters()}
        part_params = {id(p) for part in parts for p in part.parameters()}
        assert {id(p) for p in merged_model_view(parts).parameters()} == part_params
        assert view_names <= full and not (view_names & names)
        names |= view_names
    assert names == full  # the two ranks together hold every parameter, under its own name


def test_rng_state_round_trip():
    blob = capture_rng()
    a = torch.rand(3)
    restore_rng(blob)
    assert torch.equal(torch.rand(3), a)
