"""Cluster resources of each rule's job, sized from the workflow config (Slurm: --mem, -t, --gpus).

Pure functions of the config and the attempt number; nothing is downloaded or loaded. A job's size comes from
the model it handles (parameter count from the model's sizes: ``model.tiny``, a local folder's config.json read
without weights, or the hub models' published config.json values in ``KNOWN_MODELS``) and the data it reads.
Every formula below is an estimate with its assumptions named; `job_resources:` in the config replaces the
first attempt's value of any rule (:func:`job_resources`). Memory and runtime grow by ``GROWTH`` per attempt
(a retry after an out-of-memory or time-limit kill asks for more) up to ``MEM_CAP_MB`` and ``RUNTIME_CAP_MIN``.

Units: mem_mb and disk_mb in MB (1e6 bytes, Snakemake's and Slurm's unit), runtime in minutes, gpu a count.

    python -m moelab.resources config.yaml config/paper.yaml     # the paper DAG's jobs, resources, totals
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from moelab.config import sft_mixture_runs, train_section
from moelab.errors import ConfigError

GROWTH = 1.5  # memory and runtime x1.5 per further attempt
MEM_CAP_MB = 1_000_000  # 1 TB: the largest common compute node
RUNTIME_CAP_MIN = 24 * 60  # 24 h: a common partition limit; longer training resumes in the next attempt
MB = 1e6
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
TOKEN_BYTES = 8  # the packed pretraining pool is int64 (moelab.data.packing)
CHARS_PER_TOKEN = 4.0  # LLaMA tokenizers on SlimPajama: ~0.9B tokens from 3.5B characters (config/paper.yaml)
PROCESS_MB = {"cpu": 1500, "cuda": 4000}  # Python + torch (+ CUDA context and NCCL buffers) per process
# Throughput assumptions (no GPU run of this project yet: replace by measured numbers when there are some)
CPU_TOKENS_PER_S_135M = 250.0  # training tok/s of the demo MoE (135M) on 2 cores (docs/measurements.md: 253)
GPU_PEAK_FLOPS = 312e12  # A100 bf16 dense peak (NVIDIA A100 datasheet); an H100 is ~3x faster
GPU_MFU = 0.35  # model FLOPs utilisation of FSDP training at 4k context (typical of LLaMA-7B runs)
HUB_MB_PER_S = 50.0  # hub download bandwidth of one job
STREAM_MB_PER_S = 10.0  # streaming + JSON-decoding + filtering rate of one data job (one core)
DISK_MB_PER_S = 200.0  # shared file system read/write of one job
EVAL_EXAMPLES = 5000  # examples per task when evaluate.limit is null (lm-eval test sets: 0.3k-14k)
EVAL_TOKENS_PER_SHOT = 150  # tokens per demonstration or question, times 4 choices (multiple choice)
MIN_RUNTIME_MIN = 10  # scheduling, start-up and model loading of any compute job
# Batch-1 decode step of the demo MoE (SmolLM2-135M shape, 30 layers, 8 experts top-2): 53 ms measured with one
# thread on a loaded 2-core EPYC (benchmarks/decode_speed.py --tiny --layers 30, 2026-12); scaled by active
# parameters for other models.
CPU_DECODE_S_135M = 0.053
# bytes/s of HBM a batch-1 decode step reads its active weights at (A100: 2.0 TB/s peak)
GPU_BANDWIDTH = 1.5e12
GPU_LAYER_S = 1e-3  # eager kernel launches of one MoE block at batch 1 (an estimate): the floor of a GPU step
# compress.speed defaults (config/schema.yaml), for a config that was not validated
SPEED_DEFAULTS = {"prompt_lens": [32, 64], "repeats": 2, "warmup": 1, "interleave": True}


@dataclass(frozen=True)
class ModelSize:
    """The sizes of a LLaMA-architecture model (dense, or MoE with ``experts`` > 0).

    ``ffn`` is the FFN width per layer summed over the experts (a split keeps the dense intermediate_size);
    ``router`` the router parameters per layer; ``stored_bytes`` the bytes per parameter of its files.
    """

    vocab: int
    hidden: int
    layers: int
    ffn: int
    heads: int
    kv_heads: int
    tied: bool
    experts: int = 0
    top_k: int = 0
    router: int = 0
    stored_bytes: int = 4

    def params(self) -> int:
        """Parameters: embeddings V*H (x2 untied lm_head) + L * (attention 2H^2 + 2H*kv*H/heads + SwiGLU 3*H*F +
        router + 2 RMSNorms H) + the final norm H (the LlamaForCausalLM layout)."""
        attn = 2 * self.hidden**2 + 2 * self.hidden * self.kv_heads * (self.hidden // self.heads)
        layer = attn + 3 * self.hidden * self.ffn + self.router + 2 * self.hidden
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.layers * layer + self.hidden

    def active_params(self) -> int:
        """Parameters one token passes through: the experts' FFN counts top_k / experts of itself."""
        if not self.experts:
            return self.params()
        idle = 3 * self.hidden * self.ffn * (self.experts - self.top_k) // self.experts
        return self.params() - self.layers * idle


def _llama(vocab, hidden, layers, ffn, heads, kv_heads, tied=False, **moe) -> ModelSize:
    return ModelSize(vocab, hidden, layers, ffn, heads, kv_heads, tied, stored_bytes=2, **moe)


# Hub models of the paper configs: the values of their config.json (stored in 16-bit: 2 bytes per parameter).
KNOWN_MODELS = {
    "meta-llama/Llama-2-7b-hf": _llama(32000, 4096, 32, 11008, 32, 32),  # 6.74B
    "meta-llama/Meta-Llama-3-8B-Instruct": _llama(128256, 4096, 32, 14336, 32, 8),  # 8.03B
    # LLaMA-MoE-3.5B (2/8): Llama-2-7B split into 8 experts of 1376, noisy MLP gate (2 H*8 + 8*8 per layer)
    "llama-moe/LLaMA-MoE-v1-3_5B-2_8": _llama(
        32000, 4096, 32, 11008, 32, 32, experts=8, top_k=2, router=2 * 4096 * 8 + 64
    ),
    # Mixtral-8x7B: 8 experts of 14336 neurons, linear router H*8
    "mistralai/Mixtral-8x7B-v0.1": _llama(
        32000, 4096, 32, 8 * 14336, 32, 8, experts=8, top_k=2, router=4096 * 8
    ),
}
# GGUF files of the demo: SmolLM2-135M (config.json of HuggingFaceTB/SmolLM2-135M-Instruct), kept in float32
GGUF_MODELS = {"SmolLM2-135M-Instruct": ModelSize(49152, 576, 30, 1536, 9, 3, True)}
TINY_DEFAULTS = {  # moelab.models.materialise.make_tiny_model's defaults; the SmolLM2 tokenizer's vocabulary
    "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128, "num_attention_heads": 4,
    "num_key_value_heads": 2,
}  # fmt: skip


def _from_config_json(path: Path) -> ModelSize:
    """A ModelSize from a config.json (LLaMA or Mixtral fields), without reading any weights."""
    c = json.loads(path.read_text())
    experts = c.get("num_local_experts") or c.get("num_experts") or 0
    ffn = c["intermediate_size"] * (experts if "num_local_experts" in c else 1)
    heads = c["num_attention_heads"]
    return ModelSize(
        c["vocab_size"], c["hidden_size"], c["num_hidden_layers"], ffn, heads,
        c.get("num_key_value_heads") or heads, bool(c.get("tie_word_embeddings", False)),
        experts=experts, top_k=c.get("num_experts_per_tok") or c.get("top_k") or 0,
        router=c["hidden_size"] * experts,
        stored_bytes=DTYPE_BYTES.get(c.get("torch_dtype") or c.get("dtype") or "float32", 4),
    )  # fmt: skip


def pretrained_size(source: str, key: str, revision: str | None = None) -> ModelSize:
    """Sizes of a ``pretrained`` model: a local folder's config.json, a known hub id, or the hub cache.

    Raises:
        ConfigError: naming ``key`` when the sizes are unknown (not a folder with config.json, not in
            ``KNOWN_MODELS``, no config.json in the local hub cache).
    """
    folder = Path(source).expanduser()
    if (folder / "config.json").is_file():
        return _from_config_json(folder / "config.json")
    if source in KNOWN_MODELS:
        return KNOWN_MODELS[source]
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(source, "config.json", revision=revision)
    if isinstance(cached, str):
        return _from_config_json(Path(cached))
    raise ConfigError(
        f"{key}={source!r}: cannot size its jobs: not a folder with a config.json, not one of "
        f"{', '.join(KNOWN_MODELS)}, and no config.json in the local hub cache; fetch the config only "
        f"(`hf download {source} config.json`) or use a local folder"
    )


def dense_size(cfg: dict) -> ModelSize:
    """Sizes of the dense model the pipeline starts from (config `model:`)."""
    model = cfg["model"]
    if model["source"] == "tiny":
        t = {**TINY_DEFAULTS, **(model.get("tiny") or {})}
        return ModelSize(
            49152, t["hidden_size"], t["num_hidden_layers"], t["intermediate_size"],
            t["num_attention_heads"], t["num_key_value_heads"], True,
        )  # fmt: skip
    if model["source"] == "gguf":
        # an unknown GGUF file is sized as SmolLM2-135M (the demo's): the download job itself names a bad file
        stem = model.get("gguf_file", "").split(".")[0]
        return GGUF_MODELS.get(stem, GGUF_MODELS["SmolLM2-135M-Instruct"])
    return pretrained_size(model["pretrained"], "model.pretrained", model.get("revision"))


def moe_size(cfg: dict, dense: ModelSize) -> ModelSize:
    """The LlamaMoE that `construct` builds from ``dense``: the same FFN neurons split into num_experts,
    plus a router per layer (linear H*N or mlp H*N + N*N, and H*N noise weights for noisy_topk; biases none,
    moelab.models.routers). Attention-MoE routers are left out (H*groups per layer, negligible)."""
    c = cfg["construct"]
    n = c["num_experts"]
    router = dense.hidden * n + (n * n if c.get("gate_network") == "mlp" else 0)
    router += dense.hidden * n if c.get("router_type") == "noisy_topk" else 0
    return replace(
        dense, experts=n, top_k=c["top_k"], router=router, stored_bytes=4
    )  # construct saves float32


def dtype_bytes(cfg: dict) -> int:
    """Bytes per parameter in memory: the config dtype (float32 4, bfloat16 2)."""
    return DTYPE_BYTES[cfg["dtype"]]


def base_size(cfg: dict, section: str) -> ModelSize | None:
    """Sizes of <section>.base_model (a released checkpoint; None = the pipeline's own model)."""
    base = cfg[section].get("base_model")
    if not base:
        return None
    return pretrained_size(base["pretrained"], f"{section}.base_model.pretrained", base.get("revision"))


def stage_size(cfg: dict, stage: str) -> ModelSize:
    """Sizes of the model of a pipeline stage (dense, moe, pretrain, pretrain_active, sft_base, sft, compress_base,
    compress); the activated-width dense baseline keeps top_k / num_experts of the FFN."""
    dense = dense_size(cfg)
    moe = moe_size(cfg, dense)
    if stage == "dense":
        return dense
    if stage in ("moe", "pretrain"):
        return moe
    if stage == "pretrain_active":
        return replace(dense, ffn=dense.ffn * moe.top_k // moe.experts, stored_bytes=dtype_bytes(cfg))
    if stage in ("sft_base", "sft", "sft_stage1"):
        base = base_size(cfg, "sft")
        return base or stage_size(cfg, cfg["sft"].get("from_stage", "pretrain"))
    if stage in ("compress_base", "compress"):
        return base_size(cfg, "compress") or stage_size(cfg, "sft")
    raise ConfigError(f"unknown stage {stage!r}")


def gpus(cfg: dict, training: bool = False) -> int:
    """GPUs of a job: launcher.num_processes for training, 1 otherwise, on device cuda; 0 on cpu."""
    if cfg["device"] != "cuda":
        return 0
    return (cfg.get("launcher") or {}).get("num_processes", 1) if training else 1


def _processes(cfg: dict) -> int:
    return (cfg.get("launcher") or {}).get("num_processes", 1)


def activation_bytes(size: ModelSize, micro_batch: int, seq: int, bytes_per: int) -> float:
    """Activations kept for the backward pass of one micro-batch, in bytes.

    Per layer 34*s*b*h bytes at 16 bits (Korthikanti et al. 2022, arXiv 2205.05198, eq. 2 without recomputation,
    less its 5*a*s^2*b attention-matrix term: transformers' default SDPA attention does not keep that matrix),
    x bytes_per/2 for other dtypes; plus the logits in float32 three times (logits, log-softmax, its gradient):
    3*b*s*V*4. An MoE layer is counted as a dense one of the same width.
    """
    per_layer = 34 * seq * micro_batch * size.hidden * bytes_per / 2
    return size.layers * per_layer + 3 * micro_batch * seq * size.vocab * 4


def data_pool_bytes(cfg: dict) -> float:
    """Host memory of the packed pretraining pool per process: every domain's text (1 byte per character)
    while packing plus its tokens as int64 (chars / CHARS_PER_TOKEN * 8 bytes)."""
    chars = cfg["data"]["pretrain_max_chars"] * len(cfg["data"]["pretrain_domains"])
    return chars + chars / CHARS_PER_TOKEN * TOKEN_BYTES


def train_shape(cfg: dict, section: str) -> tuple[int, int, int]:
    """(optimiser steps, sequences per step, tokens per sequence) of a training section."""
    s = train_section(cfg, section)
    return s["steps"], s["batch_size"], s.get("seq_len") or s["max_len"]


def train_memory_mb(cfg: dict, section: str, size: ModelSize) -> float:
    """Host memory of a training job (all processes), MB.

    Per process: the parameters P*b (b = dtype bytes), gradients P*b and torch AdamW's two moments 2*P*b
    (moelab trains in the config dtype: no float32 master copy), a checkpoint's transient full copy of model +
    optimiser 3*P*b (save on the main process; on resume every process reads the full files,
    moelab.train.checkpoint.load_checkpoint), activations (:func:`activation_bytes`, micro-batch = micro_batch_size
    or the batch split over the processes), the pretraining data pool and PROCESS_MB. On cuda the weights,
    gradients, moments and activations live on the GPUs: host memory keeps the load / checkpoint copy 3*P*b and
    the pool. Total = per process x launcher.num_processes.
    """
    b = dtype_bytes(cfg)
    p = size.params()
    steps, batch, seq = train_shape(cfg, section)
    per = 3 * p * b + (data_pool_bytes(cfg) if section == "pretrain" else 0)
    if cfg["device"] != "cuda":
        micro = train_section(cfg, section).get("micro_batch_size") or max(1, batch // _processes(cfg))
        per += 4 * p * b + activation_bytes(size, micro, seq, b)
    return _processes(cfg) * (per / MB + PROCESS_MB[cfg["device"]])


def train_runtime_min(cfg: dict, section: str, size: ModelSize) -> float:
    """Minutes of a whole training run: tokens = steps x batch x sequence length (an upper bound for SFT).

    cuda: 6 * active parameters * tokens FLOPs (forward + backward, Kaplan et al. 2020) at GPU_PEAK_FLOPS x GPU_MFU
    per GPU; cpu: CPU_TOKENS_PER_S_135M scaled by 135M / active parameters.
    """
    steps, batch, seq = train_shape(cfg, section)
    tokens = steps * batch * seq
    seconds = _compute_seconds(cfg, size, tokens, flops_per_token=6, gpu_count=gpus(cfg, training=True))
    return seconds / 60 + MIN_RUNTIME_MIN


def _compute_seconds(
    cfg: dict, size: ModelSize, tokens: float, flops_per_token: int, gpu_count: int
) -> float:
    """Seconds to push ``tokens`` through the model: on GPUs at GPU_PEAK_FLOPS x GPU_MFU each, on CPU at the
    measured demo rate scaled by active parameters (training = 6 FLOPs per parameter, inference 2)."""
    active = size.active_params()
    if gpu_count:
        return flops_per_token * active * tokens / (gpu_count * GPU_PEAK_FLOPS * GPU_MFU)
    return tokens / (CPU_TOKENS_PER_S_135M * 134.5e6 / active) * flops_per_token / 6


def _model_mb(size: ModelSize, bytes_per: int | None = None) -> float:
    return size.params() * (bytes_per or size.stored_bytes) / MB


def eval_tokens(cfg: dict, paper: str) -> float:
    """Tokens one evaluation job scores: per task, examples x (shots + 1) x EVAL_TOKENS_PER_SHOT x 4 choices;
    examples = the task's limit, EVAL_EXAMPLES when null (MMLU, BBH: their limit is per subject / subtask:
    57 / 23 of them)."""
    from moelab.evaluate.plan import paper_plan

    plan = paper_plan(cfg["evaluate"], paper)
    groups = {"mmlu": 57, "bbh": 23}
    total = 0.0
    for task in plan["tasks"]:
        limit = plan["limit"][task]
        examples = EVAL_EXAMPLES if limit is None else limit * groups.get(task, 1)
        total += examples * (plan["num_fewshot"][task] + 1) * EVAL_TOKENS_PER_SHOT * 4
    return total


# Rules sized as another rule's job (rule, fixed wildcards): an SFT mixture run is an SFT job of the same
# settings, its evaluation the evaluation of the SFT stage (rules/sft_mixture.smk); a compression recipe's
# evaluation that of the compress stage.
SIZED_AS = {
    "sft_mixture_train": ("sft", {}),
    "sft_mixture_eval": ("evaluate", {"stage": "sft"}),
    "post_train": ("sft", {}),
    "post_train_eval": ("evaluate", {"stage": "sft"}),
    "compress_eval": ("evaluate", {"stage": "compress"}),
}


def _base(cfg: dict, rule: str, wc: dict) -> dict:
    """First-attempt resources of one job of ``rule`` (wildcards ``wc``): mem_mb, runtime, gpu, cpus, disk_mb."""
    if rule in SIZED_AS:
        rule, fixed = SIZED_AS[rule]
        wc = {**fixed, **wc}
    dev, b = cfg["device"], dtype_bytes(cfg)
    proc = PROCESS_MB[dev]
    small = {"mem_mb": 1000, "runtime": 5, "gpu": 0, "cpus": 1, "disk_mb": 1000}
    if rule in ("download_model", "download_base_model"):
        # the model is loaded whole in its stored dtype and re-saved: hub cache + the folder on disk
        if rule == "download_model":
            size = dense_size(cfg)
        else:
            size = base_size(cfg, "sft" if wc["base"] == "sft_base" else "compress")
        mb = _model_mb(size)
        hub = mb if cfg["model"]["source"] == "pretrained" or rule == "download_base_model" else 0
        secs = hub / HUB_MB_PER_S + 2 * mb / DISK_MB_PER_S
        return {"mem_mb": 2 * mb + proc, "runtime": secs / 60 + MIN_RUNTIME_MIN, "gpu": 0, "cpus": 16,
                "disk_mb": hub + mb + 1000, "hub_mb": hub}  # fmt: skip
    if rule in ("download_pretrain_data", "download_sft_data"):
        d = cfg["data"]
        if rule == "download_pretrain_data":
            chars = d["pretrain_max_chars"]
        else:
            chars = d["sft_max_examples"] * 4000  # ~4k characters per instruction example
        spec = (d.get("hub") or {}).get("pretrain" if rule == "download_pretrain_data" else "sft", {})
        share = SLIMPAJAMA_SHARE.get(spec.get(wc.get("domain"), {}).get("filter_value"), 1.0)
        streamed = chars / share / MB if d["source"] == "hub" else chars / MB
        buffer = (d.get("hub") or {}).get("shuffle_buffer", 0) * 50e3 / MB  # ~50 kB per buffered document
        return {"mem_mb": 2 * chars / MB + buffer + PROCESS_MB["cpu"],
                "runtime": streamed / STREAM_MB_PER_S / 60 + MIN_RUNTIME_MIN, "gpu": 0, "cpus": 1,
                "disk_mb": chars / MB + 1000}  # fmt: skip
    if rule in ("pretrain", "sft", "sft_stage1"):
        stage = wc.get("cpt_model", rule) if rule == "pretrain" else rule
        start = {"pretrain": "moe", "pretrain_active": "pretrain_active"}.get(stage, stage)
        size = stage_size(cfg, start)
        section = "pretrain" if rule == "pretrain" else rule
        keep = 2 + 1  # keep_checkpoints complete ones + one being written: model + 2 moments each
        return {"mem_mb": train_memory_mb(cfg, section, size), "runtime": train_runtime_min(cfg, section, size),
                "gpu": gpus(cfg, training=True), "cpus": 16,
                "disk_mb": (keep * 3 + 1) * _model_mb(size, b) + 1000}  # fmt: skip
    if rule in ("construct", "construct_activated"):
        size = dense_size(cfg)
        return {"mem_mb": 3 * _model_mb(size, 4) + proc, "runtime": MIN_RUNTIME_MIN + 3 * _model_mb(size) /
                DISK_MB_PER_S / 60, "gpu": 0, "cpus": 16, "disk_mb": _model_mb(size) + 1000}  # fmt: skip
    if rule == "compress_speed":
        return speed_job(cfg, stage_size(cfg, "compress_base"))
    if rule in ("evaluate", "routing_analysis", "reference_loss", "compress"):
        stage = {"reference_loss": "dense", "compress": "compress_base"}.get(rule, wc.get("stage"))
        size = stage_size(cfg, stage)
        if rule == "evaluate":
            tokens = eval_tokens(cfg, wc["paper"])
        elif rule == "routing_analysis":
            r = cfg["routing"]
            tokens = r["tokens"] * (len(cfg["data"]["pretrain_domains"]) + len(cfg["data"]["sft_domains"]))
        elif rule == "compress":
            c = cfg["compress"]
            tokens = c["calib_sequences"] * c["calib_seq_len"] * 2  # every block's input and output
        else:
            tokens = 200 * cfg["pretrain"]["seq_len"] * len(cfg["data"]["pretrain_domains"])  # held-out rows
        load = 2 * _model_mb(size) / DISK_MB_PER_S
        secs = _compute_seconds(cfg, size, tokens, flops_per_token=2, gpu_count=gpus(cfg)) + load
        # the weights once on the host while loading, twice for compress (the model and the pruned copy)
        copies = 2 if rule == "compress" else 1
        return {
            "mem_mb": copies * _model_mb(size, b) + proc,
            "runtime": secs / 60 + MIN_RUNTIME_MIN,
            "gpu": gpus(cfg),
            "cpus": 16,
            "disk_mb": (_model_mb(size) if rule == "compress" else 0) + 1000,
        }
    return small


def speed_job(cfg: dict, size: ModelSize) -> dict:
    """Resources of one compress_speed job (moelab.evaluate.compress_speed.measure_recipe), sized by the parent.

    Decode steps per model: every length L of compress.speed.prompt_lens runs ``warmup`` short generations (at most
    9 tokens), ``repeats`` timed ones of L tokens, and one of L tokens for the memory curve; two models. A step
    takes CPU_DECODE_S_135M x active / 135M on CPU, on a GPU max(active bytes / GPU_BANDWIDTH, layers x
    GPU_LAYER_S); prefill and loading add the evaluate rule's load time. Memory: both models on the host when
    ``interleave`` (one otherwise) + the memory child process's model (CPU) + a process each.
    """
    sp = {**SPEED_DEFAULTS, **(cfg["compress"].get("speed") or {})}
    steps = 2 * sum(sp["warmup"] * min(n, 9) + (sp["repeats"] + 1) * n for n in sp["prompt_lens"])
    active = size.active_params()
    if gpus(cfg):
        step_s = max(active * dtype_bytes(cfg) / GPU_BANDWIDTH, size.layers * GPU_LAYER_S)
    else:
        step_s = CPU_DECODE_S_135M * active / 134.5e6
    model = _model_mb(size, dtype_bytes(cfg))
    copies = 2 if sp["interleave"] else 1
    host = copies * model if not gpus(cfg) else model
    child = model + PROCESS_MB["cpu"] if not gpus(cfg) else 0
    return {
        "mem_mb": host + child + PROCESS_MB[cfg["device"]],
        "runtime": (steps * step_s + 4 * _model_mb(size) / DISK_MB_PER_S) / 60 + MIN_RUNTIME_MIN,
        "gpu": gpus(cfg),
        "cpus": 16,
        "disk_mb": 1000,
    }


# SlimPajama-627B's share of each RedPajama set (dataset card, by bytes): streaming one set reads 1/share as much.
SLIMPAJAMA_SHARE = {
    "RedPajamaCommonCrawl": 0.522, "RedPajamaC4": 0.267, "RedPajamaGithub": 0.052, "RedPajamaBook": 0.042,
    "RedPajamaArXiv": 0.046, "RedPajamaWikipedia": 0.038, "RedPajamaStackExchange": 0.033,
}  # fmt: skip
SIZED_RULES = (
    "download_model", "download_base_model", "download_pretrain_data", "download_sft_data", "construct",
    "construct_activated", "reference_loss", "pretrain", "sft", "sft_stage1", "compress", "compress_speed", "evaluate",
    "routing_analysis", "sft_mixture_train", "sft_mixture_eval",
)  # fmt: skip
KEYS = ("mem_mb", "runtime", "gpu", "cpus", "disk_mb")


def grow(value: float, attempt: int, cap: float) -> int:
    """``value`` x GROWTH^(attempt - 1), rounded up, at most ``cap``."""
    return int(min(cap, math.ceil(value * GROWTH ** (attempt - 1))))


def job_resources(cfg: dict, rule: str, attempt: int = 1, wildcards: dict | None = None) -> dict:
    """Resources of one job: {mem_mb, runtime, gpu, cpus, disk_mb} at ``attempt`` (1 = first submission).

    The first attempt's values come from the formulas of this module, or from the config's
    ``job_resources.<rule>`` where it names them; mem_mb and runtime then grow by GROWTH per attempt, capped at
    MEM_CAP_MB and RUNTIME_CAP_MIN (so an override grows on a retry too). Rules not in SIZED_RULES are small
    (1 GB, 5 min, one CPU).

    Raises:
        ConfigError: a model's sizes are unknown (naming its config key), or attempt < 1.
    """
    if attempt < 1:
        raise ConfigError(f"attempt={attempt}: attempts count from 1")
    base = _base(cfg, rule, dict(wildcards or {}))
    base.update((cfg.get("job_resources") or {}).get(rule) or {})
    return {
        "mem_mb": grow(base["mem_mb"], attempt, MEM_CAP_MB),
        "runtime": grow(base["runtime"], attempt, RUNTIME_CAP_MIN),
        "gpu": int(base["gpu"]),
        "cpus": int(base["cpus"]),
        "disk_mb": int(math.ceil(base["disk_mb"])),
    }


def evaluations_in_all(ev: dict) -> list[tuple[str, str]]:
    """The configured (stage, paper) evaluations that a table of `all` reads: a paper table kept out of `all`
    (LLaMA-MoE v2's main table, built by target llama_moe_v2) does not pull its evaluations into `all`."""
    from moelab.evaluate.plan import evaluation_targets  # torch-free
    from moelab.report.papers import OUTPUTS

    read = {
        source
        for outputs in OUTPUTS.values()
        for out in outputs.values()
        if out.in_all and out.spec is not None
        for source in out.spec.sources()
    }
    return [(s, p) for s, p in evaluation_targets(ev) if f"{s}/{p}" in read]


def dag_jobs(cfg: dict) -> list[tuple[str, dict]]:
    """The sized jobs of the default target (`all`) as (rule, wildcards), derived from the config the way the
    rules' inputs are (tests/test_resources.py checks the counts against `snakemake -n`)."""
    d, ev = cfg["data"], cfg["evaluate"]
    evals = evaluations_in_all(ev)
    jobs = [("download_model", {})]
    jobs += [("download_pretrain_data", {"domain": x}) for x in d["pretrain_domains"]]
    jobs += [("download_sft_data", {"domain": x}) for x in d["sft_domains"]]
    if ev["suite"] == "local":
        tasks = dict.fromkeys(t for _, p in evals for t in ev["papers"][p])
        jobs += [("download_eval_data", {"task": t}) for t in tasks]
    stages = {s for s, _ in evals} | set(cfg["routing"]["stages"])
    for base, section in (("sft_base", "sft"), ("compress_base", "compress")):
        if cfg[section].get("base_model"):
            jobs.append(("download_base_model", {"base": base}))
    jobs.append(("construct", {}))
    mixture = cfg["pretrain"].get("mixture") or {}
    if mixture.get("strategy", "static") != "static" and not mixture.get("reference_loss"):
        jobs.append(("reference_loss", {}))
    jobs.append(("pretrain", {"cpt_model": "pretrain"}))
    if "pretrain_active" in stages:
        jobs += [("construct_activated", {}), ("pretrain", {"cpt_model": "pretrain_active"})]
    if cfg["sft"].get("stage1"):
        jobs.append(("sft_stage1", {}))
    jobs += [("sft", {}), ("compress", {})]
    jobs += [("evaluate", {"stage": s, "paper": p}) for s, p in evals]
    headline = set((cfg.get("sft_mixture") or {}).get("headline") or ())  # table_main's runs, every seed
    for run in sft_mixture_runs(cfg).values():
        if run["run"] in headline:
            wc = {"sft_run": run["run"], "seed": str(run["seed"])}
            jobs += [("sft_mixture_train", wc), ("sft_mixture_eval", {**wc, "paper": "moe_sft"})]
    jobs += [("routing_analysis", {"stage": s}) for s in cfg["routing"]["stages"]]
    return jobs


def cost_table(cfg: dict) -> tuple[list[dict], dict]:
    """Rows per rule (jobs, GPUs per job, first-attempt mem and runtime per job, total run hours, GPU hours,
    disk) over :func:`dag_jobs` and their totals.

    A training run longer than RUNTIME_CAP_MIN takes ceil(run / cap) attempts (`attempts` column; each resumes
    from the last checkpoint). Wall time: an upper bound, the sum over rules of each rule's longest job (rules one
    after another, the jobs of one rule side by side). Hub cache: the model files the download jobs fetch.
    """
    rows: dict[str, dict] = {}
    for rule, wc in dag_jobs(cfg):
        first = job_resources(cfg, rule, 1, wc)
        run_h = _base(cfg, rule, wc)["runtime"] / 60
        override = (cfg.get("job_resources") or {}).get(rule) or {}
        run_h = override.get("runtime", run_h * 60) / 60
        r = rows.setdefault(rule, {"rule": rule, "jobs": 0, "gpu": 0, "mem_mb": 0, "runtime": 0, "run_h": 0.0,
                                   "attempts": 0, "gpu_h": 0.0, "disk_mb": 0})  # fmt: skip
        r["jobs"] += 1
        r["gpu"] = max(r["gpu"], first["gpu"])
        r["mem_mb"] = max(r["mem_mb"], first["mem_mb"])
        r["runtime"] = max(r["runtime"], first["runtime"])
        r["run_h"] = max(r["run_h"], run_h)  # the longest job of the rule: jobs of one rule run side by side
        r["attempts"] = max(r["attempts"], math.ceil(run_h * 60 / RUNTIME_CAP_MIN))
        r["gpu_h"] += first["gpu"] * run_h
        r["disk_mb"] += first["disk_mb"]
    hub = sum(_base(cfg, rule, wc).get("hub_mb", 0) for rule, wc in dag_jobs(cfg))
    totals = {
        "jobs": sum(r["jobs"] for r in rows.values()),
        "wall_h": sum(r["run_h"] for r in rows.values()),
        "gpu_h": sum(r["gpu_h"] for r in rows.values()),
        "disk_mb": sum(r["disk_mb"] for r in rows.values()),
        "hub_cache_mb": hub,
    }
    return list(rows.values()), totals


def load_config(*files: str | Path, schema: str | Path | None = None) -> dict:
    """The workflow config of ``snakemake --configfile`` on these YAML files: each merged over the previous one
    (maps merged key by key, other values replaced, as snakemake.utils.update_config), then validated and given
    the schema's defaults (config/schema.yaml beside the first file unless ``schema``), then check_config."""
    import jsonschema
    import yaml

    from moelab.config import check_config

    def merge(base: dict, over: dict) -> dict:
        for k, v in over.items():
            base[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
        return base

    cfg: dict = {}
    for f in files:
        cfg = merge(cfg, yaml.safe_load(Path(f).read_text()) or {})
    schema_path = Path(schema) if schema else Path(files[0]).resolve().parent / "config" / "schema.yaml"
    spec = yaml.safe_load(schema_path.read_text())
    base = jsonschema.validators.validator_for(spec)

    def set_defaults(validator, properties, instance, sch):
        if isinstance(instance, dict):
            for k, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub:
                    instance.setdefault(k, sub["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, sch)

    filler = jsonschema.validators.extend(base, {"properties": set_defaults})
    try:
        filler(spec).validate(cfg)
    except jsonschema.ValidationError as e:
        raise ConfigError(f"{'.'.join(map(str, e.absolute_path)) or 'config'}: {e.message}") from None
    check_config(cfg)
    return cfg


def _fmt_h(hours: float) -> str:
    return f"{hours:,.1f} h" if hours < 48 else f"{hours / 24:,.1f} d"


def format_table(rows: list[dict], totals: dict) -> str:
    """The cost table as Markdown (mem, disk in GB; runtime per attempt in minutes)."""
    out = [
        "| rule | jobs | GPUs/job | mem/job | runtime/attempt | run (longest job) | attempts | GPU hours | disk |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['rule']} | {r['jobs']} | {r['gpu']} | {r['mem_mb'] / 1000:,.1f} GB | {r['runtime']} min | "
            f"{_fmt_h(r['run_h'])} | {r['attempts']} | {r['gpu_h']:,.0f} | {r['disk_mb'] / 1000:,.1f} GB |"
        )
    out.append(
        f"| **total** | {totals['jobs']} | | | | {_fmt_h(totals['wall_h'])} (wall, upper bound) | | "
        f"{totals['gpu_h']:,.0f} | {totals['disk_mb'] / 1000:,.1f} GB |"
    )
    out.append(f"\nHub cache (model files downloaded): {totals['hub_cache_mb'] / 1000:,.1f} GB.")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """``python -m moelab.resources CONFIG [OVERLAY ...]``: print the cost table of the default target."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    print(format_table(*cost_table(load_config(*argv))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
