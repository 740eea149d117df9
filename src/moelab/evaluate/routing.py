"""Routing analysis: which experts each data source's tokens are sent to, per MoE layer.

LLaMA-MoE (arXiv 2406.16554, expert-load heatmaps per domain and layer) finds that deeper layers route the
domains more distinctly; MoE-SFT (arXiv 2406.11256, its gate-load representation of a data set) counts the same
top-k memberships per instruction data set. For an MoE checkpoint and a few sources of text this module computes, per
MoE decoder layer, over the non-padding tokens:

    gate load     tokens_e = number of tokens whose top-k contains expert e; fraction_e = tokens_e / (T * K)
                  (the fraction of the layer's top-k assignments; sums to 1 over experts)
    co-selection  count_ij = number of tokens whose top-k contains both i and j (i != j), count_ii = tokens_i;
                  fraction_ij = count_ij / T (symmetric N x N matrix, all sources together)
    specialisation  mean over pairs of sources of the Jensen-Shannon distance (scipy, base 2, in [0, 1])
                  between their gate-load distributions: 0 = every source uses the experts alike.

Shape legend: B batch, L sequence length, T = non-padding tokens, K = top_k, N = num_experts of the layer.
The experts' choices are read from the routers' own outputs (forward hooks on each MoE layer's router), so
every router type is analysed exactly as it routes in eval mode (no noise).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from moelab.files import verify_model_folder
from moelab.models.routing_counts import count_routing, moe_routers

PRETRAIN_KIND, SFT_KIND = "pretrain_domain", "sft_domain"
log = logging.getLogger(__name__)


def pad_batches(
    sequences: list[torch.Tensor], batch_size: int, pad_id: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Right-pad 1-D token sequences into (input_ids [B, L], attention_mask [B, L]) batches of `batch_size`."""
    out = []
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start : start + batch_size]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, seq in enumerate(chunk):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        out.append((ids, mask))
    return out


def pretrain_sequences(texts: list[str], tokenizer, tokens: int, seq_len: int) -> list[torch.Tensor]:
    """The last `tokens // seq_len` packed blocks of a pretraining domain (its tail, where the pretraining
    stage's held-out blocks come from; `moelab.data.pack_texts` packing), at least one block.

    Raises:
        ValueError: tokens < 1 or fewer than seq_len tokens in the texts.
    """
    from moelab.data.packing import pack_texts

    if tokens < 1:
        raise ValueError(f"routing tokens per source must be >= 1, got {tokens}")
    blocks = pack_texts(texts, tokenizer, seq_len)  # [n_blocks, seq_len]
    n = max(1, min(tokens // seq_len, blocks.shape[0]))
    return list(blocks[-n:])


def sft_sequences(records: list[dict], tokenizer, tokens: int, seq_len: int) -> list[torch.Tensor]:
    """Chat-template token sequences (prompt and reply, each cut to `seq_len`) of the last instruction examples
    of a data set, up to `tokens` tokens in all (the last sequence is cut to fit).

    Raises:
        ValueError: tokens < 1, or a record without "messages" (as `moelab.data.chat.encode_chat`).
    """
    from moelab.data.chat import encode_chat

    if tokens < 1:
        raise ValueError(f"routing tokens per source must be >= 1, got {tokens}")
    out, total = [], 0
    for record in reversed(records):
        if "messages" not in record:
            raise ValueError(f"instruction record has no 'messages': {str(record)[:80]}")
        ids = encode_chat(record["messages"], tokenizer, seq_len)["input_ids"][: tokens - total]
        out.append(ids)
        total += len(ids)
        if total >= tokens:
            break
    return out


def gate_load_rows(source: str, kind: str, stats: Mapping[int, dict]) -> list[dict]:
    """gate_load.csv rows of one source: source, kind, layer, expert, tokens, fraction (of the T*K slots)."""
    rows = []
    for layer, s in sorted(stats.items()):
        slots = s["tokens"] * s["top_k"]
        for expert, count in enumerate(s["load"].tolist()):
            rows.append(
                {
                    "source": source,
                    "kind": kind,
                    "layer": layer,
                    "expert": expert,
                    "tokens": int(count),
                    "fraction": count / slots if slots else 0.0,
                }
            )
    return rows


def coselection_rows(all_stats: Iterable[Mapping[int, dict]]) -> list[dict]:
    """coselection.csv rows over all sources: layer, expert_i, expert_j, count, fraction (of the layer's tokens)."""
    pairs: dict[int, torch.Tensor] = {}
    tokens: dict[int, int] = {}
    for stats in all_stats:
        for layer, s in stats.items():
            pairs[layer] = s["pairs"] if layer not in pairs else pairs[layer] + s["pairs"]
            tokens[layer] = tokens.get(layer, 0) + s["tokens"]
    rows = []
    for layer in sorted(pairs):
        n = pairs[layer].shape[0]
        for i, j in itertools.product(range(n), range(n)):
            count = int(pairs[layer][i, j])
            rows.append(
                {
                    "layer": layer,
                    "expert_i": i,
                    "expert_j": j,
                    "count": count,
                    "fraction": count / tokens[layer] if tokens[layer] else 0.0,
                }
            )
    return rows


def mean_pairwise_js(distributions: list[list[float]]) -> float:
    """Mean Jensen-Shannon distance (base 2, in [0, 1]) over all pairs of distributions; NaN for fewer than 2."""
    from scipy.spatial.distance import jensenshannon

    pairs = list(itertools.combinations(distributions, 2))
    if not pairs:
        return float("nan")
    return float(sum(jensenshannon(p, q, base=2) for p, q in pairs) / len(pairs))


def specialisation_rows(gate_load: list[dict]) -> list[dict]:
    """specialisation.csv rows: layer, score (mean pairwise JS distance of all sources' gate loads),
    score_pretrain_domain and score_sft_domain (the same within one kind of source; NaN with < 2 sources)."""
    by_layer: dict[int, dict[tuple[str, str], list[float]]] = {}
    for row in gate_load:
        by_layer.setdefault(row["layer"], {}).setdefault((row["kind"], row["source"]), []).append(
            row["fraction"]
        )
    rows = []
    for layer, sources in sorted(by_layer.items()):
        rows.append(
            {
                "layer": layer,
                "score": mean_pairwise_js(list(sources.values())),
                f"score_{PRETRAIN_KIND}": mean_pairwise_js(
                    [v for (k, _), v in sources.items() if k == PRETRAIN_KIND]
                ),
                f"score_{SFT_KIND}": mean_pairwise_js([v for (k, _), v in sources.items() if k == SFT_KIND]),
            }
        )
    return rows


def analyse_routing(
    model_dir: Path,
    sources: Mapping[str, tuple[str, list[torch.Tensor]]],
    *,
    batch_size: int = 8,
    device: str = "cpu",
    dtype: str = "float32",
) -> dict[str, list[dict]]:
    """Load an MoE checkpoint and build the three routing tables for token sequences per source.

    Args:
        model_dir: `save_pretrained` folder of a LlamaMoE model.
        sources: {source name: (kind, [1-D token tensors])}, kind "pretrain_domain" or "sft_domain".
        batch_size: sequences per forward pass. device, dtype: where and in which precision to run.
    Returns:
        {"gate_load": rows, "coselection": rows, "specialisation": rows} (see the row functions).
    Raises:
        ValueError: the checkpoint has no MoE layer, an empty source, an unknown kind.
        FileNotFoundError / DamagedFileError: a weights file is missing or damaged (named; checked first).
    """
    from transformers import AutoModelForCausalLM

    import moelab.models  # noqa: F401  (registers LlamaMoE with the Auto classes)

    verify_model_folder(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).to(device)
    moe_routers(model)  # fail before any work for a dense checkpoint
    pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    gate_load, per_source = [], []
    for name, (kind, seqs) in sources.items():
        if kind not in (PRETRAIN_KIND, SFT_KIND):
            raise ValueError(f"source {name!r}: kind must be {PRETRAIN_KIND!r} or {SFT_KIND!r}, got {kind!r}")
        if not seqs:
            raise ValueError(f"source {name!r} has no token sequence")
        stats = count_routing(model, pad_batches(seqs, batch_size, pad_id))
        log.info("routing %s (%s): %d tokens", name, kind, sum(len(x) for x in seqs))
        gate_load += gate_load_rows(name, kind, stats)
        per_source.append(stats)
    return {
        "gate_load": gate_load,
        "coselection": coselection_rows(per_source),
        "specialisation": specialisation_rows(gate_load),
    }
