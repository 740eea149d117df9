"""Instruction tuning: chat template, loss on assistant tokens only, data sets mixed by weights.

LLaMA-MoE v2 sec. "Two-stage post-training" and MoE-SFT (arXiv 2406.11256) train on assistant tokens
only. The data sets are mixed by a static mixture (``domain_weights``, uniform by default) or, with
``sft.mixture``, by a strategy updated at evaluation rounds: MoE-SFT's dynamic mixture (Sec. 3: every
``eval_interval`` steps each data set's dev split runs through the model; the gate load of the last MoE layer,
or of all, feeds ``moelab.mixture.moe_sft``) and its baselines. The dev split is each data set's last
``dev_examples`` examples, never trained on. Routers can be frozen (``freeze_router``; MoE-SFT trains with
frozen routers). The rounds, the mixture (weights, RNG, history) and the sampler's position are in every
checkpoint, so a resumed run draws the same stream.
"""

from __future__ import annotations

from pathlib import Path

from moelab.data.chat import IGNORE_INDEX, encode_chat, pad_examples
from moelab.data.packing import read_jsonl
from moelab.io import load_model, mean_loss
from moelab.mixture import MixtureSampler, make_mixture
from moelab.models.routing_counts import count_routing, moe_routers
from moelab.train.config import TrainRunConfig
from moelab.train.loop import SamplerSource, train_and_save

DEV_EXAMPLES = 8  # dev examples held out per data set (sft.mixture.dev_examples)
EVAL_BATCHES = 5  # dev batches per data set per round (sft.mixture.eval_batches; MoE-SFT's official code)
DEFAULT_EVAL_INTERVAL = 10  # steps between rounds (sft.mixture.eval_interval; upstream 100 of 2000)


class SFTSource(SamplerSource):
    """Batches of padded chat examples from :class:`moelab.mixture.MixtureSampler` (stateful, resumable).

    With a ``mixture`` (``sft.mixture`` given) an evaluation round runs at step 0, every ``eval_interval``
    steps and after the last step: it measures each data set's dev loss (nats/token, assistant tokens) and, for
    an MoE, its gate loads (:func:`gate_loads`); a dynamic mixture then updates the sampling weights where
    ``mixture.updates_at`` says (inside the run; the gate-load static baseline only at step 0). The
    reference-loss baseline (``sheared_llama``) takes the step-0 dev losses, the starting model's, as its
    reference.

    Args:
        sampler: the training examples' sampler. mixture: a ``moelab.mixture`` strategy over the same data
            sets, or None (static ``domain_weights``, no rounds). dev: data set -> encoded dev examples.
        eval_interval, steps: round schedule. eval_batches, batch_size: dev batches per data set per round and
            their size. layers: "last" or "all" MoE layers for the gate load. pad_id: padding token id.
    """

    def __init__(self, sampler, mixture=None, dev=None, *, eval_interval: int = DEFAULT_EVAL_INTERVAL,
                 steps: int = 0, eval_batches: int = EVAL_BATCHES, batch_size: int = 8, layers: str = "last",
                 pad_id: int = 0):  # fmt: skip
        super().__init__(sampler)
        self.mixture, self.dev = mixture, dev or {}
        self.eval_interval, self.steps, self.eval_batches = eval_interval, steps, eval_batches
        self.dev_batch_size, self.layers, self.pad_id = batch_size, layers, pad_id
        self.rounds: list[dict] = []
        self.reference: dict[str, float] | None = None

    def batch(self, step: int) -> dict:
        return self.sampler.next_batch()

    def evaluation_round(self, step: int, model, device) -> None:
        """Before step ``step`` (``steps`` = after the last): dev losses, gate loads, and the mixture update.
        A round already in ``rounds`` (a resumed run) is not repeated; ``model`` is left in train mode."""
        if self.mixture is None:
            return
        due = step % self.eval_interval == 0 or step == self.steps
        if not due or (self.rounds and self.rounds[-1]["step"] >= step):
            return
        batches = {
            d: dev_batches(ex, self.dev_batch_size, self.eval_batches, self.pad_id)
            for d, ex in self.dev.items()
        }
        losses = {d: round(mean_loss(model, [{k: v.to(device) for k, v in b.items()} for b in bs]), 4)
                  for d, bs in batches.items()}  # fmt: skip
        loads = gate_loads(model, batches, self.layers) if has_routers(model) else None
        model.train()
        if self.reference is None:
            self.reference = dict(losses)  # the starting model's dev loss (the reference-loss baseline)
        if self.mixture.updates_at(step, self.steps):
            stats = {"step": step, "losses": losses, "reference": self.reference, "gate_loads": loads}
            self.sampler.set_weights(self.mixture.update(stats))
        self.rounds.append({"step": step, "losses": losses, "gate_loads": loads, "weights": self.weights})

    def state_dict(self) -> dict:
        if self.mixture is None:
            return self.sampler.state_dict()  # the static run's checkpoint format
        return {"sampler": self.sampler.state_dict(), "mixture": self.mixture.state_dict(),
                "rounds": self.rounds, "reference": self.reference}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        if self.mixture is None:
            self.sampler.load_state_dict(state)
            return
        self.sampler.load_state_dict(state["sampler"])
        self.mixture.load_state_dict(state["mixture"])
        self.rounds, self.reference = list(state["rounds"]), state["reference"]


def has_routers(model) -> bool:
    """Whether ``model`` has MoE layers with routers (a dense model has no gate load)."""
    try:
        moe_routers(model)
    except (ValueError, AttributeError):
        return False
    return True


def freeze_routers(model) -> list[str]:
    """Stop gradients for exactly the MoE routers' parameters (MoE-SFT trains with frozen routers; its code's
    name match also froze the experts' gate_proj, which this does not). Returns the frozen parameter names.

    Raises:
        ValueError: the model has no MoE router.
    """
    ids = {id(p) for router in moe_routers(model).values() for p in router.parameters()}
    frozen = []
    for name, param in model.named_parameters():
        if id(param) in ids:
            param.requires_grad_(False)
            frozen.append(name)
    return frozen


def split_dev(encoded: dict[str, list[dict]], n_dev: int) -> tuple[dict, dict]:
    """(train, dev) per data set: the last ``n_dev`` encoded examples of each are its dev split.

    Raises:
        ValueError: a data set with no more than ``n_dev`` examples (names it and sft.mixture.dev_examples).
    """
    train, dev = {}, {}
    for d, examples in encoded.items():
        if len(examples) <= n_dev:
            raise ValueError(
                f"SFT data set {d!r} has {len(examples)} usable examples: too few to hold out "
                f"sft.mixture.dev_examples={n_dev} and still train"
            )
        train[d], dev[d] = examples[:-n_dev], examples[-n_dev:]
    return train, dev


def dev_batches(examples: list[dict], batch_size: int, max_batches: int, pad_id: int) -> list[dict]:
    """The first ``max_batches`` batches of ``batch_size`` dev examples, in order, padded."""
    chunks = [examples[i : i + batch_size] for i in range(0, len(examples), batch_size)][:max_batches]
    return [pad_examples(c, pad_id) for c in chunks]


def gate_loads(model, batches: dict[str, list[dict]], layers: str = "last") -> dict[str, list[int]]:
    """Gate load of each data set (MoE-SFT Sec. 3): per expert, the number of non-padding dev tokens with that
    expert among their top-k, summed over the data set's dev batches; ``layers`` "last" = the last MoE layer
    (upstream), "all" = every MoE layer's counts concatenated in layer order. Counts [N] (or [layers x N]).
    """
    loads = {}
    for d, bs in batches.items():
        stats = count_routing(model, [(b["input_ids"], b["attention_mask"]) for b in bs])
        chosen = sorted(stats)[-1:] if layers == "last" else sorted(stats)
        loads[d] = [int(x) for layer in chosen for x in stats[layer]["load"].tolist()]
    return loads


def encode_datasets(data: dict[str, Path], tokenizer, max_len: int) -> tuple[dict[str, list[dict]], dict]:
    """Encode every chat example of every data set (``messages`` field) with assistant-only labels.

    An example whose assistant tokens all fall beyond ``max_len`` has nothing to learn from (a batch of
    only such examples has a 0/0 loss); it is left out and counted.

    Returns:
        (data set -> encoded examples, data set -> examples left out).

    Raises:
        ValueError: a data set with no example that keeps an assistant token within ``max_len`` (names it).
    """
    encoded, dropped = {}, {}
    for d, p in data.items():
        rows = [encode_chat(r["messages"], tokenizer, max_len) for r in read_jsonl(p)]
        encoded[d] = [e for e in rows if bool((e["labels"] != IGNORE_INDEX).any())]
        dropped[d] = len(rows) - len(encoded[d])
        if not encoded[d]:
            raise ValueError(
                f"SFT data set {d!r} ({p}): none of its {len(rows)} examples keeps an assistant token within "
                f"max_len={max_len} tokens; raise sft.max_len or leave the data set out (weight 0)"
            )
    return encoded, dropped


def run_sft(cfg: TrainRunConfig) -> dict:
    """Instruction-tune ``cfg.model`` on ``cfg.data`` (chat examples) as ``cfg`` says, save to ``cfg.out_dir``.

    Data sets with weight 0 are not read (two-stage post-training: each stage draws from its own sets). With
    ``cfg.mixture`` the last ``dev_examples`` examples of each data set are held out as its dev split and the
    mixture is updated at the evaluation rounds (see :class:`SFTSource`).

    Raises:
        ValueError: a data set left without an example that keeps an assistant token, or too small to hold
            out its dev split (names it); a dynamic routing strategy on a model without routers.
    """
    model, tokenizer = load_model(Path(cfg.model), dtype=cfg.dtype, device=cfg.device)
    weights = {d: w for d, w in cfg.domain_weights.items() if w > 0}  # a stage's unused sets: not read
    encoded, dropped = encode_datasets(
        {d: Path(p) for d, p in cfg.data.items() if d in weights}, tokenizer, cfg.max_len
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    frozen = freeze_routers(model) if cfg.freeze_router else []
    spec = dict(cfg.mixture) if cfg.mixture is not None else None
    if spec is None:
        sampler = MixtureSampler(encoded, weights, cfg.batch_size, cfg.seed, pad_id)
        source = SFTSource(sampler)
    else:
        train, dev = split_dev(encoded, int(spec.get("dev_examples", DEV_EXAMPLES)))
        sizes = {d: sum(len(e["input_ids"]) for e in ex) for d, ex in train.items()}
        mixture = make_mixture(spec, weights, sizes, where="sft.mixture", seed=cfg.seed)
        if "gate_loads" in mixture.needs and not has_routers(model):
            raise ValueError(
                f"sft.mixture.strategy={mixture.strategy!r} needs an MoE model's routing; {cfg.model} has no router"
            )
        sampler = MixtureSampler(train, mixture.weights, cfg.batch_size, cfg.seed, pad_id)
        source = SFTSource(
            sampler, mixture, dev, eval_interval=int(spec.get("eval_interval", DEFAULT_EVAL_INTERVAL)),
            steps=cfg.steps, eval_batches=int(spec.get("eval_batches", EVAL_BATCHES)), batch_size=cfg.batch_size,
            layers=spec.get("layers", "last"), pad_id=pad_id,
        )  # fmt: skip
        encoded = train
    summary = train_and_save(model, tokenizer, source, cfg)
    summary["examples"] = {d: len(v) for d, v in encoded.items()}
    summary["examples_truncated_away"] = dropped  # no assistant token within max_len
    if frozen:
        summary["frozen_parameters"] = frozen
    if source.mixture is not None:
        summary.update(mixture=source.mixture.strategy, final_weights=source.weights,
                       weight_history=source.mixture.history, rounds=source.rounds,
                       dev_examples={d: len(v) for d, v in source.dev.items()})  # fmt: skip
    return summary
