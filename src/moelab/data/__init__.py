"""Data layer: the download stage (models, corpora, instruction data, eval sets), packing, chat encoding.

The samplers that mix sources by weights live in ``moelab.mixture``.
"""

from moelab.data.chat import IGNORE_INDEX, encode_chat
from moelab.data.checkpoints import (
    check_gguf,
    load_tokenizer,
    make_tiny_model,
    materialise_gguf_model,
    materialise_llama_moe_v1,
    materialise_pretrained,
)
from moelab.data.files import package_dir, sha256_file, write_jsonl, write_manifest
from moelab.data.packing import pack_texts, read_jsonl
from moelab.data.sources import (
    EVAL_SOURCES,
    PRETRAIN_DOMAINS,
    SFT_DOMAINS,
    export_eval_task,
    extract_pretrain_domain,
    extract_sft_domain,
)

__all__ = [
    "EVAL_SOURCES",
    "IGNORE_INDEX",
    "PRETRAIN_DOMAINS",
    "SFT_DOMAINS",
    "check_gguf",
    "encode_chat",
    "export_eval_task",
    "extract_pretrain_domain",
    "extract_sft_domain",
    "load_tokenizer",
    "make_tiny_model",
    "materialise_gguf_model",
    "materialise_llama_moe_v1",
    "materialise_pretrained",
    "pack_texts",
    "package_dir",
    "read_jsonl",
    "sha256_file",
    "write_jsonl",
    "write_manifest",
]
