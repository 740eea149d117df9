"""Batch-1 generation speed, peak memory and FLOPs per token: the MoE-compression speed table.

Protocol (arXiv 2406.02500, "Measurement"; the Unified-MoE-Compression speed script): batch 1, random token
ids as the prompt (prompt lengths 32 .. 4096), generate as many tokens as the prompt, greedy.
    prefill tokens/s = prompt_len / median prefill seconds (one forward over the prompt, KV cache filled)
    decode tokens/s  = 1 / median per-token seconds (every decode step of every repeat)
    memory           = peak allocated (CUDA: torch.cuda.max_memory_allocated; CPU: peak RSS of a fresh process)
    FLOPs per token  = 2 x parameters active per token (embedding lookup excluded), + optional attention term
A compressed model is only compared with its uncompressed parent measured in the same run (`compare_speed`),
repeats interleaved across models so that load drift on a shared machine hits every model alike.

Shape legend: ids_BT = token ids [batch 1, T tokens]; logits_BV = last-position logits [1, vocab].
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from moelab.io import count_parameters

_clock = time.perf_counter  # module attribute so tests can substitute a fake clock


def _check_prompt_len(prompt_len: int) -> None:
    if isinstance(prompt_len, bool) or not isinstance(prompt_len, int) or prompt_len < 1:
        raise ValueError(f"prompt_len must be an integer >= 1, got {prompt_len!r}")


def _check(prompt_len: int, new_tokens: int | None) -> int:
    """``new_tokens`` resolved (default: prompt_len, at least 2); raises ValueError naming the bad argument."""
    _check_prompt_len(prompt_len)
    new_tokens = max(prompt_len, 2) if new_tokens is None else new_tokens
    if not isinstance(new_tokens, int) or new_tokens < 2:
        raise ValueError(
            f"new_tokens must be an integer >= 2 (one token from prefill, at least one decode step), got {new_tokens!r}"
        )
    return new_tokens


def _config(model):
    cfg = getattr(model, "config", None)
    if cfg is None:
        raise ValueError(f"{type(model).__name__} has no .config; pass a transformers causal LM")
    return cfg


def random_prompt(model, prompt_len: int, seed: int = 0) -> torch.Tensor:
    """Seeded random token ids ids_BT of shape [1, prompt_len] (int64), on the model's device.

    Raises ValueError: prompt_len < 1, or a model without a config (no vocab_size).
    """
    _check_prompt_len(prompt_len)
    vocab = _config(model).vocab_size
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (1, prompt_len), generator=g).to(next(model.parameters()).device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def _generate_once(model, ids_BT: torch.Tensor, new_tokens: int) -> tuple[float, list[float], list[int]]:
    """One timed greedy generation of ``new_tokens`` tokens after the prompt ``ids_BT`` [1, T].

    The prefill forward (whole prompt, ``use_cache=True``, logits of the last position only) yields token 1;
    each of the ``new_tokens - 1`` decode steps feeds the previous token with the KV cache and yields the next,
    so the tokens equal ``model.generate(ids_BT, max_new_tokens=new_tokens, do_sample=False)`` (no EOS stop).

    Returns: (prefill seconds, per-step decode seconds [new_tokens - 1], generated token ids [new_tokens]).
    """
    device = ids_BT.device
    _sync(device)
    t0 = _clock()
    out = model(input_ids=ids_BT, use_cache=True, logits_to_keep=1)
    next_B1 = out.logits[:, -1].argmax(-1, keepdim=True)  # [1, 1]
    _sync(device)
    prefill_s = _clock() - t0
    cache = out.cache
    tokens = [next_B1]
    steps = []
    for _ in range(new_tokens - 1):
        t0 = _clock()
        out = model(input_ids=next_B1, cache=cache, use_cache=True)
        next_B1 = out.logits[:, -1].argmax(-1, keepdim=True)
        _sync(device)
        steps.append(_clock() - t0)
        cache = out.cache
        tokens.append(next_B1)
    return prefill_s, steps, torch.cat(tokens, dim=1)[0].tolist()


WARMUP_DECODE_STEPS = 8  # a warm-up generation: the full prefill, then this many decode steps at most


def _warmup_tokens(new_tokens: int) -> int:
    return min(new_tokens, WARMUP_DECODE_STEPS + 1)


def _summary(
    prompt_len: int, new_tokens: int, prefill: list[float], steps: list[float], repeats: int
) -> dict:
    per_token_s = statistics.median(steps)
    prefill_s = statistics.median(prefill)
    return {
        "prompt_len": prompt_len,
        "new_tokens": new_tokens,
        "repeats": repeats,
        "prefill_s": prefill_s,
        "prefill_tokens_per_s": prompt_len / prefill_s,
        "decode_per_token_s": per_token_s,
        "decode_tokens_per_s": 1.0 / per_token_s,
    }


def generation_speed(
    model,
    prompt_len: int,
    new_tokens: int | None = None,
    repeats: int = 3,
    seed: int = 0,
    warmup: int = 1,
    return_tokens: bool = False,
) -> dict:
    """Batch-1 prefill and decode speed of ``model`` (a transformers causal LM with a KV cache).

    Args:
        prompt_len: prompt tokens T (random ids drawn with ``seed``, `random_prompt`).
        new_tokens: tokens to generate; default ``prompt_len`` (the paper: as many as the prompt; 2 when
            prompt_len is 1). >= 2: the first comes from the prefill, the rest from timed decode steps.
        repeats: timed generations; warmup: untimed generations before them (full prefill, at most
            ``WARMUP_DECODE_STEPS`` decode steps: kernels and allocator are warm after a few).
        return_tokens: also return ``tokens``, the greedy ids of the last repeat (list of new_tokens ints).
    Returns: dict with prompt_len, new_tokens, repeats, prefill_s (median seconds of the prefill forward),
        prefill_tokens_per_s (prompt_len / prefill_s), decode_per_token_s (median seconds of one decode step,
        over all ``repeats * (new_tokens - 1)`` steps) and decode_tokens_per_s (1 / decode_per_token_s).
        Wall-clock `time.perf_counter`, CUDA synchronised around every timed region; eval mode, inference_mode.
    Raises: ValueError for prompt_len < 1, new_tokens < 2, repeats < 1, or a model without a config.
    """
    new_tokens = _check(prompt_len, new_tokens)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats!r}")
    model.eval()
    ids_BT = random_prompt(model, prompt_len, seed)
    for _ in range(warmup):
        _generate_once(model, ids_BT, _warmup_tokens(new_tokens))
    prefill, steps = [], []
    for _ in range(repeats):
        p, s, tokens = _generate_once(model, ids_BT, new_tokens)
        prefill.append(p)
        steps.extend(s)
    result = _summary(prompt_len, new_tokens, prefill, steps, repeats)
    if return_tokens:
        result["tokens"] = tokens
    return result


def compare_speed(
    models: dict,
    prompt_lens,
    new_tokens: int | None = None,
    repeats: int = 3,
    seed: int = 0,
    warmup: int = 1,
) -> list[dict]:
    """`generation_speed` of every model at every prompt length, interleaved, with ratios vs the first model.

    Args:
        models: name -> model; the FIRST entry is the parent (uncompressed) model the others are divided by.
        prompt_lens: prompt lengths; each model gets the same seeded prompt at a given length.
        new_tokens: None = as many as the prompt (per length).
    Order: per length, ``warmup`` rounds (short, as in `generation_speed`) then ``repeats`` rounds; each round runs every model once, in the
        dict's order (round robin), so a slow-down of the machine lasting a round hits all models.
    Returns: one record per (prompt length, model) with ``model`` (its name), the `generation_speed` fields,
        and prefill_speedup / decode_speedup = its tokens/s / the parent's tokens/s at that length (the parent's
        are exactly 1.0).
    Raises: ValueError for an empty ``models`` or the arguments `generation_speed` rejects.
    """
    if not models:
        raise ValueError("models is empty; pass {name: model}, the parent first")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats!r}")
    names = list(models)
    for m in models.values():
        _config(m)
        m.eval()
    prompt_lens = list(prompt_lens)
    resolved = [_check(n, new_tokens) for n in prompt_lens]  # every length checked before any is timed
    records = []
    for prompt_len, n_new in zip(prompt_lens, resolved, strict=True):
        prompts = {k: random_prompt(m, prompt_len, seed) for k, m in models.items()}
        prefill = {k: [] for k in names}
        steps = {k: [] for k in names}
        for r in range(warmup + repeats):
            for k in names:
                p, s, _ = _generate_once(
                    models[k], prompts[k], n_new if r >= warmup else _warmup_tokens(n_new)
                )
                if r >= warmup:
                    prefill[k].append(p)
                    steps[k].extend(s)
        rows = [{"model": k, **_summary(prompt_len, n_new, prefill[k], steps[k], repeats)} for k in names]
        parent = rows[0]
        for row in rows:
            row["prefill_speedup"] = row["prefill_tokens_per_s"] / parent["prefill_tokens_per_s"]
            row["decode_speedup"] = row["decode_tokens_per_s"] / parent["decode_tokens_per_s"]
        records.extend(rows)
    return records


# Run in a fresh interpreter by `peak_memory_curves` (argv: model_dir prompt_lens new_tokens dtype seed; the lengths
# and new-token counts comma-separated, in increasing order).
_MEMORY_CHILD = r"""
import json, sys
import torch
from moelab.io import load_model
from moelab.evaluate.speed import _generate_once, _rss_kib, random_prompt

path, dtype, seed = sys.argv[1], sys.argv[4], int(sys.argv[5])
lens, news = [int(x) for x in sys.argv[2].split(",")], [int(x) for x in sys.argv[3].split(",")]
before = _rss_kib()
model, _ = load_model(path, dtype=dtype, device="cpu")
model.eval()
with torch.no_grad():  # fault in every weight page: load_model may leave safetensors weights memory-mapped
    for p in model.parameters():
        p.sum()
after_load = _rss_kib()
peaks = []
for prompt_len, new_tokens in zip(lens, news):
    _generate_once(model, random_prompt(model, prompt_len, seed), new_tokens)
    peaks.append(_rss_kib(peak=True))
print(json.dumps({"before_load_kib": before, "after_load_kib": after_load, "peak_kib": peaks}))
"""


def _rss_kib(peak: bool = False) -> float:
    """Resident set size of this process in KiB: now (VmRSS) or its high-water mark (``peak``: VmHWM).

    Read from /proc/self/status, not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries ru_maxrss across
    fork + exec, so a child started by a large parent would report the parent's peak. Elsewhere (no /proc)
    falls back to ru_maxrss (KiB on Linux, bytes on macOS).
    """
    key = "VmHWM:" if peak else "VmRSS:"
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key):
                return float(line.split()[1])
    except OSError:
        pass
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 if sys.platform == "darwin" else float(r)


def peak_memory_mb(
    model_dir: str | Path,
    prompt_len: int,
    new_tokens: int | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    seed: int = 0,
) -> dict:
    """Peak memory (MiB = 2**20 bytes) of loading ``model_dir`` and one greedy generation, batch 1.

    CPU: a fresh Python process (``sys.executable``) imports torch + moelab, loads the folder with
        `moelab.io.load_model`, reads every weight once (safetensors weights may be memory-mapped and only
        become resident when touched; an MoE's unrouted experts would otherwise not count), generates
        ``new_tokens`` after a random ``prompt_len`` prompt, and reports ``peak_mb`` = the process's peak
        resident set size (Linux VmHWM, the mm's high-water mark; ``ru_maxrss`` is not used because it
        carries the parent's peak across fork + exec). That is the whole process: interpreter and torch
        libraries (``before_load_mb``, VmRSS before loading), weights (``after_load_mb``, VmRSS after loading
        and touching them), load-time copies, KV cache and activations. Weights-only ~ after - before.
    CUDA: in this process; ``peak_mb`` = ``torch.cuda.max_memory_allocated`` (tensors allocated by the caching
        allocator: weights + KV cache + activations, not the allocator's reserve or the CUDA context), reset
        before loading; ``after_load_mb`` = ``torch.cuda.memory_allocated`` after loading; before_load_mb 0.
    Returns: dict with peak_mb, after_load_mb, before_load_mb, device, prompt_len, new_tokens, measure (what).
    Raises: ValueError for a bad prompt_len / new_tokens; RuntimeError if the child process fails (its stderr).
    """
    return peak_memory_curve(model_dir, [prompt_len], new_tokens, device=device, dtype=dtype, seed=seed)[0]


def peak_memory_curve(
    model_dir: str | Path,
    prompt_lens,
    new_tokens: int | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    seed: int = 0,
) -> list[dict]:
    """`peak_memory_mb` at several prompt lengths with one load: one record per length, in increasing order.

    The model is loaded once (CPU: in one fresh process) and generates at each prompt length in increasing order
    (``new_tokens`` None = as many as that prompt, the paper's protocol). CPU: ``peak_mb`` of a length is the
    process's high-water mark after that length's generation, i.e. the peak up to and including it; the KV cache
    and activations grow with the length, so that is the peak of that length's generation (the weights dominate
    both). CUDA: the allocator's peak is reset before every length, so each is that generation's own peak
    (weights included). Fields as `peak_memory_mb`; before_load_mb and after_load_mb are the same for all.

    Raises: ValueError for an empty ``prompt_lens`` or a bad length / new_tokens; RuntimeError if the child
        process fails (its stderr).
    """
    return peak_memory_curves({"model": model_dir}, prompt_lens, new_tokens, device, dtype, seed)["model"]


def peak_memory_curves(
    model_dirs: dict,
    prompt_lens,
    new_tokens: int | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    seed: int = 0,
) -> dict[str, list[dict]]:
    """`peak_memory_curve` of several folders (name -> folder): name -> its records.

    CPU: one fresh process per folder, all started at once (each process's peak RSS is its own, so running them
    side by side changes their timing, not their memory); CUDA: one folder after another in this process.
    Raises: as `peak_memory_curve`; RuntimeError names the folder whose process failed.
    """
    lens = sorted(dict.fromkeys(prompt_lens))
    if not lens:
        raise ValueError("prompt_lens is empty; give at least one prompt length")
    news = [_check(n, new_tokens) for n in lens]
    if device.startswith("cuda"):
        return {k: _cuda_memory_curve(d, lens, news, device, dtype, seed) for k, d in model_dirs.items()}
    src = str(Path(__file__).resolve().parents[2])  # the folder holding the moelab package
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}

    def start(folder):
        lengths, tokens = ",".join(map(str, lens)), ",".join(map(str, news))
        args = [sys.executable, "-c", _MEMORY_CHILD, str(folder), lengths, tokens, dtype, str(seed)]
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    procs = {k: start(d) for k, d in model_dirs.items()}
    done = {k: (p, *p.communicate()) for k, p in procs.items()}
    out = {}
    for k, (proc, stdout, stderr) in done.items():
        if proc.returncode != 0:
            raise RuntimeError(
                f"memory measurement of {model_dirs[k]} failed (exit {proc.returncode}):\n{stderr}"
            )
        kib = json.loads(stdout.strip().splitlines()[-1])
        out[k] = [
            {
                "device": device,
                "prompt_len": prompt_len,
                "new_tokens": n_new,
                "peak_mb": peak / 1024,
                "after_load_mb": kib["after_load_kib"] / 1024,
                "before_load_mb": kib["before_load_kib"] / 1024,
                "measure": "peak RSS (VmHWM) of a fresh process: interpreter + torch + model + generation",
            }
            for prompt_len, n_new, peak in zip(lens, news, kib["peak_kib"], strict=True)
        ]
    return out


def _cuda_memory_curve(
    model_dir, lens: list[int], news: list[int], device: str, dtype: str, seed: int
) -> list[dict]:
    """`peak_memory_curve` on CUDA, in this process (the allocator's peak reset before every length)."""
    from moelab.io import load_model

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    start = torch.cuda.memory_allocated(device)
    model, _ = load_model(model_dir, dtype=dtype, device=device)
    model.eval()
    after = torch.cuda.memory_allocated(device) - start
    peaks = []
    for prompt_len, n_new in zip(lens, news, strict=True):
        torch.cuda.reset_peak_memory_stats(device)
        _generate_once(model, random_prompt(model, prompt_len, seed), n_new)
        peaks.append(torch.cuda.max_memory_allocated(device) - start)
    del model
    torch.cuda.empty_cache()
    return [
        {
            "device": device,
            "prompt_len": prompt_len,
            "new_tokens": n_new,
            "peak_mb": peak / 2**20,
            "after_load_mb": after / 2**20,
            "before_load_mb": 0.0,
            "measure": "torch.cuda.max_memory_allocated (tensors only), in-process",
        }
        for prompt_len, n_new, peak in zip(lens, news, peaks, strict=True)
    ]


def flops_per_token(model, context_len: int = 0) -> float:
    """Forward FLOPs per token: 2 x parameters active per token, embedding lookup excluded (Kaplan et al. 2020,
    arXiv 2001.08361, Table 1: C_forward ~ 2 N + 2 n_layer n_ctx d_attn).

    Active parameters are `moelab.io.count_parameters` ``"active"`` (routed experts count top_k / num_experts,
    routers and shared experts fully). The input embedding is a lookup (0 FLOPs) and is removed; with tied
    embeddings the same matrix is the LM head's matmul and stays counted once. Norm weights are counted as
    parameters (< 0.1% of the total). One multiply-add = 2 FLOPs.

    context_len: tokens attended to. 0 (default) leaves out attention's sequence-length term; otherwise adds
        2 * 2 * n_layer * n_heads * head_dim * context_len (QK^T and AV). With attention MoE the heads count
        attention_top_k / num_attention_experts.
    Raises: ValueError for a model without a config or a negative context_len.
    """
    cfg = _config(model)
    if context_len < 0:
        raise ValueError(f"context_len must be >= 0, got {context_len!r}")
    active = count_parameters(model)["active"]
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is embed
    flops = 2.0 * (active - (0 if tied else embed.numel()))
    if context_len:
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        heads = float(cfg.num_attention_heads)
        if getattr(cfg, "attention_moe", False):
            heads *= cfg.attention_top_k / cfg.num_attention_experts
        flops += 4.0 * cfg.num_hidden_layers * heads * head_dim * context_len
    return flops


def machine_info() -> dict:
    """The machine a speed table was measured on: CPU model, logical CPUs, torch threads, torch build
    (version, CUDA, GPU name), OMP_WAIT_POLICY, and the 1/5/15-minute load average (a busy machine slows all)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    return info


def format_machine(info: dict) -> str:
    """One line of `machine_info` for a benchmark's header."""
    load = "n/a" if info["load_average"] is None else " / ".join(f"{x:.2f}" for x in info["load_average"])
    gpu = f", GPU {info['gpu']} (CUDA {info['cuda']})" if info["gpu"] else ""
    return (
        f"{info['cpu']} ({info['cpus']} CPUs), torch {info['torch']}, threads {info['torch_threads']}{gpu}, "
        f"OMP_WAIT_POLICY={info['omp_wait_policy']}, load average {load}"
    )
