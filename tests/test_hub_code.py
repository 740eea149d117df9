"""The hub suite's code metric: lm-eval's HumanEval/MBPP helpers get moelab's sandboxed `code_eval`."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest

from moelab.evaluate import hub, sandbox
from moelab.evaluate.hub_code import SandboxedCodeEval, sandboxed_code_eval

needs_bwrap = pytest.mark.skipif(
    sandbox.isolation_problem("bwrap") is not None, reason="bubblewrap / user namespaces unavailable here"
)
ADD_TEST = "assert add(2, 3) == 5"
RIGHT, WRONG = "def add(a, b):\n    return a + b", "def add(a, b):\n    return a * b"


def test_compute_matches_hand_computed_pass_at_k():
    """Problem 0: 2 of 3 candidates right; problem 1: 0 of 3. pass@1 = (2/3 + 0) / 2; pass@2 = (1 + 0) / 2
    (1 - C(1, 2)/C(3, 2) = 1); k = 5 > n = 3 is left out, as Hugging Face's code_eval does."""
    metric = SandboxedCodeEval()
    with sandbox.using("process"):
        scores, results = metric.compute(
            references=[ADD_TEST, "assert sub(3, 1) == 2"],
            predictions=[[RIGHT, WRONG, RIGHT], ["def sub(a, b): return b - a"] * 3],
            k=[1, 2, 5],
        )
    assert scores == pytest.approx({"pass@1": 1 / 3, "pass@2": 0.5})
    assert [row["passed"] for _, row in results[0]] == [True, False, True]
    assert results[0][1] == (1, {"task_id": 0, "completion_id": 1, "passed": False, "result": "failed"})
    assert (metric.calls, metric.programs, metric.problems) == (1, 6, 2)


def test_compute_reports_time_outs_and_rejects_bad_input():
    metric = SandboxedCodeEval()
    with sandbox.using("process"):
        scores, results = metric.compute(
            references=["pass"], predictions=[["while True: pass"]], k=1, timeout=1
        )
    assert scores == {"pass@1": 0.0} and results[0][0][1]["result"] == "timed out"
    with pytest.raises(ValueError, match="2 references but 1"):
        metric.compute(references=["a", "b"], predictions=[["x"]])
    with pytest.raises(ValueError, match="no candidate"):
        metric.compute(references=["a"], predictions=[[]])
    with pytest.raises(ValueError, match="k must be"):
        metric.compute(references=["a"], predictions=[["x"]], k=[0])


def test_block_swaps_the_metric_and_restores_everything(monkeypatch):
    import evaluate

    monkeypatch.setenv("HF_ALLOW_CODE_EVAL", "1")
    stale = types.ModuleType("lm_eval.tasks.humaneval.utils")
    stale.__mtime__ = 0  # as lm-eval's YAML loader caches a task helper, holding the real metric
    monkeypatch.setitem(sys.modules, stale.__name__, stale)
    original = evaluate.load
    with sandboxed_code_eval() as metric:
        assert evaluate.load("code_eval") is metric
        assert os.environ["HF_ALLOW_CODE_EVAL"] == "0"  # Hugging Face's executor refuses inside
        assert stale.__name__ not in sys.modules  # re-imported inside, so it fetches the sandboxed metric
    assert evaluate.load is original and os.environ["HF_ALLOW_CODE_EVAL"] == "1"


def _lm_eval_yaml(name: str) -> Path:
    import lm_eval.tasks

    return next(Path(lm_eval.tasks.__file__).parent.rglob(f"{name}.yaml"))


@needs_bwrap
def test_lm_eval_humaneval_and_mbpp_helpers_score_through_bwrap(tmp_path):
    """lm-eval's own task helpers, imported inside the block, run candidates in the sandbox: a candidate that
    touches a host file via ctypes passes its test but leaves no file (Hugging Face's executor would create it)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    marker = tmp_path / "escaped"
    escape = f"import ctypes\nctypes.CDLL(None).system(b'touch {marker}')\n{RIGHT}"
    with sandbox.using("bwrap"), sandboxed_code_eval() as metric:
        cfg = hub.hub_spec("humaneval_pass10", resolve=True)  # imports lm-eval's humaneval helper (self-test)
        humaneval_pass_at_k = cfg["metric_list"][0]["metric"]
        assert cfg["metric_list"][0]["k"] == [10]
        scores = humaneval_pass_at_k(references=[ADD_TEST], predictions=[[escape] * 3 + [WRONG] * 7], k=[10])
        mbpp = load_yaml(_lm_eval_yaml("mbpp"), resolve_func=True)
        mbpp_pass_at_1 = mbpp["metric_list"][0]["metric"]
        assert mbpp_pass_at_1(references=[ADD_TEST], predictions=[RIGHT]) == 1.0
        assert mbpp_pass_at_1(references=[ADD_TEST], predictions=[WRONG]) == 0.0
    assert scores == {"pass@10": 1.0}
    assert not marker.exists()
    assert metric.calls == 2 + 3  # the two helpers' import-time self-tests + our three calls
    assert metric.programs == 2 + 10 + 2
    assert metric.problems == 3  # the self-tests are not scored docs


def _fake_hub_run(monkeypatch, tmp_path, score_in_sandbox: bool):
    """run_hub_eval on HumanEval with lm-eval's simple_evaluate and model loading replaced by fakes."""
    import evaluate
    import lm_eval

    import moelab.evaluate.harness

    (tmp_path / "config.json").write_text("{}")
    seen = {}

    def simple_evaluate(**request):
        seen["allow"] = os.environ.get("HF_ALLOW_CODE_EVAL")
        if score_in_sandbox:
            evaluate.load("code_eval").compute(
                references=[ADD_TEST] * 2, predictions=[[RIGHT], [WRONG]], k=[1]
            )
        return {
            "results": {"humaneval": {"pass@1,create_test": 0.5}},
            "n-shot": {"humaneval": 0},
            "n-samples": {"humaneval": {"original": 164, "effective": 2}},
        }

    monkeypatch.setattr(lm_eval, "simple_evaluate", simple_evaluate)
    monkeypatch.setattr(moelab.evaluate.harness, "load_hflm", lambda *a, **k: object())
    with sandbox.using("process"):
        summary = hub.run_hub_eval(tmp_path, ["humaneval"], limit=2)
    return summary, seen


def test_run_hub_eval_keeps_sandboxed_code_results(monkeypatch, tmp_path):
    summary, seen = _fake_hub_run(monkeypatch, tmp_path, score_in_sandbox=True)
    assert summary["primary"] == {"humaneval": 0.5} and summary["tasks"]["humaneval"]["n"] == 2
    assert seen["allow"] == "0"


def test_run_hub_eval_refuses_code_results_scored_outside_the_sandbox(monkeypatch, tmp_path):
    with pytest.raises(RuntimeError, match=r"2 docs evaluated but only 0 scored in moelab's sandbox"):
        _fake_hub_run(monkeypatch, tmp_path, score_in_sandbox=False)


def test_the_refusal_counts_docs_not_programs_and_ignores_the_self_test():
    """Many samples of one sandboxed doc do not cover other docs scored outside (helper-found gap)."""
    merged = {"n-samples": {"humaneval_pass10": {"effective": 1}, "mbpp": {"effective": 10}}}
    with pytest.raises(RuntimeError, match="11 docs evaluated but only 1 scored"):
        hub._require_sandboxed(["humaneval_pass10", "mbpp"], merged, problems=1)
    hub._require_sandboxed(["humaneval_pass10", "mbpp"], merged, problems=11)
    metric = SandboxedCodeEval()
    with sandbox.using("process"):
        metric.compute(references=["assert add(2, 3)==5"], predictions=[["def add(a,b): return a*b"]], k=[1])
    assert (metric.calls, metric.problems) == (1, 0)  # lm-eval's import-time self-test
