"""What a compression recipe's weights are stored and multiplied as: the storage and kernels notes of the speed
table (rule compress_speed; arXiv 2406.02500, "Measurement").

`RecipeFootprint` is what `moelab.evaluate.compress_speed.measure_recipe` takes as ``footprint`` (the script of
rule compress_speed wires the two stages together; neither imports the other):
    - rtn / gptq / awq here are quantise-dequantise: weights stored and multiplied in the model's float dtype; the
      packed size at the quantised width is counted (`moelab.compress.quantize.weight_bits_report`), not measured.
    - pruned weights (magnitude / Wanda / SparseGPT, unstructured or N:M) are zeros in dense matrices.
    - Block / Layer / Expert Drop remove structure.

Units: bytes.
"""

from __future__ import annotations

from moelab.compress.quantize import weight_bits_report
from moelab.compress.recipe import PRUNING, QUANTISATION, TRIMMING, check_step

# The quantisers' defaults where a step leaves bits / group_size out (moelab.compress.registry, METHOD_OPTIONS).
QUANT_DEFAULTS = {"bits": 4, "group_size": 128, "desc_act": True}


def quant_step(steps: list[dict]) -> dict | None:
    """The last quantisation step (rtn / gptq / awq) of a recipe with its defaults filled, or None.

    Returns: {"method", "bits", "group_size", "g_idx"}; g_idx = GPTQ with desc_act (act-order without static
        groups: the packed layout keeps one int32 group index per input column, as AutoGPTQ's).
    Raises: ValueError naming the step that does not pass `moelab.compress.recipe.check_step`.
    """
    found = None
    for i, step in enumerate(steps):
        step = check_step(step, f"step {i}")
        if step["method"] in QUANTISATION:
            found = {**QUANT_DEFAULTS, **step}
    if found is None:
        return None
    return {
        "method": found["method"],
        "bits": found["bits"],
        "group_size": found["group_size"],
        "g_idx": found["method"] == "gptq" and bool(found["desc_act"]),
    }


def kernels_note(steps: list[dict], dtype: str) -> str:
    """What the model's matmuls run as (the record's ``kernels`` field and the tables' kernels column)."""
    methods = {s["method"] for s in steps}
    q = quant_step(steps)
    parts = [f"{dtype} dense kernels"]
    if q:
        parts.append(
            f"{q['bits']}-bit {q['method']} is quantise-dequantise: its weights are stored and multiplied in "
            f"{dtype} (no low-bit kernel; no speed-up expected from it)"
        )
    if methods & set(PRUNING):
        parts.append("pruned weights are zeros in dense matrices (no sparse kernel)")
    if methods & set(TRIMMING):
        parts.append("dropped blocks / layers / experts are removed")
    return "; ".join(parts)


def storage(model, steps: list[dict]) -> dict:
    """Bytes of ``model``'s weights as loaded and at their storage width.

    Args:
        model: the loaded model (any dtype); steps: the recipe that made it ([] for the parent).
    Returns: {"weights_bytes": sum of numel x element size over the parameters (as measured: what the kernels
        read), "storage_bytes": the same with every expert matrix packed at the recipe's quantised width when it
        quantises (`weight_bits_report`: b-bit integers + an fp16 scale and b-bit zero per group, + g_idx for
        GPTQ act-order), else = weights_bytes, "storage_bits": the quantised width or None, "storage":
        what storage_bytes counts}. Experts left unquantised by ``unrouted: skip`` are counted packed too.
    """
    params = list(model.parameters())
    weights = sum(p.numel() * p.element_size() for p in params)
    q = quant_step(steps)
    if q is None:
        return {
            "weights_bytes": weights,
            "storage_bytes": weights,
            "storage_bits": None,
            "storage": "the weights as loaded",
        }
    rep = weight_bits_report(model, q["bits"], q["group_size"], g_idx=q["g_idx"])
    packed = weights - rep["params"] * params[0].element_size() + rep["bytes"]["quantized"]
    return {
        "weights_bytes": weights,
        "storage_bytes": packed,
        "storage_bits": q["bits"],
        "storage": (
            f"expert weights packed at {q['bits']} bits (group {q['group_size']}, {rep['bits_per_weight']:.2f} "
            "bits per weight with scales and zeros), the rest as loaded; a count, not a measurement"
        ),
    }


class RecipeFootprint:
    """The storage and kernels of one recipe's model (``measure_recipe``'s ``footprint``).

    Args:
        steps: the recipe (`moelab.compress.recipe` steps) that made the compressed model; dtype: the float dtype
            the models run in ("float32", ...).
    Attributes: steps (checked), kernels (`kernels_note`), fake_quantised (the recipe quantises).
    Raises: ValueError naming the step that does not pass `moelab.compress.recipe.check_step`.
    """

    def __init__(self, steps: list[dict], dtype: str):
        self.steps = [check_step(s, f"step {i}") for i, s in enumerate(steps)]
        self.kernels = kernels_note(self.steps, dtype)
        self.fake_quantised = quant_step(self.steps) is not None

    def storage(self, model, compressed: bool) -> dict:
        """`storage` of ``model``: with this recipe's steps when it is the compressed model, else as loaded."""
        return storage(model, self.steps if compressed else [])
