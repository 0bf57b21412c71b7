"""Validation against published runs (the copy shipped with paraplan) and the doc writer."""

from __future__ import annotations

import pandas as pd
import pytest

from costmodel.calibration.published import (
    find_data_dir,
    megatron_table1_cases,
    predict_case,
    update_validation_doc,
    vtrain_cases,
)
from costmodel.calibration.published.doc import BEGIN, END
from costmodel.calibration.published.validate import ValidationResult, _summary

DATA = find_data_dir()
needs_data = pytest.mark.skipif(not (DATA / "vtrain").is_dir(), reason="published runs not shipped")


@needs_data
def test_megatron_table1_is_reproduced():
    cases = megatron_table1_cases(DATA)
    assert len(cases) == 10
    errors = [predict_case(c)["error"] for c in cases]
    assert sum(abs(e) for e in errors) / len(errors) < 0.08
    assert max(abs(e) for e in errors) < 0.15


@needs_data
def test_vtrain_multi_node_runs_are_reproduced():
    cases = vtrain_cases(DATA, which="multi")
    assert len(cases) == 109
    errors = [predict_case(c)["error"] for c in cases[::4]]
    assert sum(abs(e) for e in errors) / len(errors) < 0.15


@needs_data
def test_vtrain_single_node_sample():
    cases = vtrain_cases(DATA, which="single")
    assert len(cases) == 1440
    errors = [predict_case(c)["error"] for c in cases[::40]]
    assert sum(abs(e) for e in errors) / len(errors) < 0.20


def test_doc_writer_keeps_other_sections(tmp_path):
    doc = tmp_path / "VALIDATION.md"
    doc.write_text("# Validation\n\nintro\n\n<!-- other:begin -->\nkeep me\n<!-- other:end -->\n\n"
                   f"{BEGIN}\nold\n{END}\n\ntail\n")
    rows = pd.DataFrame([{"set": "megatron2021", "label": "GPT-x", "model": "m", "gpus": 8, "plan": "dp8",
                          "published": 100.0, "predicted": 103.0, "error": 0.03}])
    result = ValidationResult(None, rows, _summary(rows))
    update_validation_doc(doc, result)
    text = doc.read_text()
    assert "keep me" in text and "intro" in text and text.rstrip().endswith("tail") and "old" not in text
    assert "| GPT-x | 8 | dp8 | 100 | 103 | +3.0% |" in text
    update_validation_doc(doc, result)
    assert doc.read_text() == text                               # idempotent
    fresh = tmp_path / "new.md"
    update_validation_doc(fresh, result)
    assert BEGIN in fresh.read_text()
