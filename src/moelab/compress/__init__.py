"""Compression of MoE models: expert slimming and expert trimming (arXiv 2406.02500)."""

from moelab.compress.drop import (
    DROP_MODES,
    block_drop,
    block_drop_scores,
    block_hidden_states,
    block_similarity,
    choose_blocks,
    drop_blocks,
)

__all__ = [
    "DROP_MODES",
    "block_drop",
    "block_drop_scores",
    "block_hidden_states",
    "block_similarity",
    "choose_blocks",
    "drop_blocks",
]
