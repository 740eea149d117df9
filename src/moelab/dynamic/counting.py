"""Parameter and FLOP counts of static, dynamic and partially dynamic layers (hand-countable).

Units: FLOPs are multiply-adds (MAdds, 1 multiply + 1 add = 1), the unit of DY-Conv's and PAD-Net's tables
(ResNet-50 = 4.1 G). Counted per layer:
- nn.Conv2d / static conv: conv = C_out * (C_in/g) * kh * kw * Ho * Wo per example (bias adds not counted).
- nn.Linear: in * out per row.
- CondConv2d / DYConv2d: conv + attention + aggregation, attention = C_in * H * W (the average pool, one add
  per input element) + C_in * h + h * K (two 1x1 convs, h = hidden width) or C_in * K (one 1x1 conv);
  aggregation = K * numel(kernel) (+ K * C_out with bias) per example (the two extra costs DY-Conv, arXiv
  1912.03458, section 3, names beside the convolution). Softmax / sigmoid / ReLU and attention biases are
  not counted.
- PADConv2d: conv + attention + K * nnz(M) (+ K * nnz(bias mask)): at inference l_d folds into the K
  attention weights and the static part l_s (1 - M) (.) W_static is a constant, disjoint from the dynamic
  entries, so only the nnz(M) dynamic entries are aggregated.
- PADExperts: per routed (token, expert) slot, 2 * H * I ("mlp") or 3 * H * I ("swiglu"); the combine by the
  routing weights and the router itself (the caller's module) are not counted here.
BatchNorm, activations, pooling outside the dynamic layers and residual adds are not counted.

Parameters: every parameter once, except that each partition of a PAD layer counts what a deployed layer
stores: K * nnz(M) dynamic entries + (numel(M) - nnz(M)) static ones (the Params of PAD-Net's tables);
masks (binary, implied by which entries are stored) and the DY-Conv temperature are buffers, not counted;
phi counts 1 per layer when scale=True.
"""

from __future__ import annotations

import torch
from torch import nn

from moelab.dynamic.conv import DynamicConv2d
from moelab.dynamic.moe import PADExperts
from moelab.dynamic.partial import PADConv2d, PartiallyDynamic


def count_params(model: nn.Module) -> int:
    """Parameters of `model` with PAD partitions counted as deployed (module docstring)."""
    total = sum(p.numel() for p in model.parameters())
    for module in model.modules():
        if isinstance(module, PartiallyDynamic):
            for part in module.partitions():
                k, numel, nnz = part.dynamic.shape[0], part.mask.numel(), int(part.mask.sum())
                total += k * nnz + (numel - nnz) - part.dynamic.numel() - part.static.numel()
    return total


def _dynamic_core(layer) -> DynamicConv2d:
    return layer.dynamic if isinstance(layer, PADConv2d) else layer


def conv_flops(layer: nn.Module, input_hw: tuple[int, int], output_hw: tuple[int, int]) -> dict[str, int]:
    """MAdds of one example through a conv layer (module docstring).

    Args: layer: nn.Conv2d, CondConv2d, DYConv2d or PADConv2d; input_hw (H, W); output_hw (Ho, Wo).
    Returns: {"conv", "attention", "aggregation", "total"} (attention = aggregation = 0 for nn.Conv2d).
    Raises: ValueError for another layer type.
    """
    (H, W), (Ho, Wo) = input_hw, output_hw
    if isinstance(layer, nn.Conv2d):
        conv = layer.weight.numel() * Ho * Wo
        return {"conv": conv, "attention": 0, "aggregation": 0, "total": conv}
    if not isinstance(layer, DynamicConv2d | PADConv2d):
        raise ValueError(f"layer type {type(layer).__name__} is not a convolution this counter knows")
    core = _dynamic_core(layer)
    kernel, K, att = core.kernel_shape, core.num_kernels, core.attention
    conv = kernel[0] * kernel[1] * kernel[2] * kernel[3] * Ho * Wo
    attention = att.in_channels * H * W
    attention += att.in_channels * att.hidden + att.hidden * K if att.hidden else att.in_channels * K
    if isinstance(layer, PADConv2d):
        aggregation = K * sum(int(p.mask.sum()) for p in layer.partitions())
    else:
        aggregation = K * core.weight[0].numel() + (0 if core.bias is None else K * core.out_channels)
    return {
        "conv": conv,
        "attention": attention,
        "aggregation": aggregation,
        "total": conv + attention + aggregation,
    }


def expert_flops(experts: PADExperts, slots: int) -> int:
    """MAdds of `slots` routed (token, expert) slots: slots * (2 or 3) * H * I."""
    per_slot = (3 if experts.ffn_type == "swiglu" else 2) * experts.hidden_size * experts.intermediate_size
    return slots * per_slot


@torch.no_grad()
def count_flops(model: nn.Module, *inputs, **kwargs) -> int:
    """MAdds of one forward of `model(*inputs, **kwargs)` (pass one example for per-example FLOPs).

    Counts nn.Conv2d, nn.Linear, CondConv2d / DYConv2d / PADConv2d (their attention convs inside the formula,
    not twice) and PADExperts by forward hooks (module docstring for what each counts). The model runs once
    in its current mode; the hooks are removed afterwards.
    """
    skip = set()
    for module in model.modules():
        if isinstance(module, DynamicConv2d | PADConv2d | PADExperts):
            skip |= {id(m) for m in module.modules() if m is not module}
    total = [0]

    def hook(module, args, kwargs, output):
        x = args[0] if args else next(iter(kwargs.values()))
        if isinstance(module, PADExperts):
            index = args[1] if len(args) > 1 else kwargs["top_k_index"]
            total[0] += expert_flops(module, index.numel())
        elif isinstance(module, nn.Linear):
            total[0] += module.in_features * module.out_features * (x.numel() // module.in_features)
        else:  # a convolution: per example, times the batch
            total[0] += (
                x.shape[0] * conv_flops(module, tuple(x.shape[-2:]), tuple(output.shape[-2:]))["total"]
            )

    kinds = (nn.Conv2d, nn.Linear, DynamicConv2d, PADConv2d, PADExperts)
    handles = [
        m.register_forward_hook(hook, with_kwargs=True)
        for m in model.modules()
        if isinstance(m, kinds) and id(m) not in skip
    ]
    try:
        model(*inputs, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return total[0]
