"""Import a Mixtral-format checkpoint (MixtralForCausalLM: Mixtral-8x7B, ...) into our LlamaMoE.

The inverse of `moelab.models.export_mixtral`. Mixtral's MoE block (Jiang et al. 2024, arXiv 2401.04088,
sec. 2.1; transformers 5 models/mixtral MixtralTopKRouter + MixtralExperts) computes, per token x [H]:

    p = softmax(W_g x)  [N],   (I, v) = top-k(p),   g = v / sum(v),
    y = sum_j g_j * w2_{I_j} (silu(w1_{I_j} x) * w3_{I_j} x),   every expert of width I (intermediate_size)

which is our LlamaMoE layer with router_type "softmax_topk" (`moelab.models.routers.SoftmaxTopKRouter`),
gate_network "linear" and output scale s = 1 (score_scale_factor 1.0, not the N/k default). Attention, norms,
rotary embedding and head are Llama's (Mixtral has no attention bias; sliding_window must be null). So the
import is a renaming plus a concatenation of the experts, exact (no arithmetic on the weights).

Tensor names (per layer l; H hidden, I expert width, N experts) -> ours:
    on disk (mistralai/Mixtral-8x7B-v0.1; what transformers' save_pretrained writes):
        model.layers.{l}.block_sparse_moe.gate.weight            [N, H] -> mlp.router.gate_network.weight
        model.layers.{l}.block_sparse_moe.experts.{e}.w1.weight  [I, H] -> rows e*I:(e+1)*I of mlp.experts.gate_proj
        model.layers.{l}.block_sparse_moe.experts.{e}.w3.weight  [I, H] -> rows of mlp.experts.up_proj
        model.layers.{l}.block_sparse_moe.experts.{e}.w2.weight  [H, I] -> columns of mlp.experts.down_proj
    in memory (transformers >= 5 fuses the experts at load time; `MixtralForCausalLM.state_dict()`):
        model.layers.{l}.mlp.gate.weight                         [N, H] -> mlp.router.gate_network.weight
        model.layers.{l}.mlp.experts.gate_up_proj                [N, 2I, H]: [:, :I] = w1, [:, I:] = w3
        model.layers.{l}.mlp.experts.down_proj                   [N, H, I] = w2 per expert
    everything else (embed_tokens, self_attn.{q,k,v,o}_proj, norms, lm_head) keeps its name.
Ours: gate_proj / up_proj [N*I, H], down_proj [H, N*I], expert e owning neurons e*I:(e+1)*I
(`moelab.models.experts`), config intermediate_size = N*I with equal expert sizes.

Config fields: num_local_experts -> num_experts, num_experts_per_tok -> top_k, intermediate_size I ->
intermediate_size N*I, router_aux_loss_coef c -> balance_loss_weight c * K / L (L layers; equal loss at balance,
see `moelab.models.export_mixtral.mixtral_aux_loss_coef`), the shared decoder fields as they are.
Dropped: router_jitter_noise (Mixtral multiplies the MoE input by U(1 - j, 1 + j) in training mode only; our
model has no jitter, so evaluation is identical and training differs: a warning names it),
output_router_logits (a forward option).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from .configuration_llama_moe import LlamaMoEConfig
from .export_mixtral import MIXTRAL_SHARED_FIELDS, balance_loss_weight_from_mixtral

log = logging.getLogger(__name__)

MIXTRAL_MODEL_TYPE = "mixtral"
# config.json keys a Mixtral config must state (transformers' defaults would silently be Mixtral-8x7B's)
_REQUIRED_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_local_experts",
    "num_experts_per_tok",
)
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")
_GATE = re.compile(r"^model\.layers\.(\d+)\.(?:block_sparse_moe|mlp)\.gate\.weight$")
_EXPERT = re.compile(r"^model\.layers\.(\d+)\.(?:block_sparse_moe|mlp)\.experts\.(\d+)\.(w1|w2|w3)\.weight$")
_FUSED = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)$")


def _as_dict(config) -> dict:
    """A config.json dict of `config` (a dict, or a transformers config object)."""
    return dict(config) if isinstance(config, Mapping) else config.to_dict()


def is_mixtral_config(config) -> bool:
    """Whether `config` (config.json dict or config object) is a Mixtral config (model_type "mixtral")."""
    return _as_dict(config).get("model_type") == MIXTRAL_MODEL_TYPE


def mixtral_import_problems(config) -> list[str]:
    """Reasons why `config` (config.json dict or config object) cannot be imported (empty list = importable).

    Each reason names the config key: a model_type other than "mixtral" (then nothing else is checked), a
    missing size key, top-k outside [1, num_local_experts], or a sliding window shorter than the context (our
    attention is full causal attention).
    """
    d = _as_dict(config)
    if d.get("model_type") != MIXTRAL_MODEL_TYPE:
        return [
            f"model_type={d.get('model_type')!r}: not a Mixtral config (needs model_type 'mixtral', "
            "the layout of MixtralForCausalLM)"
        ]
    problems = [f"{key} is missing" for key in _REQUIRED_KEYS if d.get(key) is None]
    n, k = d.get("num_local_experts"), d.get("num_experts_per_tok")
    if isinstance(n, int) and isinstance(k, int) and not 1 <= k <= n:
        problems.append(f"num_experts_per_tok={k} must lie in [1, num_local_experts={n}]")
    window, context = d.get("sliding_window"), d.get("max_position_embeddings")
    if window is not None and (context is None or window < context):
        problems.append(
            f"sliding_window={window} (< max_position_embeddings={context}): our LlamaMoE attends to the whole "
            "context; only Mixtral checkpoints without a window (sliding_window null) import exactly"
        )
    return problems


def llama_moe_config_from_mixtral(config) -> LlamaMoEConfig:
    """Our LlamaMoEConfig for a Mixtral config (config.json dict or MixtralConfig); mapping in the module docstring.

    Raises:
        ValueError: not an importable Mixtral config; names every offending key (`mixtral_import_problems`).
    """
    from transformers import MixtralConfig

    problems = mixtral_import_problems(config)
    if problems:
        raise ValueError("cannot import as a Mixtral checkpoint: " + "; ".join(problems))
    d = _as_dict(config)
    try:  # normalises old files (rope_theta -> rope_parameters, torch_dtype -> dtype) and checks the types
        mcfg = MixtralConfig.from_dict({k: v for k, v in d.items() if k != "model_type"})
    except Exception as err:  # transformers' strict validation names the field
        raise ValueError(f"cannot import as a Mixtral checkpoint: {err}") from err
    d = mcfg.to_dict()
    jitter = float(d.get("router_jitter_noise") or 0.0)
    if jitter > 0:
        log.warning(
            "router_jitter_noise=%s dropped: LlamaMoE has no input jitter (Mixtral applies it in training "
            "mode only; evaluation is identical)",
            jitter,
        )
    n, k, layers = mcfg.num_local_experts, mcfg.num_experts_per_tok, mcfg.num_hidden_layers
    kept = {key: d[key] for key in MIXTRAL_SHARED_FIELDS if d.get(key) is not None}
    return LlamaMoEConfig(
        **kept,
        intermediate_size=n * mcfg.intermediate_size,
        num_experts=n,
        top_k=k,
        router_type="softmax_topk",
        gate_network="linear",
        score_scale_factor=1.0,
        balance_loss_weight=balance_loss_weight_from_mixtral(mcfg.router_aux_loss_coef, k, layers),
        attention_bias=False,
        mlp_bias=False,
        architectures=["LlamaMoEForCausalLM"],
    )


def _layer_experts(layer: int, per_expert: dict, fused: dict, config: LlamaMoEConfig) -> dict:
    """Our three expert tensors of one layer from its Mixtral expert tensors (one of the two layouts).

    Returns: {"gate_proj": [N*I, H], "up_proj": [N*I, H], "down_proj": [H, N*I]}.
    Raises: ValueError naming the layer when both layouts or neither are present, or experts are missing.
    """
    n = config.layer_num_experts(layer)
    prefix = f"model.layers.{layer}"
    if per_expert and fused:
        raise ValueError(f"{prefix} holds both the per-expert (w1/w2/w3) and the fused expert layout")
    if fused:
        missing = sorted({"gate_up_proj", "down_proj"} - set(fused))
        if missing:
            raise ValueError(
                f"{prefix}.mlp.experts: {missing} missing (fused layout needs gate_up_proj, down_proj)"
            )
        gate_up, down = fused["gate_up_proj"], fused["down_proj"]  # [N, 2I, H], [N, H, I]
        if gate_up.dim() != 3 or gate_up.shape[0] != n or gate_up.shape[1] % 2:
            raise ValueError(
                f"{prefix}.mlp.experts.gate_up_proj has shape {tuple(gate_up.shape)}, [{n}, 2I, H] expected"
            )
        width = gate_up.shape[1] // 2
        h = gate_up.shape[2]
        return {
            "gate_proj": gate_up[:, :width].reshape(n * width, h),
            "up_proj": gate_up[:, width:].reshape(n * width, h),
            "down_proj": down.permute(1, 0, 2).reshape(down.shape[1], -1),  # [H, N, I] -> [H, N*I]
        }
    out = {}
    for w, ours, dim in (("w1", "gate_proj", 0), ("w3", "up_proj", 0), ("w2", "down_proj", 1)):
        found = per_expert.get(w, {})
        if sorted(found) != list(range(n)):
            raise ValueError(
                f"{prefix}.block_sparse_moe.experts.*.{w}.weight: experts {sorted(found)} found, "
                f"num_local_experts={n}"
            )
        out[ours] = torch.cat([found[e] for e in range(n)], dim=dim)
    return out


def convert_mixtral_state_dict(
    state: Mapping[str, torch.Tensor], config: LlamaMoEConfig
) -> dict[str, torch.Tensor]:
    """Rename and concatenate Mixtral tensors into our state dict (mapping in the module docstring).

    Works on any subset that holds whole layers (the folder import converts one layer at a time).

    Args:
        state: Mixtral name -> tensor, in the on-disk per-expert layout or transformers 5's fused one.
        config: the converted config (`llama_moe_config_from_mixtral`), for the expert counts.

    Returns:
        our name -> tensor; same dtypes; expert e's rows / columns at e*I:(e+1)*I (no values changed).

    Raises:
        ValueError: a layer mixes the two layouts, misses experts, or holds an MoE tensor with no counterpart
            (e.g. an expert bias); names the tensor.
    """
    out: dict[str, torch.Tensor] = {}
    per_expert: dict[int, dict[str, dict[int, torch.Tensor]]] = {}
    fused: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in state.items():
        if name.endswith("rotary_emb.inv_freq"):  # recomputed from rope_parameters
            continue
        if m := _GATE.match(name):
            out[f"model.layers.{m.group(1)}.mlp.router.gate_network.weight"] = tensor
        elif m := _EXPERT.match(name):
            per_expert.setdefault(int(m.group(1)), {}).setdefault(m.group(3), {})[int(m.group(2))] = tensor
        elif m := _FUSED.match(name):
            fused.setdefault(int(m.group(1)), {})[m.group(2)] = tensor
        elif ".block_sparse_moe." in name or ".mlp." in name:
            raise ValueError(f"Mixtral tensor {name} has no counterpart in LlamaMoE (expert bias / unknown)")
        else:
            out[name] = tensor
    for layer in sorted(set(per_expert) | set(fused)):
        for proj, tensor in _layer_experts(
            layer, per_expert.get(layer, {}), fused.get(layer, {}), config
        ).items():
            out[f"model.layers.{layer}.mlp.experts.{proj}"] = tensor
    return out


def _expected_shapes(config: LlamaMoEConfig) -> dict[str, torch.Size]:
    """Name -> shape of every tensor a LlamaMoEForCausalLM of `config` saves (meta device: no memory)."""
    from .modeling_llama_moe import LlamaMoEForCausalLM

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LlamaMoEForCausalLM(config).state_dict().items()}
    if config.tie_word_embeddings:
        shapes.pop("lm_head.weight", None)
    return shapes


def _mismatch(got: Mapping[str, torch.Size], expected: Mapping[str, torch.Size], complete: bool) -> str:
    """'' if `got` fits `expected` (and covers it when `complete`), else what is missing / unexpected / misshapen."""
    unexpected = sorted(set(got) - set(expected))
    missing = sorted(set(expected) - set(got)) if complete else []
    bad = [
        f"{k} {tuple(got[k])} != {tuple(expected[k])}" for k in got if k in expected and got[k] != expected[k]
    ]
    if not (missing or unexpected or bad):
        return ""
    return f"missing {missing[:6]}, unexpected {unexpected[:6]}, wrong shapes {bad[:6]}"


@torch.no_grad()
def import_mixtral(config, state_dict: Mapping[str, torch.Tensor]):
    """An equivalent LlamaMoEForCausalLM (eval mode) of a Mixtral config + state dict, in memory.

    For small models and tests; a folder is converted layer by layer by `write_mixtral_as_ours`.

    Args:
        config: MixtralConfig or its config.json dict.
        state_dict: Mixtral name -> tensor, on-disk layout (block_sparse_moe.experts.{e}.w1/w2/w3) or the fused
            layout of transformers >= 5 (`MixtralForCausalLM.state_dict()`).

    Returns:
        LlamaMoEForCausalLM in the dtype of the state dict; its logits equal MixtralForCausalLM's up to float
        rounding of the expert sum order (exactly the same weights).

    Raises:
        ValueError: the config is not an importable Mixtral one (names the key), or the tensors do not match it
            (names the missing / unexpected / misshapen ones).
    Source: Mixtral of Experts (arXiv 2401.04088) sec. 2.1; layout of mistralai/Mixtral-8x7B-v0.1.
    """
    from .modeling_llama_moe import LlamaMoEForCausalLM

    cfg = llama_moe_config_from_mixtral(config)
    state = convert_mixtral_state_dict(state_dict, cfg)
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    problem = _mismatch({k: v.shape for k, v in state.items()}, _expected_shapes(cfg), complete=True)
    if problem:
        raise ValueError(f"the Mixtral state dict does not match its config: {problem}")
    dtype = next(iter(state.values())).dtype
    cfg.dtype = dtype
    if cfg.tie_word_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten; keep the global RNG as it was
        model = LlamaMoEForCausalLM(cfg).to(dtype)
    model.load_state_dict(state, strict=True)  # raises on any missing / unexpected key
    model.tie_weights()
    return model.eval()


def _tensor_index(folder: Path) -> tuple[dict[str, Path], Callable[[str], torch.Tensor]]:
    """(tensor name -> file, a loader of one tensor) of a checkpoint folder, reading no tensor data yet.

    *.safetensors (via the index, else every file) are opened lazily (one tensor at a time);
    pytorch_model*.bin files are memory-mapped (``weights_only=True``).

    Raises:
        FileNotFoundError: no weights, or the index names a missing shard.
        ValueError: a weights file does not open (names it).
    """
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = {k: folder / v for k, v in json.loads(index.read_text())["weight_map"].items()}
        missing = sorted({p.name for p in weight_map.values() if not p.is_file()})
        if missing:
            raise FileNotFoundError(f"{index} names shards that are not in {folder}: {missing}")
        files = sorted(set(weight_map.values()))
    else:
        files, weight_map = sorted(folder.glob("*.safetensors")), {}
    handles: dict[Path, object] = {}

    def _open(path: Path):
        if path not in handles:
            try:
                if path.suffix == ".safetensors":
                    handles[path] = safe_open(str(path), "pt")
                else:
                    handles[path] = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except Exception as err:  # safetensors / torch errors do not name the file
                raise ValueError(
                    f"cannot read the weights file {path} (truncated or corrupt?): {err}"
                ) from err
        return handles[path]

    if not files:
        files = sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise FileNotFoundError(f"{folder} holds no *.safetensors or pytorch_model*.bin weights")
    if not weight_map:
        for path in files:
            weight_map.update({k: path for k in _open(path).keys()})

    def load(name: str) -> torch.Tensor:
        handle = _open(weight_map[name])
        return handle.get_tensor(name) if hasattr(handle, "get_tensor") else handle[name]

    return weight_map, load


@torch.no_grad()
def write_mixtral_as_ours(folder: str | Path, out_dir: str | Path) -> dict:
    """Write a Mixtral checkpoint folder as our LlamaMoE layout (config.json + one safetensors shard per layer).

    Converts one decoder layer at a time (peak memory ~ two copies of one layer: ~6 GB for Mixtral-8x7B in
    bf16), tensors in their stored dtype; shards model-XXXXX-of-YYYYY.safetensors (one per decoder layer, the
    last with embeddings, final norm and lm_head), model.safetensors.index.json and generation_config.json.
    No tokenizer (see moelab.models.materialise.materialise_mixtral).

    Returns:
        provenance: {"converted_from": "mixtral"} plus "dropped" (config keys with no LlamaMoE counterpart and
        a non-default value, e.g. router_jitter_noise) when there are some.

    Raises:
        FileNotFoundError: no config.json or no weights in ``folder``.
        ValueError: not an importable Mixtral config (names the key), or tensors that do not match it (names
            the missing / unexpected / misshapen ones).
    """
    from safetensors.torch import save_file

    from .modeling_llama_moe import LlamaMoEGenerationConfig

    folder, out_dir = Path(folder), Path(out_dir)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{folder} is not a model folder: config.json is missing")
    raw = json.loads(cfg_path.read_text())
    config = llama_moe_config_from_mixtral(raw)
    weight_map, load = _tensor_index(folder)
    expected = _expected_shapes(config)
    groups: dict[int | None, list[str]] = {}
    for name in weight_map:
        m = _LAYER.match(name)
        groups.setdefault(int(m.group(1)) if m else None, []).append(name)
    extra = sorted(i for i in groups if i is not None and i >= config.num_hidden_layers)
    if extra:
        raise ValueError(f"{folder} holds layers {extra} beyond num_hidden_layers={config.num_hidden_layers}")
    order = [*range(config.num_hidden_layers), None]
    out_dir.mkdir(parents=True, exist_ok=True)
    new_map, got, total, dtype = {}, {}, 0, None
    for i, group in enumerate(order):
        state = convert_mixtral_state_dict({n: load(n) for n in groups.get(group, [])}, config)
        if config.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        problem = _mismatch({k: v.shape for k, v in state.items()}, expected, complete=False)
        if problem:
            raise ValueError(f"the Mixtral checkpoint in {folder} does not match its config: {problem}")
        shard = f"model-{i + 1:05d}-of-{len(order):05d}.safetensors"
        state = {k: v.contiguous() for k, v in state.items()}
        save_file(state, str(out_dir / shard), metadata={"format": "pt"})
        for k, v in state.items():
            new_map[k], got[k] = shard, v.shape
            total += v.numel() * v.element_size()
            dtype = dtype or v.dtype
        del state
    problem = _mismatch(got, expected, complete=True)
    if problem:
        raise ValueError(f"the Mixtral checkpoint in {folder} does not match its config: {problem}")
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(new_map.items()))}
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    config.dtype = dtype
    config.save_pretrained(out_dir)
    LlamaMoEGenerationConfig.from_model_config(config).save_pretrained(out_dir)  # without the MoE top_k
    info: dict = {"converted_from": MIXTRAL_MODEL_TYPE}
    jitter = raw.get("router_jitter_noise") or 0.0
    if jitter:
        info["dropped"] = {"router_jitter_noise": jitter}
    return info


__all__ = [
    "MIXTRAL_MODEL_TYPE",
    "convert_mixtral_state_dict",
    "import_mixtral",
    "is_mixtral_config",
    "llama_moe_config_from_mixtral",
    "mixtral_import_problems",
    "write_mixtral_as_ours",
]
