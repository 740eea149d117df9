"""Continual pre-training of a (converted) model on packed domain text (LLaMA-MoE sec. "Continual pre-training").

Each packed block of ``seq_len`` tokens comes from one domain, drawn by the current domain weights of a data
mixture (``moelab.mixture``: static, or Sheared-LLaMA dynamic batch loading). A few blocks per domain are held
out; every ``mixture.eval_interval`` steps an evaluation round measures the held-out loss per domain, and a
dynamic mixture updates the weights from it and the reference loss (Sheared-LLaMA arXiv 2310.06694 Alg. 1).
The rounds, the mixture and the sampler's position are part of each checkpoint, so a resumed run draws the
blocks the uninterrupted run draws.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from accelerate import PartialState

from moelab.data.packing import pack_texts, read_jsonl
from moelab.io import load_model, mean_loss
from moelab.mixture import DomainSampler, make_mixture
from moelab.train.config import TrainRunConfig
from moelab.train.loop import train_and_save

VAL_BLOCKS = 4  # held-out blocks per domain
DEFAULT_EVAL_INTERVAL = 10  # steps between evaluation rounds when pretrain.mixture does not say
ROUND_FIELDS = ("step", "tokens", "domain", "loss", "reference", "weight")


class PretrainSource:
    """Batches of packed blocks (``labels = input_ids``; the model shifts them) drawn by a data mixture.

    Args:
        sampler: the :class:`moelab.mixture.DomainSampler` over the training blocks.
        mixture: a ``moelab.mixture`` strategy over the same domains (its weights drive the sampler).
        val_blocks: domain -> held-out LongTensor [n_val, T].
        eval_interval: steps between evaluation rounds (round at step 0, every ``eval_interval`` steps, and
            after the last step).
        steps: the run's total steps.
        reference: domain -> reference loss (nats/token) or None (static mixtures only).
    """

    def __init__(self, sampler, mixture, val_blocks, eval_interval: int, steps: int, reference=None):
        if mixture.dynamic and reference is None:
            raise ValueError("pretrain.mixture: a dynamic strategy needs a reference loss per domain")
        self.sampler, self.mixture, self.val_blocks = sampler, mixture, val_blocks
        self.eval_interval, self.steps, self.reference = eval_interval, steps, reference
        self.rounds: list[dict] = []
        self.tokens_per_step = sampler.batch_size * next(iter(val_blocks.values())).shape[1]

    @property
    def weights(self) -> dict[str, float]:
        """The current domain weights (what the step log records)."""
        return self.sampler.weights

    def batch(self, step: int) -> dict:
        ids, domains = self.sampler.batch(step)
        return {"input_ids": ids, "labels": ids.clone(), "domains": domains}

    def evaluation_round(self, step: int, model, device) -> None:
        """Before step ``step`` (0-based; ``steps`` = after the last): measure the held-out loss per domain
        and, for a dynamic mixture (not at step 0 or after the last step), update the weights.

        A round already in ``rounds`` (a resumed run) is not repeated. ``model`` is left in train mode.
        """
        due = step % self.eval_interval == 0 or step == self.steps
        if not due or (self.rounds and self.rounds[-1]["step"] >= step):
            return
        losses = domain_losses(model, self.val_blocks, device)
        model.train()
        if self.mixture.updates_at(step, self.steps):
            self.sampler.set_weights(
                self.mixture.update({"step": step, "losses": losses, "reference": self.reference})
            )
        self.rounds.append(
            {"step": step, "tokens": step * self.tokens_per_step, "losses": losses, "weights": self.weights}
        )

    def state_dict(self) -> dict:
        return {
            "sampler": self.sampler.state_dict(),
            "mixture": self.mixture.state_dict(),
            "rounds": self.rounds,
        }

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.mixture.load_state_dict(state["mixture"])
        self.rounds = list(state["rounds"])

    def write_rounds(self, path: Path) -> None:
        """The rounds as a long CSV (``ROUND_FIELDS``; loss and reference in nats/token, weight = the domain's
        weight for the steps after the round)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=ROUND_FIELDS)
            writer.writeheader()
            for r in self.rounds:
                for d in sorted(r["losses"]):
                    ref = self.reference[d] if self.reference else ""
                    writer.writerow(
                        {"step": r["step"], "tokens": r["tokens"], "domain": d, "loss": r["losses"][d],
                         "reference": ref, "weight": round(r["weights"][d], 6)}
                    )  # fmt: skip
        tmp.replace(path)


def load_domain_blocks(data: dict[str, Path], tokenizer, seq_len: int) -> dict[str, torch.Tensor]:
    """Pack every domain's JSONL ``text`` field into blocks [n, seq_len]."""
    return {d: pack_texts((r["text"] for r in read_jsonl(p)), tokenizer, seq_len) for d, p in data.items()}


def split_validation(blocks: dict[str, torch.Tensor], n_val: int = VAL_BLOCKS):
    """(train, validation) blocks per domain; the last ``n_val`` blocks of each domain are held out.

    Raises:
        ValueError: a domain has too few blocks to hold out ``n_val`` and still train.
    """
    train_b, val_b = {}, {}
    for d, b in blocks.items():
        if len(b) <= n_val:
            raise ValueError(
                f"domain {d!r} packs into only {len(b)} blocks; need more than {n_val} (raise pretrain_max_chars)"
            )
        train_b[d], val_b[d] = b[:-n_val], b[-n_val:]
    return train_b, val_b


def domain_losses(model, val_blocks: dict[str, torch.Tensor], device: str = "cpu") -> dict[str, float]:
    """Mean LM loss (nats/token) per domain on held-out blocks."""
    return {d: round(mean_loss(model, [{"input_ids": b.to(device)}]), 4) for d, b in val_blocks.items()}


def held_out_losses(model_dir, data: dict[str, str], seq_len: int, dtype="float32", device="cpu") -> dict:
    """Held-out loss per domain (nats/token) of the model in ``model_dir`` on the blocks a pretraining run
    with this ``seq_len`` holds out (the same packing and split as :func:`run_pretrain`).

    Raises:
        ValueError: a domain too small to hold out validation blocks (names it).
    """
    model, tokenizer = load_model(Path(model_dir), dtype=dtype, device=device)
    blocks = load_domain_blocks({d: Path(f) for d, f in data.items()}, tokenizer, seq_len)
    return domain_losses(model, split_validation(blocks)[1], device)


def reference_losses(cfg: TrainRunConfig) -> dict[str, float] | None:
    """The reference loss per domain: ``mixture.reference_loss`` (fixed values) or the measured one.

    Raises:
        ValueError: a dynamic mixture without a reference, or one lacking a domain of ``cfg.data`` (names it).
    """
    spec = cfg.mixture or {}
    ref = spec.get("reference_loss") or cfg.reference_loss
    if ref is None:
        return None
    missing = [d for d in sorted(cfg.data) if d not in ref]
    if missing:
        raise ValueError(f"pretrain reference loss: no value for domain {missing[0]!r} (have {sorted(ref)})")
    return {d: float(ref[d]) for d in sorted(cfg.data)}


def run_pretrain(cfg: TrainRunConfig) -> dict:
    """Load ``cfg.model``, train it on ``cfg.data`` (packed domain text) as ``cfg`` says, save to ``cfg.out_dir``.

    Resumes from ``cfg.ckpt_dir`` when it holds a complete checkpoint of the same run. Returns a summary
    with per-domain validation losses before and after training, the final domain weights and the training
    throughput; writes the evaluation rounds to ``cfg.rounds_csv`` when set.

    Raises:
        ValueError: a domain too small to hold out validation blocks, bad domain weights or mixture settings,
            or a dynamic mixture without a reference loss for some domain (names it).
    """
    data = {d: Path(p) for d, p in cfg.data.items()}
    model, tokenizer = load_model(Path(cfg.model), dtype=cfg.dtype, device=cfg.device)
    blocks = load_domain_blocks(data, tokenizer, cfg.seq_len)
    train_blocks, val_blocks = split_validation(blocks)
    spec = dict(cfg.mixture or {})
    mixture = make_mixture(spec, cfg.domain_weights, {d: b.numel() for d, b in train_blocks.items()})
    sampler = DomainSampler(train_blocks, mixture.weights, cfg.batch_size, cfg.seed)
    interval = int(spec.get("eval_interval", DEFAULT_EVAL_INTERVAL))
    source = PretrainSource(sampler, mixture, val_blocks, interval, cfg.steps, reference_losses(cfg))
    summary = train_and_save(model, tokenizer, source, cfg)
    if (
        cfg.rounds_csv and PartialState().is_main_process
    ):  # one writer under DDP / FSDP (every rank has the rounds)
        source.write_rounds(Path(cfg.rounds_csv))
    summary.update(
        val_loss_before=source.rounds[0]["losses"] if source.rounds else None,
        val_loss_after=source.rounds[-1]["losses"],  # the round after the last step
        reference_loss=source.reference,
        final_weights=source.weights,
        mixture=mixture.state_dict()["strategy"],
        train_blocks={d: len(b) for d, b in train_blocks.items()},
    )
    return summary
