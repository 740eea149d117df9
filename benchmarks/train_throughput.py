"""End-to-end training throughput: the 2/8 LLaMA-MoE of SmolLM2-135M vs the dense SmolLM2-135M, same harness.

Both models have the SmolLM2-135M architecture (hidden 576, 30 layers, 9 heads / 3 KV heads, FFN 1536, vocab 49152,
tied embeddings) with random weights (speed does not depend on the values). The MoE cuts every FFN into 8
experts of 192 neurons, top-2, with the given router (LLaMA-MoE default: noisy top-k, MLP gate). One training
step = forward + backward (LM loss + balance loss) + AdamW step, on the same random token batch, same threads.
Steps are interleaved (dense, moe, dense, moe, ...) so a busy machine slows both alike; the median step
time is reported and the ratio moe tokens/s / dense tokens/s printed. FLOPs-ideal ratio is ~1.8: the FFN is
~60% of the training FLOPs of SmolLM2-135M at this sequence length and the MoE activates a quarter of it.

    python benchmarks/train_throughput.py                            # batch 4 x 256 tokens, 30 layers
    python benchmarks/train_throughput.py --layers 8 --steps 5       # quicker
"""

import argparse
import json
import os
import statistics
import time

# OpenMP threads spin-wait between parallel regions by default (OMP_WAIT_POLICY=ACTIVE in libgomp). When another
# process holds a core, the spinning threads take CPU from the working one and every small kernel stalls: an MoE
# layer (many mid-sized kernels) then runs up to 6x slower than alone while one big GEMM barely suffers. PASSIVE
# makes idle threads sleep. It must be set before torch loads OpenMP; export OMP_WAIT_POLICY=ACTIVE to compare.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from moelab.model_facts import SMOLLM2_135M
from moelab.models import LlamaMoEConfig, LlamaMoEForCausalLM


def build(args) -> dict:
    """Dense and MoE models with the SmolLM2-135M shape (random init, seeded), in training mode."""
    shape = {**SMOLLM2_135M, "num_hidden_layers": args.layers}
    torch.manual_seed(args.seed)
    dense = LlamaForCausalLM(LlamaConfig(**shape))
    torch.manual_seed(args.seed)
    moe_cfg = LlamaMoEConfig(
        **shape,
        num_experts=8,
        top_k=2,
        router_type=args.router_type,
        gate_network=args.gate_network,
        moe_implementation=args.moe_implementation,
    )
    moe = LlamaMoEForCausalLM(moe_cfg)
    return {"dense": dense.train(), "moe": moe.train()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--layers", type=int, default=30, help="decoder layers (SmolLM2-135M has 30)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per model (after 1 warm-up step)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--router-type", default="noisy_topk")
    ap.add_argument("--gate-network", default="mlp")
    ap.add_argument("--moe-implementation", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the results to this JSON file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models = build(args)
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-5) for k, m in models.items()}
    g = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(0, SMOLLM2_135M["vocab_size"], (args.batch, args.seq_len), generator=g)
    tokens = ids.numel()

    def step(name: str) -> float:
        model, opt = models[name], opts[name]
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    for name in models:
        step(name)  # warm-up (allocations, optimizer state)
    times = {name: [] for name in models}
    for _ in range(args.steps):
        for name in models:
            times[name].append(step(name))
    med = {k: statistics.median(v) for k, v in times.items()}
    tps = {k: tokens / v for k, v in med.items()}
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch} x {args.seq_len} tokens, "
        f"{args.layers} layers, router {args.router_type}/{args.gate_network}, moe_implementation "
        f"{args.moe_implementation}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
    )
    print("| model | params | median step s | tokens/s |")
    print("|---|---|---|---|")
    for k in models:
        print(f"| {k} | {params[k] / 1e6:.1f}M | {med[k]:.3f} | {tps[k]:.0f} |")
    print(f"moe / dense tokens/s: {tps['moe'] / tps['dense']:.2f} (target >= 1.3, FLOPs-ideal ~1.8)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "step_seconds": times, "tokens_per_s": tps}, f, indent=2)


if __name__ == "__main__":
    main()
