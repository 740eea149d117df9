"""Registry of compression methods, looked up by the names of ``moelab.compress.recipe``, and the recipe runner.

Every method runs in place on a model with calibration ``batches`` (dicts with ``input_ids`` [B, T] and optional
``attention_mask``) and the step's parameters, and returns a JSON-ready report of what it did. The recovery step
(``lora_recovery``) also takes the recovery text, which :func:`run_recipe` passes as ``recovery``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from moelab.compress.drop import block_drop
from moelab.compress.expert_drop import expert_drop
from moelab.compress.layer_drop import layer_drop
from moelab.compress.prune import prune_experts
from moelab.compress.quantize import quantize_experts
from moelab.compress.recipe import PRUNING, QUANTISATION, RECOVERY, STEP_PARAMS, check_order, check_step
from moelab.compress.recovery import lora_recovery


def _block_drop(model, batches, n_drop, mode="discrete"):
    from moelab.models import PER_LAYER_FIELDS

    return block_drop(model, batches, n_drop, mode, PER_LAYER_FIELDS)


def _pruner(method):
    def run(model, batches, sparsity=None, pattern="unstructured", unrouted="magnitude"):
        return prune_experts(model, batches, method, sparsity=sparsity, pattern=pattern, unrouted=unrouted)

    return run


def _quantiser(method):
    def run(model, batches, bits=4, group_size=128, unrouted="rtn", **kwargs):
        return quantize_experts(
            model, batches, method, bits=bits, group_size=group_size, unrouted=unrouted, **kwargs
        )

    return run


# name -> function(model, batches, **params) -> report
COMPRESS_METHODS: dict[str, Callable[..., dict]] = {
    "block_drop": _block_drop,
    "layer_drop": lambda model, batches, n_drop, iterative=False: layer_drop(
        model, batches, n_drop, iterative=iterative
    ),
    "expert_drop": lambda model, batches, keep, mode="global": expert_drop(model, batches, keep, mode),
    **{m: _pruner(m) for m in PRUNING},
    **{m: _quantiser(m) for m in QUANTISATION},
    "lora_recovery": lora_recovery,  # also takes recovery=<documents> (run_recipe)
}
assert set(COMPRESS_METHODS) == set(STEP_PARAMS), "recipe.STEP_PARAMS and the registry name the same methods"


def run_recipe(
    model,
    batches: list[dict],
    steps: list[dict],
    log: logging.Logger | None = None,
    recovery: list | None = None,
) -> list[dict]:
    """Apply a recipe's steps in order to ``model`` in place (each step sees the previous step's model).

    Args:
        model: a causal LM (``LlamaMoEForCausalLM`` for the expert methods; any HF decoder for block drop).
        batches: calibration batches, reused by every step (a list, not a one-shot iterator).
        steps: the recipe (``moelab.compress.recipe.check_recipes``), e.g.
            [{"method": "expert_drop", "keep": 6}, {"method": "block_drop", "n_drop": 4}].
        log: where each step's time is logged (optional).
        recovery: the recovery text of ``lora_recovery`` steps: token ids per document (1-D LongTensors, EOS
            last), disjoint from the calibration text (``moelab.data.calibration.calibration_and_recovery``).
    Returns:
        one record per step: {"method", "params", "seconds", "report"}.
    Raises:
        ValueError: a step that does not pass :func:`moelab.compress.recipe.check_step` or
            :func:`moelab.compress.recipe.check_order`, or a recovery step without ``recovery`` (all checked
            before the first step runs, so the model is untouched), or what a method raises.
    """
    steps = [check_step(step, f"step {i}") for i, step in enumerate(steps)]  # all of them, before any runs
    check_order(steps, "steps")
    for i, step in enumerate(steps):
        if step["method"] in RECOVERY and recovery is None:
            raise ValueError(f"step {i}: {step['method']} needs recovery text: run_recipe(..., recovery=...)")
    out = []
    for i, step in enumerate(steps):
        params = {k: v for k, v in step.items() if k != "method"}
        start = time.perf_counter()
        extra = {"recovery": recovery} if step["method"] in RECOVERY else {}
        report = COMPRESS_METHODS[step["method"]](model, batches, **params, **extra)
        seconds = round(time.perf_counter() - start, 2)
        if log is not None:
            log.info("step %d %s %s: %.1f s", i, step["method"], params, seconds)
        out.append({"method": step["method"], "params": params, "seconds": seconds, "report": report})
    return out
