"""Training and evaluating a sequence classifier on a frozen encoder with adapters (SparseAdapter, iDAT).

One run (:func:`run_classifier`): load the encoder with a fresh linear head on its pooled output
(``*ForSequenceClassification``: BERT's pooler, dense + tanh on [CLS], then dropout and a Linear
``[num_labels, d]``), add adapters (:func:`moelab.adapters.add_adapters`; encoder frozen) or unfreeze every
weight (the full fine-tuning reference row), prune the adapters once at initialisation on a small batch of
training data (:func:`moelab.adapters.prune`; SparseAdapter, He et al., Findings of EMNLP 2022, arXiv
2210.04284, Section 2.2: ~320 examples, one global threshold), then AdamW for a fixed number of steps with a
linear warm-up and linear decay, and accuracy on dev and test.

Determinism: everything random (head initialisation, adapter initialisation, pruning batch, batch order,
dropout) derives from ``seed``; the same seed on CPU gives the same losses and accuracies bitwise.

Deviation from the paper (scale): a fixed number of steps instead of 10 epochs; LR and batch size from the
config (paper: LR 1e-4, weight decay 0.1).

Shapes: B batch, T tokens (padded to the batch's longest, at most ``max_len``), C classes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm import tqdm

from moelab.adapters.modules import add_adapters, full_finetuning, parameter_counts
from moelab.adapters.options import check_positive_int, parse_variant
from moelab.adapters.pruners import prune
from moelab.errors import ConfigError

EncodeFn = Callable[[Sequence[Mapping]], dict[str, torch.Tensor]]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one classification run (config section ``sparse_adapter``)."""

    steps: int = 60  # optimiser steps (fixed budget; the paper trains 10 epochs)
    batch_size: int = 16  # training examples per step
    lr: float = 1e-3  # AdamW learning rate of adapter runs (peak, after warm-up)
    full_ft_lr: float = 1e-4  # AdamW learning rate of the full fine-tuning row
    weight_decay: float = 0.1  # AdamW decoupled weight decay (paper: 0.1)
    warmup_steps: int = 0  # linear warm-up from 0, then linear decay to 0 at `steps`
    max_len: int = 64  # tokens per example after truncation
    eval_batch_size: int = 64  # examples per evaluation forward
    bottleneck: int = 64  # adapter width r of the dense adapter (Large-Sparse: x k)
    prune_examples: int = 32  # training examples scored by SNIP / GraSP (paper: ~320)
    synflow_iterations: int = 10  # SynFlow prune-rescore rounds (Tanaka et al.: 100)

    @classmethod
    def from_section(cls, section: Mapping) -> TrainConfig:
        """The fields present in ``section`` (other keys ignored).

        Raises:
            ConfigError (a ValueError): an integer field is not a positive integer (``warmup_steps`` >= 0), a
                rate is negative or NaN; names ``sparse_adapter.<key>``.
        """
        kw = {k: section[k] for k in cls.__dataclass_fields__ if k in section}
        cfg = cls(**kw)
        for key in ("steps", "batch_size", "max_len", "eval_batch_size", "bottleneck", "prune_examples",
                    "synflow_iterations"):  # fmt: skip
            check_positive_int(getattr(cfg, key), f"sparse_adapter.{key}")
        if (
            isinstance(cfg.warmup_steps, bool)
            or not isinstance(cfg.warmup_steps, int)
            or cfg.warmup_steps < 0
        ):
            raise ConfigError(f"sparse_adapter.warmup_steps={cfg.warmup_steps!r} must be an integer >= 0")
        for key in ("lr", "full_ft_lr", "weight_decay"):
            v = getattr(cfg, key)
            if isinstance(v, bool) or not isinstance(v, int | float) or not v >= 0 or math.isinf(v):
                raise ConfigError(f"sparse_adapter.{key}={v!r} must be a finite number >= 0")
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)


def tokenizer_encoder(tokenizer, max_len: int) -> EncodeFn:
    """``examples -> {"input_ids", "attention_mask", ("token_type_ids"), "labels"}``, each [B, T] (labels [B]),
    padded to the batch's longest example, truncated to ``max_len`` tokens; pairs encoded as pairs."""

    def encode(examples: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        a = [ex["text_a"] for ex in examples]
        b = [ex["text_b"] for ex in examples]
        pair = b if all(t is not None for t in b) else None
        enc = tokenizer(a, pair, truncation=True, max_length=max_len, padding=True, return_tensors="pt")
        enc = dict(enc)
        enc["labels"] = torch.tensor([ex["label"] for ex in examples], dtype=torch.long)
        return enc

    return encode


def batch_order(n: int, batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """Indices of ``steps`` training batches of ``batch_size``: consecutive slices of seeded permutations of
    ``range(n)``, a fresh permutation each epoch (a batch never straddles two epochs; the tail of an epoch
    shorter than a batch is dropped unless the set is smaller than one batch)."""
    gen = torch.Generator().manual_seed(int(seed))
    per_epoch = max(1, n // batch_size)
    out: list[list[int]] = []
    while len(out) < steps:
        perm = torch.randperm(n, generator=gen).tolist()
        out += [perm[i * batch_size : (i + 1) * batch_size] for i in range(per_epoch)]
    return out[:steps]


@torch.no_grad()
def accuracy(model: nn.Module, encode: EncodeFn, examples: Sequence[Mapping], batch_size: int) -> float:
    """Fraction of ``examples`` whose argmax logit [B, C] is the label (model in eval mode: no dropout)."""
    if not examples:
        raise ValueError("accuracy of an empty split")
    was = model.training
    model.eval()
    correct = 0
    device = next(model.parameters()).device
    for i in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in encode(examples[i : i + batch_size]).items()}
        labels = batch.pop("labels")
        correct += int((model(**batch).logits.argmax(-1) == labels).sum())
    model.train(was)
    return correct / len(examples)


def _lr_lambda(steps: int, warmup: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (steps - step) / max(1, steps - warmup))

    return f


def train_classifier(
    model: nn.Module,
    encode: EncodeFn,
    splits: Mapping[str, Sequence[Mapping]],
    cfg: TrainConfig,
    seed: int,
    lr: float | None = None,
    progress: bool = True,
) -> dict:
    """Train ``model``'s trainable parameters with AdamW for ``cfg.steps`` steps on ``splits["train"]``;
    evaluate on ``dev`` and ``test``.

    Args:
        model: a ``*ForSequenceClassification`` (``model(**batch).loss``, ``.logits`` [B, C]) whose
            ``requires_grad`` flags say what trains (adapters + head, or everything).
        encode: examples -> collated tensors with ``labels`` (:func:`tokenizer_encoder`).
        splits: ``train``, ``dev``, ``test`` lists of ``{"text_a", "text_b", "label"}``.
        cfg: steps, batch size, weight decay, warm-up, eval batch size.
        seed: batch order and dropout.
        lr: peak learning rate (default ``cfg.lr``).

    Returns:
        ``{"losses": [per-step training loss], "dev_acc", "test_acc" (fractions in [0, 1]), "n_dev",
        "n_test", "train_seconds"}``.

    Raises:
        ValueError: nothing is trainable, or a split is empty.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters: add adapters or call full_finetuning first")
    train = list(splits["train"])
    if not train:
        raise ValueError("empty train split")
    torch.manual_seed(seed)  # dropout
    opt = torch.optim.AdamW(params, lr=cfg.lr if lr is None else lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.steps, cfg.warmup_steps))
    device = params[0].device
    model.train()
    losses = []
    start = time.time()
    order = batch_order(len(train), cfg.batch_size, cfg.steps, seed)
    for idx in tqdm(order, desc="train", disable=not progress, mininterval=5):
        batch = {k: v.to(device) for k, v in encode([train[i] for i in idx]).items()}
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    seconds = time.time() - start
    dev = accuracy(model, encode, splits["dev"], cfg.eval_batch_size)
    test = accuracy(model, encode, splits["test"], cfg.eval_batch_size)
    return {"losses": losses, "dev_acc": dev, "test_acc": test, "n_dev": len(splits["dev"]),
            "n_test": len(splits["test"]), "train_seconds": round(seconds, 3)}  # fmt: skip


def prepare_model(model: nn.Module, variant: str, cfg: TrainConfig, seed: int) -> dict:
    """Make ``model`` the ``variant``'s starting point, in place: adapters (width ``cfg.bottleneck * k``,
    initialised from ``seed``) with the encoder frozen, or every weight trainable (``full_ft``).

    Returns:
        the parsed variant (:func:`moelab.adapters.options.parse_variant`) with the width.

    Raises:
        ConfigError (a ValueError): the variant's name is malformed (names it).
    """
    v = parse_variant(variant)
    if v["kind"] == "full":
        full_finetuning(model)
        return {**v, "bottleneck": None}
    width = cfg.bottleneck * v["k"]
    add_adapters(model, v["kind"], width, seed=seed)
    return {**v, "bottleneck": width}


def prune_batches(
    encode: EncodeFn, train: Sequence[Mapping], n: int, batch_size: int, seed: int
) -> list[dict]:
    """``n`` training examples (a seeded sample, ``min(n, len(train))``) collated in batches of ``batch_size``."""
    gen = torch.Generator().manual_seed(int(seed) + 1)
    idx = torch.randperm(len(train), generator=gen)[: min(n, len(train))].tolist()
    return [encode([train[i] for i in idx[j : j + batch_size]]) for j in range(0, len(idx), batch_size)]


def run_classifier(
    load_model: Callable[[int], nn.Module],
    encode: EncodeFn,
    splits: Mapping[str, Sequence[Mapping]],
    variant: str,
    cfg: TrainConfig,
    seed: int,
    progress: bool = True,
) -> dict:
    """One run of the SparseAdapter stage: prepare (:func:`prepare_model`), prune at initialisation, train,
    evaluate.

    Args:
        load_model: ``num_labels -> fresh *ForSequenceClassification`` (called once, after seeding with
            ``seed``, so the head's initialisation is the seed's).
        variant: ``houlsby_dense``, ``lora_snip40``, ``houlsby_snip50_x2`` (Large-Sparse), ``full_ft``, ...
        seed: everything random in the run.

    Returns:
        :func:`train_classifier`'s dict plus ``variant``, ``seed``, ``kind``, ``pruner``, ``sparsity``, ``k``,
        ``bottleneck``, ``prune`` (:func:`moelab.adapters.prune`'s summary less per-tensor densities, or None),
        ``params`` (:func:`moelab.adapters.parameter_counts` after pruning) and ``seconds`` (wall time).
    """
    start = time.time()
    labels = 1 + max(ex["label"] for s in splits.values() for ex in s)
    torch.manual_seed(seed)
    model = load_model(labels)
    v = prepare_model(model, variant, cfg, seed)
    info = None
    if v["pruner"] is not None:
        batches = prune_batches(encode, splits["train"], cfg.prune_examples, cfg.batch_size, seed)
        info = prune(model, v["pruner"], v["sparsity"], batches=batches, seed=seed,
                     iterations=cfg.synflow_iterations)  # fmt: skip
        info.pop("per_tensor", None)
    params = parameter_counts(model)
    lr = cfg.full_ft_lr if v["kind"] == "full" else cfg.lr
    result = train_classifier(model, encode, splits, cfg, seed, lr=lr, progress=progress)
    log.info("%s seed %d: dev %.4f test %.4f (loss %.4f -> %.4f, %.1f s)", variant, seed, result["dev_acc"],
             result["test_acc"], result["losses"][0], result["losses"][-1], time.time() - start)  # fmt: skip
    return {"variant": variant, "seed": seed, **v, "prune": info, "params": params, **result,
            "seconds": round(time.time() - start, 3)}  # fmt: skip
