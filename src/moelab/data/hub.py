"""Hub data sets at paper scale (SlimPajama domains, instruction sets), streamed and written as our JSONL.

The same layout as the demo's local extractors (``moelab.data.local``), so every later stage reads one format;
tested against local folders shaped like the hub's.
"""

from __future__ import annotations

from pathlib import Path

from moelab.data.chat import chat_turns
from moelab.files import write_jsonl

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
        return chat_turns(user, str(reply).strip())
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
