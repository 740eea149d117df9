"""The typed configuration of a training run, built once and stored as ``train_config.json``.

Three small dataclasses (torchtitan habit: every field documented, bad values fail naming the key):

- :class:`TrainConfig`: the optimisation settings the loop reads (``moelab.train.loop.train``).
- :class:`LauncherConfig`: the config's ``launcher:`` section; the one place it is checked (the workflow
  checks it through here when the config is loaded, so a bad launcher fails before any job runs).
- :class:`TrainRunConfig`: one training stage, everything it reads (stage, input model, data files by
  source, output paths, seed, device, dtype, threads, launcher, and all the hyperparameters of the config's
  ``pretrain:`` / ``sft:`` section). A training rule writes it as its first output; ``python -m moelab.train
  CONFIG.json`` runs it.

This module imports no torch, so the workflow reads it at parse time in milliseconds.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

STAGES = ("pretrain", "sft")
LAUNCHERS = ("none", "torchrun", "accelerate")
DEVICES = ("cpu", "cuda")


@dataclass
class TrainConfig:
    """Optimisation settings of one training run (the loop's part of the ``pretrain:`` / ``sft:`` sections).

    The schedule and optimiser follow LLaMA-MoE sec. "Continual pre-training" (AdamW, linear warm-up, cosine
    decay to a floor, gradient clipping); see :func:`moelab.train.loop.lr_at`.

    Raises:
        ValueError: a non-positive ``steps`` / ``save_every`` / ``keep_checkpoints`` / ``micro_batch_size``,
            a negative ``warmup_steps``, ``lr`` <= 0, or ``min_lr_ratio`` outside [0, 1] (names the key).
    """

    steps: int
    """Optimiser steps of the run."""
    lr: float
    """Peak learning rate (after warm-up)."""
    warmup_steps: int = 0
    """Steps of linear warm-up from lr / warmup_steps to lr."""
    min_lr_ratio: float = 0.1
    """Cosine floor as a fraction of ``lr``."""
    weight_decay: float = 0.1
    """AdamW weight decay, on matrices only (norm weights and biases are not decayed)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW (beta1, beta2)."""
    grad_clip: float = 1.0
    """Max global gradient norm."""
    save_every: int = 10
    """Checkpoint interval in steps (the last step is always saved)."""
    keep_checkpoints: int = 2
    """Complete checkpoints kept in the checkpoint folder (newest first)."""
    micro_batch_size: int | None = None
    """Rows per forward pass and process; None = this process's whole share of the batch (no accumulation)."""
    seed: int = 1227
    """Seed of the run's torch RNG (dropout, router noise) and of its data sampler."""

    def __post_init__(self):
        if self.micro_batch_size is not None and int(self.micro_batch_size) <= 0:
            raise ValueError(
                f"train config: micro_batch_size must be a positive integer, got {self.micro_batch_size}"
            )
        for key in ("steps", "save_every", "keep_checkpoints"):
            if int(getattr(self, key)) <= 0:
                raise ValueError(f"train config: {key} must be a positive integer, got {getattr(self, key)}")
        if self.warmup_steps < 0:
            raise ValueError(f"train config: warmup_steps must be >= 0, got {self.warmup_steps}")
        if not self.lr > 0:
            raise ValueError(f"train config: lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"train config: min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        self.betas = tuple(self.betas)

    def optim(self) -> TrainConfig:
        """The plain :class:`TrainConfig` of these settings (what the loop records in its summary)."""
        return TrainConfig(**{f.name: getattr(self, f.name) for f in fields(TrainConfig)})


@dataclass(frozen=True)
class LauncherConfig:
    """How a training stage runs: in this process, or as several processes under a launcher.

    Raises:
        ValueError: unknown ``kind`` or key, ``num_processes`` < 1, ``kind: none`` with several processes,
            or ``kind: accelerate`` without ``accelerate_config`` (the message names the key).
    """

    kind: str = "none"
    """none (this process), torchrun (plain DDP; also the CPU multi-process path, gloo) or accelerate
    (DDP or FSDP as the ``accelerate_config`` file says)."""
    num_processes: int = 1
    """Processes per training job (= GPUs with device cuda)."""
    accelerate_config: str | None = None
    """accelerate config file (config/accelerate/ddp.yaml, config/accelerate/fsdp.yaml); kind accelerate."""
    mixed_precision: str | None = None
    """accelerate ``--mixed_precision`` (no, bf16, fp16); None = as the accelerate config file says."""

    def __post_init__(self):
        n = self.num_processes
        if self.kind not in LAUNCHERS:
            raise ValueError(f"launcher.kind={self.kind!r} is not one of {list(LAUNCHERS)}")
        if int(n) < 1:
            raise ValueError(f"launcher.num_processes must be >= 1, got {n}")
        if self.kind == "none" and n > 1:
            raise ValueError(f"launcher.num_processes={n} needs launcher.kind torchrun or accelerate")
        if self.kind == "accelerate" and not self.accelerate_config:
            raise ValueError(
                "launcher.kind accelerate needs launcher.accelerate_config (config/accelerate/*.yaml)"
            )

    @classmethod
    def from_section(cls, section: dict | None) -> LauncherConfig:
        """Build from the config's ``launcher:`` section (None or {} = in this process).

        Raises:
            ValueError: an unknown key (names it), or a value :class:`LauncherConfig` rejects.
        """
        section = dict(section or {})
        _check_keys(section, {f.name for f in fields(cls)}, "launcher")
        return cls(**section)

    @property
    def multiprocess(self) -> bool:
        """Whether the stage runs under a launcher (any kind other than ``none``)."""
        return self.kind != "none"


@dataclass(kw_only=True)
class TrainRunConfig(TrainConfig):
    """One training stage: everything it reads, inputs, outputs and hyperparameters (``train_config.json``).

    The optimisation fields are :class:`TrainConfig`'s; the others are listed below. Paths are strings as
    written in the rule (relative to the workflow directory).

    Raises:
        ValueError: unknown ``stage`` or ``device``, a missing or superfluous sequence length for the stage
            (``seq_len`` for pretrain, ``max_len`` for sft), or a bad optimisation / launcher value (names
            the key).
    """

    stage: str
    """pretrain (packed domain text, ``moelab.train.pretrain``) or sft (chat examples, ``moelab.train.sft``)."""
    model: str
    """Folder of the HF checkpoint training starts from."""
    data: dict[str, str]
    """Source (pretraining domain / instruction data set) -> its JSONL file."""
    out_dir: str
    """Folder the trained model (save_pretrained + tokenizer) is written to."""
    log_csv: str
    """Per-step training log (a copy of the one kept beside the checkpoints)."""
    ckpt_dir: str
    """Checkpoint folder (outside the rule's outputs, so a killed job resumes from it)."""
    summary: str
    """JSON file the run's summary is written to (losses, tokens, throughput, processes)."""
    seed: int = field()
    """Seed of the run: data sampler, torch RNG (dropout, router noise), the run's fingerprint."""
    device: str = "cpu"
    """cpu or cuda (``moelab.runtime.resolve_device`` checks a GPU exists)."""
    dtype: str = "float32"
    """Parameter / compute dtype: float32 or bfloat16 (``moelab.runtime.resolve_dtype``)."""
    threads: int = 1
    """CPU threads of the job, shared by its processes (each of N processes uses threads // N)."""
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    """How the stage runs (in this process, torchrun, accelerate launch); a launcher section is converted."""
    batch_size: int
    """Rows per optimiser step (the global batch over all processes): packed blocks or chat examples."""
    domain_weights: dict[str, float]
    """Source -> sampling weight >= 0 (normalised at run time); sft reads only the sources weighted > 0."""
    seq_len: int | None = None
    """pretrain: tokens per packed block."""
    max_len: int | None = None
    """sft: max tokens per chat example (longer ones are cut)."""
    mixture: dict | None = None
    """The data mixture strategy (``moelab.mixture.make_mixture``). pretrain (config ``pretrain.mixture``):
    strategy, init, eval_interval, eta, smoothing, reference_loss; None = static ``domain_weights``, held-out
    loss measured every 10 steps. sft (config ``sft.mixture``): strategy (MoE-SFT's dynamic mixture and
    baselines), init, eval_interval, eta, smoothing, distance, layers, dev_examples, eval_batches
    (``moelab.train.sft``); None = static ``domain_weights``."""
    freeze_router: bool = False
    """sft: keep every MoE router's parameters fixed (MoE-SFT trains with frozen routers), exactly the router
    modules' parameters (``moelab.train.sft.freeze_routers``)."""
    reference_loss: dict[str, float] | None = None
    """pretrain: the measured reference loss per domain (nats/token; the dense model's held-out loss, rule
    ``reference_loss``), used by dynamic mixtures unless ``mixture.reference_loss`` gives fixed values."""
    rounds_csv: str | None = None
    """pretrain: CSV of the evaluation rounds (step, tokens, domain, held-out loss, reference, weight); None =
    not written."""
    discard_checkpoints: bool = False
    """Delete ``ckpt_dir`` once the run has finished (ablation runs: only needed to resume a killed job)."""

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.launcher, LauncherConfig):  # a launcher section (None = this process)
            self.launcher = LauncherConfig.from_section(self.launcher)
        if self.stage not in STAGES:
            raise ValueError(f"train config: stage {self.stage!r} is not one of {list(STAGES)}")
        if self.device not in DEVICES:
            raise ValueError(f"train config: device {self.device!r} is not one of {list(DEVICES)}")
        length, other = ("seq_len", "max_len") if self.stage == "pretrain" else ("max_len", "seq_len")
        if getattr(self, length) is None:
            raise ValueError(f"train config: stage {self.stage} needs {length}")
        if getattr(self, other) is not None:
            raise ValueError(f"train config: {other} is not a setting of stage {self.stage}")
        if self.stage != "sft" and self.freeze_router:
            raise ValueError(f"train config: freeze_router is not a setting of stage {self.stage}")
        if int(self.batch_size) < 1:
            raise ValueError(f"train config: batch_size must be a positive integer, got {self.batch_size}")

    @classmethod
    def hyperparameters(cls) -> list[str]:
        """The keys a config section (``pretrain:`` / ``sft:``) may hold: every field but the run's own."""
        return [f.name for f in fields(cls) if f.name not in _RUN_FIELDS]

    @classmethod
    def from_section(cls, section: dict, **run) -> TrainRunConfig:
        """Build from a config section (``moelab.config.train_section``) and the run's own fields.

        Args:
            section: hyperparameters (:meth:`hyperparameters`), e.g. ``{"steps": 40, "lr": 2e-4, ...}``.
            **run: stage, model, data, out_dir, log_csv, ckpt_dir, summary, seed, device, dtype, threads,
                launcher (a dict or :class:`LauncherConfig`), discard_checkpoints.

        Raises:
            ValueError: a key of ``section`` that is not a hyperparameter (names it), or a bad value.
        """
        _check_keys(section, set(cls.hyperparameters()), "train config section")
        return cls.from_dict({**section, **run})

    @classmethod
    def from_dict(cls, d: dict) -> TrainRunConfig:
        """Build from :meth:`to_dict` output (a parsed ``train_config.json``).

        Raises:
            ValueError: an unknown key or a missing required one (names it), or a bad value.
        """
        _check_keys(d, {f.name for f in fields(cls)}, "train config")
        required = [f.name for f in fields(cls) if f.name not in d and _required(f)]
        if required:
            raise ValueError(f"train config: missing key {required[0]!r}")
        return cls(**d)

    @classmethod
    def read(cls, path: str | Path) -> TrainRunConfig:
        """Read a ``train_config.json`` written by :meth:`write`."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict:
        """Every field as JSON-serialisable values (the launcher as a nested dict, betas as a list): the
        run's own fields first, then the hyperparameters."""
        d = {**asdict(self), "betas": list(self.betas)}
        run = [f.name for f in fields(self) if f.name in _RUN_FIELDS]
        return {k: d[k] for k in run + self.hyperparameters()}

    def write(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON to ``path`` (atomically); returns the path."""
        from moelab.provenance import write_json

        write_json(path, self.to_dict())
        return Path(path)

    def section(self) -> dict:
        """The hyperparameters as a dict (what fingerprints the run together with its inputs and seed)."""
        d = self.to_dict()
        return {k: d[k] for k in self.hyperparameters()}


# fields describing the run (where, what, how launched), not how it trains: never in a config section
_RUN_FIELDS = frozenset(
    {"stage", "model", "data", "out_dir", "log_csv", "ckpt_dir", "summary", "seed", "device", "dtype",
     "threads", "launcher", "discard_checkpoints", "reference_loss", "rounds_csv"}
)  # fmt: skip


def _required(f) -> bool:
    return f.default is MISSING and f.default_factory is MISSING


def _check_keys(d: dict, allowed: set[str], what: str) -> None:
    unknown = [k for k in d if k not in allowed]
    if unknown:
        raise ValueError(f"{what}: unknown key {unknown[0]!r} (known: {sorted(allowed)})")
