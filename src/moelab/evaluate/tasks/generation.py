"""Scoring of the generation tasks (referenced from the YAML templates with `!function generation.<name>`).

lm-eval calls `process_results(doc, results)` once per evaluated doc; `results` holds one entry per request,
here the single `generate_until` request's output after the task's filter: a string (default filter
`take_first`), or the list of all sampled strings for the code tasks (filter `keep_all_samples`).

- QA exact match (NQ-open, TriviaQA): SQuAD-style normalisation (Rajpurkar et al. 2016, as lm-eval's
  nq_open/triviaqa): lower case, punctuation and the articles a/an/the removed, whitespace collapsed; a hit when
  the normalised prediction equals any normalised gold alias.
- GSM8K (Cobbe et al. 2021) chain of thought (Wei et al. 2022): `exact_match` takes the number after
  "The answer is" (the exemplars' format, lm-eval's strict match), `exact_match_flexible` the last number of
  the generation; both compare to the gold number with commas and a trailing ".0"/"." removed.
- BBH (Suzgun et al. 2022): exact match of the stripped generation against the accepted targets.
- HumanEval / MBPP: each sample runs with the problem's tests in `moelab.evaluate.sandbox`; pass@k is the
  unbiased estimator of Chen et al. 2021 (`moelab.evaluate.passk`) for every k in (1, 10, 100) with k <= n.
"""

from __future__ import annotations

import re
import string

from moelab.evaluate.passk import pass_at_k
from moelab.evaluate.sandbox import run_programs

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_NUMBER = re.compile(r"-?[\d,]*\.?\d+")
_STRICT = re.compile(r"[Tt]he answer is\s*\$?\s*(-?[\d,]*\.?\d+)")
PASS_AT_KS = (1, 10, 100)
CODE_TIMEOUT_S = 10.0  # per program; HumanEval's harness uses 3 s on a GPU box, CPU runs share cores
CODE_MEMORY_MB = 1024
CODE_WORKERS = 2


def normalize_answer(text: str) -> str:
    """SQuAD-style answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION))
    return " ".join(text.split())


def exact_match_any(prediction: str, golds: list[str]) -> float:
    """1.0 if the normalised prediction equals a normalised gold answer, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in golds))


def nq_open_results(doc: dict, results: list[str]) -> dict[str, float]:
    """NQ-open (Kwiatkowski et al. 2019; Lee et al. 2019): gold answers in `doc["answer"]`."""
    return {"exact_match": exact_match_any(results[0], list(doc["answer"]))}


def triviaqa_results(doc: dict, results: list[str]) -> dict[str, float]:
    """TriviaQA (Joshi et al. 2017), no-context: gold aliases in `doc["answer"]["aliases"]`."""
    return {"exact_match": exact_match_any(results[0], list(doc["answer"]["aliases"]))}


def _clean_number(text: str) -> str:
    text = text.replace(",", "").rstrip(".")
    if re.fullmatch(r"-?\d+\.0+", text):
        text = text.split(".")[0]
    return text


def gsm8k_extract(generation: str) -> tuple[str | None, str | None]:
    """(strict, flexible) answers of a chain of thought: the number after "The answer is", the last number."""
    strict = _STRICT.search(generation)
    numbers = _NUMBER.findall(generation)
    return (
        _clean_number(strict.group(1)) if strict else None,
        _clean_number(numbers[-1]) if numbers else None,
    )


def gsm8k_results(doc: dict, results: list[str]) -> dict[str, float]:
    """GSM8K: `doc["answer"]` is the gold number (string)."""
    gold = _clean_number(str(doc["answer"]))
    strict, flexible = gsm8k_extract(results[0])
    return {"exact_match": float(strict == gold), "exact_match_flexible": float(flexible == gold)}


def bbh_results(doc: dict, results: list[str]) -> dict[str, float]:
    """BBH: the stripped generation must equal one of `doc["targets"]` (case and spacing ignored)."""
    pred = " ".join(results[0].split()).lower()
    return {"exact_match": float(any(pred == " ".join(t.split()).lower() for t in doc["targets"]))}


def keep_all_samples(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """lm-eval custom filter: keep every sampled generation of a doc (the default keeps only the first)."""
    return [list(r) for r in resps]


def humaneval_program(doc: dict, completion: str) -> str:
    """Prompt (signature + docstring) + completion + the problem's `check` function, called on the entry point."""
    return f"{doc['prompt']}{completion}\n\n{doc['test']}\n\ncheck({doc['entry_point']})\n"


def mbpp_program(doc: dict, completion: str) -> str:
    """Completion + setup code + the three test asserts."""
    tests = "\n".join(doc["test_list"])
    return f"{completion}\n\n{doc.get('test_setup_code') or ''}\n{tests}\n"


def pass_at_ks(passed: list[bool]) -> dict[str, float]:
    """{"pass@k": unbiased estimate} for every k in PASS_AT_KS with k <= n = len(passed)."""
    n, c = len(passed), sum(passed)
    return {f"pass@{k}": pass_at_k(n, c, k) for k in PASS_AT_KS if k <= n}


def _code_results(programs: list[str]) -> dict[str, float]:
    runs = run_programs(programs, workers=CODE_WORKERS, timeout_s=CODE_TIMEOUT_S, memory_mb=CODE_MEMORY_MB)
    return pass_at_ks([r.passed for r in runs])


def humaneval_results(doc: dict, results: list[list[str]]) -> dict[str, float]:
    """HumanEval: run every sample of the doc with its tests; pass@k over the n samples."""
    return _code_results([humaneval_program(doc, c) for c in results[0]])


def mbpp_results(doc: dict, results: list[list[str]]) -> dict[str, float]:
    """MBPP: run every sample of the doc with its tests; pass@k over the n samples."""
    return _code_results([mbpp_program(doc, c) for c in results[0]])
