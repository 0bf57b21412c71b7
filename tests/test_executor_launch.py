"""`paraplan run` / executor.launch: the torchrun command, capacity and scaling, and bad input that must
fail with a one-line error (exit 2) before any process starts."""

from __future__ import annotations

import json
import shlex

import pytest
import torch

from costmodel import ParallelPlan, TrainingSpec, load_model, save_plan
from executor.checkpoint import save_checkpoint
from executor.engine import build_engine
from executor.launch import prepare_run
from executor.scaling import host_capacity, scale_plan
from planner.cli import main

MODEL = load_model("tiny-llama")


def _plan_file(tmp_path, **knobs):
    return str(save_plan(ParallelPlan(**knobs), tmp_path / "plan.json"))


def _run(argv, capsys):
    code = main(["run", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("paraplan: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_dry_run_prints_the_torchrun_command(tmp_path, capsys):
    plan = _plan_file(tmp_path, dp=2, tp=2)
    code, out, err = _run([plan, "--model", "tiny-llama", "--steps", "7", "--out", str(tmp_path / "r"),
                           "--dry-run"], capsys)
    assert code == 0
    argv = shlex.split(out.strip())
    env = {}
    while "=" in argv[0]:  # the environment the command needs comes first
        key, value = argv.pop(0).split("=", 1)
        env[key] = value
    assert env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1" and "PYTHONPATH" in env
    assert argv[1:3] == ["-m", "torch.distributed.run"]
    assert argv[argv.index("--nproc-per-node") + 1] == "4"
    assert argv[argv.index("--rdzv-endpoint") + 1].startswith("127.0.0.1:")
    assert argv[argv.index("--local-addr") + 1] == "127.0.0.1"
    assert argv[argv.index("-m", 3) + 1] == "executor.train"
    assert argv[argv.index("--steps") + 1] == "7"
    assert argv[argv.index("--global-batch") + 1] == "8"  # default: 8 sequences
    assert argv[argv.index("--seq-len") + 1] == "64"  # the model's max_seq_len
    assert not (tmp_path / "r").exists()  # a dry run starts nothing and writes nothing
    plan_file = argv[argv.index("--plan") + 1]
    assert f"nothing written: a run first writes {plan_file}" in err  # and says so about the plan it reads
    assert ParallelPlan.model_validate_json(err.split("which this command reads: ", 1)[1]) == ParallelPlan(dp=2, tp=2)


def test_options_pass_through_to_the_worker_and_torchrun(tmp_path):
    setup = prepare_run(_plan_file(tmp_path, dp=2), model="tiny-llama", steps=20, out=tmp_path / "r",
                        global_batch=6, seq_len=32, seed=3, lr=1e-3, ckpt_every=5, max_restarts=2, timeout_s=42)
    argv = list(setup.command)
    for flag, value in (("--global-batch", "6"), ("--seq-len", "32"), ("--seed", "3"), ("--lr", "0.001"),
                        ("--ckpt-every", "5"), ("--max-restarts", "2"), ("--timeout", "42")):
        assert argv[argv.index(flag) + 1] == value, flag
    assert setup.training == TrainingSpec(global_batch_size=6, seq_len=32, dtype="fp32")


def test_multi_node_options_pass_through(tmp_path):
    setup = prepare_run(_plan_file(tmp_path, dp=4, tp=2), model="tiny-llama", steps=5, out=tmp_path / "r",
                        nnodes=2, node_rank=1, rdzv_endpoint="localhost:29500", rdzv_timeout_s=30)
    argv = list(setup.command)
    assert argv[argv.index("--nnodes") + 1] == "2" and argv[argv.index("--node-rank") + 1] == "1"
    assert argv[argv.index("--rdzv-endpoint") + 1] == "localhost:29500"
    assert argv[argv.index("--rdzv-conf") + 1] == "join_timeout=30"
    assert argv[argv.index("--nproc-per-node") + 1] == "4" and "--local-addr" not in argv


@pytest.mark.parametrize("knobs, extra, field", [
    ({"tp": 3}, [], "tp"),                                   # 3 does not divide 4 heads
    ({"pp": 8}, [], "pp"),                                   # more stages than the 4 layers
    ({"dp": 3}, ["--global-batch", "8"], "micro_batch_size"),  # 8 rows do not split over dp=3
    ({}, ["--seq-len", "1000"], "seq_len"),                  # beyond max_seq_len=64
    ({}, ["--steps", "0"], "steps"),
    ({"dp": 2}, ["--nnodes", "2"], "rdzv_endpoint"),
    ({"cp": 4}, ["--seq-len", "36"], "cp"),                   # 2*cp=8 chunks do not split 36 tokens
    ({"cp": 2, "cp_attention": "ring"}, [], "cp_attention"),  # torch's ring attention needs CUDA
])
def test_plans_that_do_not_fit_the_model_fail_before_launch(tmp_path, capsys, knobs, extra, field):
    code, _, err = _run([_plan_file(tmp_path, **knobs), "--model", "tiny-llama", "--out", str(tmp_path / "r"),
                         *extra], capsys)
    assert code == 2
    assert field in _error_line(err)
    assert not (tmp_path / "r").exists()


def test_missing_and_corrupt_plan_files(tmp_path, capsys):
    code, _, err = _run([str(tmp_path / "nope.json"), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "does not exist" in _error_line(err)
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    code, _, err = _run([str(bad), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "not valid JSON" in _error_line(err)
    bad.write_text(json.dumps({"dp": 2, "tpp": 2}))
    code, _, err = _run([str(bad), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "tpp" in _error_line(err)


def test_unsupported_model_fails_before_launch(tmp_path, capsys):
    model = tmp_path / "relative-gpt.json"
    model.write_text(MODEL.model_copy(update={"position": "relative"}).model_dump_json())
    code, _, err = _run([_plan_file(tmp_path), "--model", str(model), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "position" in _error_line(err)


def test_missing_corrupt_or_finished_checkpoints(tmp_path, capsys):
    plan = _plan_file(tmp_path)
    code, _, err = _run([plan, "--resume", str(tmp_path / "none"), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "does not exist" in _error_line(err)
    engine = build_engine(MODEL, ParallelPlan(), TrainingSpec(global_batch_size=2, seq_len=16, dtype="fp32"),
                          device=torch.device("cpu"))
    state = {"seed": 0, "plan": ParallelPlan().model_dump(mode="json"), "world_size": 1,
             "global_batch_size": 2, "seq_len": 16}
    ckpt = save_checkpoint(engine.model_parts, engine.optimizer, root=tmp_path / "old" / "checkpoints", step=5,
                           trainer_state=state)
    code, _, err = _run([plan, "--resume", str(tmp_path / "old"), "--steps", "5", "--out", str(tmp_path / "r")],
                        capsys)
    assert code == 2 and "already at step 5" in _error_line(err)
    setup = prepare_run(plan, model="tiny-llama", steps=9, out=tmp_path / "r", resume=tmp_path / "old")
    assert setup.resume_from == ckpt and setup.training.global_batch_size == 2  # settings from the checkpoint
    (ckpt / ".metadata").write_bytes(b"\x00garbage")
    code, _, err = _run([plan, "--resume", str(ckpt), "--steps", "9", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "corrupt" in _error_line(err)


def test_too_big_a_plan_is_scaled_only_when_asked(tmp_path, capsys):
    cap = host_capacity()
    plan = _plan_file(tmp_path, dp=4 * cap, tp=2)
    code, _, err = _run([plan, "--out", str(tmp_path / "r"), "--dry-run"], capsys)
    assert code == 2 and f"--scale-to {cap}" in _error_line(err)
    code, out, err = _run([plan, "--out", str(tmp_path / "r"), "--dry-run", "--scale-to", "4",
                           "--global-batch", "8"], capsys)
    assert code == 0
    assert f"paraplan: scaled: dp {4 * cap} -> 2" in err
    argv = shlex.split(out.strip())
    assert argv[argv.index("--nproc-per-node") + 1] == "4"


def test_scale_plan_lowers_dp_then_pp_then_tp():
    plan = ParallelPlan(dp=4, tp=2, pp=2, virtual_stages=2, schedule="interleaved-1f1b", micro_batch_size=1)
    same, changes = scale_plan(plan, MODEL, max_world=16)
    assert same == plan and changes == ()
    p, changes = scale_plan(plan, MODEL, max_world=8, global_batch=8)
    assert (p.dp, p.pp, p.tp) == (2, 2, 2) and changes[0] == "dp 4 -> 2"
    p, changes = scale_plan(plan, MODEL, max_world=2, global_batch=8)
    assert (p.dp, p.pp, p.tp) == (1, 1, 2)
    assert p.schedule == "1f1b" and p.virtual_stages == 1  # interleaving needs pp > 1
    assert changes[:2] == ("dp 4 -> 1", "pp 2 -> 1")
    p, _ = scale_plan(ParallelPlan(dp=3, tp=4, sequence_parallel=True), MODEL, max_world=1)
    assert p.world_size == 1 and not p.sequence_parallel
    # dp must keep dividing the global batch: 6 rows, 8 -> 6 (not 7)
    p, _ = scale_plan(ParallelPlan(dp=8), MODEL, max_world=7, global_batch=6)
    assert p.dp == 6


def test_host_capacity_on_cpu():
    if torch.cuda.is_available():
        assert host_capacity() == torch.cuda.device_count()
    else:
        assert host_capacity() >= 8


_REPORT = """executor.train FAILED
------------------------------------------------------------
Failures:
[0]:
  time      : 2026-11-29_04:30:52
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 25322)  (SIGKILL)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 25322
------------------------------------------------------------
Root Cause (first observed failure):
[1]:
  time      : 2026-11-29_04:30:51
  host      : localhost
  rank      : 0 (local_rank: 0)
  exitcode  : -15 (pid: 25321)  (SIGTERM)
  traceback : RuntimeError: Connection reset by peer
============================================================
"""


def test_failure_explanation_names_the_root_cause(tmp_path):
    from executor.failures import explain_failure, parse_report
    from executor.metrics import write_json_atomic

    assert parse_report(_REPORT) == [{"rank": 1, "exitcode": -9, "signal": "SIGKILL"},
                                     {"rank": 0, "exitcode": -15, "signal": "SIGTERM"}]
    # torchrun calls rank 0 the root cause (its error file is older); the SIGKILLed rank 1 is the real one
    write_json_atomic(tmp_path / "failures" / "rank0.json",
                      {"rank": 0, "error": "RuntimeError: Connection reset by peer", "time_unix_s": 1.0})
    assert explain_failure(tmp_path, _REPORT, 1).startswith("rank 1 died from signal SIGKILL (exit code -9)")
    # a rank that raised is named with its exception, ahead of peers that only lost their connection
    report = _REPORT.replace("(SIGKILL)", "").replace("-9", "1")
    write_json_atomic(tmp_path / "failures" / "rank1.json",
                      {"rank": 1, "error": "ValueError: bad shape", "where": "engine.py:10", "time_unix_s": 2.0})
    assert explain_failure(tmp_path, report, 1).startswith("rank 1 failed: ValueError: bad shape (at engine.py:10)")
    assert "exited with code 3" in explain_failure(tmp_path / "none", "Failures:\n[0]:\n  rank : 2\n  exitcode : 3\n", 1)


def test_zero_bubble_with_selective_recompute_is_accepted(tmp_path):
    """The zero-bubble schedule recomputes each selectively checkpointed region twice (input, then weight
    gradients); the executor's replayable checkpoint cache runs it (loss parity: test_executor_parity)."""
    plan = ParallelPlan(dp=1, tp=1, pp=2, micro_batch_size=1, schedule="zero-bubble", recompute="selective")
    assert prepare_run(plan, model="tiny-llama", steps=2, out=tmp_path / "run", global_batch=4).plan == plan


def test_plans_the_schedules_cannot_run_are_refused_before_launch(tmp_path):
    """torch's 1F1B needs at least pp micro-batches per step and interleaved 1F1B a multiple of pp;
    `plan_unsupported` says so (the validation sweep skips such plans) and prepare_run refuses them."""
    from executor import plan_unsupported

    few = ParallelPlan(dp=1, tp=1, pp=4, micro_batch_size=8, schedule="1f1b")  # 8 rows: 1 micro-batch
    assert "1f1b needs at least pp=4 micro-batches" in plan_unsupported(few, global_batch=8)
    with pytest.raises(ValueError, match="micro_batch_size: 1f1b needs at least pp=4"):
        prepare_run(few, model="tiny-llama", steps=2, out=tmp_path / "run", global_batch=8)
    assert plan_unsupported(few.model_copy(update={"micro_batch_size": 2}), global_batch=8) is None
    odd = ParallelPlan(dp=1, tp=1, pp=2, virtual_stages=2, micro_batch_size=2, schedule="interleaved-1f1b")
    assert "multiple of pp=2" in plan_unsupported(odd, global_batch=6)
    assert plan_unsupported(ParallelPlan(dp=2, cp=2), global_batch=8, seq_len=16, device="cpu") is None


def test_context_parallel_rules_name_the_field():
    """The executor's CP splits the sequence into 2*cp chunks and runs torch's ring attention on CUDA
    only; `plan_unsupported` (the rules the planner marks plans with) names the field and the fix."""
    from executor import plan_unsupported

    assert plan_unsupported(ParallelPlan(cp=4), seq_len=36, device="cpu").startswith("cp: seq_len=36")
    ring = ParallelPlan(cp=2, cp_attention="ring")
    assert plan_unsupported(ring, seq_len=16, device="cpu").startswith("cp_attention: 'ring'")
    assert plan_unsupported(ring, seq_len=16, model=MODEL, device="cuda") is None   # head_dim 16
    odd = MODEL.model_copy(update={"head_dim": 12})
    assert "multiple of 8" in plan_unsupported(ring, seq_len=16, model=odd, device="cuda")
    assert plan_unsupported(ParallelPlan(cp=2), seq_len=16, model=odd, device="cuda") is not None   # auto = ring
    assert plan_unsupported(ParallelPlan(cp=2, cp_attention="all-gather"), seq_len=16, model=odd,
                            device="cuda") is None


def test_the_readme_example_plan_scales_to_this_machine(tmp_path):
    """README's example (llama3-70b, 4 DGX-H100 nodes, global batch 256 x 4096): its dp2-tp1-pp4-cp4 plan,
    the planner's best the executor runs, scaled to 8 processes keeps cp=4 (dp, then pp, are lowered);
    the real run is in docs/EXECUTOR_ENGINE.md (losses equal to one process)."""
    from costmodel import get_cluster
    from planner import search

    training = TrainingSpec(global_batch_size=256, seq_len=4096)
    best = search(load_model("llama3-70b"), get_cluster("dgx-h100", nodes=4), training, top_k=1, dp=2, tp=1, pp=4,
                  cp=4, runnable_only=True).best
    assert best is not None and (best.plan.dp, best.plan.tp, best.plan.pp, best.plan.cp) == (2, 1, 4, 4)
    setup = prepare_run(best.plan, model="tiny-llama", steps=3, out=tmp_path / "r", scale_to=8)
    assert (setup.plan.dp, setup.plan.pp, setup.plan.cp, setup.plan.world_size) == (1, 2, 4, 8)
    assert setup.changes[-1].endswith("(8 processes)") and setup.training.seq_len % (2 * 4) == 0


@pytest.mark.parametrize("extra, field", [
    (["--lr", "nan"], "lr=nan"), (["--lr", "inf"], "lr=inf"), (["--lr", "-0.1"], "lr=-0.1"),
    (["--timeout", "inf"], "timeout=inf"), (["--seed", "-1"], "seed=-1"), (["--seed", str(2**40)], "seed="),
    (["--warmup-steps", "-2"], "warmup_steps"), (["--lr-decay-steps", "0"], "lr_decay_steps"),
    (["--log-every", "-1"], "log_every"), (["--scale-to", "0"], "scale_to"),
    (["--nnodes", "2", "--node-rank", "1", "--rdzv-endpoint", "no-such-node.invalid:29500"], "rdzv_endpoint"),
    (["--nnodes", "2", "--node-rank", "0", "--rdzv-endpoint", "192.0.2.250:29500"], "rdzv_endpoint"),
    (["--nnodes", "2", "--node-rank", "1", "--rdzv-endpoint", "127.0.0.1:99999"], "rdzv_endpoint"),
])
def test_bad_numbers_and_endpoints_fail_before_launch(tmp_path, capsys, extra, field):
    code, _, err = _run([_plan_file(tmp_path, dp=2), "--out", str(tmp_path / "r"), *extra], capsys)
    assert code == 2 and _error_line(err).startswith(f"paraplan: error: {field}")
    assert not (tmp_path / "r").exists()


def test_unreachable_rendezvous_is_one_line_after_the_wait(tmp_path, capsys):
    from executor.launch import free_port

    port = free_port()  # nothing listens there: node 0 was never started
    code, _, err = _run([_plan_file(tmp_path, dp=2), "--out", str(tmp_path / "r"), "--nnodes", "2",
                         "--node-rank", "1", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-timeout", "1"], capsys)
    assert code == 2 and f"nothing answers at 127.0.0.1:{port} after 1 s" in _error_line(err)
    assert not (tmp_path / "r").exists()


def test_out_must_be_a_directory(tmp_path, capsys):
    plan = _plan_file(tmp_path)
    code, _, err = _run([plan, "--out", plan], capsys)
    assert code == 2 and "is a file" in _error_line(err)
    code, _, err = _run([plan, "--out", f"{plan}/run"], capsys)
    assert code == 2 and "is a file" in _error_line(err)


def test_a_one_host_run_that_lost_its_port_race_starts_again_on_another(tmp_path):
    """A port picked free can be taken before torchrun (or rank 0's store) binds it; such a start-up failure
    of a run placed on 127.0.0.1 is retried on a fresh port (launch, PORT_ATTEMPTS), nothing else is."""
    from executor.failures import RunFailed
    from executor.launch.local import PORT_ATTEMPTS, _lost_port_race, _on_new_port

    setup = prepare_run(ParallelPlan(dp=2), model="tiny-llama", steps=1, out=tmp_path / "r")
    # the message of a real failure (CI, 2026-12-04), as explain_failure words it
    lost = RunFailed("run failed: rank 0 failed: DistNetworkError: The server socket has failed to listen on any "
                     "local network address. port: 33947, useIpv6: false, code: -98, name: EADDRINUSE, message: "
                     "address already in use (at rendezvous.py:199)", returncode=1)
    assert PORT_ATTEMPTS > 1 and _lost_port_race(setup, lost)
    assert not _lost_port_race(setup, RunFailed("run failed: rank 1 failed: OutOfMemoryError", returncode=1))
    moved = _on_new_port(setup)
    i = setup.command.index("--rdzv-endpoint") + 1
    assert moved.command[i] != setup.command[i] and moved.command[i].startswith("127.0.0.1:")
    assert moved.command[:i] == setup.command[:i] and moved.command[i + 1:] == setup.command[i + 1:]
    remote = prepare_run(ParallelPlan(dp=2), model="tiny-llama", steps=1, out=tmp_path / "n", nnodes=2,
                         rdzv_endpoint="127.0.0.1:29999", scale_to=4)
    assert not _lost_port_race(remote, lost)   # a multi-node endpoint is the user's, not ours to move
