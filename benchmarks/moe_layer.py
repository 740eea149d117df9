"""Forward+backward time of one MoE FFN layer: ours vs HF Mixtral's sparse block vs dense SwiGLU FFNs.

Compared at each shape (same router + expert weights copied into ours and HF's block, top-k softmax routing,
output scale 1, so their outputs agree; the max difference is printed as a check):
    ours[<impl>]     moelab LlamaMoESparseBlock, moe_implementation = fused / grouped_mm / eager
    hf[<impl>]       transformers MixtralSparseMoeBlock, experts_implementation = eager / grouped_mm
    dense_ideal      LlamaMLP with K * I_e neurons (the FLOPs of the activated experts; the ideal)
    dense_full       LlamaMLP with N * I_e neurons (the dense model the experts were cut from)
Timing: warm-up, then `--repeats` rounds that run every variant once in turn (interleaved, so a busy machine
slows all alike); the minimum per variant is reported.

    python benchmarks/moe_layer.py                       # both shapes, fp32, CPU
    python benchmarks/moe_layer.py --device cuda --dtype bfloat16 --tokens 16384
"""

import argparse
import json
import os
import time

# OpenMP threads spin-wait between parallel regions by default (OMP_WAIT_POLICY=ACTIVE in libgomp). When another
# process holds a core, the spinning threads take CPU from the working one and every small kernel stalls: an MoE
# layer (many mid-sized kernels) then runs up to 6x slower than alone while one big GEMM barely suffers. PASSIVE
# makes idle threads sleep. It must be set before torch loads OpenMP; export OMP_WAIT_POLICY=ACTIVE to compare.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
from transformers import LlamaConfig, MixtralConfig
from transformers.models.llama.modeling_llama import LlamaMLP
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

from moelab.models import LlamaMoEConfig, LlamaMoESparseBlock

SHAPES = {
    # name: hidden, num_experts, expert width, top_k, tokens
    "smollm2": dict(hidden=576, num_experts=8, width=192, top_k=2, tokens=4096),
    "llama7b_like": dict(hidden=2048, num_experts=16, width=688, top_k=4, tokens=2048),
}


def build(shape: dict, dtype, device, seed: int) -> dict:
    """All variants of one shape, with ours and HF sharing router and expert weights."""
    H, N, W, K = shape["hidden"], shape["num_experts"], shape["width"], shape["top_k"]
    torch.manual_seed(seed)
    cfg = LlamaMoEConfig(
        hidden_size=H,
        intermediate_size=N * W,
        num_hidden_layers=1,
        num_attention_heads=1,
        num_experts=N,
        top_k=K,
        router_type="softmax_topk",
        gate_network="linear",
        score_scale_factor=1.0,
    )
    ours = LlamaMoESparseBlock(cfg, 0)
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0.0, 0.02)
    variants = {}
    for impl in ("fused", "grouped_mm", "eager"):
        block = LlamaMoESparseBlock(cfg, 0)
        block.load_state_dict(ours.state_dict())
        block.experts.implementation = impl
        variants[f"ours[{impl}]"] = block
    for impl in ("eager", "grouped_mm"):
        mcfg = MixtralConfig(
            hidden_size=H,
            intermediate_size=W,
            num_local_experts=N,
            num_experts_per_tok=K,
            num_attention_heads=1,
        )
        mcfg._experts_implementation = impl
        hf = MixtralSparseMoeBlock(mcfg)
        with torch.no_grad():
            hf.gate.weight.copy_(ours.router.gate_network.weight)
            ex = ours.experts
            for e in range(N):
                sl = ex.expert_slice(e)
                hf.experts.gate_up_proj[e].copy_(torch.cat([ex.gate_proj[sl], ex.up_proj[sl]]))
                hf.experts.down_proj[e].copy_(ex.down_proj[:, sl])
        variants[f"hf[{impl}]"] = hf
    for name, width in (("dense_ideal", K * W), ("dense_full", N * W)):
        mlp = LlamaMLP(LlamaConfig(hidden_size=H, intermediate_size=width))
        with torch.no_grad():
            for p in mlp.parameters():
                p.normal_(0.0, 0.02)
        variants[name] = mlp
    return {k: v.to(device=device, dtype=dtype) for k, v in variants.items()}


def fwd_bwd(module, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """One forward + backward; returns the output (first element for ours)."""
    module.zero_grad(set_to_none=True)
    x.grad = None
    y = module(x)
    y = y[0] if isinstance(y, tuple) else y
    y.backward(grad)
    return y


def bench_shape(name: str, shape: dict, args) -> dict:
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    tokens = args.tokens or shape["tokens"]
    variants = build(shape, dtype, device, args.seed)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(1, tokens, shape["hidden"], generator=g).to(device, dtype).requires_grad_()
    grad = torch.randn(1, tokens, shape["hidden"], generator=g).to(device, dtype)
    outs = {k: fwd_bwd(m, x, grad).detach().float() for k, m in variants.items()}  # warm-up
    ref = outs["hf[eager]"]
    check = {k: float((v - ref).abs().max()) for k, v in outs.items() if k.startswith(("ours", "hf"))}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = {k: [] for k in variants}
    for _ in range(args.repeats):
        for k, m in variants.items():
            if k == "ours[eager]" and not args.with_eager:
                continue
            sync()
            t0 = time.perf_counter()
            fwd_bwd(m, x, grad)
            sync()
            times[k].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items() if v}
    return {"shape": name, "tokens": tokens, **shape, "seconds": best, "max_abs_diff_vs_hf_eager": check}


def report(result: dict) -> None:
    s = result["seconds"]
    print(
        f"\n## {result['shape']}: hidden {result['hidden']}, {result['num_experts']}x{result['width']} top-"
        f"{result['top_k']}, {result['tokens']} tokens"
    )
    print("| variant | fwd+bwd s | / dense_ideal | / hf[grouped_mm] |")
    print("|---|---|---|---|")
    for k, v in s.items():
        print(f"| {k} | {v:.4f} | {v / s['dense_ideal']:.2f} | {v / s['hf[grouped_mm]']:.2f} |")
    print(
        "max |ours - hf[eager]| output:",
        {k: f"{v:.1e}" for k, v in result["max_abs_diff_vs_hf_eager"].items()},
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--tokens", type=int, default=None, help="override the shape's token count")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--with-eager", action="store_true", help="also time ours[eager] (slow reference)")
    ap.add_argument("--json", default=None, help="write the results to this JSON file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.device}, {args.dtype}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
    )
    results = [bench_shape(name, SHAPES[name], args) for name in args.shapes]
    for r in results:
        report(r)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
