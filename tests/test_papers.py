"""The one list of papers (moelab.papers): the evaluation plan, the report registry, the rules' labels and the
config schema all read it and agree."""

import re
from importlib import import_module
from pathlib import Path

import pytest
import yaml

import moelab.report
import moelab.report.papers as registry
from moelab.evaluate.plan import PlanError, check_evaluate_config, known_tasks
from moelab.papers import LM_EVAL_PAPERS, PAPER_LABELS, PAPERS

ROOT = Path(__file__).resolve().parents[1]


def test_the_list_has_names_and_labels_in_one_order():
    assert PAPERS == tuple(PAPER_LABELS) and len(set(PAPERS)) == len(PAPERS)
    assert all(re.fullmatch(r"[a-z0-9_]+", p) for p in PAPERS)
    assert all(PAPER_LABELS[p] for p in PAPERS)
    assert [p for p in PAPERS if p in LM_EVAL_PAPERS] == list(LM_EVAL_PAPERS)  # a subset, same order


def test_the_report_registry_reads_the_list():
    assert moelab.report.PAPERS is PAPERS and registry.PAPERS is PAPERS
    assert list(registry.OUTPUTS) == list(PAPERS) == list(registry.PENDING)
    # TABLES come paper by paper in the list's order, each from that paper's own module
    assert [s.paper for s in registry.TABLES] == sorted((s.paper for s in registry.TABLES), key=PAPERS.index)
    for paper in PAPERS:
        module = import_module(f"moelab.report.papers.{paper}")
        assert all(spec.paper == paper for spec in module.TABLES), paper
        assert not set(module.EXTRA_OUTPUTS) & {s.name for s in module.TABLES}, paper
        assert set(module.PENDING).isdisjoint(registry.OUTPUTS[paper]), paper


def test_the_evaluation_plan_takes_its_papers_from_the_list():
    task = known_tasks("local")[0]
    for paper in LM_EVAL_PAPERS:
        check_evaluate_config({"papers": {paper: {task: 0}}, "stages": {"moe": [paper]}})
    for paper in set(PAPERS) - set(LM_EVAL_PAPERS):
        with pytest.raises(PlanError, match=f"valid papers: {', '.join(LM_EVAL_PAPERS)}$"):
            check_evaluate_config({"papers": {paper: {task: 0}}, "stages": {}})
    schema = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    enum = schema["properties"]["evaluate"]["properties"]["papers"]["propertyNames"]["enum"]
    assert sorted(enum) == sorted(LM_EVAL_PAPERS)


def test_the_rules_take_the_labels_from_the_list():
    common = (ROOT / "rules" / "report_common.smk").read_text()
    assert "from moelab.papers import PAPER_LABELS, PAPERS" in common
    for smk in [*(ROOT / "rules").glob("*.smk"), ROOT / "Snakefile"]:
        text = smk.read_text()
        for label in PAPER_LABELS.values():
            assert f'"{label}"' not in text, f"{smk.name} spells the label {label!r}; use PAPER_LABELS"
        assert not re.search(r"^PAPERS\s*=", text, re.M), f"{smk.name} defines its own PAPERS"
