"""Evaluation (executor/evaluate.py): a held-out validation split disjoint from training, validation
loss and perplexity that fall as tiny-llama trains, BLEU/ROUGE of T5's greedy outputs, bad input, and a
2-process pipelined T5 run whose metrics.jsonl and summary.json carry the single process's numbers."""

from __future__ import annotations

import importlib
import json
import math

import pytest
import torch

from costmodel import ParallelPlan, StepMeasurement, TrainingSpec, load_model, save_plan
from executor.data import VAL_FRACTION, BatchSource, load_corpus, split_corpus
from executor.engine import build_engine
from executor.evaluate import check_eval_args, evaluate, greedy_decode, is_eval_step, text_scores
from executor.span_corruption import target_length
from executor.train import DEFAULT_LR, lr_at
from planner.cli import main

# imported at collection: `launch(stream=sys.stdout)` binds its default stream when the module is first
# imported; imported inside a capsys test it would keep that test's (later closed) capture stream
importlib.import_module("executor.launch")


def _engine(model: str, *, global_batch: int, seq_len: int):
    spec = load_model(model)
    training = TrainingSpec(global_batch_size=global_batch, seq_len=seq_len, dtype="fp32")
    engine = build_engine(spec, ParallelPlan(), training, device=torch.device("cpu"), seed=0, lr=DEFAULT_LR)
    source = BatchSource(load_corpus(), seed=0, global_batch_size=global_batch, seq_len=seq_len, arch=spec.arch,
                         vocab_size=spec.vocab_size)
    return engine, source


def _train_and_evaluate(model: str, *, steps: int, eval_every: int, global_batch: int, seq_len: int,
                        generate_at_end: bool = False) -> dict[int, dict[str, float]]:
    """The training loop's schedule (executor.train) in one process: {step: evaluation}."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        engine, source = _engine(model, global_batch=global_batch, seq_len=seq_len)
        out = {}
        for step in range(1, steps + 1):
            engine.train_step(*source.batch(step), lr=lr_at(step, lr=DEFAULT_LR, warmup_steps=steps // 10,
                                                            decay_steps=steps))
            if is_eval_step(step, eval_every=eval_every, last_step=steps):
                out[step] = evaluate(engine, source, num_batches=2, generate=generate_at_end and step == steps)
        return out
    finally:
        torch.set_num_threads(threads)


def test_validation_split_is_held_out_and_fixed():
    corpus = load_corpus()
    train, val = split_corpus(corpus)
    assert val.numel() == int(corpus.numel() * VAL_FRACTION) and train.numel() + val.numel() == corpus.numel()
    source = BatchSource(corpus, seed=0, global_batch_size=16, seq_len=64)
    assert torch.equal(source.corpus, train) and torch.equal(source.validation, val)
    text = bytes(corpus.tolist()).decode()
    held_out = bytes(val.tolist()).decode()
    for step in (1, 2, 50):
        for row in source.batch(step)[0]:
            window = bytes(row.tolist()).decode()
            assert text.find(window) + len(window) <= train.numel()  # no training byte from the held-out part
    first = source.validation_batch(0)
    assert all(bytes(row.tolist()).decode() in held_out for row in first[0])
    assert torch.equal(first[0], source.validation_batch(0)[0])  # the same batch at every evaluation
    assert not torch.equal(first[0], source.validation_batch(1)[0])
    with pytest.raises(ValueError, match="corpus"):
        split_corpus(corpus[:1000], min_tokens=65)  # 50 held-out bytes cannot hold a 65-byte window


def test_validation_perplexity_falls_over_50_steps_of_tiny_llama():
    evals = _train_and_evaluate("tiny-llama", steps=50, eval_every=10, global_batch=8, seq_len=64)
    assert list(evals) == [10, 20, 30, 40, 50]
    ppl = [e["perplexity"] for e in evals.values()]
    assert all(b < a for a, b in zip(ppl, ppl[1:], strict=False)), ppl
    assert ppl[-1] < 0.7 * ppl[0] < 256  # from near-uniform over 256 bytes
    assert all(math.isclose(e["perplexity"], math.exp(e["loss"])) and e["tokens"] == 2 * 8 * 64
               for e in evals.values())


def test_t5_greedy_outputs_are_scored_with_bleu_and_rouge():
    engine, source = _engine("tiny-t5", global_batch=4, seq_len=32)
    tokens, targets = source.validation_batch(0)
    out = greedy_decode(engine, tokens, targets)
    assert out.shape == (4, target_length(32))
    with torch.no_grad():  # position j of a greedy output is the argmax given outputs 0..j-1
        dec = tokens.clone()
        dec[:, 33:32 + out.shape[1]] = out[:, :-1]
        torch.testing.assert_close(engine.predict(dec, targets)[:, :out.shape[1]], out, rtol=0, atol=0)
    result = evaluate(engine, source, num_batches=1, generate=True)
    assert set(result) == {"loss", "perplexity", "tokens", "bleu", "rouge1", "rouge2", "rouge_l"}
    assert all(0.0 <= result[k] <= 100.0 for k in ("bleu", "rouge1", "rouge2", "rouge_l"))
    assert result["tokens"] == 4 * target_length(32)


def test_text_scores_come_from_sacrebleu_and_rouge_score():
    refs = ["<extra_id_0> the old sailor <extra_id_1> by the mill", "A grey heron finds seven stones."]
    same = text_scores(refs, refs)
    assert same == pytest.approx({"bleu": 100.0, "rouge1": 100.0, "rouge2": 100.0, "rouge_l": 100.0})
    other = text_scores(["nothing alike here", "zzz"], refs)
    assert other["bleu"] < 5 and other["rouge1"] == 0.0


def test_bad_eval_settings_name_the_field(tmp_path, capsys):
    with pytest.raises(ValueError, match="eval_every"):
        check_eval_args(0, 2)
    with pytest.raises(ValueError, match="eval_batches"):
        check_eval_args(10, -1)
    plan = str(save_plan(ParallelPlan(), tmp_path / "plan.json"))
    for flag, field in (("--eval-every", "eval_every"), ("--eval-batches", "eval_batches")):
        code = main(["run", plan, "--out", str(tmp_path / "r"), flag, "0", "--dry-run"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith(f"paraplan: error: {field}")
    code = main(["run", plan, "--out", str(tmp_path / "r"), "--eval-every", "5", "--eval-batches", "3", "--dry-run"])
    argv = capsys.readouterr().out.split()
    assert code == 0 and argv[argv.index("--eval-every") + 1] == "5" and argv[argv.index("--eval-batches") + 1] == "3"


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.xdist_group("dist")
def test_pipelined_t5_run_reports_the_single_process_validation(tmp_path, capsys):
    plan = str(save_plan(ParallelPlan(pp=2, micro_batch_size=2), tmp_path / "plan.json"))
    out = tmp_path / "run"
    code = main(["run", plan, "--model", "tiny-t5", "--steps", "4", "--global-batch", "4", "--seq-len", "32",
                 "--eval-every", "3", "--out", str(out)])
    assert code == 0, capsys.readouterr().err[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val_loss" in r] == [3, 4]  # every 3 steps and at the end
    assert [r["step"] for r in records if "val_bleu" in r] == [4]  # greedy decoding at the end only
    summary = StepMeasurement.model_validate_json((out / "summary.json").read_text())
    assert [v.step for v in summary.validation] == [3, 4] and summary.validation[-1].rouge_l is not None
    ref = _train_and_evaluate("tiny-t5", steps=4, eval_every=3, global_batch=4, seq_len=32, generate_at_end=True)
    for got in summary.validation:
        assert got.loss == pytest.approx(ref[got.step]["loss"], rel=1e-5)
        assert got.perplexity == pytest.approx(ref[got.step]["perplexity"], rel=1e-5)
    assert summary.validation[-1].bleu == pytest.approx(ref[4]["bleu"], abs=1e-6)
    assert "validation at step 4" in capsys.readouterr().out
