"""Pretraining data filters: fluency (perplexity under the dense model) and advertisement / boilerplate removal.

LLaMA-MoE (arXiv 2406.16554, Sec. 4 "Continual pre-training", data filtering) cleans SlimPajama before continual
pre-training in two ways: it drops the least fluent text (high perplexity under the dense model) and removes
advertisements. Both filters here work on one domain at a time, on the records ``{"text", ...}`` the download
stage writes (``moelab.data.local`` / ``moelab.data.hub``), and keep the order of the documents they keep.

- Fluency: :func:`fluency_scores` = mean token NLL (nats/token) of each document's first ``max_tokens`` tokens
  under the dense model; :func:`fluency_filter` drops the ``floor(drop_fraction * N)`` documents of the domain
  with the highest NLL.
- Advertisements / boilerplate: :func:`ad_score` in [0, 1] = share of a document's units (non-blank lines, a
  long line split into sentences) that hit one of the rules in ``AD_RULES``; :func:`ad_filter` removes the
  documents scoring above ``threshold``. The rules and why they are rules (not a classifier): :data:`AD_RULES`.
- ``both`` = ads first, then fluency on what the ad filter kept (:func:`apply_filters`). A document's fluency
  score does not depend on the other documents, so the workflow scores each domain once (rule score_fluency,
  :func:`write_fluency_scores`) and the fluency and both filters reuse those scores.
- :func:`apply_filters` runs a filter over one domain and returns the report rows (``REPORT_FIELDS``): documents
  and tokens in / kept / removed per filter step and in total, with the worst removed documents as examples.

Deviation from upstream: LLaMA-MoE does not publish its filter code or thresholds; the fraction and threshold are
config values (``data.filters``) and the ad rules are ours.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from moelab.errors import ConfigError, DamagedFileError
from moelab.files import read_csv, write_csv

FILTERS = ("fluency", "ads", "both")
FLUENCY_KEY = "data.filters.fluency"
ADS_KEY = "data.filters.ads"


# --------------------------------------------------------------------------------------------------- fluency


@torch.no_grad()
def fluency_scores(
    model, tokenizer, texts: Sequence[str], max_tokens: int = 256, batch_size: int = 8, progress: bool = True
) -> np.ndarray:
    """Mean token negative log-likelihood of each document under ``model`` (the fluency filter's score).

    Each text is tokenised without special tokens and cut to its first ``max_tokens`` tokens. The separator
    :func:`moelab.data.packing.pack_texts` puts before every document in the pretraining stream (EOS; BOS if the
    tokenizer has no EOS) is put in front as context, so every kept token is predicted. Documents are scored in
    batches of ``batch_size``, longest first (less padding), right-padded with the padding masked out; the loss
    is accumulated in float32 whatever the model's dtype.

    Args:
        model: a causal LM (dense Llama or our LlamaMoE); it is put in eval mode and its device is used.
        tokenizer: its HF tokenizer.
        texts: N documents.
        max_tokens: tokens scored per document (>= 1); LLaMA-MoE does not say, config default 256.
        batch_size: documents per forward pass (>= 1).
        progress: show a tqdm bar over the batches (stderr, i.e. the rule's log).

    Returns:
        float64 array [N]: mean NLL in nats/token (perplexity = exp(score); higher = less fluent). A document
        with no token to predict (empty, or one token and no separator) scores ``+inf``.

    Raises:
        ConfigError (a ValueError): ``max_tokens`` not an integer >= 1 (names
            ``data.filters.fluency.max_tokens``).
        ValueError: ``batch_size`` < 1.
    """
    check_max_tokens(max_tokens)
    if batch_size < 1:
        raise ValueError(f"fluency_scores: batch_size must be >= 1, got {batch_size}")
    model.eval()
    device = next(model.parameters()).device
    context = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.bos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = token_ids(tokenizer, texts, max_tokens)
    seqs = [([context] if context is not None else []) + x for x in ids]
    scores = np.full(len(seqs), np.inf, dtype=np.float64)
    order = [i for i in sorted(range(len(seqs)), key=lambda i: (-len(seqs[i]), i)) if len(seqs[i]) >= 2]
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc="fluency (batches)", disable=not progress):
        idx = order[start : start + batch_size]
        B, T = len(idx), len(seqs[idx[0]])  # longest first: the first row sets the width
        input_ids = torch.full((B, T), pad, dtype=torch.long)
        mask = torch.zeros((B, T), dtype=torch.long)
        for row, i in enumerate(idx):
            input_ids[row, : len(seqs[i])] = torch.tensor(seqs[i])
            mask[row, : len(seqs[i])] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1].float()  # [B, T-1, V]
        nll = F.cross_entropy(logits.transpose(1, 2), input_ids[:, 1:], reduction="none")  # [B, T-1] nats
        valid = mask[:, 1:].float()  # [B, T-1]: 1 where the target is a real token
        scores[idx] = ((nll * valid).sum(1) / valid.sum(1)).double().cpu().numpy()
    return scores


SCORE_FIELDS = ("document", "nll")


def write_fluency_scores(scores, path) -> int:
    """Write the :func:`fluency_scores` of a domain as CSV ``document,nll`` (document = its index in the domain's
    JSONL, nll in nats/token; ``inf`` for a document with nothing to score). Returns the row count."""
    rows = (
        {"document": i, "nll": repr(float(x))} for i, x in enumerate(np.asarray(scores, dtype=np.float64))
    )
    return write_csv(rows, path, SCORE_FIELDS)


def read_fluency_scores(path, n_docs: int) -> np.ndarray:
    """The scores :func:`write_fluency_scores` wrote, as float64 [n_docs].

    Raises:
        DamagedFileError: not a score file, rows out of order, a value that is not a number (NaN included),
            or not ``n_docs`` rows (the scores belong to another version of the domain's data).
    """
    header, rows = read_csv(path)
    if tuple(header) != SCORE_FIELDS:
        raise DamagedFileError(path, f"columns {header}, expected {list(SCORE_FIELDS)}")
    if len(rows) != n_docs:
        raise DamagedFileError(path, f"{len(rows)} scores for {n_docs} documents (scored on other data?)")
    try:
        if any(int(r["document"]) != i for i, r in enumerate(rows)):
            raise DamagedFileError(path, "document indices are not 0, 1, ..., n-1 in order")
        scores = np.array([float(r["nll"]) for r in rows], dtype=np.float64)
    except ValueError as err:
        raise DamagedFileError(path, f"a value is not a number ({err})") from None
    if np.isnan(scores).any():
        raise DamagedFileError(path, f"{int(np.isnan(scores).sum())} NaN scores")
    return scores


def check_max_tokens(max_tokens) -> int:
    """``max_tokens`` if it is an integer >= 1.

    Raises:
        ConfigError (a ValueError): otherwise; names ``data.filters.fluency.max_tokens``.
    """
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ConfigError(f"{FLUENCY_KEY}.max_tokens must be an integer >= 1, got {max_tokens!r}")
    return max_tokens


def check_drop_fraction(drop_fraction) -> float:
    """``drop_fraction`` as a float if 0 <= it < 1.

    Raises:
        ConfigError (a ValueError): otherwise; names ``data.filters.fluency.drop_fraction``.
    """
    if (
        isinstance(drop_fraction, bool)
        or not isinstance(drop_fraction, int | float)
        or not 0 <= drop_fraction < 1
    ):
        raise ConfigError(f"{FLUENCY_KEY}.drop_fraction must be a number in [0, 1), got {drop_fraction!r}")
    return float(drop_fraction)


def n_dropped(n_docs: int, drop_fraction: float) -> int:
    """Documents the fluency filter drops from ``n_docs``: ``floor(drop_fraction * n_docs)``, so never more
    than the fraction (0.1 of 9 documents drops none). A 1e-9 slack keeps float products such as
    0.29 * 100 = 28.999... at 29."""
    return math.floor(check_drop_fraction(drop_fraction) * n_docs + 1e-9)


def fluency_filter(docs: Sequence[dict], scores, drop_fraction: float) -> tuple[list[dict], list[dict]]:
    """Drop the ``n_dropped(N, drop_fraction)`` least fluent documents of one domain (LLaMA-MoE Sec. 4).

    The documents with the highest score (mean NLL, :func:`fluency_scores`) go; among equal scores the later
    document goes first, so the result does not depend on sort stability. Both lists keep the input order.

    Args:
        docs: N records.
        scores: N scores (higher = less fluent; ``+inf`` allowed, NaN is not).
        drop_fraction: fraction removed, 0 <= f < 1.

    Returns:
        ``(kept, removed)``.

    Raises:
        ConfigError (a ValueError): bad ``drop_fraction`` (names ``data.filters.fluency.drop_fraction``).
        ValueError: not one score per document, or a NaN score.
    """
    return _split(docs, fluency_removed(scores, drop_fraction))


def fluency_removed(scores, drop_fraction: float) -> np.ndarray:
    """Boolean mask [N], True for the ``n_dropped(N, drop_fraction)`` highest scores (ties: the later goes).

    Raises:
        ConfigError (a ValueError): bad ``drop_fraction``.
        ValueError: ``scores`` is not 1-D or holds NaN.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"fluency scores must be one per document (1-D), got shape {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError(f"fluency_filter: {int(np.isnan(scores).sum())} NaN scores (a model producing NaN?)")
    n_drop = n_dropped(len(scores), drop_fraction)
    removed = np.zeros(len(scores), dtype=bool)
    removed[sorted(range(len(scores)), key=lambda i: (-scores[i], -i))[:n_drop]] = True
    return removed


def _split(docs: Sequence[dict], removed: np.ndarray) -> tuple[list[dict], list[dict]]:
    """``(kept, removed)`` documents by a boolean mask, each in input order."""
    if len(removed) != len(docs):
        raise ValueError(f"{len(docs)} documents but {len(removed)} filter decisions")
    kept = [d for d, r in zip(docs, removed, strict=True) if not r]
    dropped = [d for d, r in zip(docs, removed, strict=True) if r]
    return kept, dropped


# ------------------------------------------------------------------------------------ advertisements / boilerplate


@dataclass(frozen=True)
class AdRule:
    """One advertisement / boilerplate rule: ``hits(unit)`` is True when the unit (a line or sentence) is
    advertising or page furniture of this kind."""

    name: str
    description: str
    hits: Callable[[str], bool]


def _pattern(regex: str) -> Callable[[str], bool]:
    compiled = re.compile(regex, re.IGNORECASE)
    return lambda unit: compiled.search(unit) is not None


_LETTERS = re.compile(r"[^\W\d_]")
_WORD = re.compile(r"^[^\W\d_]+[.,:;!?]*$")  # a word of letters (with trailing punctuation)
_LABEL = re.compile(
    r"^(?:advertisement|sponsored(?: content)?|read more|continue reading|reply|share(?: this)?|"
    r"related (?:posts|articles|stories)|skip to (?:main )?content|leave a (?:comment|reply)|"
    r"posted (?:in|by|on)\b.*|tags?:.*|filed under\b.*|log ?in|sign ?in|sign ?up|back to top)\W*$",
    re.IGNORECASE,
)


def _shouting(unit: str) -> bool:
    """All-caps prose: >= 5 words of letters, every one of them upper case, making up >= 75% of the unit's
    whitespace tokens (so not code, a table or a list of names after "Enter")."""
    tokens = unit.split()
    words = [w for w in (t.strip("*_#\"'()[]") for t in tokens) if _WORD.match(w)]
    if len(words) < 5 or len(words) < 0.75 * len(tokens):
        return False
    return all(_LETTERS.sub(lambda m: m.group().upper(), w) == w for w in words)


def _label(unit: str) -> bool:
    """A whole unit of <= 8 words that is a web page label ("Advertisement", "Read more", "Posted by ...")."""
    return len(unit.split()) <= 8 and _LABEL.match(unit.strip("*_#[]()|-–—• ")) is not None


_CURRENCY = r"[$€£¥₹]"
AD_RULES: tuple[AdRule, ...] = (
    AdRule(
        "url",
        "a web address or e-mail address (http://, www., name@host.tld)",
        _pattern(r"https?://\S|\bwww\.\w|\b[\w.+-]+@[\w-]+\.[a-z]{2,}\b"),
    ),
    AdRule(
        "phone",
        "a phone number (555-123-4567, (555) 123 4567), 'toll-free', 'call us at / on / today / now'",
        _pattern(
            r"(?:\(\d{3}\)\s?|\b\d{3}[\s.-])\d{3}[\s.-]\d{4}\b|\btoll[- ]free\b|\bcall us (?:at|on|today|now)\b"
        ),
    ),
    AdRule(
        "price",
        "a shop price or discount, not a sum in the news ('$6 million'): an amount with cents ($19.99, 4,99 EUR), "
        "an amount after only / just / from / save / now or before off / each / per month, 'N% off'",
        _pattern(
            rf"{_CURRENCY}\s?\d{{1,4}}[.,]\d\d\b(?![.,]?\d)(?!\s*(?:million|billion|trillion|bn)\b)"
            rf"|\b\d{{1,4}}[.,]\d\d\s?(?:usd|eur|gbp)\b"
            rf"|\b(?:only|just|from|save|now)\s+{_CURRENCY}\s?\d+(?![.,]?\d*\s*(?:million|billion|trillion|bn)\b)"
            rf"|{_CURRENCY}\s?\d+(?:[.,]\d\d)?\s?(?:off|each|/mo\b|/month|per month|a month)"
            rf"|\b\d{{1,2}}\s?% off\b"
        ),
    ),
    AdRule(
        "call_to_action",
        "a call to action: buy / order / shop / call / subscribe now, click here, add to cart, free shipping, "
        "limited time, special offer, don't miss, save up to, money-back, coupon / promo code",
        _pattern(
            r"\b(?:buy|order|shop|call|act|subscribe|sign up|register|download|join) now\b"
            r"|\b(?:buy|order|subscribe|sign up|register) today\b"
            r"|\bclick (?:here|below|the link)\b|^\W*click to\b|\badd to (?:cart|basket)\b"
            r"|\bfree (?:shipping|delivery|trial|gift|quote)\b|\blimited[- ]time\b|\bspecial offers?\b"
            r"|\b(?:best|lowest) prices?\b|\bdon'?t miss\b|\bsave up to\b|\bmoney[- ]back\b|\bbest[- ]sellers?\b"
            r"|\b(?:promo|discount|coupon|voucher) codes?\b|\buse code\b"
        ),
    ),
    AdRule(
        "social",
        "a subscribe / follow / share prompt: subscribe to our, newsletter, follow / like us on, share this article, "
        "share on Facebook, mailing list, sign up for our",
        _pattern(
            r"\bsubscribe (?:to (?:our|my)|here|for free)\b|\bunsubscribe\b|\bnewsletters?\b"
            r"|\b(?:follow|like) us (?:on|@)|\bshare (?:this (?:article|post|story|page)|on (?:facebook|twitter|x)\b)"
            r"|\bmailing list\b|\bsign up for (?:our|a free|free)\b"
        ),
    ),
    AdRule(
        "footer",
        "page footer text: cookie notices, privacy policy, terms of service / use, all rights reserved, ©, "
        "(c) YEAR, a line starting 'powered by'",
        _pattern(
            r"\b(?:we|this (?:site|website)) uses? cookies\b|\bcookie (?:policy|settings)\b|\bprivacy policy\b"
            r"|\bterms (?:of|and) (?:service|use|conditions)\b|\ball rights reserved\b|©|\(c\) \d{4}|^\W*(?:proudly )?powered by\b"
        ),
    ),
    AdRule(
        "navigation",
        "a navigation bar or breadcrumb: three or more separators | • » · with one space each side between "
        "words (Home | News | Sport | Weather); not ASCII tables, whose columns are padded",
        _pattern(r"(?:[^\W_] [|•»·] (?=[^\W_]).*?){3}"),
    ),
    AdRule(
        "label",
        "a whole short line (<= 8 words) that is a page label: Advertisement, Sponsored, Read more, Reply, "
        "Share, Related posts, Skip to content, Leave a comment, Posted by/in/on ..., Tags: ..., Log in, Sign up",
        _label,
    ),
    AdRule("shouting", "all-caps text: >= 5 words, all upper case, >= 75% of the unit's tokens", _shouting),
)
"""The ad / boilerplate rules, in report order. A unit hits when any rule matches it.

Rule-based on purpose: there is no labelled advertisement data offline to train a classifier on, and a classifier
trained on a handful of hand-made ads would learn our examples rather than ads. Rules are deterministic, cost no
model pass, and every removal can be explained by the rule that fired (:func:`ad_rules_hit`).

Left out on purpose, because they removed clean text of our domains (measured on the demo corpora: plays, Python
standard library, OpenWebText, Wikipedia): "repeated short lines" (plays repeat speaker names such as
``**EARL OF SALISBURY**`` and stage directions such as ``_Exit_``; code repeats ``return None``), shouting of
fewer than 5 words or with a mixed-case word (the same speaker names, and stage directions
such as ``_Enter KING HENRY VI, GLOUCESTER, ..._``), and bare words such as "cookies" or "copyright" (recipes, articles
on copyright law). The page-label rule catches the repeated furniture of web pages ("Reply", "Read more") line by
line instead.
"""

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
LONG_LINE_CHARS = 200  # a longer line (a prose paragraph) is scored sentence by sentence


def ad_units(text: str) -> list[str]:
    """The units :func:`ad_score` counts: stripped non-blank lines; a line longer than ``LONG_LINE_CHARS``
    characters is split into sentences (after ``.``, ``!`` or ``?`` and whitespace)."""
    units = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if len(line) > LONG_LINE_CHARS:
            units += [s.strip() for s in _SENTENCE_END.split(line) if s.strip()]
        else:
            units.append(line)
    return units


def ad_rules_hit(unit: str) -> list[str]:
    """Names of the ``AD_RULES`` that one unit hits (empty: a clean unit)."""
    return [rule.name for rule in AD_RULES if rule.hits(unit)]


def ad_score(text: str) -> float:
    """Advertisement / boilerplate score in [0, 1]: the share of the text's units (:func:`ad_units`) that hit
    at least one rule of ``AD_RULES``. Every unit counts once, however long, so a page of short menu and
    footer lines around a short article scores high. A text with no unit (empty or blank) scores 0."""
    units = ad_units(text)
    if not units:
        return 0.0
    return sum(any(rule.hits(u) for rule in AD_RULES) for u in units) / len(units)


def check_threshold(threshold) -> float:
    """``threshold`` as a float if 0 <= it <= 1.

    Raises:
        ConfigError (a ValueError): otherwise; names ``data.filters.ads.threshold``.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
        raise ConfigError(f"{ADS_KEY}.threshold must be a number in [0, 1], got {threshold!r}")
    return float(threshold)


def ad_filter(docs: Sequence[dict], threshold: float) -> tuple[list[dict], list[dict]]:
    """Remove the documents whose ``ad_score(doc["text"]) > threshold``.

    Strictly above, so both ends of [0, 1] mean something: 1 keeps every document, 0 removes every document
    with at least one ad / boilerplate unit.

    Returns:
        ``(kept, removed)``, each in input order.

    Raises:
        ConfigError (a ValueError): ``threshold`` outside [0, 1] (names ``data.filters.ads.threshold``).
    """
    threshold = check_threshold(threshold)
    return _split(docs, np.array([ad_score(d["text"]) > threshold for d in docs], dtype=bool))


# ------------------------------------------------------------------------------------------- settings + report

REPORT_FIELDS = (
    "domain",
    "filter",
    "step",
    "documents_in",
    "documents_kept",
    "documents_removed",
    "tokens_in",
    "tokens_kept",
    "tokens_removed",
    "example_1",
    "example_2",
    "example_3",
)
"""Columns of a filter report. ``filter`` is what the rule ran (fluency, ads, both); ``step`` is one filter
step (ads, fluency; ``both`` has an ads row and then a fluency row on what the ads step kept) or ``total`` (the
whole filter: documents in = the domain, kept = the output). Tokens are the dense model's tokenizer tokens of
the whole documents (no special tokens). ``example_k``: the k-th most ad-like / least fluent removed document
(its first ``EXAMPLE_CHARS`` characters, whitespace collapsed; "" where fewer were removed); the total row
repeats the steps' examples in step order."""
EXAMPLE_CHARS = 200
N_EXAMPLES = 3


def steps(filter_name: str) -> tuple[str, ...]:
    """The filter steps of ``filter_name`` in the order they run: ``both`` = ads, then fluency.

    Raises:
        ValueError: unknown filter (lists ``FILTERS``).
    """
    if filter_name not in FILTERS:
        raise ValueError(f"unknown filter {filter_name!r}; filters: {list(FILTERS)}")
    return ("ads", "fluency") if filter_name == "both" else (filter_name,)


def needs_model(filter_name: str) -> bool:
    """Whether ``filter_name`` scores with the dense model (fluency and both) or needs only its tokenizer."""
    return "fluency" in steps(filter_name)


def check_settings(filter_name: str, settings: dict) -> None:
    """Check the ``data.filters`` settings that ``filter_name`` uses before any work is done.

    Raises:
        ValueError: unknown filter.
        ConfigError (a ValueError): a missing or out-of-range setting; names its key
            (``data.filters.fluency.drop_fraction``, ``...max_tokens``, ``data.filters.ads.threshold``).
    """
    wanted = {"ads": ("threshold",), "fluency": ("drop_fraction", "max_tokens")}
    for step in steps(filter_name):
        for key in wanted[step]:
            if key not in (settings.get(step) or {}):
                raise ConfigError(f"data.filters.{step}.{key} is missing (filter {filter_name!r})")
    if "ads" in steps(filter_name):
        check_threshold(settings["ads"]["threshold"])
    if "fluency" in steps(filter_name):
        check_drop_fraction(settings["fluency"]["drop_fraction"])
        check_max_tokens(settings["fluency"]["max_tokens"])


def token_ids(tokenizer, texts: Sequence[str], max_tokens: int | None = None) -> list[list[int]]:
    """Token ids of each text (no special tokens), cut to the first ``max_tokens`` when given."""
    if not texts:
        return []
    kw = {"truncation": True, "max_length": max_tokens} if max_tokens is not None else {}
    ids = tokenizer(list(texts), add_special_tokens=False, return_attention_mask=False, **kw)["input_ids"]
    return [list(x) for x in ids]


def _example(text: str) -> str:
    """First ``EXAMPLE_CHARS`` characters of a text with runs of whitespace (newlines too) made one space."""
    flat = " ".join(text.split())
    return flat if len(flat) <= EXAMPLE_CHARS else flat[: EXAMPLE_CHARS - 3] + "..."


def worst_examples(texts: Sequence[str], removed, scores) -> list[str]:
    """The removed texts with the highest scores (ties: the earlier first), at most ``N_EXAMPLES``, shortened
    to ``EXAMPLE_CHARS`` characters.

    Args:
        texts: n documents; removed: boolean mask [n]; scores: [n] (higher = more ad-like / less fluent).
    """
    worst = sorted(np.flatnonzero(np.asarray(removed, dtype=bool)), key=lambda i: (-float(scores[i]), i))
    return [_example(texts[i]) for i in worst[:N_EXAMPLES]]


def report_row(
    domain: str, filter_name: str, step: str, n_tokens: Sequence[int], removed, examples: Sequence[str]
) -> dict:
    """One report row (``REPORT_FIELDS``) of one step over the n documents it saw.

    Args:
        domain, filter_name, step: the row's labels.
        n_tokens: [n] token counts of the documents.
        removed: boolean mask [n], True where the step removed the document.
        examples: up to ``N_EXAMPLES`` removed texts (:func:`worst_examples`); missing ones are written "".
    """
    removed = np.asarray(removed, dtype=bool)
    n_tokens = np.asarray(n_tokens, dtype=np.int64)
    examples = list(examples[:N_EXAMPLES]) + [""] * (N_EXAMPLES - min(len(examples), N_EXAMPLES))
    return {
        "domain": domain,
        "filter": filter_name,
        "step": step,
        "documents_in": len(removed),
        "documents_kept": int((~removed).sum()),
        "documents_removed": int(removed.sum()),
        "tokens_in": int(n_tokens.sum()),
        "tokens_kept": int(n_tokens[~removed].sum()),
        "tokens_removed": int(n_tokens[removed].sum()),
        **{f"example_{k + 1}": e for k, e in enumerate(examples)},
    }


def apply_filters(
    docs: Sequence[dict],
    filter_name: str,
    settings: dict,
    tokenizer,
    model=None,
    *,
    domain: str = "",
    batch_size: int = 8,
    progress: bool = True,
    fluency=None,
) -> tuple[list[dict], list[dict]]:
    """Run ``filter_name`` (fluency, ads, or both: ads first, then fluency on what the ads step kept) over one
    domain's documents.

    Args:
        docs: the domain's records ``{"text", ...}`` (other fields are kept as they are).
        filter_name: one of ``FILTERS``.
        settings: the ``data.filters`` config section ``{"fluency": {drop_fraction, max_tokens}, "ads":
            {threshold}}``; only the sections the filter uses are read.
        tokenizer: the dense model's tokenizer (token counts of the report; the model's input).
        model: the dense model; needed by fluency and both unless ``fluency`` is given.
        domain: the domain's name, for the report rows.
        batch_size, progress: passed to :func:`fluency_scores`.
        fluency: the precomputed :func:`fluency_scores` of all N ``docs`` (array [N], e.g. from
            :func:`read_fluency_scores`); the fluency step then takes its documents' scores from it instead of
            running the model (same result: a document's score does not depend on the others).

    Returns:
        ``(kept, rows)``: the kept records in input order, and the report rows (``REPORT_FIELDS``): one per
        step, then the ``total`` row. In every row documents_in = kept + removed and likewise for tokens; a
        step's documents_in is the previous step's documents_kept.

    Raises:
        ValueError: unknown filter, bad or missing settings (ConfigError naming the key), no model and no
            ``fluency`` scores for the fluency step, or ``fluency`` not one score per document.
    """
    check_settings(filter_name, settings)
    if fluency is not None:
        fluency = np.asarray(fluency, dtype=np.float64)
        if fluency.shape != (len(docs),):
            raise ValueError(f"fluency scores: shape {fluency.shape}, but there are {len(docs)} documents")
    if needs_model(filter_name) and model is None and fluency is None:
        raise ValueError(f"filter {filter_name!r} scores fluency and needs the dense model; got none")
    texts = [d["text"] for d in docs]
    n_tokens = np.array([len(x) for x in token_ids(tokenizer, texts)], dtype=np.int64)
    alive = np.arange(len(docs))  # indices of the documents still kept
    removed_total = np.zeros(len(docs), dtype=bool)
    rows, removed_examples = [], []
    for step in steps(filter_name):
        step_texts = [texts[i] for i in alive]
        if step == "ads":
            scores = np.array([ad_score(t) for t in step_texts])
            removed = scores > check_threshold(settings["ads"]["threshold"])
        else:
            fl = settings["fluency"]
            if fluency is not None:
                scores = fluency[alive]
            else:
                scores = fluency_scores(model, tokenizer, step_texts, fl["max_tokens"], batch_size, progress)
            removed = fluency_removed(scores, fl["drop_fraction"])
        examples = worst_examples(step_texts, removed, scores)
        rows.append(report_row(domain, filter_name, step, n_tokens[alive], removed, examples))
        removed_examples += examples
        removed_total[alive[removed]] = True
        alive = alive[~removed]
    # the total's examples: the steps' own, in step order (ad scores and NLLs do not share a scale)
    rows.append(report_row(domain, filter_name, "total", n_tokens, removed_total, removed_examples))
    return [docs[i] for i in alive], rows


def concat_reports(reports: Sequence[tuple[list[str], list[dict]]], names: Sequence[str]) -> list[dict]:
    """The rows of several filter reports (``(header, rows)`` as ``moelab.files.read_csv`` returns), in order.

    Raises:
        ValueError: a report whose header is not ``REPORT_FIELDS`` (names it, from ``names``).
    """
    out = []
    for (header, rows), name in zip(reports, names, strict=True):
        if tuple(header) != REPORT_FIELDS:
            raise ValueError(
                f"{name}: not a filter report (columns {header}, expected {list(REPORT_FIELDS)})"
            )
        out += rows
    return out
