"""pass@k: the unbiased estimator of functional correctness of Chen et al. 2021 (Codex paper, Sec. 2.1, eq. 1).

For one problem with n generated samples of which c pass the unit tests, the probability that at least one of
k samples drawn without replacement from those n passes is

    pass@k = 1 - C(n - c, k) / C(n, k)

computed as the product 1 - prod_{i = n-c+1}^{n} (1 - k / i), which needs no large binomials (the paper's
numerically stable form). A benchmark's pass@k is the mean over its problems. With n = k = 1 (greedy decoding)
pass@1 is simply the fraction of problems whose single sample passes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem: n samples generated, c of them correct (Chen et al. 2021, eq. 1).

    Args:
        n: samples generated for the problem (>= 1).
        c: samples that passed (0 <= c <= n).
        k: budget (1 <= k <= n).
    Returns:
        the probability in [0, 1] that a random size-k subset of the n samples contains a correct one.
    Raises:
        ValueError: a count out of range (k > n needs more samples: raise the task's `repeats`).
    """
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"pass_at_k: {name} must be an int, got {value!r}")
    if n < 1 or not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need n >= 1 and 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got k={k}, n={n} (generate at least k samples)")
    if n - c < k:  # every size-k subset contains a correct sample
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def mean_pass_at_k(counts: Iterable[tuple[int, int]], k: int) -> float:
    """Benchmark pass@k: the mean of `pass_at_k(n, c, k)` over problems given as (n, c) pairs.

    Raises:
        ValueError: no problems, or a bad (n, c, k) (see `pass_at_k`).
    """
    values = [pass_at_k(n, c, k) for n, c in counts]
    if not values:
        raise ValueError("mean_pass_at_k: no problems given")
    return sum(values) / len(values)
