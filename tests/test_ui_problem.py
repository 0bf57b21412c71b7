"""ui.problem / ui.services helpers: widget values -> validated specs, with errors naming the field."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from costmodel import get_cluster, load_model
from ui import services
from ui.problem import (
    GBIT,
    GBYTE,
    Problem,
    cluster_from_inputs,
    cluster_from_upload,
    model_from_fields,
    model_from_upload,
    training_from_inputs,
)

LLAMA_CONFIG = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 2048,
    "intermediate_size": 5632, "num_attention_heads": 32, "num_hidden_layers": 22, "num_key_value_heads": 4,
    "vocab_size": 32000, "max_position_embeddings": 2048, "hidden_act": "silu",
}


def test_hf_config_upload_gives_the_same_spec_as_the_catalog_loader():
    spec = model_from_upload(json.dumps(LLAMA_CONFIG).encode(), "config.json")
    assert (spec.num_layers, spec.hidden_size, spec.kv_heads, spec.ffn_size) == (22, 2048, 4, 5632)
    assert spec.activation == "swiglu" and spec.norm == "rmsnorm"


@pytest.mark.parametrize("raw, fragment", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must hold a mapping"),
    (b"\xff\xfe\x00", "not a text file"),
    (json.dumps({"model_type": "mamba"}).encode(), "model_type 'mamba'"),
    (json.dumps({**LLAMA_CONFIG, "num_attention_heads": 30}).encode(), "num_attention_heads=30"),
])
def test_bad_uploaded_model_files_name_the_problem(raw, fragment):
    with pytest.raises(ValueError, match=fragment):
        model_from_upload(raw, "config.json")


def test_modelspec_yaml_upload_rejects_unknown_fields():
    good = model_from_upload(b"num_layers: 2\nhidden_size: 64\nnum_heads: 4\nvocab_size: 256\nmax_seq_len: 64\n",
                             "mini.yaml")
    assert good.name == "mini" and good.num_layers == 2
    with pytest.raises(ValueError, match="num_layerz"):
        model_from_upload(b"num_layerz: 2\nhidden_size: 64\nnum_heads: 4\nvocab_size: 256\nmax_seq_len: 64\n",
                          "mini.yaml")


def test_custom_fields_zero_means_default_and_bad_shapes_are_refused():
    spec = model_from_fields({"num_layers": 4, "hidden_size": 256, "num_heads": 8, "num_kv_heads": 0,
                              "ffn_hidden_size": 0, "vocab_size": 1000, "max_seq_len": 512})
    assert spec.kv_heads == 8 and spec.ffn_size == 1024
    with pytest.raises(ValueError, match="hidden_size=250 is not divisible by num_heads=8"):
        model_from_fields({"num_layers": 4, "hidden_size": 250, "num_heads": 8, "vocab_size": 1000,
                           "max_seq_len": 512})
    with pytest.raises(ValueError, match="num_layers"):
        model_from_fields({"num_layers": 0, "hidden_size": 256, "num_heads": 8, "vocab_size": 1000,
                           "max_seq_len": 512})


def test_cluster_inputs_override_link_bandwidths_only_when_changed():
    base = get_cluster("dgx-h100", nodes=4)
    same = cluster_from_inputs("dgx-h100", nodes=4, intra_bw_bytes_per_s=base.intra_node_link.bw_bytes_per_s,
                               inter_bw_bytes_per_s=base.inter_node_link.bw_bytes_per_s)
    assert same == base
    fast = cluster_from_inputs("dgx-h100", nodes=4, gpu="h200", inter_bw_bytes_per_s=800 * GBIT,
                               intra_bw_bytes_per_s=900 * GBYTE)
    assert fast.gpu.name == "h200" and fast.num_gpus == 32
    assert fast.inter_node_link.bw_bytes_per_s == pytest.approx(100e9)
    assert fast.intra_node_link.bw_bytes_per_s == pytest.approx(900e9)
    assert fast.inter_node_link.latency_s == base.inter_node_link.latency_s
    with pytest.raises(ValueError, match="nodes"):
        cluster_from_inputs("dgx-h100", nodes=0)
    with pytest.raises(ValueError, match="unknown cluster 'dgx-h1000'"):
        cluster_from_inputs("dgx-h1000", nodes=1)


def test_cluster_upload_uses_the_catalog_rules():
    raw = (b"name: lab\ngpu: a100-80gb\nnum_nodes: 2\ngpus_per_node: 4\nintra_node_link: nvlink3\n"
           b"inter_node_link: ib-hdr-200\nnics_per_node: 2\n")
    cluster = cluster_from_upload(raw, "lab.yaml", nodes=3)
    assert cluster.name == "lab" and cluster.num_nodes == 2 and cluster.num_gpus == 8
    with pytest.raises(ValueError, match="gpus_per_node"):
        cluster_from_upload(raw.replace(b"gpus_per_node: 4", b"gpus_per_node: -4"), "lab.yaml")
    with pytest.raises(ValueError, match="unknown GPU 'a100-81gb'"):
        cluster_from_upload(raw.replace(b"a100-80gb", b"a100-81gb"), "lab.yaml")
    with pytest.raises(ValueError, match="not valid YAML"):
        cluster_from_upload(b"gpu: [unclosed", "lab.yaml")
    with pytest.raises(ValueError, match=".yaml, .yml or .json"):
        cluster_from_upload(raw, "lab.txt")


def test_training_sequence_beyond_the_model_is_an_input_error():
    model = load_model("gpt3-175b")
    assert training_from_inputs(global_batch_size=64, seq_len=2048, model=model).tokens_per_step == 64 * 2048
    with pytest.raises(ValueError, match="seq_len: 4096 exceeds max_seq_len=2048"):
        training_from_inputs(global_batch_size=64, seq_len=4096, model=model)
    with pytest.raises(ValueError, match="global_batch_size"):
        training_from_inputs(global_batch_size=0, seq_len=128)


def test_problem_key_round_trips_and_changes_with_any_input():
    model, cluster = load_model("llama2-7b"), get_cluster("dgx-a100", nodes=2)
    training = training_from_inputs(global_batch_size=128, seq_len=4096)
    p = Problem(model=model, cluster=cluster, training=training, constraints={"tp": 8})
    assert Problem.from_key(p.key()) == p
    keys = {p.key(),
            Problem(model, get_cluster("dgx-a100", nodes=4), training, {"tp": 8}).key(),
            Problem(model, cluster, training, {"tp": 4}).key(),
            Problem(load_model("llama2-13b"), cluster, training, {"tp": 8}).key()}
    assert len(keys) == 4


def test_sweep_values_are_parsed_and_checked():
    assert services.parse_sweep_values("nodes", "8, 16,32") == [8, 16, 32]
    assert services.parse_sweep_values("inter_node_bw", "200, 400.5") == [200.0, 400.5]
    assert services.parse_sweep_values("gpu", "H100-SXM, a100-80gb") == ["h100-sxm", "a100-80gb"]
    for vary, text, fragment in [("nodes", "8, x", "'x' is not a whole number"), ("nodes", "", "at least one"),
                                 ("seq_len", "-5", "must be > 0"), ("gpu", "h1000", "unknown GPU h1000"),
                                 ("colour", "1", "vary='colour'")]:
        with pytest.raises(ValueError, match=fragment):
            services.parse_sweep_values(vary, text)


def test_cost_is_gpu_hours_per_billion_tokens():
    df = services.add_cost(pd.DataFrame({"num_gpus": [8, 16], "tokens_per_s": [1e6, 4e6]}), price_per_gpu_hour=2.0)
    assert df["gpu_hours_per_1b_tokens"].tolist() == pytest.approx([8 / 1e6 * 1e9 / 3600, 16 / 4e6 * 1e9 / 3600])
    assert df["cost_per_1b_tokens"].tolist() == pytest.approx((df["gpu_hours_per_1b_tokens"] * 2).tolist())


def test_missing_apis_are_reported_not_faked():
    assert services.api("costmodel.load_model") is load_model
    assert services.api("costmodel.no_such_function") is None
    assert services.api("no_such_package.fn") is None
    assert services.missing("costmodel.load_model", "costmodel.nope") == ["costmodel.nope"]
    assert "ui" in services.cli_subcommands()
    assert "--port" in services.cli_options("ui")


def _topology_yaml(*, nic_bw: str = "200Gbps", servers: int = 2, gpus: int = 4) -> bytes:
    """A small cluster graph in costmodel.network.topology's file format: servers of GPUs on a switch, one NIC
    each, and a spine."""
    nodes, links = ["  - {id: spine, kind: switch}"], []
    for s in range(servers):
        nodes += [f"  - {{id: n{s}/sw, kind: switch, server: n{s}}}", f"  - {{id: n{s}/nic0, kind: nic, server: n{s}}}"]
        links += [f"  - {{a: n{s}/nic0, b: n{s}/sw, bw: 50GB/s}}",
                  f"  - {{a: n{s}/nic0, b: spine, bw: {nic_bw}, latency: 5us}}"]
        for g in range(gpus):
            nodes.append(f"  - {{id: n{s}/gpu{g}, kind: gpu, server: n{s}}}")
            links.append(f"  - {{a: n{s}/gpu{g}, b: n{s}/sw, bw: 300GB/s, latency: 2.5us}}")
    return ("name: two-boxes\nnodes:\n" + "\n".join(nodes) + "\nlinks:\n" + "\n".join(links) + "\n").encode()


TOPOLOGY_YAML = _topology_yaml()


def test_uploaded_topology_graph_implies_its_cluster():
    from ui.problem import cluster_for_topology, is_topology_file, topology_from_text

    assert is_topology_file(TOPOLOGY_YAML, "topo.yaml")
    assert not is_topology_file(b"gpu: h100-sxm\nnum_nodes: 2\n", "c.yaml")
    topo = topology_from_text(TOPOLOGY_YAML.decode())
    cluster = cluster_for_topology(topo, gpu="a100-80gb", filename="topo.yaml")
    assert (cluster.num_nodes, cluster.gpus_per_node, cluster.nics_per_node) == (2, 4, 1)
    assert cluster.intra_node_link.bw_bytes_per_s == pytest.approx(300e9)
    assert cluster.inter_node_link.bw_bytes_per_s == pytest.approx(25e9)  # 200 Gb/s
    problem = Problem(load_model("llama2-7b"), cluster, training_from_inputs(global_batch_size=64, seq_len=4096),
                      topology_text=TOPOLOGY_YAML.decode())
    assert Problem.from_key(problem.key()) == problem and problem.topology() is topo
    with pytest.raises(ValueError, match="zero bandwidth|bw"):
        topology_from_text(_topology_yaml(nic_bw="0Gbps").decode())


def test_paraplan_ui_rejects_a_bad_port_with_a_one_line_error(capsys):
    from planner.cli import main

    assert main(["ui", "--port", "70000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["paraplan: error: --port 70000: use a port between 1 and 65535"]
