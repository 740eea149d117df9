"""The mixture strategies by config name, and the one constructor the training stages call.

A ``pretrain.mixture`` spec (config/schema.yaml) names a strategy, the initial weights and the strategy's
settings; :func:`check_mixture_spec` validates it against the domains before any job runs and
:func:`make_mixture` builds it.
"""

from __future__ import annotations

from moelab.mixture.base import Mixture, normalise
from moelab.mixture.sheared_llama import ShearedLlama, ShearedLlamaPaper
from moelab.mixture.static import StaticMixture, proportional_weights, uniform_weights

STRATEGIES: dict[str, type[Mixture]] = {
    "static": StaticMixture,
    "sheared_llama": ShearedLlama,
    "sheared_llama_paper": ShearedLlamaPaper,
}
INITS = ("weights", "uniform", "proportional")
_SETTINGS = {"sheared_llama": ("eta", "smoothing")}
_SPEC_KEYS = {"strategy", "init", "eval_interval", "eta", "smoothing", "reference_loss"}


def check_mixture_spec(spec: dict, names, where: str = "pretrain.mixture") -> None:
    """Validate a mixture spec over the sources ``names``.

    Raises:
        ValueError: an unknown key, strategy or init, a non-positive eval_interval, a negative eta,
            smoothing outside [0, 1], or a reference_loss naming an unknown source or missing one
            (the message names the key).
    """
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; known: {sorted(_SPEC_KEYS)}")
    strategy = spec.get("strategy", "static")
    if strategy not in STRATEGIES:
        raise ValueError(f"{where}.strategy={strategy!r} is not one of {sorted(STRATEGIES)}")
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


def make_mixture(spec: dict, weights: dict[str, float], sizes: dict[str, float] | None = None) -> Mixture:
    """Build the mixture ``spec`` names over the sources of ``weights``.

    Args:
        spec: a ``pretrain.mixture`` mapping (strategy, init, eta, smoothing, ...; others ignored here).
        weights: source -> configured weight (``domain_weights``); its keys are the sources.
        sizes: source -> size in tokens (for ``init: proportional``).

    Raises:
        ValueError: see :func:`check_mixture_spec` and :func:`initial_weights`.
    """
    check_mixture_spec(spec, list(weights))
    strategy = spec.get("strategy", "static")
    kwargs = {k: float(spec[k]) for k in _SETTINGS.get(strategy, ()) if k in spec}
    return STRATEGIES[strategy](sorted(weights), initial_weights(spec, weights, sizes), **kwargs)
