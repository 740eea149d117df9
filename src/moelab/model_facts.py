"""Sizes of a model read without loading its weights (ground floor: imports only ``files`` and ``errors``).

The workflow's config checks (`moelab.config.check_model_facts`) need the dense model's layer count, widths
and context length before any job runs: from ``model.tiny`` (the config itself), from a local folder's
``config.json``, or from the metadata header of a GGUF file (the demo's SmolLM2). transformers / gguf would
take seconds (``gguf.GGUFReader`` maps and indexes every tensor: ~3 s for the 100 MB demo file); this header
reader stops after the key-value section (~10 ms).

GGUF layout (ggml docs/gguf.md, version 2 and 3): magic ``GGUF``, uint32 version, uint64 tensor count,
uint64 key-value count, then per key: uint64 length + UTF-8 name, uint32 value type, value (little-endian).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from moelab.errors import ConfigError
from moelab.files import looks_local, package_file

# GGUF value types -> struct format (8 = string, 9 = array are read by hand)
# SmolLM2-135M's LlamaConfig fields (the demo model; its GGUF header gives the same sizes): the shape the benchmarks
# build random dense and MoE models of.
SMOLLM2_135M = dict(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    max_position_embeddings=8192,
    rope_theta=100000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


@dataclass(frozen=True)
class ModelFacts:
    """The sizes the config checks need (a LLaMA-architecture model; names as in transformers' LlamaConfig)."""

    num_hidden_layers: int
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int | None
    source: str  # where the facts were read, for error messages
    num_experts: int | None = None  # routed experts per MoE layer (None: a dense model)
    top_k: int | None = None  # experts per token


def _read(fh, fmt: str):
    size = struct.calcsize("<" + fmt)
    data = fh.read(size)
    if len(data) != size:
        raise EOFError("truncated GGUF header")
    return struct.unpack("<" + fmt, data)[0]


def _value(fh, vtype: int):
    if vtype in _SCALARS:
        return _read(fh, _SCALARS[vtype])
    if vtype == 8:
        return fh.read(_read(fh, "Q")).decode("utf-8", "replace")
    if vtype == 9:
        etype, count = _read(fh, "I"), _read(fh, "Q")
        if etype in _SCALARS:  # skip fixed-size arrays (token scores, types) without decoding
            fh.seek(count * struct.calcsize("<" + _SCALARS[etype]), 1)
        else:
            for _ in range(count):
                _value(fh, etype)
        return None
    raise ValueError(f"unknown GGUF value type {vtype}")


def gguf_metadata(path: str | Path) -> dict:
    """The scalar and string key-values of a GGUF file's header (arrays are skipped: value None).

    Raises:
        ConfigError: ``path`` is not a GGUF file or its header is truncated (names the file).
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            if fh.read(4) != b"GGUF":
                raise ValueError("no GGUF magic")
            version = _read(fh, "I")
            if version not in (2, 3):
                raise ValueError(f"GGUF version {version} is not 2 or 3")
            _read(fh, "Q")  # tensor count
            meta = {}
            for _ in range(_read(fh, "Q")):
                key = fh.read(_read(fh, "Q")).decode("utf-8")
                meta[key] = _value(fh, _read(fh, "I"))
    except (OSError, ValueError, EOFError, struct.error) as err:
        raise ConfigError(
            f"{path}: cannot read its GGUF header ({err}); reinstall the package that ships it"
        ) from None
    return meta


def _from_gguf(path: Path) -> ModelFacts:
    meta = gguf_metadata(path)
    arch = meta.get("general.architecture", "llama")
    get = lambda key: meta.get(f"{arch}.{key}")  # noqa: E731
    heads = int(get("attention.head_count"))
    return ModelFacts(
        num_hidden_layers=int(get("block_count")),
        hidden_size=int(get("embedding_length")),
        intermediate_size=int(get("feed_forward_length")),
        num_attention_heads=heads,
        num_key_value_heads=int(get("attention.head_count_kv") or heads),
        max_position_embeddings=get("context_length"),
        source=str(path),
    )


def _from_dict(d: dict, source: str) -> ModelFacts:
    """Facts from config.json fields: LLaMA's, plus the experts of Mixtral (num_local_experts,
    num_experts_per_tok) or LlamaMoE (num_experts, top_k); intermediate_size as the file states it (Mixtral:
    one expert's width)."""
    heads = int(d["num_attention_heads"])
    experts = d.get("num_local_experts") or d.get("num_experts")
    top_k = d.get("num_experts_per_tok") or d.get("top_k")
    return ModelFacts(
        num_hidden_layers=int(d["num_hidden_layers"]),
        hidden_size=int(d["hidden_size"]),
        intermediate_size=int(d["intermediate_size"]),
        num_attention_heads=heads,
        num_key_value_heads=int(d.get("num_key_value_heads") or heads),
        max_position_embeddings=d.get("max_position_embeddings"),
        source=source,
        num_experts=int(experts) if experts else None,
        top_k=int(top_k) if experts and top_k else None,
    )


# Released checkpoints whose sizes the config checks know before the download (their published config.json):
# the model the MoE compression paper compresses (config/paper.yaml compress.base_model).
HUB_FACTS = {
    "mistralai/Mixtral-8x7B-v0.1": _from_dict(
        {
            "num_hidden_layers": 32, "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
            "num_key_value_heads": 8, "max_position_embeddings": 32768, "num_local_experts": 8,
            "num_experts_per_tok": 2,
        },
        "mistralai/Mixtral-8x7B-v0.1 (its published config.json)",
    ),
}  # fmt: skip


def folder_facts(folder: str | Path, key: str) -> ModelFacts:
    """Facts from a local checkpoint folder's config.json (Mixtral / LlamaMoE configs have the same fields).

    Raises:
        ConfigError: naming ``key`` (the config key that gave the folder) when the folder or its config.json is
            missing or has no LLaMA sizes.
    """
    path = Path(folder).expanduser() / "config.json"
    if not Path(folder).expanduser().is_dir():
        raise ConfigError(f"{key}: model folder {folder} does not exist")
    try:
        return _from_dict(json.loads(path.read_text()), str(path))
    except FileNotFoundError:
        raise ConfigError(f"{key}: {folder} has no config.json: not a model checkpoint folder") from None
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{key}: {path} has no usable model sizes ({err!r})") from None


def spec_facts(spec: str, key: str) -> ModelFacts | None:
    """Facts of a ``pretrained`` spec: a local folder's, a known hub id's (``HUB_FACTS``), or None for another
    hub id (known only after download)."""
    return folder_facts(spec, key) if looks_local(spec) else HUB_FACTS.get(spec)


def dense_facts(model_cfg: dict) -> ModelFacts | None:
    """Facts of the workflow's dense model (config ``model:``), or None when it comes from the hub.

    Raises:
        ConfigError: naming the ``model.*`` key whose file or folder is missing or unreadable.
    """
    source = model_cfg["source"]
    if source == "tiny":
        tiny = {"max_position_embeddings": 2048, **model_cfg["tiny"]}  # make_tiny_model's default
        return _from_dict(tiny, "model.tiny")
    if source == "gguf":
        try:
            path = package_file(model_cfg["gguf_package"], model_cfg["gguf_file"])
        except (FileNotFoundError, ModuleNotFoundError, ImportError) as err:
            raise ConfigError(f"model.gguf_file: {err}") from None
        return _from_gguf(path)
    return spec_facts(model_cfg["pretrained"], "model.pretrained")
