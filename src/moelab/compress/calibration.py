"""What each expert sees on calibration text: the inputs of its three linear maps, from its routed tokens only.

Expert Slimming (arXiv 2406.02500, "Expert Slimming") prunes or quantises the Linear weights inside the experts with
statistics of their inputs (Wanda's column norms, SparseGPT's and GPTQ's Hessian X^T X, AWQ's mean |x|). In an MoE
each expert's statistics come only from the tokens the router sends to it (the paper's per-expert calibration):
expert e of layer l sees the rows x_t of the FFN input (the residual stream after the post-attention norm) for
which e is among token t's top-k experts. For the routed SwiGLU expert E_e(x) = down_e(act(gate_e x) * up_e x):

    gate_proj_e, up_proj_e  read x_e                                  [N_e, H]
    down_proj_e             reads a_e = act(x_e gate_e^T) * (x_e up_e^T)   [N_e, I_e]

The inputs are captured from one forward pass of the model being compressed (one-shot: every layer's inputs come
from the uncompressed parent, as Wanda's one-shot pruning; the layer-by-layer sequential variant of SparseGPT /
GPTQ, which feeds each layer the outputs of the already-compressed layers before it, is not implemented).
Only non-padding tokens count. Shared experts see every token.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import torch


class RoutedInputs(NamedTuple):
    """The FFN input of one MoE layer on the calibration tokens, and where the router sent each token.

    x:           [N, H] float32, FFN input (post-attention norm output) at the N non-padding tokens.
    top_k_index: [N, K] int64, the experts each token selected (eval mode: no router noise).
    logits:      [N, E] float32, the router logits the selection was made on (E = the layer's routed experts).
    """

    x: torch.Tensor
    top_k_index: torch.Tensor
    logits: torch.Tensor


def moe_blocks(model) -> dict[int, torch.nn.Module]:
    """Decoder layer index -> its sparse MoE block (``LlamaMoESparseBlock``), for the layers that have one.

    Raises: ValueError if the model has no MoE layer (a dense model has no experts to calibrate).
    """
    from moelab.models.modeling_llama_moe import LlamaMoESparseBlock

    blocks = {
        i: layer.mlp
        for i, layer in enumerate(model.model.layers)
        if isinstance(layer.mlp, LlamaMoESparseBlock)
    }
    if not blocks:
        raise ValueError(
            f"{type(model).__name__} has no MoE layer: expert calibration needs a LlamaMoE model"
        )
    return blocks


@torch.no_grad()
def routed_inputs(
    model, batches: Iterable[dict], layers: Iterable[int] | None = None
) -> dict[int, RoutedInputs]:
    """Capture every MoE layer's FFN input and routing on calibration batches (one forward pass per batch).

    Args:
        model: a ``LlamaMoEForCausalLM`` (in eval mode, so routers add no noise).
        batches: dicts with ``input_ids`` [B, T] and optionally ``attention_mask`` [B, T] (1 = token).
        layers: decoder layer indices to capture (default: every MoE layer). At paper scale (H = 4096,
            128 x 2048 tokens) one layer's inputs are ~4 GB: capture a few layers at a time.
    Returns:
        decoder layer index -> :class:`RoutedInputs` over all batches' non-padding tokens, in batch order.
    Raises:
        ValueError: a requested layer has no MoE FFN, or the batches hold no token.
    """
    blocks = moe_blocks(model)
    wanted = sorted(blocks) if layers is None else sorted(set(layers))
    missing = [i for i in wanted if i not in blocks]
    if missing:
        raise ValueError(f"layers {missing} have no MoE FFN (MoE layers: {sorted(blocks)})")
    parts: dict[int, list[tuple]] = {i: [] for i in wanted}
    keep: list[torch.Tensor] = []

    def hook(i):
        def fn(module, args, output):
            x = args[0]
            _, routing = output
            parts[i].append((x.reshape(-1, x.shape[-1]).float(), routing.top_k_index, routing.logits.float()))

        return fn

    handles = [blocks[i].register_forward_hook(hook(i)) for i in wanted]
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            ids = batch["input_ids"].to(model.device)
            mask = batch.get("attention_mask")
            mask = torch.ones_like(ids) if mask is None else mask.to(model.device)
            keep.append(mask.reshape(-1).bool())
            model(input_ids=ids, attention_mask=mask, use_cache=False)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not keep or not any(k.any() for k in keep):
        raise ValueError("the calibration batches hold no (non-padding) token")
    out = {}
    for i in wanted:
        x, index, logits = (
            torch.cat([p[j][k] for p, k in zip(parts[i], keep, strict=True)]) for j in range(3)
        )
        out[i] = RoutedInputs(x, index, logits)
    return out


def expert_token_index(routed: RoutedInputs, expert: int) -> torch.Tensor:
    """Rows of ``routed.x`` whose top-k holds ``expert``: LongTensor [N_e] (ascending; N_e may be 0)."""
    return (routed.top_k_index == expert).any(dim=-1).nonzero(as_tuple=True)[0]


@torch.no_grad()
def expert_linear_inputs(experts, routed: RoutedInputs, expert: int) -> dict[str, torch.Tensor]:
    """The inputs of expert ``expert``'s three linear maps on its routed tokens.

    Args:
        experts: the layer's ``LlamaMoEExperts`` (concatenated layout; :meth:`expert_slice`).
        routed: that layer's :class:`RoutedInputs`.
        expert: routed expert id e.
    Returns:
        {"gate_proj": x_e [N_e, H], "up_proj": x_e [N_e, H], "down_proj": a_e [N_e, I_e]} in float32, with
        a_e = act(x_e gate_e^T) * (x_e up_e^T) (the SwiGLU hidden state). N_e = 0 for an expert no token reaches
        (the caller decides what to do with it: the statistics are empty).
    """
    x = routed.x[expert_token_index(routed, expert)]
    rows = experts.expert_slice(expert)
    gate = experts.gate_proj[rows].float()
    up = experts.up_proj[rows].float()
    hidden = experts.act_fn(x @ gate.T) * (x @ up.T)
    return {"gate_proj": x, "up_proj": x, "down_proj": hidden}


@torch.no_grad()
def shared_linear_inputs(shared, routed: RoutedInputs) -> dict[str, torch.Tensor]:
    """The inputs of the shared experts' three linear maps: every calibration token (they are always on).

    Args:
        shared: the layer's ``LlamaMoESharedExperts`` (one SwiGLU FFN of width I_sh = sum of shared sizes).
        routed: that layer's :class:`RoutedInputs`.
    Returns:
        {"gate_proj": x [N, H], "up_proj": x [N, H], "down_proj": act(x G^T) * (x U^T) [N, I_sh]}, float32.
    """
    x = routed.x
    hidden = shared.act_fn(x @ shared.gate_proj.weight.float().T) * (x @ shared.up_proj.weight.float().T)
    return {"gate_proj": x, "up_proj": x, "down_proj": hidden}


class ExpertLinear(NamedTuple):
    """One linear map inside an expert, with its calibration input (see :func:`expert_linears`).

    layer:  decoder layer index.
    expert: routed expert id e, or "shared" for the layer's shared experts (one FFN).
    name:   "gate_proj", "up_proj" or "down_proj".
    weight: [out, in] view into the model parameter (as ``nn.Linear`` stores it): routed gate/up are rows
            ``expert_slice(e)`` of the concatenated [I_tot, H] parameters ([I_e, H]), routed down is columns
            ``expert_slice(e)`` of [H, I_tot] ([H, I_e]). Writing into it (``weight.copy_``) edits the model.
    inputs: [N_e, in] float32, the map's input on the tokens that reach it (N_e may be 0 for a routed expert).
    """

    layer: int
    expert: int | str
    name: str
    weight: torch.Tensor
    inputs: torch.Tensor


LINEAR_NAMES = ("gate_proj", "up_proj", "down_proj")


def expert_weights(block):
    """Yield (expert, name, weight) for every linear weight of every expert of one MoE block, no calibration.

    expert: routed id e or "shared"; name: "gate_proj" / "up_proj" / "down_proj"; weight: the [out, in] view
    into the parameter described in :class:`ExpertLinear`. Order as :func:`expert_linears`.
    """
    experts = block.experts
    for e in range(experts.num_experts):
        rows = experts.expert_slice(e)
        yield e, "gate_proj", experts.gate_proj.data[rows]
        yield e, "up_proj", experts.up_proj.data[rows]
        yield e, "down_proj", experts.down_proj.data[:, rows]
    shared = getattr(block, "shared_experts", None)
    if shared is not None:
        for name in LINEAR_NAMES:
            yield "shared", name, getattr(shared, name).weight.data


@torch.no_grad()
def expert_linears(block, routed: RoutedInputs, layer: int):
    """Yield an :class:`ExpertLinear` for every linear weight of every expert of one MoE block.

    Order: routed experts 0..E-1 (gate, up, down each), then the shared experts if the block has them.
    All three inputs of an expert are computed before its first map is yielded, so a caller that rewrites
    ``weight`` in place (pruning, quantisation) still gets the uncompressed expert's down_proj input
    (one-shot, as the module docstring). The router, attention and norms are never yielded.
    gate_proj and up_proj of one expert share the same ``inputs`` tensor object (reduce it once).
    """
    inputs, current = {}, None
    for expert, name, weight in expert_weights(block):
        if expert != current:
            current = expert
            if expert == "shared":
                inputs = shared_linear_inputs(block.shared_experts, routed)
            else:
                inputs = expert_linear_inputs(block.experts, routed, expert)
        yield ExpertLinear(layer, expert, name, weight, inputs[name])
