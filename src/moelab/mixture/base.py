"""The data-mixture interface: weights over named sources, updated at evaluation rounds.

A mixture holds the current weights of its sources (pretraining domains, instruction data sets), a history
of every weight vector it has had, and ``update(round_stats) -> weights``, which a training loop calls at
each evaluation round. A sampler (``moelab.mixture.sampler``) draws by the weights; the mixture decides them.
Torch-free on purpose: the config check and the report import it.
"""

from __future__ import annotations

import math


def normalise(weights: dict[str, float], names: list[str], what: str = "weights") -> dict[str, float]:
    """Validate ``weights`` over ``names`` and return them normalised to sum 1 (sorted by name).

    Raises:
        ValueError: a key that is not in ``names``, a name without a weight, a negative or non-finite
            weight, or a zero sum (the message starts with ``what`` and names the domain, i.e. the source).
    """
    for key in weights:
        if key not in names:
            raise ValueError(f"{what}: unknown domain {key!r} in weights; domains are {sorted(names)}")
    for key in names:
        if key not in weights:
            raise ValueError(
                f"{what}: weights lack domain {key!r}; give every domain a weight (0 to skip it)"
            )
    bad = [k for k in sorted(names) if not math.isfinite(float(weights[k])) or float(weights[k]) < 0]
    if bad:
        raise ValueError(f"{what}: weights of {bad} must be finite and non-negative, got {weights}")
    total = sum(float(weights[k]) for k in names)
    if total <= 0:
        raise ValueError(f"{what}: weights must have a positive sum, got {weights}")
    return {k: float(weights[k]) / total for k in sorted(names)}


class Mixture:
    """Weights over named sources; the base class keeps them fixed (a static mixture).

    Args:
        names: the sources (kept sorted).
        weights: source -> initial weight >= 0 (normalised here).

    Attributes:
        history: list of ``{"step": int, "weights": {source: weight}}``, one per weight vector held
            (step 0 = the initial weights, then one entry per update).

    Raises:
        ValueError: bad weights (see :func:`normalise`).
    """

    strategy = "static"
    dynamic = False
    held_after_start = False  # one dynamic update at the start, then static (gate-load static)
    needs: tuple[str, ...] = ()  # the round_stats entries a dynamic update reads, each covering every source

    def __init__(self, names, weights: dict[str, float]):
        self.names = sorted(names)
        if not self.names:
            raise ValueError(f"{type(self).__name__}: no sources given")
        self._weights = normalise(weights, self.names, f"mixture {self.strategy}")
        self.history: list[dict] = [{"step": 0, "weights": dict(self._weights)}]

    @property
    def weights(self) -> dict[str, float]:
        """The current weights, source -> weight, summing to 1."""
        return dict(self._weights)

    def updates_at(self, step: int, steps: int) -> bool:
        """Whether the evaluation round before step ``step`` (``steps`` = after the last) updates the weights:
        a dynamic mixture at every round strictly inside the run (not at the start, not after the end)."""
        return self.dynamic and 0 < step < steps

    def new_weights(self, round_stats: dict) -> dict[str, float]:
        """The next weights (unnormalised is fine) from one round's stats; a static mixture keeps its weights."""
        return self.weights

    def update(self, round_stats: dict) -> dict[str, float]:
        """Take one evaluation round and return the (possibly new) weights.

        Args:
            round_stats: ``{"step": int, ...}`` plus what the strategy reads (``needs``): loss-based mixtures
                ``"losses"`` and ``"reference"`` ({source: nats/token}); routing-based ones ``"gate_loads"``
                ({source: [num_experts] expert counts}). Each needed entry must cover every source.

        Raises:
            ValueError: a needed entry missing or lacking a source (names the entry and the source).
        """
        for what in self.needs:
            values = round_stats.get(what)
            missing = [n for n in self.names if values is None or n not in values]
            if missing:
                raise ValueError(f"mixture {self.strategy}: round {what} lack source {missing[0]!r}")
        self._weights = normalise(self.new_weights(round_stats), self.names, f"mixture {self.strategy}")
        if self.dynamic:
            self.history.append({"step": int(round_stats["step"]), "weights": dict(self._weights)})
        return self.weights

    def state_dict(self) -> dict:
        """JSON-serialisable state: strategy, current weights and weight history."""
        return {
            "strategy": self.strategy,
            "weights": self.weights,
            "history": [dict(h) for h in self.history],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict()``.

        Raises:
            ValueError: the state is of another strategy or over other sources.
        """
        if state.get("strategy") != self.strategy:
            raise ValueError(
                f"mixture state is of strategy {state.get('strategy')!r}, this is {self.strategy!r}"
            )
        if sorted(state["weights"]) != self.names:
            raise ValueError(f"mixture state covers {sorted(state['weights'])}, this mixture {self.names}")
        self._weights = normalise(state["weights"], self.names, f"mixture {self.strategy}")
        self.history = [{"step": int(h["step"]), "weights": dict(h["weights"])} for h in state["history"]]
