"""The app's pure helpers: units, the app's words for CLI and spec names, URL values (parse, encode,
notices), and the confidence read from docs/VALIDATION.md."""

from __future__ import annotations

import pytest

from ui import format as fmt
from ui import urlstate
from ui.confidence import closest, load_cases, model_params


def test_figures_carry_units_and_thousands_separators():
    assert fmt.seconds(14.2534) == "14.25 s" and fmt.seconds(0.0963) == "96.3 ms" and fmt.seconds(4.1e-4) == "410 us"
    assert fmt.seconds(450.2) == "450 s" and fmt.seconds(float("nan")) == "-"
    assert fmt.gib(49.37 * 2**30) == "49.4 GiB" and fmt.gib(213 * 2**20) == "213 MiB"
    assert fmt.tokens_per_s(588535.6485) == "588,536 tokens/s"
    assert fmt.tflops(186276863483.0283) == "186.3 GFLOP/s" and fmt.tflops(9.89e14) == "989.0 TFLOP/s"
    assert fmt.percent(0.5234) == "52.3%" and fmt.signed_percent(-0.0812) == "-8.1%"


@pytest.mark.parametrize("message, words, absent", [
    ("no candidate plans: the constraints leave no factorization of the GPU count (check --dp/--tp/--pp/--cp, "
     "their --max-* bounds and the cluster size)", "constraints", "--"),
    ("scale_to=64 exceeds the 8 processes this machine can host", "Processes: 64 is more than", "scale_to"),
    ("custom model: num_layers: Input should be greater than 0; vocab_size: Field required",
     "Layers: must be greater than 0", "num_layers"),
    ("training.seq_len: 4096 exceeds max_seq_len=2048 of gpt3-13b", "Sequence length: 4096", "seq_len"),
])
def test_messages_use_the_apps_words(message, words, absent):
    out = fmt.ui_words(message)
    assert words in out and absent not in out, out


def test_url_values_parse_or_say_why_not():
    nodes = urlstate.Param("nodes", "nodes", "int", 8, label="Nodes")
    assert urlstate.parse(nodes, "100000") == 100000  # out of range: still shown, with its error
    assert urlstate.parse(nodes, "1e3") == 1000
    for bad in ("abc", "2.5", "1e300", "inf"):
        with pytest.raises(ValueError, match="nodes="):
            urlstate.parse(nodes, bad)
    model = urlstate.Param("model", "model_preset", "str", "a", lambda: ["a", "b"], "model preset")
    with pytest.raises(ValueError, match="not one of a, b"):
        urlstate.parse(model, "c")
    zero = urlstate.Param("zero_stage", "c_zero_stage", "list", [], lambda: [0, 1, 2, 3])
    assert urlstate.parse(zero, "1,3") == [1, 3]
    assert urlstate.encode(zero, [1, 3]) == "1,3" and urlstate.encode(zero, []) is None
    assert urlstate.encode(nodes, 8) is None and urlstate.encode(nodes, 16) == "16"
    flag = urlstate.Param("fewer_gpus", "c_allow_fewer_gpus", "bool", False)
    assert urlstate.parse(flag, "1") is True and urlstate.encode(flag, True) == "1"


def test_confidence_comes_from_the_closest_validated_runs():
    from costmodel import load_model

    cases = load_cases()
    assert {c.source for c in cases} >= {"megatron2021", "megatron2021-zero3", "vtrain-multi", "mosaicml-fsdp",
                                         "h200-executor", "closed loop"}
    gpu = closest(cases, device="a100-80gb", params=model_params(load_model("gpt3-13b")), gpus=256, k=5)
    assert gpu is not None and len(gpu.cases) == 5 and all(c.device == "A100" for c in gpu.cases)
    errors = sorted(abs(c.error) for c in gpu.cases)
    assert gpu.typical_abs_error == errors[2] and gpu.max_abs_error == errors[-1]
    assert "No validated run" not in gpu.text()
    other = closest(cases, device="mi300x", params=7e9, gpus=64)
    assert "No validated run on mi300x" in other.text()
    cpu = closest(cases, device="cpu", params=model_params(load_model("tiny-llama")), gpus=2)
    assert all(c.device == "CPU" for c in cpu.cases) and "CPU" in cpu.text()
