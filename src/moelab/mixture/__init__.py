"""Data mixtures: weights over named sources (domains, data sets), their update rules, and the samplers.

- ``base.py``: :class:`Mixture` (current weights, ``update(round_stats) -> weights``, weight history,
  ``state_dict``); ``static.py``: fixed weights, uniform and proportional initialisation;
  ``sheared_llama.py``: Sheared-LLaMA dynamic batch loading, its code's and LLaMA-MoE's variant;
  ``moe_sft.py``: MoE-SFT's gate-load redundancy mixture, its inverse hypothesis and the random / cycle
  baselines of its code (instruction data sets; the sft stage's wiring is issue 13's next step);
  ``strategies.py``: the registry, the spec check and :func:`make_mixture`.
- ``sampler.py``: the one sampler protocol and the two samplers (packed pretraining blocks, chat examples).

Floor 3: imports ``moelab.data`` and lower floors only. The sampler needs torch; the strategies do not, and
the names below load lazily so that the config check (``moelab.config``) imports no torch.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "Mixture": "base",
    "normalise": "base",
    "StaticMixture": "static",
    "uniform_weights": "static",
    "proportional_weights": "static",
    "ShearedLlama": "sheared_llama",
    "ShearedLlamaPaper": "sheared_llama",
    "MoESFTDynamic": "moe_sft",
    "MoESFTInverse": "moe_sft",
    "GateLoadStatic": "moe_sft",
    "RandomWeights": "moe_sft",
    "RandomBatch": "moe_sft",
    "Cycle": "moe_sft",
    "redundancy": "moe_sft",
    "STRATEGIES": "strategies",
    "INITS": "strategies",
    "check_mixture_spec": "strategies",
    "initial_weights": "strategies",
    "make_mixture": "strategies",
    "DomainSampler": "sampler",
    "MixtureSampler": "sampler",
    "Sampler": "sampler",
    "WeightedSampler": "sampler",
    "normalise_domain_weights": "sampler",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'moelab.mixture' has no attribute {name!r}")
    return getattr(importlib.import_module(f"moelab.mixture.{_WHERE[name]}"), name)
