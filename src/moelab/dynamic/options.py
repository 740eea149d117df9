"""The PAD-Net option names and their checks (torch-free, so a config check can import them).

Source: PAD-Net (arXiv 2211.05528, ACL 2023) section 3; CondConv (arXiv 1904.04971); DY-Conv
(arXiv 1912.03458). Every check raises ValueError whose message names the offending argument.
"""

from __future__ import annotations

import math

# Convolution layer types: a plain static nn.Conv2d, the two fully dynamic convolutions, and their partially
# dynamic (PAD) versions.
LAYER_TYPES = ("static", "condconv", "dyconv", "pad_condconv", "pad_dyconv")
# Dynamic kernel kinds a PAD layer can wrap.
DYNAMIC_KINDS = ("condconv", "dyconv")
# How the mode partition ranks the mask entries: Iterative Mode Partition (SNIP on the mask) or random.
PARTITION_METHODS = ("imp", "random")
# Expert FFN forms: BERT's two-matrix MLP, LLaMA's SwiGLU.
FFN_TYPES = ("mlp", "swiglu")
ACTIVATIONS = ("gelu", "relu", "silu")


def check_choice(name: str, value, choices: tuple[str, ...]) -> str:
    """`value` if it is one of `choices`; else ValueError naming `name` and listing the choices."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is unknown; choose one of {', '.join(choices)}")
    return value


def check_kappa(kappa, name: str = "kappa") -> float:
    """The dynamic ratio kappa (fraction of mask entries kept dynamic) as a float in (0, 1].

    Raises: ValueError naming `name` for a non-number, a NaN, or a value outside (0, 1].
    """
    if isinstance(kappa, bool) or not isinstance(kappa, int | float) or math.isnan(kappa):
        raise ValueError(f"{name}={kappa!r} must be a number in (0, 1] (the fraction of dynamic parameters)")
    if not 0.0 < kappa <= 1.0:
        raise ValueError(f"{name}={kappa!r} must be in (0, 1] (the fraction of dynamic parameters)")
    return float(kappa)


def check_positive_int(value, name: str) -> int:
    """`value` if it is an int >= 1 (bools refused); else ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be an integer >= 1")
    return value


def check_num_kernels(num_kernels, name: str = "num_kernels") -> int:
    """K, the number of kernels (or experts) of a dynamic layer: an int >= 1. Raises ValueError naming `name`."""
    return check_positive_int(num_kernels, name)
