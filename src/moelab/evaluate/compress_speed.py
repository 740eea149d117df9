"""Batch-1 speed, memory, size and FLOPs of a compressed model beside its uncompressed parent (rule compress_speed).

The MoE-compression speed table (arXiv 2406.02500, "Measurement"; protocol in :mod:`moelab.evaluate.speed`): batch
1, random prompts of each configured length, as many generated tokens as the prompt; prefill tokens/s, decode
tokens/s (1 / median per-token seconds); memory = peak allocated; FLOPs per token. The parent (the model the
recipe compressed) and the compressed model are measured in one process with their repeats interleaved
(`moelab.evaluate.speed.compare_speed`), so the speed-ups divide two rates measured under the same load.

Units: tokens/s; seconds; memory and storage in GB = 2**30 bytes (the paper's "GB": its Mixtral-8x7B bf16 row,
87.7 GB, is 46.7B parameters x 2 bytes = 87.0 GiB of weights plus activations); FLOPs per token (forward).

Honesty about what is measured (the fields ``kernels`` and ``fake_quantised`` of every record; what a recipe's
weights are stored and multiplied as comes from the caller's ``footprint``, `moelab.compress.footprint.RecipeFootprint`
for rule compress_speed: this stage does not import the compress stage):
    - rtn / gptq / awq in this repository are quantise-dequantise: the weights are stored and multiplied in the
      model's float dtype, so the quantised model runs the same kernels as its parent and no speed-up or memory
      saving is expected from the quantisation; ``storage_bytes`` is the separate count of the bytes its expert
      weights would take packed at the quantised width (`moelab.compress.quantize.weight_bits_report`: a count,
      not a measurement).
    - pruned weights (magnitude / Wanda / SparseGPT, unstructured or N:M) are zeros in dense matrices: dense
      kernels, dense storage; no sparse kernel runs.
    - Block / Layer / Expert Drop remove structure: the smaller model runs fewer FLOPs per token.
"""

from __future__ import annotations

import gc
import logging
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from moelab.evaluate.speed import (
    compare_speed,
    flops_per_token,
    generation_speed,
    machine_info,
    peak_memory_curves,
)
from moelab.io import count_parameters, load_model

GB = 2**30  # bytes; the paper's GB (see the module docstring)
# The record's model names: the parent is the first, every ratio divides by it.
MODELS = ("parent", "compressed")


def as_loaded(model) -> dict:
    """Storage of ``model``'s weights as loaded (no footprint given): weights_bytes = storage_bytes = sum of numel x
    element size over the parameters, storage_bits None."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return {
        "weights_bytes": weights,
        "storage_bytes": weights,
        "storage_bits": None,
        "storage": "the weights as loaded",
    }


def model_size(model, context_len: int, storage: dict | None = None) -> dict:
    """Parameters, FLOPs per token and storage of one loaded model.

    Args:
        storage: the model's storage fields (``weights_bytes``, ``storage_bytes``, ``storage_bits``, ``storage``,
            e.g. `moelab.compress.footprint.RecipeFootprint.storage`); None = `as_loaded`.
    Returns: {"params_total", "params_active" (`moelab.io.count_parameters`), "flops_per_token" (forward FLOPs
        per token without attention's sequence term, `moelab.evaluate.speed.flops_per_token`),
        "flops_per_token_at_context" (with it, at ``context_len`` tokens attended to), "context_len", and the
        storage fields}.
    """
    params = count_parameters(model)
    return {
        "params_total": params["total"],
        "params_active": params["active"],
        "flops_per_token": flops_per_token(model),
        "flops_per_token_at_context": flops_per_token(model, context_len=context_len),
        "context_len": context_len,
        **(storage if storage is not None else as_loaded(model)),
    }


def _ratios(records: list[dict]) -> list[dict]:
    """prefill_speedup / decode_speedup of every record vs the parent's record at the same length."""
    parent = {r["prompt_len"]: r for r in records if r["model"] == MODELS[0]}
    for r in records:
        p = parent[r["prompt_len"]]
        r["prefill_speedup"] = r["prefill_tokens_per_s"] / p["prefill_tokens_per_s"]
        r["decode_speedup"] = r["decode_tokens_per_s"] / p["decode_tokens_per_s"]
    return records


def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def _check_lens(prompt_lens) -> list[int]:
    lens = list(prompt_lens)
    if not lens:
        raise ValueError("prompt_lens is empty; give at least one prompt length (compress.speed.prompt_lens)")
    for n in lens:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"prompt_len must be an integer >= 1, got {n!r} (compress.speed.prompt_lens)")
    if len(set(lens)) != len(lens):
        raise ValueError(f"prompt_lens {lens} repeats a length (compress.speed.prompt_lens)")
    return sorted(lens)


def measure_recipe(
    parent_dir: str | Path,
    model_dir: str | Path,
    prompt_lens,
    repeats: int = 2,
    warmup: int = 1,
    seed: int = 0,
    device: str = "cpu",
    dtype: str = "float32",
    interleave: bool = True,
    log: logging.Logger | None = None,
    footprint=None,
) -> dict:
    """Speed, memory, parameters, FLOPs and storage of a compressed model and its parent, batch 1.

    Args:
        parent_dir: the uncompressed model (the compress rule's input); model_dir: the compressed model.
        prompt_lens: prompt lengths (each generates as many tokens); repeats / warmup / seed: as
            `moelab.evaluate.speed.compare_speed`.
        interleave: True = both models in memory, every round runs the parent then the compressed model
            (`compare_speed`); False = one model in memory at a time (a model and its compressed copy that do
            not fit one device together, e.g. Mixtral-8x7B on one GPU): the parent's lengths, then the
            compressed model's, so load drift between the two is not cancelled.
        footprint: what the compressed model's weights are stored and run as: an object with
            ``storage(model, compressed: bool) -> dict`` (the `model_size` storage fields), ``kernels`` (str) and
            ``fake_quantised`` (bool), e.g. `moelab.compress.footprint.RecipeFootprint`; None = both models as
            loaded, ``{dtype} dense kernels``.
    Memory: `moelab.evaluate.speed.peak_memory_curves` of both folders (CPU: a fresh process each, side by side)
        at every length;
        ``memory_gb`` = (peak - before_load) / GB: the model, its load-time copies, KV cache and activations,
        without the interpreter and torch libraries (CPU; ``peak_process_gb`` keeps the whole process's peak).
    Returns: {"batch": 1, device, dtype, prompt_lens, repeats, warmup, seed, interleaved, "fake_quantised",
        "kernels", "models": {"parent" | "compressed": `model_size` + path}, "speed": the `compare_speed`
        records (model = "parent" / "compressed"), "memory": {model: `peak_memory_curve` records}, "rows": one
        per (length, model) with prefill/decode tokens/s and speed-ups, memory_gb, memory_pct (of the parent's
        at that length), peak_process_gb, "summary": the compressed model's ratios at the longest length,
        "machine": `machine_info`, "seconds": wall time}.
    Raises: ValueError for empty / repeated / non-positive prompt lengths, or what the speed
        functions reject; the load errors of `moelab.io.load_model`.
    """
    start = time.perf_counter()
    log = log or logging.getLogger(__name__)
    lens = _check_lens(prompt_lens)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats!r} (compress.speed.repeats)")
    dirs = dict(zip(MODELS, (Path(parent_dir), Path(model_dir)), strict=True))
    context = 2 * lens[-1]  # tokens attended to at the end of the longest generation
    sizes: dict[str, dict] = {}

    def load(name):
        model, _ = load_model(dirs[name], dtype=dtype, device=device)
        model.eval()
        storage = footprint.storage(model, name == MODELS[1]) if footprint is not None else None
        sizes[name] = {"path": str(dirs[name]), **model_size(model, context, storage)}
        return model

    records: list[dict] = []
    opts = {"repeats": repeats, "seed": seed, "warmup": warmup}
    if interleave:
        models = {name: load(name) for name in MODELS}
        for n in tqdm(lens, desc="speed (parent + compressed, interleaved)"):
            rows = compare_speed(models, [n], **opts)
            for r in rows:
                log.info(
                    "%s prompt %d: prefill %.1f tok/s, decode %.2f tok/s (x%.3f vs parent)",
                    r["model"], n, r["prefill_tokens_per_s"], r["decode_tokens_per_s"], r["decode_speedup"],
                )  # fmt: skip
            records += rows
        del models
        _free(device)
    else:
        per_model = {}
        for name in MODELS:
            model = load(name)
            per_model[name] = []
            for n in tqdm(lens, desc=f"speed ({name})"):
                r = {"model": name, **generation_speed(model, n, **opts)}
                log.info("%s prompt %d: decode %.2f tok/s", name, n, r["decode_tokens_per_s"])
                per_model[name].append(r)
            del model
            _free(device)
        records = _ratios([r for i in range(len(lens)) for r in (per_model[m][i] for m in MODELS)])
    log.info("peak memory of %s at prompt lengths %s", {k: str(d) for k, d in dirs.items()}, lens)
    memory = peak_memory_curves(dirs, lens, device=device, dtype=dtype, seed=seed)
    mem = {(m["prompt_len"], name): m for name in MODELS for m in memory[name]}

    def used_gb(m):
        return (m["peak_mb"] - m["before_load_mb"]) * 2**20 / GB

    rows = []
    for r in records:
        m, p = mem[r["prompt_len"], r["model"]], mem[r["prompt_len"], MODELS[0]]
        rows.append(
            {
                "model": r["model"],
                "prompt_len": r["prompt_len"],
                "new_tokens": r["new_tokens"],
                "prefill_tokens_per_s": r["prefill_tokens_per_s"],
                "decode_tokens_per_s": r["decode_tokens_per_s"],
                "prefill_speedup": r["prefill_speedup"],
                "decode_speedup": r["decode_speedup"],
                "memory_gb": used_gb(m),
                "memory_pct": 100.0 * used_gb(m) / used_gb(p),
                "peak_process_gb": m["peak_mb"] * 2**20 / GB,
            }
        )
    last = next(r for r in rows if r["model"] == MODELS[1] and r["prompt_len"] == lens[-1])
    par, com = sizes["parent"], sizes["compressed"]
    summary = {
        "prompt_len": lens[-1],
        "prefill_speedup": last["prefill_speedup"],
        "decode_speedup": last["decode_speedup"],
        "memory_gb": last["memory_gb"],
        "memory_ratio": last["memory_pct"] / 100.0,
        "storage_gb": com["storage_bytes"] / GB,
        "storage_ratio": com["storage_bytes"] / par["storage_bytes"],
        "flops_ratio": com["flops_per_token"] / par["flops_per_token"],
        "params_ratio": com["params_total"] / par["params_total"],
    }
    return {
        "batch": 1,
        "device": device,
        "dtype": dtype,
        "prompt_lens": lens,
        "repeats": repeats,
        "warmup": warmup,
        "seed": seed,
        "interleaved": bool(interleave),
        "fake_quantised": bool(footprint.fake_quantised) if footprint is not None else False,
        "kernels": footprint.kernels if footprint is not None else f"{dtype} dense kernels",
        "models": sizes,
        "speed": records,
        "memory": memory,
        "rows": rows,
        "summary": summary,
        "machine": machine_info(),
        "seconds": round(time.perf_counter() - start, 2),
    }
