"""Adapters on a frozen pretrained BERT-family encoder: Houlsby, Pfeiffer, parallel (MAM-style) and LoRA.

:func:`add_adapters` wraps the encoder's layers in place and freezes everything but the adapters and the
classification head. The three bottleneck kinds are our own small modules; LoRA is peft's
(``peft.inject_adapter_in_model``). Supported encoders: transformers ``BertModel`` / ``RobertaModel`` (post-LN
layers whose attention and FFN end in an ``*Output`` module ``LayerNorm(dropout(dense(h)) + x)``), bare or
inside a ``*ForSequenceClassification``.

Shape legend: B batch, T tokens, d hidden size, r bottleneck width (``bottleneck``), I FFN width.

The bottleneck adapter (Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP", ICML,
Section 2.1, Figure 2) maps ``h [B, T, d]`` to ``U f(D h + b_D) + b_U`` with ``D`` [r, d], ``U`` [d, r] and a
nonlinearity ``f`` (ReLU by default); each placement adds it to its input (the adapter's skip connection):

- ``houlsby`` (Houlsby et al. 2019, Section 2.1, Figure 2): twice per layer, on the output of the attention's
  output projection and of the FFN's output projection, before the sublayer's skip connection and LayerNorm:
  ``out = LN(h + A(h) + x)`` with ``h = dropout(dense(.))`` and ``x`` the sublayer input.
- ``pfeiffer`` (Pfeiffer et al. 2021, "AdapterFusion", EACL, Section 3 and Figure 2): once per layer, after
  the FFN sublayer's Add & Norm: ``y = LN(h + x)``, ``out = y + A(y)``. Deviation: AdapterFusion's figure
  draws one more Add & Norm after the adapter; we stop at the adapter's skip connection, so a zero
  up-projection leaves the encoder exactly as it was.
- ``parallel`` (He et al. 2022, "Towards a Unified View of Parameter-Efficient Transfer Learning", ICLR,
  Section 3, the scaled parallel adapter at the FFN, the FFN half of their MAM adapter, Section 4): beside the
  FFN, reading the FFN's input ``x``: ``out = LN(h + s * A(x) + x)``, scale ``s`` (``scale``, default 4 as in
  MAM). MAM's prefix-tuning half (at attention) is not built.
- ``lora`` (Hu et al. 2021, "LoRA", ICLR 2022, Section 4.1, eq. 3): ``W x + (alpha / r) B A x`` on the
  attention's query and value projections (their Section 4.2 choice), ``A`` [r, d], ``B`` [d, r], no bias.

Initialisation (``init``): ``near_identity`` draws every projection weight from a zero-mean Gaussian with
standard deviation 1e-2 truncated at two standard deviations, biases zero (Houlsby et al. 2019, Section 2.1
near-identity initialisation; the scale of their Section 3.6), so the adapted encoder starts close to the
pretrained one; ``zero_up`` makes the up-projection (LoRA's ``B``) exactly zero and the down-projection
random (nn.Linear's Kaiming-uniform; for LoRA peft's Gaussian ``A``, Hu et al. Section 4.1), so the adapted
encoder starts exactly at the pretrained one. Defaults: ``near_identity`` for the bottleneck kinds,
``zero_up`` for LoRA. NB for pruning at initialisation: under ``zero_up`` the magnitude, SNIP, GraSP and
SynFlow scores of the up-projection are all zero, and so are the SNIP and SynFlow scores of the
down-projection (no gradient reaches it through a zero up-projection; GraSP's ``Hg`` does, through the Hessian
block coupling it to the up-projection's gradient): those weights are pruned at random (ties are broken at
random, :func:`moelab.adapters.masks.global_masks`; :func:`moelab.adapters.pruners.prune` warns). Prune a ``zero_up`` adapter with ``random`` or
``magnitude`` only, or use ``near_identity``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from moelab.adapters.masks import is_masked, mask_of
from moelab.adapters.options import ADAPTER_KINDS, INITS, check_choice, check_positive_int
from moelab.errors import ConfigError

NONLINEARITIES = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}  # keys: options.NONLINEARITIES
LORA_TARGETS = ("query", "value")
NEAR_IDENTITY_STD = 1e-2  # Houlsby et al. 2019: zero-mean Gaussian, std 1e-2, truncated at 2 std


@dataclass(frozen=True)
class AdapterSpec:
    """What :func:`add_adapters` did to a model (kept as ``model.adapter_spec``; its arguments, resolved)."""

    kind: str  # houlsby, pfeiffer, parallel or lora
    bottleneck: int  # adapter width r (LoRA's rank)
    init: str  # near_identity or zero_up (the default resolved per kind)
    nonlinearity: str  # the bottleneck adapters' f (unused by LoRA)
    scale: float  # the parallel adapter's branch scale s (unused by the other kinds)
    lora_alpha: float  # LoRA's alpha; the update is scaled by alpha / r (unused by the bottleneck kinds)
    train_layer_norms: bool  # the encoder's LayerNorms trainable too
    seed: int  # seeded the adapters' initialisation

    def to_dict(self) -> dict:
        """The fields as a plain dict (for a result's meta.json)."""
        return asdict(self)


class BottleneckAdapter(nn.Module):
    """``h [..., d] -> U f(D h + b_D) + b_U [..., d]`` (Houlsby et al. 2019, Section 2.1): the adapter's branch.

    The caller adds the skip connection. ``down`` [r, d] and ``up`` [d, r] are ``nn.Linear`` with bias; masks
    (``moelab.adapters.masks``) go on their weights only.
    """

    def __init__(
        self, hidden_size: int, bottleneck: int, nonlinearity: str = "relu", init: str = "near_identity"
    ):
        super().__init__()
        self.down = nn.Linear(hidden_size, bottleneck)
        self.act = NONLINEARITIES[nonlinearity]()
        self.up = nn.Linear(bottleneck, hidden_size)
        self.reset_parameters(init)

    @torch.no_grad()
    def reset_parameters(self, init: str) -> None:
        """Initialise from the global torch RNG (see the module docstring for ``init``)."""
        if init == "near_identity":
            for lin in (self.down, self.up):
                s = NEAR_IDENTITY_STD
                nn.init.trunc_normal_(lin.weight, std=s, a=-2 * s, b=2 * s)
        else:  # zero_up: down keeps nn.Linear's Kaiming-uniform weights
            self.down.reset_parameters()
            nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(h)))


class _AdaptedOutput(nn.Module):
    """A BERT ``*SelfOutput`` / ``*Output`` with an adapter; keeps the original's ``dense``, ``dropout`` and
    ``LayerNorm`` under their own names (so the frozen weights keep their state-dict keys)."""

    def __init__(self, base: nn.Module, adapter: BottleneckAdapter, scale: float = 1.0):
        super().__init__()
        self.dense, self.dropout, self.LayerNorm = base.dense, base.dropout, base.LayerNorm
        self.adapter = adapter
        self.scale = scale


class HoulsbyOutput(_AdaptedOutput):
    """``LN(h + A(h) + x)``, ``h = dropout(dense(hidden))`` [B, T, d] (Houlsby et al. 2019, Figure 2)."""

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.dense(hidden_states))
        return self.LayerNorm(h + self.adapter(h) + input_tensor)


class PfeifferOutput(_AdaptedOutput):
    """``y + A(y)``, ``y = LN(dropout(dense(hidden)) + x)`` [B, T, d] (Pfeiffer et al. 2021, Figure 2)."""

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        y = self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)
        return y + self.adapter(y)


class ParallelOutput(_AdaptedOutput):
    """``LN(h + s * A(x) + x)`` with ``x`` the FFN input [B, T, d] (He et al. 2022, scaled parallel adapter)."""

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.dense(hidden_states))
        return self.LayerNorm(h + self.scale * self.adapter(input_tensor) + input_tensor)


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's layer list of a BERT-family model (``model.base_model.encoder.layer``).

    Raises:
        ValueError: the model has no such list or its layers are not post-LN BERT layers (names the type).
    """
    base = getattr(model, "base_model", model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or not layers:
        raise ValueError(f"{type(model).__name__} has no encoder.layer list: adapters support BERT / RoBERTa")
    for i, layer in enumerate(layers):
        for where in (layer.attention.output, layer.output):
            if not all(hasattr(where, a) for a in ("dense", "dropout", "LayerNorm")):
                raise ValueError(
                    f"{type(model).__name__} layer {i} {type(where).__name__} is not a BERT output block "
                    "(dense, dropout, LayerNorm): adapters support BERT / RoBERTa"
                )
    return layers


def head_parameter_names(model: nn.Module) -> list[str]:
    """Names of the classification head's parameters: everything outside the base encoder, plus BERT's
    pooler (pretrained dense + tanh on [CLS], the counterpart of RoBERTa's head dense layer). For a bare
    encoder only its pooler (none for a model without one)."""
    prefix = getattr(model, "base_model_prefix", "")
    base = getattr(model, "base_model", model)
    names = []
    for name, _ in model.named_parameters():
        if base is model:
            inside, rest = True, name
        else:
            inside, rest = name.startswith(prefix + "."), name.removeprefix(prefix + ".")
        if not inside or rest.startswith("pooler."):
            names.append(name)
    return names


def add_adapters(
    model: nn.Module,
    kind: str,
    bottleneck: int,
    *,
    init: str | None = None,
    nonlinearity: str = "relu",
    scale: float = 4.0,
    lora_alpha: float = 8.0,
    lora_targets: tuple[str, ...] = LORA_TARGETS,
    train_head: bool = True,
    train_layer_norms: bool = False,
    seed: int = 0,
) -> nn.Module:
    """Add adapters of ``kind`` to every encoder layer, in place, and freeze all but adapters and head.

    Args:
        model: a transformers BERT / RoBERTa model (bare or ``*ForSequenceClassification``); not adapted yet.
        kind: ``houlsby``, ``pfeiffer``, ``parallel`` or ``lora`` (formulas and sources: module docstring).
        bottleneck: adapter width r (LoRA's rank), a positive integer; SparseAdapter used 64 at base size.
        init: ``near_identity`` or ``zero_up`` (None: ``near_identity`` for bottleneck kinds, ``zero_up``
            for LoRA).
        nonlinearity: ``relu`` (SparseAdapter, Pfeiffer), ``gelu`` or ``tanh``; bottleneck kinds only.
        scale: ``parallel`` only, the branch's scale s (He et al. 2022 MAM: 4; AdaptFormer: 0.1).
        lora_alpha: LoRA's alpha (the update is scaled by alpha / r; Hu et al. keep alpha fixed as r varies,
            so a Large-Sparse LoRA keeps the dense one's alpha).
        lora_targets: names of the Linear modules LoRA adapts (default query and value).
        train_head: leave the classification head (and BERT's pooler) trainable.
        train_layer_norms: also train the encoder's LayerNorms (Houlsby et al. 2019 did; SparseAdapter's
            adapter runs did not by default).
        seed: seeds the adapters' initialisation (the global RNG is left as it was).

    Returns:
        ``model`` (modified in place), with ``model.adapter_spec`` (:class:`AdapterSpec`).

    Raises:
        ConfigError (a ValueError): unknown ``kind``, ``init`` or ``nonlinearity``, ``bottleneck`` not a
            positive integer, ``scale`` or ``lora_alpha`` not positive; each names the parameter.
        ValueError: the model already has adapters, or is not a BERT-family encoder.
    """
    check_choice(kind, ADAPTER_KINDS, "kind")
    check_positive_int(bottleneck, "bottleneck")
    init = init or ("zero_up" if kind == "lora" else "near_identity")
    check_choice(init, INITS, "init")
    check_choice(nonlinearity, tuple(NONLINEARITIES), "nonlinearity")
    for key, value in (("scale", scale), ("lora_alpha", lora_alpha)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"{key}={value!r} must be a positive number")
    if getattr(model, "adapter_spec", None) is not None:
        raise ValueError(f"model already has {model.adapter_spec.kind} adapters: add_adapters once per model")
    layers = encoder_layers(model)
    d = model.config.hidden_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "lora":
            _add_lora(model, bottleneck, lora_alpha, lora_targets, init)
        else:
            wrap = {"houlsby": HoulsbyOutput, "pfeiffer": PfeifferOutput, "parallel": ParallelOutput}[kind]
            for layer in layers:
                if kind == "houlsby":
                    layer.attention.output = wrap(
                        layer.attention.output, BottleneckAdapter(d, bottleneck, nonlinearity, init)
                    )
                layer.output = wrap(
                    layer.output, BottleneckAdapter(d, bottleneck, nonlinearity, init), float(scale)
                )
    ref = next(model.parameters())
    model.to(device=ref.device, dtype=ref.dtype)
    model.adapter_spec = AdapterSpec(
        kind, bottleneck, init, nonlinearity, float(scale), float(lora_alpha), train_layer_norms, seed
    )
    freeze_for_adapters(model, train_head=train_head, train_layer_norms=train_layer_norms)
    return model


def _add_lora(model: nn.Module, r: int, alpha: float, targets, init: str) -> None:
    import peft

    found = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    missing = [t for t in targets if t not in found]
    if missing:
        raise ConfigError(f"lora_targets={list(targets)}: no Linear module named {missing} in the model")
    config = peft.LoraConfig(
        r=r, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0, bias="none",
        init_lora_weights="gaussian",
    )  # fmt: skip
    peft.inject_adapter_in_model(config, model)
    if init == "near_identity":
        with torch.no_grad():
            s = NEAR_IDENTITY_STD
            for lin in adapter_linears(model).values():
                nn.init.trunc_normal_(lin.weight, std=s, a=-2 * s, b=2 * s)


def adapter_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The prunable adapter projections, name -> Linear, in module order: every bottleneck adapter's
    ``down`` and ``up`` and every LoRA ``lora_A`` / ``lora_B``. Their weights are what the masks cover."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, BottleneckAdapter):
            out[f"{name}.down"] = module.down
            out[f"{name}.up"] = module.up
        elif (
            hasattr(module, "lora_A")
            and hasattr(module, "lora_B")
            and isinstance(module.lora_A, nn.ModuleDict)
        ):
            for key in module.lora_A:
                out[f"{name}.lora_A.{key}"] = module.lora_A[key]
                out[f"{name}.lora_B.{key}"] = module.lora_B[key]
    return out


def adapter_parameter_names(model: nn.Module) -> list[str]:
    """Names of every adapter parameter (bottleneck adapters' weights and biases, LoRA's A and B)."""
    return [n for n, _ in model.named_parameters() if ".adapter." in n or ".lora_" in n]


def freeze_for_adapters(model: nn.Module, train_head: bool = True, train_layer_norms: bool = False) -> None:
    """``requires_grad`` only for adapter parameters, the head (``train_head``) and LayerNorms
    (``train_layer_norms``)."""
    trainable = set(adapter_parameter_names(model))
    if train_head:
        trainable |= set(head_parameter_names(model))
    if train_layer_norms:
        trainable |= {n for n, _ in model.named_parameters() if "LayerNorm" in n}
    for name, p in model.named_parameters():
        p.requires_grad_(name in trainable)


def full_finetuning(model: nn.Module) -> nn.Module:
    """The reference: no adapters, every parameter trainable. Returns ``model``.

    Raises:
        ValueError: the model has adapters.
    """
    if getattr(model, "adapter_spec", None) is not None:
        raise ValueError("full fine-tuning takes a model without adapters")
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameter counts (numbers of scalars) for the tables.

    Returns:
        ``total`` (every parameter, frozen ones included), ``trainable`` (``requires_grad``),
        ``trainable_nonzero`` (trainable, less the entries a mask prunes: the table's non-zero count),
        ``adapter`` and ``adapter_nonzero`` (the same over adapter parameters only, biases included).
    """
    adapter = set(adapter_parameter_names(model))
    pruned = {}
    for name, module in model.named_modules():
        if is_masked(module):
            pruned[f"{name}.parametrizations.weight.original"] = int((mask_of(module) == 0).sum())
    out = dict.fromkeys(("total", "trainable", "trainable_nonzero", "adapter", "adapter_nonzero"), 0)
    for name, p in model.named_parameters():
        n = p.numel()
        kept = n - pruned.get(name, 0)
        out["total"] += n
        if p.requires_grad:
            out["trainable"] += n
            out["trainable_nonzero"] += kept
        if name in adapter:
            out["adapter"] += n
            out["adapter_nonzero"] += kept
    return out
