"""MoE-SFT dynamic data mixing (Zhu et al., "Dynamic data mixing maximizes instruction tuning for mixture-of-
experts", arXiv 2406.11256, NAACL 2025, Sec. 3) and the baselines of its official code. Torch-free.

At each evaluation round every instruction data set's dev split runs through the MoE; its gate load is, for the
chosen MoE layer(s), the number of non-padding tokens with each expert among their top-k (a vector
[num_experts]), normalised to a distribution l_i. Then (Sec. 3, eq. 2-4):

    d_ij    = ||l_i - l_j||_2                        (or 1 - cos(l_i, l_j): ``distance="cosine"``)
    delta_i = (1/N) sum_j d_ij,  j = i included      (the official code divides by N, not N - 1)
    a       = softmax(log w + eta * delta);   w = (1 - c) a + c / N, renormalised;   eta = 10, c = 0.05

A data set whose routing is far from the others' is less redundant and gets more weight. Data sets are taken in
sorted order; the initial weights are uniform (config). Baselines of the official code:

- :class:`MoESFTInverse` ("~l2", the inverse hypothesis): the L2 deltas with their rank order reversed.
- :class:`GateLoadStatic` ("static gate-load weights"): one such update from the starting model's gate loads
  (the round at step 0), then held for the whole run (upstream: conf/prob_map/gate_load.json).
- :class:`RandomWeights`: fresh uniform draws, normalised, each round.
- :class:`RandomBatch`: one data set (drawn each round) at 1.0, the others at 1e-5.
- :class:`Cycle`: a one-hot on the first data set (code, in sorted order), rolled by one each round.

The reference-loss baseline (D = dev loss - ref, eta 1, c 1e-4) is Sheared-LLaMA's update,
:class:`moelab.mixture.sheared_llama.ShearedLlama`. The random baselines keep their RNG state in ``state_dict``
(the official sampler could not resume).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from moelab.mixture.base import Mixture
from moelab.mixture.sheared_llama import exponentiated_step

DISTANCES = ("l2", "cosine")
RANDOM_BATCH_REST = 1e-5  # the weight of every data set but the drawn one (official code)


def load_distribution(counts: Sequence[float], source: str = "") -> list[float]:
    """A gate load [num_experts] (token counts per expert) normalised to sum 1.

    Raises:
        ValueError: empty, a negative or non-finite count, or all zero (names the source).
    """
    values = [float(x) for x in counts]
    if not values or any(not math.isfinite(x) or x < 0 for x in values) or sum(values) <= 0:
        raise ValueError(
            f"gate load of {source!r} must be finite, non-negative counts with a positive sum, got {values}"
        )
    total = sum(values)
    return [x / total for x in values]


def _distance(p: list[float], q: list[float], distance: str) -> float:
    if distance == "l2":
        return math.sqrt(sum((a - b) ** 2 for a, b in zip(p, q, strict=True)))
    dot = sum(a * b for a, b in zip(p, q, strict=True))
    return 1.0 - dot / (math.sqrt(sum(a * a for a in p)) * math.sqrt(sum(b * b for b in q)))


def redundancy(gate_loads: dict[str, Sequence[float]], distance: str = "l2") -> dict[str, float]:
    """delta_i = (1/N) sum_j d(l_i, l_j) over all N data sets, j = i included (MoE-SFT Sec. 3, eq. 3).

    Args:
        gate_loads: data set -> [num_experts] token counts per expert (normalised here).
        distance: "l2" (the paper) or "cosine" (1 - cosine similarity).
    Returns:
        data set -> delta (sorted by name); larger = less redundant.
    Raises:
        ValueError: unknown distance, no data sets, loads of different lengths, a bad load.
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    if not gate_loads:
        raise ValueError("redundancy: no gate loads given")
    loads = {name: load_distribution(gate_loads[name], name) for name in sorted(gate_loads)}
    widths = {len(v) for v in loads.values()}
    if len(widths) != 1:
        raise ValueError(
            f"gate loads have different numbers of experts: { {k: len(v) for k, v in loads.items()} }"
        )
    n = len(loads)
    return {i: sum(_distance(loads[i], loads[j], distance) for j in loads) / n for i in loads}


def inverse_ranks(values: dict[str, float]) -> dict[str, float]:
    """The same values with their rank order reversed: the largest goes to the source that had the smallest
    (ties broken by name). Used by the inverse hypothesis ("~l2")."""
    order = sorted(values, key=lambda k: (values[k], k))
    ranked = [values[k] for k in order]
    return {k: v for k, v in zip(order, reversed(ranked), strict=True)}


class MoESFTDynamic(Mixture):
    """MoE-SFT's dynamic mixture: re-weight the data sets by how redundant their routing is (see module doc).

    Args:
        names: the data sets; weights: initial weights (uniform in the paper).
        eta: step size (>= 0; paper 10). smoothing: c in [0, 1], floor c/N per data set (paper 0.05).
        distance: "l2" (paper) or "cosine".
    Raises:
        ValueError: negative or non-finite eta, smoothing outside [0, 1], unknown distance, bad weights.
    """

    strategy = "moe_sft"
    dynamic = True
    needs = ("gate_loads",)
    inverse = False

    def __init__(self, names, weights, eta: float = 10.0, smoothing: float = 0.05, distance: str = "l2"):
        if not (math.isfinite(eta) and eta >= 0):
            raise ValueError(f"mixture {self.strategy}: eta must be >= 0, got {eta}")
        if not 0 <= smoothing <= 1:
            raise ValueError(f"mixture {self.strategy}: smoothing must be in [0, 1], got {smoothing}")
        if distance not in DISTANCES:
            raise ValueError(
                f"mixture {self.strategy}: distance must be one of {DISTANCES}, got {distance!r}"
            )
        self.eta, self.smoothing, self.distance = float(eta), float(smoothing), distance
        self.last_delta: dict[str, float] | None = None
        super().__init__(names, weights)

    def new_weights(self, round_stats):
        """a = softmax(log w + eta delta); w = (1 - c) a + c/N (MoE-SFT Sec. 3, eq. 4)."""
        delta = redundancy({n: round_stats["gate_loads"][n] for n in self.names}, self.distance)
        self.last_delta = inverse_ranks(delta) if self.inverse else delta
        return exponentiated_step(self.weights, self.last_delta, self.eta, self.smoothing)


class MoESFTInverse(MoESFTDynamic):
    """The inverse hypothesis ("~l2"): as :class:`MoESFTDynamic` with the deltas' rank order reversed, so the most
    redundant data set gets the largest push."""

    strategy = "moe_sft_inverse"
    inverse = True


class GateLoadStatic(MoESFTDynamic):
    """Baseline "static gate-load weights": one :class:`MoESFTDynamic` update from the initial weights with the
    starting model's gate loads (the evaluation round at step 0), then static for the rest of the run."""

    strategy = "gate_load_static"
    held_after_start = True

    def updates_at(self, step: int, steps: int) -> bool:
        return step == 0 and len(self.history) == 1


class _Seeded(Mixture):
    """A mixture whose updates draw from its own RNG (seeded; state saved in ``state_dict``)."""

    dynamic = True

    def __init__(self, names, weights, seed: int = 0):
        self.rng = random.Random(seed)
        super().__init__(names, weights)

    def state_dict(self) -> dict:
        version, internal, gauss = self.rng.getstate()
        return {**super().state_dict(), "rng": [version, list(internal), gauss]}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))


class RandomWeights(_Seeded):
    """Baseline: fresh weights each round, one uniform draw in [0, 1) per data set, normalised."""

    strategy = "random_weights"

    def new_weights(self, round_stats):
        return {n: self.rng.random() for n in self.names}


class RandomBatch(_Seeded):
    """Baseline: each round one data set, drawn uniformly, gets weight 1.0 and the others 1e-5."""

    strategy = "random_batch"

    def new_weights(self, round_stats):
        pick = self.rng.choice(self.names)
        return {n: 1.0 if n == pick else RANDOM_BATCH_REST for n in self.names}


class Cycle(Mixture):
    """Baseline: a one-hot on the first data set in sorted order (the initial weights are ignored), moved to the
    next data set each round (np.roll in the official code)."""

    strategy = "cycle"
    dynamic = True

    def __init__(self, names, weights=None):
        names = sorted(names)
        super().__init__(names, {n: float(i == 0) for i, n in enumerate(names)})

    def new_weights(self, round_stats):
        current = max(self.names, key=lambda n: self._weights[n])
        nxt = self.names[(self.names.index(current) + 1) % len(self.names)]
        return {n: float(n == nxt) for n in self.names}
