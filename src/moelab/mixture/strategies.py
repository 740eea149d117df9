"""The mixture strategies by config name, and the one constructor the training stages call.

A ``pretrain.mixture`` spec (config/schema.yaml) names a strategy, the initial weights and the strategy's
settings; :func:`check_mixture_spec` validates it against the domains before any job runs and
:func:`make_mixture` builds it.
"""

from __future__ import annotations

from moelab.mixture.base import Mixture, normalise
from moelab.mixture.moe_sft import (
    DISTANCES,
    Cycle,
    GateLoadStatic,
    MoESFTDynamic,
    MoESFTInverse,
    RandomBatch,
    RandomWeights,
)
from moelab.mixture.sheared_llama import ShearedLlama, ShearedLlamaPaper
from moelab.mixture.static import StaticMixture, proportional_weights, uniform_weights

STRATEGIES: dict[str, type[Mixture]] = {
    "static": StaticMixture,
    "sheared_llama": ShearedLlama,
    "sheared_llama_paper": ShearedLlamaPaper,
    "moe_sft": MoESFTDynamic,
    "moe_sft_inverse": MoESFTInverse,
    "gate_load_static": GateLoadStatic,
    "random_weights": RandomWeights,
    "random_batch": RandomBatch,
    "cycle": Cycle,
}
# What each stage can feed a strategy at its evaluation rounds: pretrain the held-out loss per domain (and the
# reference); sft the dev gate loads and dev losses per data set (sheared_llama = MoE-SFT's reference-loss
# baseline, the reference being the starting model's dev loss).
STAGE_STRATEGIES = {
    "pretrain": ("static", "sheared_llama", "sheared_llama_paper"),
    "sft": (
        "static",
        "moe_sft",
        "moe_sft_inverse",
        "gate_load_static",
        "random_weights",
        "random_batch",
        "cycle",
        "sheared_llama",
    ),
}
INITS = ("weights", "uniform", "proportional")
LAYERS = ("last", "all")
_SETTINGS = {
    "sheared_llama": ("eta", "smoothing"),
    "moe_sft": ("eta", "smoothing", "distance"),
    "moe_sft_inverse": ("eta", "smoothing", "distance"),
    "gate_load_static": ("eta", "smoothing", "distance"),
}
_SEEDED = ("random_weights", "random_batch")
_SPEC_KEYS = {
    "pretrain": {"strategy", "init", "eval_interval", "eta", "smoothing", "reference_loss"},
    "sft": {"strategy", "init", "eval_interval", "eta", "smoothing", "distance", "layers", "dev_examples",
            "eval_batches"},
}  # fmt: skip


def check_mixture_spec(spec: dict, names, where: str = "pretrain.mixture", stage: str | None = None) -> None:
    """Validate a mixture spec over the sources ``names``; ``where`` (``pretrain.mixture`` or ``sft.mixture``)
    names the config key and, unless ``stage`` (``pretrain`` / ``sft``) is given, decides which strategies and
    keys the stage offers (``STAGE_STRATEGIES``).

    Raises:
        ValueError: an unknown key, strategy (or one the stage cannot feed), init, distance or layers, a
            non-positive eval_interval / dev_examples / eval_batches, a negative eta, smoothing outside [0, 1],
            or a reference_loss naming an unknown source or missing one (the message names the key).
    """
    if stage is None:
        stage = where.split(".")[0] if where.split(".")[0] in _SPEC_KEYS else "pretrain"
    keys = _SPEC_KEYS[stage]
    unknown = sorted(set(spec) - keys)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; known: {sorted(keys)}")
    strategy = spec.get("strategy", "static")
    if strategy not in STAGE_STRATEGIES[stage]:
        raise ValueError(f"{where}.strategy={strategy!r} is not one of {list(STAGE_STRATEGIES[stage])}")
    if spec.get("distance", "l2") not in DISTANCES:
        raise ValueError(f"{where}.distance={spec['distance']!r} is not one of {list(DISTANCES)}")
    if spec.get("layers", "last") not in LAYERS:
        raise ValueError(f"{where}.layers={spec['layers']!r} is not one of {list(LAYERS)}")
    for key in ("dev_examples", "eval_batches"):
        if int(spec.get(key, 1)) < 1:
            raise ValueError(f"{where}.{key} must be >= 1, got {spec[key]}")
    init = spec.get("init", "weights")
    if init not in INITS:
        raise ValueError(f"{where}.init={init!r} is not one of {list(INITS)}")
    if int(spec.get("eval_interval", 1)) < 1:
        raise ValueError(f"{where}.eval_interval must be >= 1, got {spec['eval_interval']}")
    if float(spec.get("eta", 1.0)) < 0:
        raise ValueError(f"{where}.eta must be >= 0, got {spec['eta']}")
    if not 0 <= float(spec.get("smoothing", 1e-4)) <= 1:
        raise ValueError(f"{where}.smoothing must be in [0, 1], got {spec['smoothing']}")
    ref = spec.get("reference_loss")
    if ref is not None:
        for key in ref:
            if key not in names:
                raise ValueError(f"{where}.reference_loss names {key!r}, not a domain of {sorted(names)}")
        for key in sorted(names):
            if key not in ref:
                raise ValueError(f"{where}.reference_loss has no value for domain {key!r}")


def initial_weights(
    spec: dict, weights: dict[str, float], sizes: dict[str, float] | None = None
) -> dict[str, float]:
    """The initial weights ``spec["init"]`` asks for: the given ``weights``, uniform, or proportional to ``sizes``.

    Raises:
        ValueError: ``init: proportional`` without sizes, or bad weights.
    """
    init = spec.get("init", "weights")
    if init == "uniform":
        return uniform_weights(weights)
    if init == "proportional":
        if sizes is None:
            raise ValueError("mixture init 'proportional' needs the size (tokens) of each source")
        return proportional_weights({k: sizes[k] for k in sorted(weights)})
    return normalise(weights, sorted(weights), "mixture init weights")


def make_mixture(
    spec: dict,
    weights: dict[str, float],
    sizes: dict[str, float] | None = None,
    where: str = "pretrain.mixture",
    seed: int = 0,
) -> Mixture:
    """Build the mixture ``spec`` names over the sources of ``weights``.

    Args:
        spec: a ``pretrain.mixture`` / ``sft.mixture`` mapping (strategy, init, eta, smoothing, distance, ...;
            the round settings are the stage's).
        weights: source -> configured weight (``domain_weights``); its keys are the sources.
        sizes: source -> size in tokens (for ``init: proportional``).
        where: the spec's config key (``check_mixture_spec``). seed: the random baselines' RNG seed.

    Raises:
        ValueError: see :func:`check_mixture_spec` and :func:`initial_weights`.
    """
    check_mixture_spec(spec, list(weights), where)
    strategy = spec.get("strategy", "static")
    kwargs = {
        k: (spec[k] if k == "distance" else float(spec[k])) for k in _SETTINGS.get(strategy, ()) if k in spec
    }
    if strategy in _SEEDED:
        kwargs["seed"] = int(seed)
    return STRATEGIES[strategy](sorted(weights), initial_weights(spec, weights, sizes), **kwargs)
