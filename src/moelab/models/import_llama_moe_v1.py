"""Import a released LLaMA-MoE v1 checkpoint (upstream remote-code layout) into our LlamaMoE.

MoE-SFT (arXiv 2406.11256, sec. 4) instruction-tunes the released LLaMA-MoE-3.5B (2/8); its hub folder holds
the upstream architecture (`config.json` with model_type "llama_moe" and `auto_map` to remote code), which we
never execute (ARCHITECTURE.md: no trust_remote_code). The math of one upstream MoE layer (LLaMA-MoE,
arXiv 2406.16554, sec. 2.2) is the one of our `noisy_topk` router with score scale s:

    logits = G(x) (+ noise in training),  (I, v) = top-k(logits),  g = softmax(v),
    y = s * sum_j g_j * W_down[I_j] (silu(W_gate[I_j] x) * W_up[I_j] x)

Upstream on-disk names (per layer l) and ours:
    model.layers.{l}.mlp.gate.gate_network.{0,2}.weight       -> model.layers.{l}.mlp.router.gate_network.{0,2}.weight
    model.layers.{l}.mlp.gate.weight_noise.weight             -> model.layers.{l}.mlp.router.weight_noise.weight
    model.layers.{l}.mlp.calculator.experts.weight_gate.{e}   [m_e, H], concatenated over e -> mlp.experts.gate_proj
    model.layers.{l}.mlp.calculator.experts.weight_up.{e}     [m_e, H], concatenated over e -> mlp.experts.up_proj
    model.layers.{l}.mlp.calculator.experts.weight_down.{e}   [H, m_e], concatenated on dim 1 -> mlp.experts.down_proj
    everything else (embeddings, attention, norms, lm_head) keeps its name; stored rotary `inv_freq` buffers
    (old transformers) are dropped (recomputed from rope_theta).

Upstream config fields -> ours: num_selects -> top_k, size_experts -> expert_sizes,
gate_balance_loss_weight -> balance_loss_weight (0 if gate_use_balance is false), gate_noise_epsilon ->
noise_epsilon, score_scale_factor (a literal scale upstream) -> score_scale_factor, gate_network kept.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from .configuration_llama_moe import DECODER_FIELDS, LlamaMoEConfig

# Dense LLaMA fields copied as they are.
_LLAMA_FIELDS = (*DECODER_FIELDS, "intermediate_size", "rope_theta", "rope_scaling")
# Upstream options whose other values change the math in a way our model does not implement.
_REQUIRED = {
    "gate_type": "TopKBalancedNoisyGate",
    "calculator_type": "UniversalCalculator",
    "gate_use_softmax": True,
    "multiply_gate_scores": True,
    "add_weight_norm": False,
}
_EXPERT_KEY = re.compile(r"^(model\.layers\.\d+\.mlp)\.calculator\.experts\.weight_(gate|up|down)\.(\d+)$")
_GATE_KEY = re.compile(r"^(model\.layers\.\d+\.mlp)\.gate\.(.+)$")


def is_llama_moe_v1_config(upstream: dict) -> bool:
    """Whether a config.json dict is the upstream LLaMA-MoE v1 layout (it names top-k `num_selects`).

    Both layouts say model_type "llama_moe"; ours names top-k `top_k`.
    """
    return upstream.get("model_type") == "llama_moe" and "num_selects" in upstream


def llama_moe_v1_config(upstream: dict) -> LlamaMoEConfig:
    """Our LlamaMoEConfig for an upstream LLaMA-MoE v1 config.json dict (mapping in the module docstring).

    Raises:
        ValueError: not an upstream LLaMA-MoE v1 config, or an upstream option we do not implement
            (another gate or calculator, no softmax on the gate scores, unscaled or weight-normed outputs);
            names the field and its value.
    """
    if not is_llama_moe_v1_config(upstream):
        raise ValueError(
            "not an upstream LLaMA-MoE v1 config.json: needs model_type 'llama_moe' and 'num_selects' "
            f"(got model_type={upstream.get('model_type')!r}, keys {sorted(upstream)[:8]}...)"
        )
    for field, expected in _REQUIRED.items():
        value = upstream.get(field, expected)
        if value != expected:
            raise ValueError(
                f"upstream LLaMA-MoE config field {field}={value!r} is not supported (only {expected!r}): "
                "our LlamaMoE implements the noisy top-k gate with softmax scores times score_scale_factor"
            )
    if not upstream.get("gate_add_noise", True):
        raise ValueError(
            "upstream LLaMA-MoE config field gate_add_noise=False is not supported: our noisy_topk router "
            "always adds the learned noise in training mode"
        )
    kept = {k: upstream[k] for k in _LLAMA_FIELDS if upstream.get(k) is not None}
    use_balance = upstream.get("gate_use_balance", True)
    return LlamaMoEConfig(
        **kept,
        num_experts=int(upstream["num_experts"]),
        top_k=int(upstream["num_selects"]),
        expert_sizes=upstream.get("size_experts"),
        router_type="noisy_topk",
        gate_network=upstream.get("gate_network", "mlp"),
        balance_loss_weight=float(upstream.get("gate_balance_loss_weight", 1e-2)) if use_balance else 0.0,
        noise_epsilon=float(upstream.get("gate_noise_epsilon", 1e-2)),
        score_scale_factor=upstream.get("score_scale_factor", 1.0),
    )


def convert_llama_moe_v1_state_dict(
    state: dict[str, torch.Tensor], config: LlamaMoEConfig
) -> dict[str, torch.Tensor]:
    """Rename and concatenate upstream tensors into our state dict (mapping in the module docstring).

    Args:
        state: upstream name -> tensor (all shards merged).
        config: the converted config (`llama_moe_v1_config`), for the expert counts and sizes.

    Returns:
        our name -> tensor; experts of layer l concatenated in expert order: gate_proj / up_proj
        [sum_e m_e, H], down_proj [H, sum_e m_e].

    Raises:
        ValueError: an expert is missing, its shape disagrees with config.expert_sizes, or a bias tensor is
            present (upstream bias=True experts; our experts have none); names the tensor.
    """
    out, experts = {}, {}
    for name, tensor in state.items():
        if name.endswith("rotary_emb.inv_freq"):
            continue
        m = _EXPERT_KEY.match(name)
        if m:
            experts.setdefault((m.group(1), m.group(2)), {})[int(m.group(3))] = tensor
            continue
        if ".calculator." in name:
            raise ValueError(f"upstream tensor {name} has no counterpart in LlamaMoE (expert biases?)")
        g = _GATE_KEY.match(name)
        out[f"{g.group(1)}.router.{g.group(2)}" if g else name] = tensor
    for (prefix, proj), by_expert in sorted(experts.items()):
        layer = int(prefix.split(".")[2])
        sizes = config.layer_expert_sizes(layer)
        if sorted(by_expert) != list(range(len(sizes))):
            raise ValueError(
                f"{prefix}.calculator.experts.weight_{proj}: experts {sorted(by_expert)} found, "
                f"config has num_experts={len(sizes)}"
            )
        dim = 1 if proj == "down" else 0
        for e, size in enumerate(sizes):
            if by_expert[e].shape[dim] != size:
                raise ValueError(
                    f"{prefix}.calculator.experts.weight_{proj}.{e} has shape {tuple(by_expert[e].shape)}, "
                    f"expert size {size} expected (size_experts)"
                )
        out[f"{prefix}.experts.{proj}_proj"] = torch.cat([by_expert[e] for e in range(len(sizes))], dim=dim)
    return out


def read_checkpoint_tensors(folder: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of an HF checkpoint folder: *.safetensors, else pytorch_model*.bin (loaded weights-only).

    Raises:
        FileNotFoundError: the folder holds neither, or its index names a shard that is missing.
        ValueError: a weights file does not load (names it).
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    for index_name, pattern, load in (
        ("model.safetensors.index.json", "*.safetensors", load_file),
        ("pytorch_model.bin.index.json", "pytorch_model*.bin", _load_bin),
    ):
        index = folder / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            missing = [s for s in shards if not (folder / s).is_file()]
            if missing:
                raise FileNotFoundError(f"{index} names shards that are not in {folder}: {missing}")
            files = [folder / s for s in shards]
        else:
            files = sorted(folder.glob(pattern))
        if files:
            state = {}
            for f in files:
                try:
                    state.update(load(str(f)))
                except Exception as err:  # safetensors / torch errors do not name the file
                    raise ValueError(
                        f"cannot read the weights file {f} (truncated or corrupt?): {err}"
                    ) from err
            return state
    raise FileNotFoundError(f"{folder} holds no *.safetensors or pytorch_model*.bin weights")


def _load_bin(path: str) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def write_llama_moe_v1_as_ours(folder: str | Path, out_dir: str | Path) -> LlamaMoEConfig:
    """Write an upstream LLaMA-MoE v1 checkpoint folder as our LlamaMoE layout (config.json + safetensors).

    Tensors keep their stored dtype and are written in shards (huggingface_hub.save_torch_state_dict); the
    tokenizer is not copied (see moelab.models.materialise.materialise_llama_moe_v1). No upstream code runs.

    Returns:
        the converted config.

    Raises:
        FileNotFoundError: no config.json or no weights in ``folder``.
        ValueError: unsupported upstream config (see `llama_moe_v1_config`), or tensors that do not match
            the converted architecture (names the missing / unexpected / misshapen ones).
    """
    from huggingface_hub import save_torch_state_dict

    from .modeling_llama_moe import LlamaMoEForCausalLM

    folder, out_dir = Path(folder), Path(out_dir)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{folder} is not a model folder: config.json is missing")
    config = llama_moe_v1_config(json.loads(cfg_path.read_text()))
    state = convert_llama_moe_v1_state_dict(read_checkpoint_tensors(folder), config)
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    with torch.device("meta"):  # names and shapes only, no memory
        expected = {k: v.shape for k, v in LlamaMoEForCausalLM(config).state_dict().items()}
    if config.tie_word_embeddings:
        expected.pop("lm_head.weight", None)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    bad = [
        f"{k} {tuple(state[k].shape)} != {tuple(expected[k])}"
        for k in expected
        if k in state and state[k].shape != expected[k]
    ]
    if missing or unexpected or bad:
        raise ValueError(
            f"the LLaMA-MoE v1 checkpoint in {folder} does not match its config: missing {missing[:6]}, "
            f"unexpected {unexpected[:6]}, wrong shapes {bad[:6]}"
        )
    config.dtype = next(iter(state.values())).dtype
    config.architectures = ["LlamaMoEForCausalLM"]
    config.save_pretrained(out_dir)
    save_torch_state_dict({k: v.contiguous() for k, v in state.items()}, out_dir)
    return config
