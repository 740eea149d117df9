"""Partially dynamic layers (PAD-Net, arXiv 2211.05528, section 3: the partially dynamic weight).

    W(x) = l_d * M (.) W_dyn(x) + l_s * (1 - M) (.) W_static,   l_d = 2 sigmoid(phi),  l_s = 2 - l_d,

M a binary mask with the shape of one kernel (1 = dynamic entry), phi one scalar per layer (0 at start, so
l_d = l_s = 1), W_dyn(x) the layer's fully dynamic kernel (DY-Conv / CondConv: sum_k a_k(x) W_k; an MoE
expert: W_i). ``scale=False`` is the no-scale ablation (l_d = l_s = 1, no phi). A layer's partitioned
tensors are listed by :meth:`PartiallyDynamic.partitions` (one mask per kernel tensor: the weight, and the
bias when the layer has one); Iterative Mode Partition (``partition.py``) rewrites the masks.

Deviation: with ``bias=True`` the bias is partitioned like the weight (its own mask [C_out]); the paper's
convolutions have no bias (BatchNorm follows). The static kernel W_static is an extra parameter initialised
like one dynamic kernel (nn.Conv2d's init), independently of the K dynamic kernels.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from moelab.dynamic.conv import CondConv2d, DYConv2d, check_conv_shape, init_conv_kernel
from moelab.dynamic.options import DYNAMIC_KINDS, LAYER_TYPES, check_choice, check_num_kernels


class Partition(NamedTuple):
    """One partitioned kernel tensor of a PAD layer.

    name: the tensor's name in its layer ("weight", "bias", "up_proj", ...);
    mask: the binary buffer M [*S] (float, 1 = dynamic) that IMP rewrites in place;
    dynamic: the K dynamic copies [K, *S] (K kernels, or K experts);
    static: W_static [*S].
    """

    name: str
    mask: torch.Tensor
    dynamic: torch.Tensor
    static: torch.Tensor


class PartiallyDynamic(nn.Module):
    """Base of the PAD layers: the scales (l_d, l_s) from phi, and the list of partitions.

    Subclasses call :meth:`_init_scale` and implement :meth:`partitions`.
    """

    scale: bool

    def _init_scale(self, scale: bool) -> None:
        if not isinstance(scale, bool):
            raise ValueError(f"scale={scale!r} must be True or False")
        self.scale = scale
        self.phi = nn.Parameter(torch.zeros(())) if scale else None  # l_d = l_s = 1 at start

    def scales(self) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """(l_d, l_s) = (2 sigmoid(phi), 2 - 2 sigmoid(phi)) (PAD-Net section 3); (1.0, 1.0) when scale=False."""
        if self.phi is None:
            return 1.0, 1.0
        l_d = 2.0 * torch.sigmoid(self.phi)
        return l_d, 2.0 - l_d

    def partitions(self) -> list[Partition]:
        raise NotImplementedError

    def combine(self, mask, dynamic, static) -> torch.Tensor:
        """l_d M (.) dynamic + l_s (1 - M) (.) static; `dynamic` [..., *S] broadcasts over leading dims."""
        l_d, l_s = self.scales()
        return l_d * mask * dynamic + l_s * (1.0 - mask) * static

    def dynamic_ratio(self) -> float:
        """Fraction of this layer's mask entries that are dynamic (M = 1), over all its partitions."""
        parts = self.partitions()
        return sum(float(p.mask.sum()) for p in parts) / sum(p.mask.numel() for p in parts)


_DYNAMIC_CLASSES = {"condconv": CondConv2d, "dyconv": DYConv2d}


class PADConv2d(PartiallyDynamic):
    """Partially dynamic convolution (PAD-Net section 3): W(x) = l_d M (.) sum_k a_k(x) W_k
    + l_s (1 - M) (.) W_static, convolved per example.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias: as nn.Conv2d.
        num_kernels: K >= 1 dynamic kernels (4: DY-Conv and PAD-Net's setting).
        dynamic: "dyconv" (softmax(z / tau) attention; PAD-Net's PAD-DY-Conv) or "condconv" (sigmoid routing).
        reduction: the attention's reduction r (hidden width max(1, C_in // r); 0 = one 1x1 conv);
            None = the kind's default (dyconv 16, condconv 0).
        scale: learn l_d / l_s (phi); False = the no-scale ablation.
    Attributes: ``dynamic`` (the wrapped CondConv2d / DYConv2d: kernels [K, *S], attention, temperature),
        ``static_weight`` [*S], ``mask`` [*S] (buffer, ones at start), ``phi`` [] or None; with bias,
        ``static_bias`` [C_out] and ``bias_mask`` [C_out]. S = (C_out, C_in/g, kh, kw).
    Raises: ValueError naming the argument (dynamic unknown, num_kernels < 1, bad channels / groups).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = False,
        num_kernels: int = 4,
        dynamic: str = "dyconv",
        reduction: int | None = None,
        scale: bool = True,
    ):
        super().__init__()
        check_choice("dynamic", dynamic, DYNAMIC_KINDS)
        check_conv_shape(in_channels, out_channels, groups)
        check_num_kernels(num_kernels)
        extra = {} if reduction is None else {"reduction": reduction}
        self.dynamic = _DYNAMIC_CLASSES[dynamic](
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            num_kernels,
            **extra,
        )
        self.kind = dynamic
        shape = self.dynamic.kernel_shape
        self.static_weight = nn.Parameter(torch.empty(shape))
        self.static_bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        init_conv_kernel(self.static_weight.data, None if self.static_bias is None else self.static_bias.data)
        self.register_buffer("mask", torch.ones(shape))
        self.register_buffer("bias_mask", torch.ones(out_channels) if bias else None)
        self._init_scale(scale)

    @property
    def num_kernels(self) -> int:
        return self.dynamic.num_kernels

    @property
    def kernel_shape(self) -> tuple[int, ...]:
        return self.dynamic.kernel_shape

    def partitions(self) -> list[Partition]:
        """[weight] or [weight, bias]: masks [*S] / [C_out], dynamic [K, *S] / [K, C_out]."""
        parts = [Partition("weight", self.mask, self.dynamic.weight, self.static_weight)]
        if self.static_bias is not None:
            parts.append(Partition("bias", self.bias_mask, self.dynamic.bias, self.static_bias))
        return parts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C_in, H, W] -> [B, C_out, Ho, Wo]."""
        weight, bias = self.dynamic.aggregate(self.dynamic.kernel_attention(x))  # [B, *S], [B, C_out] | None
        weight = self.combine(self.mask, weight, self.static_weight)
        if bias is not None:
            bias = self.combine(self.bias_mask, bias, self.static_bias)
        return self.dynamic.conv(x, weight, bias)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, scale={self.scale}"


def make_conv(
    layer_type: str,
    in_channels: int,
    out_channels: int,
    kernel_size,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    bias: bool = False,
    num_kernels: int = 4,
    reduction: int | None = None,
    scale: bool = True,
) -> nn.Module:
    """A convolution of `layer_type` (LAYER_TYPES): "static" -> nn.Conv2d, "condconv" -> CondConv2d,
    "dyconv" -> DYConv2d, "pad_condconv" / "pad_dyconv" -> PADConv2d(dynamic="condconv" / "dyconv").

    The shape arguments are nn.Conv2d's; num_kernels / reduction (None: the kind's default) apply to the
    dynamic kinds, scale to the PAD kinds; arguments a kind does not use are ignored.
    Raises: ValueError naming layer_type (unknown) or the offending argument.
    """
    check_choice("layer_type", layer_type, LAYER_TYPES)
    shape = (in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
    if layer_type == "static":
        check_conv_shape(in_channels, out_channels, groups)
        return nn.Conv2d(*shape)
    if layer_type.startswith("pad_"):
        return PADConv2d(*shape, num_kernels, layer_type[4:], reduction, scale)
    extra = {} if reduction is None else {"reduction": reduction}
    return _DYNAMIC_CLASSES[layer_type](*shape, num_kernels=num_kernels, **extra)
