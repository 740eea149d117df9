"""Chat examples for instruction tuning: loss on assistant tokens only.

MoE-SFT (arXiv 2406.11256, Sec. 3-4) instruction-tunes on several data sets mixed by sampling weights; the
encoded examples are drawn by ``moelab.mixture.MixtureSampler``.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100  # label of tokens that carry no loss (torch.nn.CrossEntropyLoss ignore_index)


def chat_turns(user: str, assistant: str) -> list[dict]:
    """One user turn and its assistant reply as chat messages ``[{"role", "content"}, ...]``."""
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool) -> list[int]:
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_chat(messages: list[dict], tokenizer, max_len: int) -> dict[str, torch.Tensor]:
    """Tokenise a conversation with the tokenizer's chat template; labels only on assistant turns.

    For each assistant turn i the template is rendered for ``messages[:i]`` with the generation prompt
    and for ``messages[:i+1]``; the tokens between the two (the reply) are labelled, up to and including
    the end-of-turn token (``tokenizer.eos_token_id``, ``<|im_end|>`` for SmolLM2) and not the template's
    trailing newline. This works for any template whose renders of prefixes are token prefixes of the
    full render (checked; SmolLM2's template has no ``{% generation %}`` markers).

    Args:
        messages: ``[{"role": "user" | "assistant" | "system", "content": str}, ...]``.
        tokenizer: an HF tokenizer with a chat template.
        max_len: keep the first ``max_len`` tokens.

    Returns:
        ``{"input_ids": LongTensor [T], "labels": LongTensor [T]}``, T <= max_len; labels are -100
        except on assistant reply tokens, where they equal input_ids (the model shifts them).

    Raises:
        ValueError: no chat template, no assistant turn, a message without role/content, ``max_len`` < 1,
            or a template whose prefix renders are not token prefixes.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("encode_chat: the tokenizer has no chat_template")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"encode_chat: message {i} needs 'role' and 'content', got {m!r}")
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("encode_chat: the conversation has no assistant turn to learn from")
    ids = _render(tokenizer, messages, add_generation_prompt=False)
    labels = [IGNORE_INDEX] * len(ids)
    eos = tokenizer.eos_token_id
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], add_generation_prompt=True) if i else []
        after = _render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if ids[: len(before)] != before or ids[: len(after)] != after:
            raise ValueError(
                f"encode_chat: rendering of messages[:{i + 1}] is not a token prefix of the whole chat"
            )
        start, end = len(before), len(after)
        reply = ids[start:end]
        if eos is not None and eos in reply:  # stop after the end-of-turn token
            end = start + len(reply) - reply[::-1].index(eos)
        labels[start:end] = ids[start:end]
    return {
        "input_ids": torch.tensor(ids[:max_len], dtype=torch.long),
        "labels": torch.tensor(labels[:max_len], dtype=torch.long),
    }


def pad_examples(examples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad encoded examples (:func:`encode_chat` outputs) to the longest one.

    Returns:
        ``{"input_ids": [B, T] (pad_id on padding), "attention_mask": [B, T] 0/1, "labels": [B, T]
        (IGNORE_INDEX on padding)}``, LongTensors.
    """
    T = max(len(e["input_ids"]) for e in examples)
    input_ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), T), dtype=torch.long)
    labels = torch.full((len(examples), T), IGNORE_INDEX, dtype=torch.long)
    for b, e in enumerate(examples):
        n = len(e["input_ids"])
        input_ids[b, :n] = torch.as_tensor(e["input_ids"])
        attention_mask[b, :n] = 1
        labels[b, :n] = torch.as_tensor(e["labels"])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
