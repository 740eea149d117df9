"""Fully dynamic convolutions: CondConv and DY-Conv (K kernels mixed per example by an attention).

Both compute, per example x, one kernel W(x) = sum_k a_k(x) W_k (and b(x) = sum_k a_k(x) b_k) and convolve x
with it. They differ in the attention a(x):
- CondConv (Yang et al., arXiv 1904.04971, section 3, eq. 2-3): a = sigmoid(GAP(x) R): one 1x1 conv (a
  fully connected layer on the pooled vector) to K logits, a sigmoid per kernel (the weights need not sum
  to 1). ``reduction > 0`` swaps R for DY-Conv's two-layer trunk (not in CondConv's paper).
- DY-Conv (Chen et al., arXiv 1912.03458, section 3, eq. 1-3 and its training strategy): a = softmax(z / tau),
  z = conv1x1_K(ReLU(conv1x1_{C/r}(GAP(x)))), r = 16 (the PAD-Net setting; DY-Conv's paper uses r = 4);
  tau falls linearly from 30 to 1 over the first 10 epochs, then stays 1 (:func:`dyconv_temperature`).
Deviation: the hidden width is max(1, C_in // r), so that tiny layers (C_in < r) keep one hidden unit.

The per-example convolution runs as one grouped conv over the batch (groups = B * g); the kernels are
initialised one by one like nn.Conv2d (Kaiming uniform, a = sqrt(5); bias U(-1/sqrt(fan_in), 1/sqrt(fan_in))).

Shape legend: B batch, C_in / C_out channels, g groups, kh x kw kernel, K kernels, H x W input, Ho x Wo output.
One kernel has shape [C_out, C_in / g, kh, kw] (``kernel_shape``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from moelab.dynamic.options import check_num_kernels, check_positive_int


def _pair(value, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair):
        raise ValueError(f"{name}={value!r} must be an int >= 1 or a pair of them")
    return pair


def check_conv_shape(in_channels, out_channels, groups) -> None:
    """Raises ValueError naming in_channels / out_channels / groups if they are not ints >= 1 with
    groups dividing both channel counts."""
    check_positive_int(in_channels, "in_channels")
    check_positive_int(out_channels, "out_channels")
    check_positive_int(groups, "groups")
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}"
        )


def init_conv_kernel(weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
    """nn.Conv2d's default init in place: weight [C_out, C_in/g, kh, kw] Kaiming uniform (a = sqrt(5)),
    bias [C_out] U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = C_in/g * kh * kw."""
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        bound = 1.0 / math.sqrt(weight[0].numel())
        nn.init.uniform_(bias, -bound, bound)


def per_example_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> torch.Tensor:
    """Convolve each example with its own kernel: one grouped F.conv2d over the batch.

    Args:
        x: [B, C_in, H, W]; weight: [B, C_out, C_in/g, kh, kw]; bias: [B, C_out] or None.
        stride, padding, dilation, groups: as in F.conv2d (groups = g per example).
    Returns: [B, C_out, Ho, Wo], example b = F.conv2d(x[b:b+1], weight[b], bias[b], ...).
    """
    B, C_in, H, W = x.shape
    C_out = weight.shape[1]
    out = F.conv2d(
        x.reshape(1, B * C_in, H, W),
        weight.reshape(B * C_out, *weight.shape[2:]),
        None if bias is None else bias.reshape(B * C_out),
        stride,
        padding,
        dilation,
        groups * B,
    )  # [1, B*C_out, Ho, Wo]
    return out.view(B, C_out, *out.shape[-2:])


class KernelAttention(nn.Module):
    """Per-example kernel weights a(x) [B, K] from global average pooling and 1x1 convolutions.

    ``hidden > 0``: GAP -> 1x1 conv (C_in -> hidden) -> ReLU -> 1x1 conv (hidden -> K) (DY-Conv, section 3.2);
    ``hidden == 0``: GAP -> 1x1 conv (C_in -> K) (CondConv eq. 3). Both 1x1 convs have a bias.
    ``normalise``: "softmax" -> softmax(z / tau) over K (sums to 1); "sigmoid" -> sigmoid(z) per kernel.
    """

    def __init__(self, in_channels: int, num_kernels: int, hidden: int, normalise: str):
        super().__init__()
        if normalise not in ("softmax", "sigmoid"):
            raise ValueError(f"normalise={normalise!r} must be 'softmax' or 'sigmoid'")
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 0:
            raise ValueError(f"hidden={hidden!r} must be an int >= 0")
        self.in_channels, self.num_kernels, self.hidden, self.normalise = (
            in_channels,
            num_kernels,
            hidden,
            normalise,
        )
        if hidden:
            self.fc1 = nn.Conv2d(in_channels, hidden, 1)
            self.fc2 = nn.Conv2d(hidden, num_kernels, 1)
        else:
            self.fc = nn.Conv2d(in_channels, num_kernels, 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """z: [B, C_in, H, W] -> [B, K] (before the softmax / sigmoid)."""
        pooled = x.mean(dim=(2, 3), keepdim=True)  # [B, C_in, 1, 1]
        z = self.fc2(F.relu(self.fc1(pooled))) if self.hidden else self.fc(pooled)  # [B, K, 1, 1]
        return z.flatten(1)

    def forward(self, x: torch.Tensor, temperature: float | torch.Tensor = 1.0) -> torch.Tensor:
        """a(x): [B, C_in, H, W] -> [B, K]; softmax(z / temperature) or sigmoid(z) (temperature unused)."""
        z = self.logits(x)
        if self.normalise == "softmax":
            return torch.softmax(z / temperature, dim=-1)
        return torch.sigmoid(z)


class DynamicConv2d(nn.Module):
    """Base of CondConv2d and DYConv2d: K kernels [K, C_out, C_in/g, kh, kw], a KernelAttention, and
    W(x) = sum_k a_k(x) W_k, b(x) = sum_k a_k(x) b_k convolved per example.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups: as nn.Conv2d.
        bias: one bias [C_out] per kernel, aggregated like the kernels.
        num_kernels: K >= 1.
        reduction: r; the attention's hidden width is max(1, C_in // r); 0 = no hidden layer.
    Raises: ValueError naming the argument (num_kernels < 1, bad channel counts / groups / kernel_size,
        reduction < 0).
    """

    normalise = "softmax"

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
        reduction: int = 16,
    ):
        super().__init__()
        check_conv_shape(in_channels, out_channels, groups)
        check_num_kernels(num_kernels)
        if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 0:
            raise ValueError(f"reduction={reduction!r} must be an int >= 0 (0: no hidden attention layer)")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.num_kernels, self.reduction = num_kernels, reduction
        self.kernel_shape = (out_channels, in_channels // groups, *self.kernel_size)
        self.weight = nn.Parameter(torch.empty(num_kernels, *self.kernel_shape))
        self.bias = nn.Parameter(torch.empty(num_kernels, out_channels)) if bias else None
        for k in range(num_kernels):
            init_conv_kernel(self.weight.data[k], None if self.bias is None else self.bias.data[k])
        hidden = max(1, in_channels // reduction) if reduction else 0
        self.attention = KernelAttention(in_channels, num_kernels, hidden, self.normalise)

    def kernel_attention(self, x: torch.Tensor) -> torch.Tensor:
        """a(x): [B, C_in, H, W] -> [B, K]."""
        return self.attention(x)

    def aggregate(self, attention: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """sum_k a_k W_k: attention [B, K] -> weight [B, C_out, C_in/g, kh, kw], bias [B, C_out] or None."""
        weight = (attention @ self.weight.flatten(1)).view(-1, *self.kernel_shape)
        bias = None if self.bias is None else attention @ self.bias
        return weight, bias

    def conv(self, x, weight, bias) -> torch.Tensor:
        """Per-example convolution with this layer's stride / padding / dilation / groups."""
        return per_example_conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C_in, H, W] -> [B, C_out, Ho, Wo]."""
        return self.conv(x, *self.aggregate(self.kernel_attention(x)))

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, groups={self.groups}, num_kernels={self.num_kernels}, "
            f"reduction={self.reduction}, bias={self.bias is not None}"
        )


class CondConv2d(DynamicConv2d):
    """CondConv (arXiv 1904.04971, eq. 2-3): W(x) = sum_k sigmoid(GAP(x) R)_k W_k.

    Same arguments as :class:`DynamicConv2d`; ``reduction`` defaults to 0 (the paper's single routing layer R,
    a 1x1 conv C_in -> K with a bias); reduction > 0 uses the two-layer trunk instead.
    """

    normalise = "sigmoid"

    def __init__(self, *args, reduction: int = 0, **kwargs):
        super().__init__(*args, reduction=reduction, **kwargs)


class DYConv2d(DynamicConv2d):
    """DY-Conv (arXiv 1912.03458, eq. 1-3): W(x) = sum_k softmax(z(x) / tau)_k W_k, sum_k pi_k = 1.

    Same arguments as :class:`DynamicConv2d` (reduction 16 by default), plus ``temperature`` (tau > 0, the
    value until :func:`set_temperature` changes it; a buffer, so it is saved with the state dict).
    Raises: ValueError naming temperature if it is not > 0.
    """

    normalise = "softmax"

    def __init__(self, *args, temperature: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("temperature", torch.tensor(_check_temperature(temperature)))

    def kernel_attention(self, x: torch.Tensor) -> torch.Tensor:
        """pi(x) = softmax(z / tau): [B, C_in, H, W] -> [B, K], rows sum to 1."""
        return self.attention(x, self.temperature)


def _check_temperature(tau) -> float:
    if isinstance(tau, bool) or not isinstance(tau, int | float) or not tau > 0:
        raise ValueError(f"temperature={tau!r} must be a number > 0")
    return float(tau)


def dyconv_temperature(
    epoch: float, anneal_epochs: float = 10, start: float = 30.0, end: float = 1.0
) -> float:
    """DY-Conv's softmax temperature at `epoch` (arXiv 1912.03458, training strategy: tau 30 -> 1 over the
    first 10 epochs, near-uniform attention early on):
    tau = start + (end - start) * min(epoch / anneal_epochs, 1): 30 at epoch 0, 1 from `anneal_epochs` on.

    Args: epoch >= 0 (fractional epochs allowed, e.g. step / steps_per_epoch); anneal_epochs >= 0
        (0: tau = end throughout); start, end > 0.
    Raises: ValueError naming epoch / anneal_epochs / start / end.
    """
    for name, value in (("epoch", epoch), ("anneal_epochs", anneal_epochs)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise ValueError(f"{name}={value!r} must be a number >= 0")
    for name, value in (("start", start), ("end", end)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(f"{name}={value!r} must be a number > 0")
    done = 1.0 if anneal_epochs == 0 else min(epoch / anneal_epochs, 1.0)
    return float(start + (end - start) * done)


def set_temperature(model: nn.Module, temperature: float) -> int:
    """Set tau on every DYConv2d in `model` (PAD layers' inner DY-Conv included); returns how many."""
    tau = _check_temperature(temperature)
    layers = [m for m in model.modules() if isinstance(m, DYConv2d)]
    for layer in layers:
        layer.temperature.fill_(tau)
    return len(layers)
