"""Data mixtures: samplers over named sources (domains, data sets) drawn by weights.

``sampler.py`` holds the one sampler protocol and the two samplers (packed pretraining blocks, chat
examples). Dynamic mixture strategies (a strategy's ``update(round_stats) -> weights`` feeding a sampler's
``set_weights``: Sheared-LLaMA dynamic batch loading, MoE-SFT gate-load redundancy) go beside it, one module
each. Floor 3: imports ``moelab.data`` and lower floors only, never train / evaluate / construct.
"""

from moelab.mixture.sampler import (
    DomainSampler,
    MixtureSampler,
    Sampler,
    WeightedSampler,
    normalise_domain_weights,
)

__all__ = ["DomainSampler", "MixtureSampler", "Sampler", "WeightedSampler", "normalise_domain_weights"]
