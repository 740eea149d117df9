"""Compression recipes: an ordered list of steps, each one method of the MoE compression framework (torch-free).

A recipe (config ``compress.recipes.<name>``) is a list of steps ``{method: <name>, <param>: <value>, ...}`` applied
in order to one model, each step's output the next one's input (arXiv 2406.02500 combines Expert Trimming with
Expert Slimming, e.g. Block Drop then 4-bit quantisation, for its 6.05x headline). The methods:

    Expert Trimming  block_drop (mode, n_drop), layer_drop (n_drop, iterative), expert_drop (keep, mode)
    Expert Slimming  magnitude, wanda, sparsegpt (sparsity or pattern N:M, unrouted);
                     rtn, gptq, awq (bits, group_size; gptq: desc_act; awq: n_grid, clip; unrouted)

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
