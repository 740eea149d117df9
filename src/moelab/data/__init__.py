"""Data layer (floor 2): the corpora and instruction data of the download stage, packing, chat encoding,
calibration blocks, filters.

- ``moelab.data.local``: demo-scale extractors from PyPI packages; ``moelab.data.hub``: paper-scale hub streaming.
- ``moelab.data.packing`` / ``moelab.data.chat``: tokenise + pack text, encode chat examples.
- ``moelab.data.calibration``: the calibration blocks of construction and compression.
- ``moelab.data.filters``: the fluency and ad / boilerplate filters of the pretraining text (LLaMA-MoE sec. 4).

Models are materialised by ``moelab.models.materialise``, evaluation sets by ``moelab.evaluate.export``; the
samplers that mix sources by weights live in ``moelab.mixture``.
"""

from moelab.data.calibration import batches, calibration_blocks
from moelab.data.chat import IGNORE_INDEX, chat_turns, encode_chat
from moelab.data.hub import HUB_SHUFFLE_BUFFER, extract_hub_pretrain_domain, extract_hub_sft_domain
from moelab.data.local import PRETRAIN_DOMAINS, SFT_DOMAINS, extract_pretrain_domain, extract_sft_domain
from moelab.data.packing import pack_texts, read_jsonl

__all__ = [
    "HUB_SHUFFLE_BUFFER",
    "IGNORE_INDEX",
    "PRETRAIN_DOMAINS",
    "SFT_DOMAINS",
    "batches",
    "calibration_blocks",
    "chat_turns",
    "encode_chat",
    "extract_hub_pretrain_domain",
    "extract_hub_sft_domain",
    "extract_pretrain_domain",
    "extract_sft_domain",
    "pack_texts",
    "read_jsonl",
]
