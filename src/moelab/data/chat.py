"""Chat examples for instruction tuning: loss on assistant tokens only, and a resumable mixture sampler.

MoE-SFT (arXiv 2406.11256, Sec. 3-4) instruction-tunes on several data sets, drawing per example a data
set from the current sampling weights and taking its next example (cycling). Upstream's sampler could not
be resumed; ``MixtureSampler`` keeps its whole position in ``state_dict()``.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from moelab.data.packing import normalise_domain_weights

IGNORE_INDEX = -100  # label of tokens that carry no loss (torch.nn.CrossEntropyLoss ignore_index)

# The Vicuna v1.1 conversation format (FastChat) that LLaMA-MoE's SFT uses, as a chat template for tokenizers
# that have none (LLaMA-2 base): "<s>{system} USER: {q} ASSISTANT: {a}</s>USER: {q2} ASSISTANT:".
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
VICUNA_V1_1_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages and messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}"
    "{% else %}" + VICUNA_SYSTEM + "{% endif %} "
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}USER: {{ m['content'] }} "
    "{% elif m['role'] == 'assistant' %}ASSISTANT: {{ m['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


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


class MixtureSampler:
    """Per example, draw a data set from the sampling weights and take its next example; resumable.

    Each data set is read in a per-epoch shuffled order (``default_rng([seed, crc32(name), epoch])``) and
    cycles when exhausted. The data-set choices of batch b come from ``default_rng([seed, b])``. Hence the
    whole sampler state is (batch counter, per data set epoch and position, weights): ``state_dict()``.

    Args:
        datasets: name -> list of encoded examples (``encode_chat`` outputs).
        weights: name -> weight >= 0 (normalised).
        batch_size: examples per batch B.
        seed: sampling seed.
        pad_id: token id used to right-pad input_ids.

    Raises:
        ValueError: an empty data set or bad weights (names it).
    """

    def __init__(
        self,
        datasets: dict[str, list[dict]],
        weights: dict[str, float],
        batch_size: int,
        seed: int,
        pad_id: int,
    ):
        if not datasets:
            raise ValueError("MixtureSampler: no data sets given")
        if batch_size < 1:
            raise ValueError(f"MixtureSampler: batch_size must be >= 1, got {batch_size}")
        for name, examples in datasets.items():
            if not examples:
                raise ValueError(f"MixtureSampler: data set {name!r} is empty")
        self.names = sorted(datasets)
        self.datasets = {k: datasets[k] for k in self.names}
        self.batch_size = batch_size
        self.seed = seed
        self.pad_id = pad_id
        self.step = 0
        self.positions = {k: [0, 0] for k in self.names}  # name -> [epoch, index within the epoch's order]
        self._orders: dict[tuple[str, int], np.ndarray] = {}
        self.set_weights(weights)

    @property
    def weights(self) -> dict[str, float]:
        """Current normalised sampling weights."""
        return dict(zip(self.names, self._w.tolist(), strict=True))

    def set_weights(self, new: dict[str, float]) -> None:
        """Replace the sampling weights (dynamic mixing, MoE-SFT Sec. 3.2); normalised to sum 1."""
        self._w = normalise_domain_weights(new, self.names, "MixtureSampler")

    def _order(self, name: str, epoch: int) -> np.ndarray:
        key = (name, epoch)
        if key not in self._orders:
            self._orders = {k: v for k, v in self._orders.items() if k[0] != name}  # keep one epoch per set
            rng = np.random.default_rng([self.seed, zlib.crc32(name.encode()), epoch])
            self._orders[key] = rng.permutation(len(self.datasets[name]))
        return self._orders[key]

    def _next_example(self, name: str) -> dict:
        epoch, pos = self.positions[name]
        example = self.datasets[name][int(self._order(name, epoch)[pos])]
        pos += 1
        if pos == len(self.datasets[name]):
            epoch, pos = epoch + 1, 0
        self.positions[name] = [epoch, pos]
        return example

    def next_batch(self) -> dict:
        """The next batch, right-padded to its longest example.

        Returns:
            ``{"input_ids": LongTensor [B, T], "attention_mask": LongTensor [B, T],
            "labels": LongTensor [B, T] (-100 on padding), "domains": list of B names}``.
        """
        rng = np.random.default_rng([self.seed, self.step])
        which = rng.choice(len(self.names), size=self.batch_size, p=self._w)
        self.step += 1
        examples, domains = [], []
        for d in which:
            name = self.names[d]
            examples.append(self._next_example(name))
            domains.append(name)
        T = max(len(e["input_ids"]) for e in examples)
        input_ids = torch.full((self.batch_size, T), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((self.batch_size, T), dtype=torch.long)
        labels = torch.full((self.batch_size, T), -100, dtype=torch.long)
        for b, e in enumerate(examples):
            n = len(e["input_ids"])
            input_ids[b, :n] = torch.as_tensor(e["input_ids"])
            attention_mask[b, :n] = 1
            labels[b, :n] = torch.as_tensor(e["labels"])
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "domains": domains,
        }

    def state_dict(self) -> dict:
        """JSON-serialisable sampler state (batch counter, per data set [epoch, position], weights)."""
        return {
            "step": self.step,
            "positions": {k: list(v) for k, v in self.positions.items()},
            "weights": self.weights,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict()``; the next batches equal those the saved sampler would have drawn.

        Raises:
            ValueError: the state's data sets differ from this sampler's, or it was saved with another seed.
        """
        if sorted(state["positions"]) != self.names:
            raise ValueError(
                f"MixtureSampler state has data sets {sorted(state['positions'])}, sampler has {self.names}"
            )
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(
                f"MixtureSampler state was saved with seed {state['seed']}, sampler has seed {self.seed}"
            )
        for name, (_, pos) in state["positions"].items():
            if not 0 <= int(pos) < len(self.datasets[name]):
                raise ValueError(
                    f"MixtureSampler state: position {pos} of data set {name!r} is outside its {len(self.datasets[name])} examples"
                )
        self.step = int(state["step"])
        self.positions = {k: [int(e), int(p)] for k, (e, p) in state["positions"].items()}
        self.set_weights(state["weights"])
