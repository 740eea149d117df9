"""Which runs the SparseAdapter stage makes, from config section ``sparse_adapter`` (torch-free: the Snakefile
imports it while building the DAG).

Run names are :func:`moelab.adapters.options.variant_name`'s (``houlsby_dense``, ``houlsby_snip40``,
``houlsby_snip50_x2``, ``full_ft``); one job per (run, task) trains every seed (results/sparse_adapter/<run>/
<task>.json).

- table_glue (He et al. 2022, arXiv 2210.04284, Table 1 layout): every adapter kind dense and pruned by
  ``table_pruner`` at ``table_sparsity``, plus the full fine-tuning row.
- fig_sparsity (their Figure 3 layout): ``sweep_kind`` dense and pruned by each of ``sweep_pruners`` at each of
  ``sweep_sparsities``.
- table_large_sparse / fig_large_sparse (their Figure 1, "Large-Sparse"): ``sweep_kind`` widened ``k`` times at
  sparsity ``1 - 1/k`` by ``large_sparse_pruner`` (:func:`moelab.adapters.options.large_sparse`), beside the
  dense adapter and full fine-tuning.
"""

from __future__ import annotations

from collections.abc import Mapping

from moelab.adapters.data import OFFLINE_SIZES, SPLITS
from moelab.adapters.options import FULL_FT, large_sparse, variant_name
from moelab.errors import ConfigError


def table_variants(sa: Mapping) -> list[str]:
    """table_glue's runs: per kind dense then pruned, then ``full_ft``."""
    out = []
    for kind in sa["kinds"]:
        out += [variant_name(kind), variant_name(kind, sa["table_pruner"], sa["table_sparsity"])]
    return [*out, FULL_FT]


def sweep_variants(sa: Mapping) -> dict[str, dict[float, str]]:
    """fig_sparsity's runs: pruner -> sparsity -> run (sparsity 0 = the dense adapter, every pruner's)."""
    kind = sa["sweep_kind"]
    return {
        p: {0.0: variant_name(kind), **{float(s): variant_name(kind, p, s) for s in sa["sweep_sparsities"]}}
        for p in sa["sweep_pruners"]
    }


def large_sparse_variants(sa: Mapping) -> dict[int, str]:
    """k -> the Large-Sparse run (width x k at sparsity 1 - 1/k; k = 1 is the dense adapter)."""
    kind, out = sa["sweep_kind"], {1: variant_name(sa["sweep_kind"])}
    for k in sa["large_sparse_k"]:
        _, sparsity = large_sparse(1, k)
        out[k] = variant_name(kind, sa["large_sparse_pruner"], round(sparsity, 2), k)
    return out


def sweep_runs(sa: Mapping) -> list[str]:
    """Every run of target sparse_adapter_sweeps, each once, in order."""
    runs = [v for by in sweep_variants(sa).values() for v in by.values()]
    runs += [*large_sparse_variants(sa).values(), FULL_FT]
    return list(dict.fromkeys(runs))


def check_section(sa: Mapping) -> None:
    """Cross-key checks of ``sparse_adapter`` that the schema cannot state.

    Raises:
        ConfigError: a sparsity is not a whole percent, a Large-Sparse ``k`` gives a sparsity that is not one
            (e.g. k = 3), or train + dev + test exceed a task's offline examples; names the key.
    """
    try:
        table_variants(sa)
        sweep_variants(sa)
    except ConfigError as err:
        raise ConfigError(f"sparse_adapter: {err}") from None
    for k in sa["large_sparse_k"]:
        s = 1.0 - 1.0 / k
        if abs(round(s * 100) - s * 100) > 1e-6:
            raise ConfigError(
                f"sparse_adapter.large_sparse_k: k={k} gives sparsity {s:.4f}, not a whole percent"
            )
    need = sum(sa["sizes"][s] for s in SPLITS)
    for task in sa["tasks"]:
        if need > OFFLINE_SIZES[task]:
            raise ConfigError(
                f"sparse_adapter.sizes: train + dev + test = {need} exceeds task {task!r}'s "
                f"{OFFLINE_SIZES[task]} offline examples"
            )
