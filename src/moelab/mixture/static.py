"""Static mixtures: fixed weights, and the two initialisations that need no config values.

LLaMA-MoE (arXiv 2406.16554, Sec. 4.1 and Table 4) compares static uniform, proportional-to-size, the LLaMA
mix and the Sheared-LLaMA mix; the latter two are ``domain_weights`` in the config (mapping in a comment).
"""

from __future__ import annotations

from moelab.mixture.base import Mixture


class StaticMixture(Mixture):
    """Fixed weights for the whole run (``update`` returns them unchanged)."""

    strategy = "static"


def uniform_weights(names) -> dict[str, float]:
    """1/K for each of the K sources."""
    names = sorted(names)
    return {n: 1.0 / len(names) for n in names}


def proportional_weights(sizes: dict[str, float]) -> dict[str, float]:
    """Weights proportional to source size (tokens): ``w_d = n_d / sum n``.

    Raises:
        ValueError: a negative size or a zero total.
    """
    if any(v < 0 for v in sizes.values()) or sum(sizes.values()) <= 0:
        raise ValueError(f"proportional weights need non-negative sizes with a positive sum, got {sizes}")
    total = float(sum(sizes.values()))
    return {n: sizes[n] / total for n in sorted(sizes)}
