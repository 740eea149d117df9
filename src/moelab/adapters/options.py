"""Adapter and pruning option names and their checks (torch-free), so that a config check imports no torch.

``moelab.adapters.modules`` and ``moelab.adapters.pruners`` bind these names to code (a test asserts both
agree). Vocabulary (docs/ARCHITECTURE.md): ``sparsity`` is the fraction of adapter weights REMOVED and
``density = 1 - sparsity`` the fraction kept; the upstream SparseAdapter CLI's ``--sparsity`` meant the fraction
kept, ours does not.
"""

from __future__ import annotations

from moelab.errors import ConfigError

ADAPTER_KINDS = ("houlsby", "pfeiffer", "parallel", "lora")
INITS = ("near_identity", "zero_up")
NONLINEARITIES = ("relu", "gelu", "tanh")
PRUNERS = ("random", "magnitude", "snip", "grasp", "synflow")
DATA_PRUNERS = ("snip", "grasp")  # need training batches; the others are data-free


def check_choice(value, options, key: str) -> str:
    """``value`` if it is one of ``options``.

    Raises:
        ConfigError (a ValueError): ``value`` is not one of ``options``; the message names ``key``.
    """
    if not isinstance(value, str) or value not in options:
        raise ConfigError(f"{key}={value!r} is not one of {list(options)}")
    return value


def check_positive_int(value, key: str) -> int:
    """``value`` if it is an integer >= 1 (a bool is not).

    Raises:
        ConfigError (a ValueError): otherwise; the message names ``key``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}={value!r} must be an integer >= 1")
    return value


def check_sparsity(sparsity, key: str = "sparsity") -> float:
    """``sparsity`` as a float in [0, 1) (the fraction of weights removed).

    Raises:
        ConfigError (a ValueError): not a real number, NaN, or outside [0, 1); the message names ``key``.
    """
    if isinstance(sparsity, bool) or not isinstance(sparsity, int | float):
        raise ConfigError(f"{key}={sparsity!r} must be a number in [0, 1) (the fraction of weights removed)")
    value = float(sparsity)
    if not 0.0 <= value < 1.0:  # NaN fails both comparisons
        raise ConfigError(
            f"{key}={sparsity!r} is outside [0, 1): it is the fraction of adapter weights removed "
            "(1 would remove them all; the upstream CLI's --sparsity was the fraction kept)"
        )
    return value


def large_sparse(bottleneck: int, k: int) -> tuple[int, float]:
    """Width and sparsity of the Large-Sparse adapter for a dense adapter of width ``bottleneck``.

    SparseAdapter (He et al., Findings of EMNLP 2022, arXiv 2210.04284; the "Large-Sparse" setting of its
    Figure 1 and Section 4): widen the adapter ``k`` times and prune it at sparsity ``1 - 1/k``, so that it holds
    the dense adapter's number of non-zero projection weights (e.g. r = 64 dense -> r = 128 at 50%). The count
    is exactly equal under :func:`moelab.adapters.masks.global_masks`, which keeps ``N - round(sparsity * N)``
    of the ``N = k * N_dense`` weights. Biases are never pruned, so a wide bottleneck adapter keeps
    ``(k - 1) * bottleneck`` more down-projection biases per adapter (LoRA has no biases).

    Returns:
        ``(bottleneck * k, 1 - 1/k)``: the width to pass to ``add_adapters`` and the sparsity to prune at.

    Raises:
        ConfigError (a ValueError): ``bottleneck`` or ``k`` is not a positive integer (names it).
    """
    check_positive_int(bottleneck, "bottleneck")
    check_positive_int(k, "k")
    return bottleneck * k, 1.0 - 1.0 / k


FULL_FT = "full_ft"  # the full fine-tuning reference row's variant name


def variant_name(kind: str, pruner: str | None = None, sparsity: float = 0.0, k: int = 1) -> str:
    """The name of one adapter run of the SparseAdapter stage (its results folder), e.g. ``houlsby_dense``,
    ``houlsby_snip40`` (40% of the adapter weights removed by SNIP), ``houlsby_snip50_x2`` (Large-Sparse, width
    x2), or :data:`FULL_FT` (``kind="full"``). Sparsity is written in whole percent.

    Raises:
        ConfigError (a ValueError): unknown kind or pruner, sparsity outside [0, 1) or not a whole percent,
            ``k`` not a positive integer; names the key.
    """
    if kind == "full":
        return FULL_FT
    check_choice(kind, ADAPTER_KINDS, "kind")
    check_positive_int(k, "k")
    sparsity = check_sparsity(sparsity)
    pct = round(sparsity * 100)
    if abs(pct - sparsity * 100) > 1e-6:
        raise ConfigError(f"sparsity={sparsity!r} must be a whole percent (e.g. 0.4) to name its run")
    if pruner is None or pct == 0:
        name = f"{kind}_dense"
    else:
        name = f"{kind}_{check_choice(pruner, PRUNERS, 'pruner')}{pct}"
    return name if k == 1 else f"{name}_x{k}"


def parse_variant(name: str) -> dict:
    """Inverse of :func:`variant_name`: ``{"kind", "pruner", "sparsity", "k"}`` (``kind="full"``, pruner
    None for :data:`FULL_FT`; pruner None and sparsity 0 for a dense adapter).

    Raises:
        ConfigError (a ValueError): the name is not ``<kind>_dense``, ``<kind>_<pruner><pct>[_x<k>]`` or
            ``full_ft``; names it.
    """
    if name == FULL_FT:
        return {"kind": "full", "pruner": None, "sparsity": 0.0, "k": 1}
    parts = name.split("_")
    k = 1
    if len(parts) == 3 and parts[2].startswith("x") and parts[2][1:].isdigit():
        k = int(parts[2][1:])
        parts = parts[:2]
    if len(parts) != 2 or parts[0] not in ADAPTER_KINDS or k < 1:
        raise ConfigError(
            f"adapter run {name!r}: not <kind>_dense, <kind>_<pruner><percent>[_x<k>] or {FULL_FT}"
        )
    kind, rest = parts
    if rest == "dense":
        return {"kind": kind, "pruner": None, "sparsity": 0.0, "k": k}
    pruner = rest.rstrip("0123456789")
    pct = rest[len(pruner) :]
    if pruner not in PRUNERS or not pct or not 0 < int(pct) < 100:
        raise ConfigError(
            f"adapter run {name!r}: pruner must be one of {list(PRUNERS)} then a percent in 1..99"
        )
    return {"kind": kind, "pruner": pruner, "sparsity": int(pct) / 100, "k": k}
