"""The fuzz suite's cases (tests/_fuzz.py): `api_cases` (estimate, estimate_batch, search, sweep,
load_model, model_from_hf_config, load_plan and spec building, from tests/_fuzz_specs.py's
strategies; most plans picked from the planner's valid space) and `cli_cases` (paraplan command
lines, with the files they name), and `prepare`, which turns an API case into its call and the
cross-checks of its result."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _fuzz_checks import check_batch, expect
from _fuzz_specs import (
    FILE_TEXT,
    clusters,
    hf_configs,
    model_dicts,
    often,
    plan_dicts,
    trainings,
)
from hypothesis import strategies as st

from costmodel import (
    ClusterSpec,
    ModelSpec,
    ParallelPlan,
    StepEstimate,
    TrainingSpec,
    estimate,
    estimate_batch,
    get_cluster,
    list_clusters,
    list_gpus,
    list_models,
    load_model,
    load_plan,
    model_from_hf_config,
)
from costmodel.stacks import list_stacks
from planner import Constraints, build_space, search, sweep

__all__ = ["Case", "api_cases", "cli_cases", "prepare"]


@dataclass
class Case:
    """One fuzz case: its kind and what it needs; `run(tmp)` performs it (API) or `argv` (CLI)."""

    kind: str
    data: dict[str, Any]
    argv: list[str] | None = None
    files: dict[str, str] = field(default_factory=dict)

    def short(self) -> str:
        text = json.dumps(self.argv if self.argv is not None else self.data, default=repr)
        return f"{self.kind}: {text if len(text) <= 4000 else text[:4000] + '...'}"


@st.composite
def api_cases(draw: Any) -> Case:
    kind = draw(st.sampled_from(["estimate"] * 6 + ["batch"] * 2 + ["search"] * 2 + ["sweep", "model_file",
                                 "hf_config", "plan_file", "specs"]))
    model = draw(st.one_of(model_dicts(), st.sampled_from(list_models())))
    if kind == "search" or kind == "sweep":
        cl = draw(clusters(max_nodes=64))
    else:
        cl = draw(clusters())
    train = draw(trainings())
    world = 8
    if cl[0] == "preset" and isinstance(cl[1]["nodes"], int) and not isinstance(cl[1]["nodes"], bool):
        world = max(1, min(cl[1]["nodes"], 2 ** 20)) * 8
    layers = model.get("num_layers", 24) if isinstance(model, dict) else 24
    layers = layers if isinstance(layers, int) and 0 < layers < 2000 else 24
    data: dict[str, Any] = {"model": model, "cluster": cl, "training": train,
                            "plan": draw(plan_dicts(world=world, layers=layers))}
    if kind in ("estimate", "batch"):   # most plans are picked from the planner's valid space
        data["pick"] = draw(often(st.integers(0, 2 ** 31), st.none(), odds=4))
        data["split"] = draw(st.integers(0, 3)) == 1
        data["per_gpu"] = draw(st.sampled_from([None, None, 1, 2, 8]))
    if kind == "estimate":
        data["timeline"] = draw(st.integers(0, 7)) == 1
    elif kind == "batch":
        data["plans"] = draw(st.lists(plan_dicts(world=world, layers=layers), min_size=1, max_size=6))
        data["keep_split"] = draw(st.integers(0, 9)) == 5
    elif kind == "search":
        data["top_k"] = draw(often(st.integers(1, 12), st.sampled_from([0, -1, True, 2.5])))
        cons = {}
        for key, strat in (("tp", st.sampled_from([1, 2, 4, 8, [1, 2], 0, 3])), ("max_pp", st.sampled_from([1, 2, 4, 16, 10 ** 9])),
                           ("schedule", st.sampled_from(["1f1b", "gpipe", ["1f1b", "zero-bubble"], "nope"])),
                           ("zero_stage", st.sampled_from([0, 1, 3, (1, 2), 5])), ("recompute", st.sampled_from(["full", "none"])),
                           ("micro_batch_size", st.sampled_from([1, 2, [1, 4], 10 ** 9])),
                           ("max_virtual_stages", st.sampled_from([1, 2, 8, 10 ** 9])),
                           ("allow_fewer_gpus", st.sampled_from([True, False, "yes"])),
                           ("placement", st.sampled_from(["tp-first", "all", [["tp", "dp", "cp", "pp"]], ["bad"]])),
                           ("ep", st.sampled_from([1, 2, 8, [1, 2], 0, 3])), ("max_ep", st.sampled_from([1, 4, 64, 10 ** 9, 0])),
                           ("rebalance", st.booleans()), ("runnable_only", st.booleans()), ("bogus", st.just(1))):
            if draw(st.integers(0, 6)) == 3:
                cons[key] = draw(strat)
        data["constraints"] = cons
    elif kind == "sweep":
        vary = draw(often(st.sampled_from(["nodes", "gpu", "inter_node_bw", "global_batch", "seq_len"]), st.just("tp")))
        values = {"nodes": st.sampled_from([1, 2, 4, "8", 0, 2.5, "x", 10 ** 9]),
                  "gpu": st.sampled_from(list_gpus() + ["z100"]),
                  "inter_node_bw": st.sampled_from(["400Gbps", "50GB/s", 1e9, "0Gbps", "fast", -1]),
                  "global_batch": st.sampled_from([8, 16, 64, 0, "12", 10 ** 12]),
                  "seq_len": st.sampled_from([128, 512, 2048, 0, 10 ** 9])}.get(vary, st.sampled_from([1, 2]))
        data.update(vary=vary, values=draw(often(st.lists(values, min_size=1, max_size=3), st.just([]), odds=10)),
                    per_gpu=draw(st.sampled_from([None, None, 1, 8, 0])))
    elif kind == "model_file":
        content = draw(st.one_of(model_dicts().map(json.dumps), hf_configs().map(json.dumps), FILE_TEXT))
        data["file"] = (draw(st.sampled_from(["m.json", "m.yaml", "config.json", "folder", "emptydir"])), content)
    elif kind == "hf_config":
        data["config"] = draw(hf_configs())
    elif kind == "plan_file":
        content = draw(st.one_of(plan_dicts(world=world, layers=layers).map(json.dumps), FILE_TEXT,
                                 plan_dicts().map(lambda p: json.dumps({"plan": p}))))
        data["file"] = content
    return Case(kind, data)


def build_model(spec: Any) -> ModelSpec:
    return load_model(spec) if isinstance(spec, str) else ModelSpec.model_validate(spec)


def build_cluster(spec: tuple[str, dict[str, Any]]) -> ClusterSpec:
    kind, d = spec
    if kind == "preset":
        return get_cluster(d["name"], nodes=d["nodes"], gpu=d["gpu"], **d["over"])
    return ClusterSpec.model_validate(d)


def prepare(case: Case, tmp: Path) -> tuple[Callable[[], Any], Callable[[Any], None]]:
    """(call, check): the API call of `case`, timed and measured, and the cross-checks of its result,
    run after it (not timed). Files are written and specs built here; a bad spec raises here, as the
    API refusing it."""
    d = case.data
    none = lambda result: None  # noqa: E731
    if case.kind == "hf_config":
        return lambda: model_from_hf_config(d["config"]), none
    if case.kind == "model_file":
        name, content = d["file"]
        path = tmp / name
        if name == "emptydir":
            path.mkdir()
        else:   # a model folder holds config.json
            file = path / "config.json" if name == "folder" else path
            file.parent.mkdir(exist_ok=True)
            file.write_text(content, errors="surrogateescape")
        return lambda: load_model(path), none
    if case.kind == "plan_file":
        path = tmp / "plan.json"
        path.write_text(d["file"], errors="surrogateescape")
        return lambda: load_plan(path), none
    model, cluster = build_model(d["model"]), build_cluster(d["cluster"])
    train = dict(d["training"])
    if d.get("per_gpu") and isinstance(train.get("seq_len"), int):
        train["global_batch_size"] = d["per_gpu"] * cluster.num_gpus
    if d.get("pick") is not None and isinstance(train.get("seq_len"), int) and not isinstance(train["seq_len"], bool):
        train["seq_len"] = max(1, min(train["seq_len"], model.max_seq_len))
    training = TrainingSpec.model_validate(train)
    if case.kind == "specs":
        return lambda: (model, cluster, training, ParallelPlan.model_validate(d["plan"])), none
    if case.kind == "estimate":
        plan = _pick(d, model, cluster, training) or ParallelPlan.model_validate(d["plan"])

        def same_without_timeline(est: StepEstimate) -> None:
            if d["timeline"]:   # the timeline never changes a figure
                plain = estimate(model, cluster, training, plan)
                expect(plain.model_dump(exclude={"timeline"}) == est.model_dump(exclude={"timeline"}),
                        "estimate(timeline=True) differs from estimate()")
        return lambda: estimate(model, cluster, training, plan, timeline=d["timeline"]), same_without_timeline
    if case.kind == "batch":
        plans = [ParallelPlan.model_validate(p) for p in d["plans"]]
        if not d.get("keep_split"):   # estimate_batch prices even splits in the default placement, CP attention 'auto'
            plans = [p.model_copy(update={"layers_per_stage": None, "placement": ParallelPlan().placement,
                                          "cp_attention": "auto"}) for p in plans]
        picked = _pick(d, model, cluster, training)
        plans += [picked.model_copy(update={"layers_per_stage": None, "cp_attention": "auto"})] if picked is not None else []
        return (lambda: estimate_batch(model, cluster, training, plans),
                lambda out: check_batch(out, plans, model, cluster, training))
    if case.kind == "search":
        cons = dict(d["constraints"])
        rebalance = cons.pop("rebalance", False)
        return lambda: search(model, cluster, training, top_k=d["top_k"], rebalance=rebalance, **cons), none
    if case.kind == "sweep":
        return (lambda: sweep(model, cluster, training, vary=d["vary"], values=d["values"],
                              global_batch_per_gpu=d["per_gpu"], max_pp=8), none)
    raise AssertionError(case.kind)


def _pick(d: dict[str, Any], model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec) -> ParallelPlan | None:
    """Candidate `pick` of the planner's space of valid plans (None without one), with a random
    uneven layer split when `split`."""
    if d.get("pick") is None:
        return None
    space = build_space(model, cluster, training, Constraints.from_kwargs(max_micro_batch_size=64))
    if len(space) == 0:
        return None
    plan = space.plan(d["pick"] % len(space))
    stages, layers = plan.pp * plan.virtual_stages, model.total_layers
    if (d.get("split") or layers % stages) and stages > 1:
        rng = np.random.default_rng(d["pick"])
        cuts = np.sort(rng.integers(0, layers + 1, stages - 1))
        split = tuple(int(x) for x in np.diff(np.concatenate([[0], cuts, [layers]])))
        plan = plan.model_copy(update={"layers_per_stage": split})
    return plan



_OUT_FLAGS = {"estimate": ["--timeline"], "plan": ["--csv", "--save"], "sweep": ["--csv"]}


@st.composite
def cli_cases(draw: Any) -> Case:
    """A `paraplan` command line (estimate, plan, sweep; profile, validate, calibrate and
    validate-published only with an argument they must refuse, so that nothing long runs)."""
    command = draw(st.sampled_from(["estimate"] * 5 + ["plan"] * 2 + ["sweep", "refuse"]))
    files: dict[str, str] = {}
    word = often(st.one_of(st.sampled_from(["1", "2", "4", "8", "16", "64", "3"]), st.integers(1, 200).map(str)),
                  st.sampled_from(["0", "-1", "1e3", "x", "", "999999999999999999999", "nan", "2.5"]), odds=8)
    if command == "refuse":
        sub = draw(st.sampled_from(["profile", "validate", "calibrate", "validate-published"]))
        bad = {"profile": [["--repeats", "0"], ["--timeout", "nan"], ["--out", "."], ["--threads", "-2"],
                           ["--device", "tpu"], ["--tokens", "x"], ["--nprocs", "100000"], ["--tokens", "10000000000"],
                           ["--sizes", "1KB-1TB"], ["--repeats", "1000000"]],
               "validate": [["--local", "--procs", "0"], ["--local", "--steps", "-1"], ["--local", "--doc", "."],
                            ["--global-batch", "2"], ["--local", "--seq-len", "0"], ["--local", "--procs", "100000"]],
               "calibrate": [["--holdout", "1.5"], ["--max-evals", "0"], ["--out", "."], ["x.json", "--vtrain"],
                             ["bad.json"]],
               "validate-published": [["--out", "."], ["--csv", "/dev/null/x"], ["--data", "no-such-dir"]]}[sub]
        argv = [sub, *draw(st.sampled_from(bad))]
        files["bad.json"] = draw(FILE_TEXT)
        return Case("cli", {}, argv=argv, files=files)
    argv = [command]
    model = draw(often(st.sampled_from(list_models()), st.sampled_from(["hf", "spec.yaml", "folder", "x" * 5000,
                                                                       "no-such", "bad.json"]), odds=4))
    if model == "hf":
        files["hf/config.json"] = json.dumps(draw(hf_configs()))
        model = "hf"
    elif model == "folder":
        files["folder/config.json"] = json.dumps(draw(hf_configs()))
    elif model == "spec.yaml":
        files["spec.yaml"] = json.dumps(draw(model_dicts()))
    elif model == "bad.json":
        files["bad.json"] = draw(FILE_TEXT)
    argv += ["--model", model]
    if draw(st.integers(0, 3)):
        argv += ["--cluster", draw(st.sampled_from(list_clusters() + ["dgx-z100", "cluster.yaml"]))]
        if argv[-1] == "cluster.yaml":
            files["cluster.yaml"] = json.dumps(draw(clusters())[1])
    nodes_max = 16 if command != "estimate" else 2 ** 17
    if draw(st.booleans()):
        argv += ["--nodes", draw(st.one_of(st.integers(1, nodes_max).map(str), word))]
    flags = ["--global-batch", "--seq-len", "--dp", "--tp", "--pp", "--cp", "--ep", "--micro-batch", "--virtual-stages"]
    for flag in draw(st.lists(st.sampled_from(flags), max_size=4, unique=True)):
        argv += [flag, draw(word)]
    if draw(st.integers(0, 3)) == 1:
        argv += ["--dtype", draw(st.sampled_from(["fp8", "fp16", "bf16", "fp32", "tf32", "int4"]))]
    if command == "estimate" and draw(st.integers(0, 5)) == 2:
        argv += ["--cp-attention", draw(st.sampled_from(["auto", "all-gather", "ring", "ulysses"]))]
    if command == "plan" and draw(st.integers(0, 5)) == 2:
        argv.append("--runnable-only")
    if draw(st.integers(0, 3)) == 1:
        argv += ["--stack", draw(st.sampled_from([*list_stacks(), "nope", "x" * 5000]))]
    if draw(st.integers(0, 5)) == 2:
        argv += ["--moe-imbalance", draw(st.sampled_from(["1", "1.3", "4", "0.5", "nan", "1e300", "x"]))]
    if draw(st.integers(0, 7)) == 3:
        argv += ["--gpu-profile", draw(st.sampled_from(["h100-sxm", "missing.json", "bad.json", "x" * 5000]))]
        files.setdefault("bad.json", draw(FILE_TEXT))
    if draw(st.integers(0, 3)) == 1:
        argv += ["--schedule", draw(st.sampled_from(["gpipe", "1f1b", "interleaved-1f1b", "zero-bubble", "pipedream"]))]
    if draw(st.integers(0, 4)) == 2:
        argv += ["--zero", draw(st.sampled_from(["0", "1", "3", "4"]))]
    if draw(st.integers(0, 4)) == 2:
        argv += ["--recompute", draw(st.sampled_from(["none", "full", "some"]))]
    if draw(st.integers(0, 5)) == 2:
        argv += [draw(st.sampled_from(["--inter-node-bw", "--intra-node-bw", "--oversubscription"])),
                 draw(st.sampled_from(["400Gbps", "0Gbps", "2:1", "0.5", "fast", "1e30GB/s", "nan"]))]
    if draw(st.integers(0, 3)) == 1:
        files["p.json"] = draw(st.one_of(plan_dicts().map(json.dumps), FILE_TEXT))
        argv += ["--plan", draw(st.sampled_from(["p.json", "p.json", "missing.json", "x" * 5000]))]
    if command in _OUT_FLAGS and draw(st.integers(0, 2)) == 1:
        argv += [draw(st.sampled_from(_OUT_FLAGS[command])), draw(st.sampled_from(["out.json", ".", "sub/out.csv",
                                                                                   "y" * 300, "p.json/x"]))]
    if command == "estimate" and draw(st.booleans()):
        argv.append("--json")
    if command in ("plan", "sweep"):
        argv += ["--no-progress", "--max-pp", "8"]
        if draw(st.integers(0, 3)) == 1:
            argv += ["--max-ep", draw(word)]
        if command == "plan" and draw(st.booleans()):
            argv += ["--top-k", draw(st.sampled_from(["1", "3", "0", "x"]))]
    if command == "sweep":
        vary = draw(st.sampled_from(["nodes", "gpu", "global_batch", "seq_len", "inter_node_bw", "bogus"]))
        values = {"nodes": ["1,2", "1", "0,1", "a"], "gpu": ["h100-sxm,v100", "a100-80gb"],
                  "global_batch": ["16,32", "0"], "seq_len": ["512,1024", "0"],
                  "inter_node_bw": ["100Gbps,400Gbps", "x"]}.get(vary, ["1"])
        argv += ["--vary", vary, "--values", draw(st.sampled_from(values))]
        if draw(st.integers(0, 3)) == 1:
            argv += ["--batch-per-gpu", draw(st.sampled_from(["1", "4", "0"]))]
    return Case("cli", {}, argv=argv, files=files)
