"""Compression recipes: an ordered list of steps, each one method of the MoE compression framework (torch-free).

A recipe (config ``compress.recipes.<name>``) is a list of steps ``{method: <name>, <param>: <value>, ...}`` applied
in order to one model, each step's output the next one's input (arXiv 2406.02500 combines Expert Trimming with
Expert Slimming, e.g. Block Drop then 4-bit quantisation, for its 6.05x headline). The methods:

    Expert Trimming  block_drop (mode, n_drop), layer_drop (n_drop, iterative), expert_drop (keep, mode)
    Expert Slimming  magnitude, wanda, sparsegpt (sparsity or pattern N:M, unrouted);
                     rtn, gptq, awq (bits, group_size; gptq: desc_act; awq: n_grid, clip; unrouted)
    Recovery         lora_recovery (steps, lr, r, alpha, dropout, batch_size, seq_len, heldout_sequences,
                     target_modules, seed): LoRA fine-tuning on recovery text, merged back
                     (``moelab.compress.recovery``; the paper's post-compression LoRA fine-tuning)

This module only knows the names, parameters and their checks, so that the config check imports no torch;
``moelab.compress.registry`` binds each name to its function (a test asserts both agree).
"""

from __future__ import annotations

import re

PRUNE_PATTERN = re.compile(r"^(unstructured|(\d+):(\d+))$")


def _int_range(lo, hi=None):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
            return f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
        return None

    return check


def _choice(*options):
    def check(v):
        return None if v in options else f"one of {list(options)}"

    return check


def _boolean(v):
    return None if isinstance(v, bool) else "true or false"


def _sparsity(v):
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < 1:
        return "a fraction in [0, 1) (the share of expert weights set to zero)"
    return None


def _positive_number(what):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < float("inf"):
            return f"a number > 0 ({what})"
        return None

    return check


def _dropout(v):
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < 1:
        return "a probability in [0, 1) (LoRA dropout on the adapters' input)"
    return None


# Names lora_recovery may adapt: the attention projections, the expert (and dense FFN) linear maps, and the
# router's linear maps (only when asked: routing is the MoE's structure; the default leaves it alone).
LORA_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
LORA_EXPERT = ("gate_proj", "up_proj", "down_proj")
LORA_TARGETS = (*LORA_ATTENTION, *LORA_EXPERT, "router")
LORA_DEFAULT_TARGETS = (*LORA_ATTENTION, *LORA_EXPERT)
# lora_recovery's defaults: a demo-sized recovery (20 steps x 4 x 256 tokens = 20k tokens; the paper: r = 32,
# 3 epochs of Alpaca-GPT4). lr 5e-4: LoRA's B starts at zero, so a few steps need a larger lr than full tuning.
LORA_DEFAULTS = dict(
    steps=20,
    lr=5e-4,
    r=8,
    alpha=16,
    dropout=0.0,
    batch_size=4,
    seq_len=256,
    heldout_sequences=8,
    target_modules=list(LORA_DEFAULT_TARGETS),
    seed=0,
)


def _targets(v):
    if (
        not isinstance(v, list)
        or not v
        or len(set(map(str, v))) != len(v)
        or any(not isinstance(t, str) or t not in LORA_TARGETS for t in v)
    ):
        unknown = [t for t in v if t not in LORA_TARGETS] if isinstance(v, list) else []
        tail = f"; unknown: {unknown}" if unknown else ""
        return f"a non-empty list of distinct names from {list(LORA_TARGETS)}{tail}"
    return None


def _pattern(v):
    m = PRUNE_PATTERN.match(str(v))
    if not m:
        return "'unstructured' or 'N:M' (N weights kept in every M consecutive inputs, e.g. '2:4')"
    if m.group(2) and not 0 < int(m.group(2)) < int(m.group(3)):
        return "N:M with 0 < N < M"
    return None


_PRUNE = {"sparsity": _sparsity, "pattern": _pattern, "unrouted": _choice("magnitude", "skip")}
_QUANT = {"bits": _int_range(2, 8), "group_size": _int_range(-1), "unrouted": _choice("rtn", "skip")}

# method -> {parameter: check(value) -> None or what the value must be}; every parameter is optional (the
# method's own default applies), except those in REQUIRED.
STEP_PARAMS: dict[str, dict] = {
    "block_drop": {"mode": _choice("discrete", "consecutive"), "n_drop": _int_range(0)},
    "layer_drop": {"n_drop": _int_range(0), "iterative": _boolean},
    "expert_drop": {"keep": _int_range(1), "mode": _choice("layer_wise", "global")},
    "magnitude": {k: v for k, v in _PRUNE.items() if k != "unrouted"},
    "wanda": dict(_PRUNE),
    "sparsegpt": dict(_PRUNE),
    "rtn": {k: v for k, v in _QUANT.items() if k != "unrouted"},
    "gptq": {**_QUANT, "desc_act": _boolean},
    "awq": {**_QUANT, "n_grid": _int_range(1), "clip": _boolean},
    "lora_recovery": {
        "steps": _int_range(1),
        "lr": _positive_number("the AdamW learning rate"),
        "r": _int_range(1),
        "alpha": _positive_number("LoRA's alpha: updates are scaled by alpha / r"),
        "dropout": _dropout,
        "batch_size": _int_range(1),
        "seq_len": _int_range(2),
        "heldout_sequences": _int_range(1),
        "target_modules": _targets,
        "seed": _int_range(0),
    },
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "block_drop": ("n_drop",),
    "layer_drop": ("n_drop",),
    "expert_drop": ("keep",),
}
# Names no recipe may take: results/compress/<name>/ of these is not a recipe's folder.
RESERVED_NAMES = {"speed": "the name is reserved (results/compress/speed/ holds every recipe's speed record)"}
TRIMMING = ("block_drop", "layer_drop", "expert_drop")
PRUNING = ("magnitude", "wanda", "sparsegpt")
QUANTISATION = ("rtn", "gptq", "awq")
RECOVERY = ("lora_recovery",)


def check_step(step, where: str) -> dict:
    """One recipe step, checked: ``{"method": name, **params}``.

    Raises: ValueError naming ``where`` and the key: not a mapping, an unknown method or parameter, a missing
        required parameter, a bad value; pruning with both a sparsity and an N:M pattern, or with neither.
    """
    if not isinstance(step, dict) or "method" not in step:
        raise ValueError(
            f"{where} must be a mapping with a method (one of {sorted(STEP_PARAMS)}), got {step!r}"
        )
    method = step["method"]
    if method not in STEP_PARAMS:
        raise ValueError(
            f"{where}.method={method!r} is not a compression method; valid: {sorted(STEP_PARAMS)}"
        )
    params = {k: v for k, v in step.items() if k != "method"}
    unknown = sorted(set(params) - set(STEP_PARAMS[method]))
    if unknown:
        raise ValueError(
            f"{where}.{unknown[0]}: {method} takes no parameter {unknown[0]!r} (takes {sorted(STEP_PARAMS[method])})"
        )
    for key in REQUIRED.get(method, ()):
        if key not in params:
            raise ValueError(f"{where}.{key} is required by {method}")
    for key, value in params.items():
        wrong = STEP_PARAMS[method][key](value)
        if wrong:
            raise ValueError(f"{where}.{key}={value!r} must be {wrong}")
    if method in PRUNING:
        structured = params.get("pattern", "unstructured") != "unstructured"
        if structured == ("sparsity" in params):
            raise ValueError(
                f"{where}: {method} takes a sparsity (unstructured) or an N:M pattern, "
                f"exactly one, got {sorted(set(params) & {'sparsity', 'pattern'}) or 'neither'}"
            )
    return {"method": method, **params}


def check_order(steps: list[dict], where: str) -> None:
    """Steps that may not follow each other: LoRA recovery of expert weights after their quantisation.

    Quantisation is fake (``moelab.compress.quantize``): the expert weights hold the dequantised b-bit values.
    Merging a LoRA update into them would take them off the b-bit grid, so the saved model would no longer be
    the quantised model its row claims. Recover first, then quantise (the float weights are recovered and the
    quantiser sees them), or adapt only the attention projections, which quantisation leaves in float.

    Args: steps checked by :func:`check_step`; ``where`` names the recipe (``compress.recipes.<name>``).
    Raises: ValueError naming ``<where>[<i>].target_modules``.
    """
    quantised = None
    for i, step in enumerate(steps):
        if step["method"] in QUANTISATION and quantised is None:
            quantised = (i, step["method"])
        if step["method"] in RECOVERY and quantised is not None:
            experts = sorted(set(step.get("target_modules", LORA_DEFAULT_TARGETS)) & set(LORA_EXPERT))
            if experts:
                raise ValueError(
                    f"{where}[{i}].target_modules: lora_recovery adapts {experts} after {quantised[1]} "
                    f"(step {quantised[0]}) quantised the expert weights; merging LoRA into them would leave the "
                    f"quantisation grid. Put lora_recovery before {quantised[1]}, or set target_modules to "
                    f"attention projections only ({list(LORA_ATTENTION)}), which quantisation leaves in float"
                )


def check_recipes(compress: dict) -> dict[str, list[dict]]:
    """Every recipe of the ``compress`` config section, checked: name -> steps.

    ``compress.recipe`` (the headline recipe, rule ``compress``) and every name of ``compress.methods`` (the rows
    of table_methods) must be recipes.

    Raises: ValueError naming the key (``compress.recipes.<name>[<i>].<param>``, ``compress.recipe``, ...).
    """
    recipes = compress.get("recipes") or {}
    if not isinstance(recipes, dict):
        raise ValueError(
            f"compress.recipes must map recipe names to lists of steps, got {type(recipes).__name__}"
        )
    out = {}
    for name, steps in recipes.items():
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", str(name)):
            raise ValueError(f"compress.recipes.{name}: a recipe name is letters, digits and _ . + - only")
        if name in RESERVED_NAMES:
            raise ValueError(f"compress.recipes.{name}: {RESERVED_NAMES[name]}; rename the recipe")
        if not isinstance(steps, list) or not steps:
            raise ValueError(f"compress.recipes.{name} must be a non-empty list of steps")
        out[name] = [check_step(s, f"compress.recipes.{name}[{i}]") for i, s in enumerate(steps)]
        check_order(out[name], f"compress.recipes.{name}")
    headline = compress.get("recipe")
    if headline not in out:
        raise ValueError(f"compress.recipe={headline!r} names no recipe of compress.recipes {sorted(out)}")
    for name in compress.get("methods") or []:
        if name not in out:
            raise ValueError(
                f"compress.methods names {name!r}, not a recipe of compress.recipes {sorted(out)}"
            )
    return out


def blocks_dropped(steps: list[dict]) -> int:
    """Blocks a recipe removes (Block Drop steps' n_drop summed): the check that a model keeps a block."""
    return sum(s["n_drop"] for s in steps if s["method"] == "block_drop")
