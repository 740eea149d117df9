"""Sheared-LLaMA dynamic batch loading (Xia et al., arXiv 2310.06694, Sec. 3.2 and Alg. 1), two variants.

At each evaluation round the per-domain held-out loss ``l`` of the model being trained is compared with a
reference loss ``l_ref`` (LLaMA-MoE: the dense model's loss on the same domain), and domains that lag get
more weight.

- :class:`ShearedLlama` (Sheared-LLaMA's released code, update type "doremi"):
  ``D = l - l_ref`` (not clipped), ``a' = softmax(log a + eta D)``, ``a = (1 - c) a' + c / K``, renormalised;
  eta = 1, c = 1e-4.
- :class:`ShearedLlamaPaper` (the variant LLaMA-MoE's scripts run, arXiv 2406.16554 Sec. 4.1):
  ``D = max(0, l - l_ref)``, ``a ~ a exp(D)``, no smoothing (a domain at weight 0 stays at 0).
"""

from __future__ import annotations

import math

from moelab.mixture.base import Mixture


def _softmax(logits: dict[str, float]) -> dict[str, float]:
    top = max(v for v in logits.values() if v != -math.inf)
    exp = {k: (math.exp(v - top) if v != -math.inf else 0.0) for k, v in logits.items()}
    total = sum(exp.values())
    return {k: v / total for k, v in exp.items()}


def exponentiated_step(
    weights: dict[str, float], signal: dict[str, float], eta: float, smoothing: float
) -> dict[str, float]:
    """One exponentiated-gradient step with a uniform floor, shared by Sheared-LLaMA's dynamic batch loading
    (signal = excess loss) and MoE-SFT's dynamic mixture (signal = redundancy delta, arXiv 2406.11256 Sec. 3):

        a' = softmax(log a + eta * signal);  a = (1 - c) a' + c / K, renormalised.

    A source at weight 0 gets only the floor c / K. Returns the new weights (sum 1) over ``weights``' keys.
    """
    logits = {d: (math.log(a) if a > 0 else -math.inf) + eta * signal[d] for d, a in weights.items()}
    soft = _softmax(logits)
    k = len(weights)
    smoothed = {d: (1 - smoothing) * soft[d] + smoothing / k for d in weights}
    total = sum(smoothed.values())
    return {d: v / total for d, v in smoothed.items()}


class ShearedLlama(Mixture):
    """Sheared-LLaMA's exponentiated-gradient update with a c/K floor (its released code).

    Args:
        names: the domains.
        weights: initial weights (normalised).
        eta: step size (>= 0; Sheared-LLaMA: 1).
        smoothing: c in [0, 1]; every weight stays >= c/K after an update (Sheared-LLaMA: 1e-4).

    Raises:
        ValueError: negative eta, smoothing outside [0, 1], bad weights.
    """

    strategy = "sheared_llama"
    dynamic = True
    needs = ("losses", "reference")

    def __init__(self, names, weights: dict[str, float], eta: float = 1.0, smoothing: float = 1e-4):
        if not (eta >= 0 and math.isfinite(eta)):
            raise ValueError(f"mixture {self.strategy}: eta must be >= 0, got {eta}")
        if not 0 <= smoothing <= 1:
            raise ValueError(f"mixture {self.strategy}: smoothing must be in [0, 1], got {smoothing}")
        self.eta, self.smoothing = float(eta), float(smoothing)
        super().__init__(names, weights)

    def new_weights(self, round_stats):
        """``a = (1 - c) softmax(log a + eta (l - l_ref)) + c / K`` (Sheared-LLaMA Alg. 1, its code's smoothing)."""
        losses, reference = round_stats["losses"], round_stats["reference"]
        excess = {d: losses[d] - reference[d] for d in self.names}
        return exponentiated_step(self.weights, excess, self.eta, self.smoothing)


class ShearedLlamaPaper(Mixture):
    """LLaMA-MoE's variant: ``a ~ a exp(max(0, l - l_ref))`` (clipped excess loss, no step size, no floor)."""

    strategy = "sheared_llama_paper"
    dynamic = True
    needs = ("losses", "reference")

    def new_weights(self, round_stats):
        """``a_d exp(max(0, l_d - l_ref,d))``, normalised by the caller."""
        a, losses, reference = self.weights, round_stats["losses"], round_stats["reference"]
        return {d: a[d] * math.exp(max(0.0, losses[d] - reference[d])) for d in self.names}
