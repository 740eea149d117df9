"""Batch-1 generation speed: prefill / decode tokens/s, peak memory and FLOPs per token, ratios vs the parent.

The MoE-compression speed table (arXiv 2406.02500, "Measurement"): batch 1, random token ids as prompt, generate
as many tokens as the prompt (greedy, KV cache); prefill tokens/s = prompt / prefill seconds, decode tokens/s =
1 / median per-token seconds. The FIRST model is the parent: every other model's rates are divided by its rates
at the same length, measured in the same run with repeats interleaved (moelab.evaluate.speed.compare_speed).
Memory (at the largest prompt length): CPU = peak RSS of a fresh process that loads the folder and generates
(includes ~the interpreter + torch baseline, printed); CUDA = torch.cuda.max_memory_allocated increment.

    python benchmarks/decode_speed.py                                  # --tiny: random SmolLM2-shaped dense vs 2/8 MoE
    python benchmarks/decode_speed.py --layers 30 --prompt-lens 32 128 512
    python benchmarks/decode_speed.py --model-dirs results/dense results/moe results/moe_drop6 \\
        --prompt-lens 32 64 128 256 512 1024 2048 4096 --device cuda --dtype bfloat16
"""

import argparse
import json
import os
import tempfile
from pathlib import Path

# OpenMP threads spin-wait between parallel regions by default; on a shared machine that stalls every small
# kernel (benchmarks/README.md). PASSIVE makes idle threads sleep; must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from moelab.construct import dense_to_moe, random_split
from moelab.evaluate.speed import compare_speed, flops_per_token, format_machine, machine_info, peak_memory_mb
from moelab.io import count_parameters, load_model, save_model
from moelab.model_facts import SMOLLM2_135M
from moelab.runtime import DTYPES


def tiny_models(layers: int, seed: int) -> dict:
    """Random dense SmolLM2-135M-shaped LLaMA with ``layers`` layers and its LLaMA-MoE 2/8 (random split)."""
    torch.manual_seed(seed)
    dense = LlamaForCausalLM(LlamaConfig(**{**SMOLLM2_135M, "num_hidden_layers": layers})).eval()
    moe = dense_to_moe(
        dense,
        random_split(SMOLLM2_135M["intermediate_size"], 8, seed=seed, num_layers=layers),
        top_k=2,
        router_type="noisy_topk",
        gate_network="mlp",
        balance_loss_weight=0.0,
        seed=seed,
    ).eval()
    return {"dense": dense, "moe_2of8": moe}


def placeholder_tokenizer() -> PreTrainedTokenizerFast:
    """A one-word tokenizer so the in-memory models can be saved as folders (speed uses random ids)."""
    from tokenizers import Tokenizer, models

    tok = Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dirs", nargs="+", default=None, help="model folders, the parent first")
    ap.add_argument(
        "--tiny", action="store_true", help="random in-memory models (default without --model-dirs)"
    )
    ap.add_argument("--layers", type=int, default=4, help="--tiny: decoder layers (SmolLM2-135M has 30)")
    ap.add_argument("--prompt-lens", nargs="+", type=int, default=[32, 64, 128])
    ap.add_argument("--new-tokens", type=int, default=None, help="default: as many as the prompt")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=list(DTYPES))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the records to this JSON file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(format_machine(machine_info()))
    print(f"device {args.device}, dtype {args.dtype}, batch 1, repeats {args.repeats} (interleaved)")

    tmp = None
    if args.model_dirs and not args.tiny:
        dirs = {Path(d).name if Path(d).name else d: Path(d) for d in args.model_dirs}
        if len(dirs) != len(args.model_dirs):
            dirs = {str(d): Path(d) for d in args.model_dirs}
        models = {k: load_model(d, dtype=args.dtype, device=args.device)[0] for k, d in dirs.items()}
    else:
        models = tiny_models(args.layers, args.seed)
        dirs = {}
        if not args.no_memory:
            tmp = tempfile.TemporaryDirectory()
            dirs = {k: save_model(m, placeholder_tokenizer(), Path(tmp.name) / k) for k, m in models.items()}
        models = {k: m.to(device=args.device, dtype=DTYPES[args.dtype]) for k, m in models.items()}
        print(
            f"--tiny: random SmolLM2-135M shape with {args.layers} layers; moe_2of8 = 8 experts x 192, top-2"
        )

    records = compare_speed(
        models,
        args.prompt_lens,
        new_tokens=args.new_tokens,
        repeats=args.repeats,
        seed=args.seed,
        warmup=args.warmup,
    )
    print("\n| model | prompt | new | prefill tok/s | decode tok/s | decode ms/tok | prefill x | decode x |")
    print("|---|---|---|---|---|---|---|---|")
    for r in records:
        print(
            f"| {r['model']} | {r['prompt_len']} | {r['new_tokens']} | {r['prefill_tokens_per_s']:.0f} | "
            f"{r['decode_tokens_per_s']:.1f} | {1e3 * r['decode_per_token_s']:.2f} | {r['prefill_speedup']:.2f} | "
            f"{r['decode_speedup']:.2f} |"
        )

    longest = max(args.prompt_lens)
    summary = {}
    for k, m in models.items():
        params = count_parameters(m)
        summary[k] = {"params_total": params["total"], "params_active": params["active"]}
        summary[k]["gflops_per_token"] = flops_per_token(m) / 1e9
        summary[k]["gflops_per_token_at_context"] = flops_per_token(m, context_len=2 * longest) / 1e9
        if dirs:
            summary[k]["memory"] = peak_memory_mb(
                dirs[k], longest, args.new_tokens, device=args.device, dtype=args.dtype, seed=args.seed
            )
    parent = next(iter(summary.values()))
    print(
        f"\n| model | params M | active M | GFLOPs/token | at context {2 * longest} | peak MB | after load MB | x mem |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for k, s in summary.items():
        mem = s.get("memory")
        mem_cols = (
            f"{mem['peak_mb']:.0f} | {mem['after_load_mb']:.0f} | {mem['peak_mb'] / parent['memory']['peak_mb']:.2f}"
            if mem
            else "- | - | -"
        )
        print(
            f"| {k} | {s['params_total'] / 1e6:.1f} | {s['params_active'] / 1e6:.1f} | {s['gflops_per_token']:.3f} | "
            f"{s['gflops_per_token_at_context']:.3f} | {mem_cols} |"
        )
    if dirs and args.device == "cpu":
        base = next(iter(summary.values()))["memory"]["before_load_mb"]
        print(
            f"(CPU memory: peak RSS of a fresh process at prompt {longest}; ~{base:.0f} MB of it is python + torch)"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"args": vars(args), "machine": machine_info(), "records": records, "models": summary},
                f,
                indent=2,
            )
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
