"""FFN activations on calibration text for the data-driven construction methods.

Co-activation (MoEfication), gradient importance (LLaMA-MoE Sharing) and k-means router initialisation
(LLaMA-MoE v2) read the dense model's FFN on a budget of calibration tokens; the blocks come from
``moelab.data.calibration``, this module runs the model over them with hooks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from moelab.data.calibration import batches


@torch.no_grad()
def run_with_mlp_hooks(
    model,
    blocks: torch.Tensor,
    hook: Callable[[int, torch.Tensor], None],
    *,
    module: str = "mlp",
    batch_size: int = 8,
    desc: str = "calibration",
    progress: bool = True,
) -> None:
    """Run `model` over `blocks` and call hook(layer_idx, tensor) for every decoder layer and batch.

    Args:
        model: LlamaForCausalLM (dense) in eval mode.
        blocks: [n, T] token ids.
        hook: receives the layer index and, for module "mlp", the FFN input [B*T, H] (post-attention RMSNorm
            output); for module "gate_proj", the gate pre-activation gate_proj(x) [B*T, I].
        module: "mlp" or "gate_proj".
    Raises: ValueError for another module name.
    """
    if module not in ("mlp", "gate_proj"):
        raise ValueError(f"module must be 'mlp' or 'gate_proj', got {module!r}")
    handles = []
    for idx, layer in enumerate(model.model.layers):
        target = layer.mlp if module == "mlp" else layer.mlp.gate_proj

        def _hook(mod, args, out, idx=idx):
            t = args[0] if module == "mlp" else out
            hook(idx, t.reshape(-1, t.shape[-1]))

        handles.append(target.register_forward_hook(_hook))
    model.eval()
    try:
        for batch in tqdm(batches(blocks, batch_size), desc=desc, disable=not progress):
            model(input_ids=batch)
    finally:
        for h in handles:
            h.remove()


def mlp_inputs(
    model, blocks: torch.Tensor, max_points: int, seed: int, batch_size: int = 8, progress: bool = True
) -> list[torch.Tensor]:
    """FFN inputs of every layer on the calibration blocks, a seeded subsample of at most `max_points` tokens.

    Returns: per layer a float32 tensor [min(n*T, max_points), H]; the same token positions in every layer.
    """
    collected: dict[int, list[torch.Tensor]] = {}
    run_with_mlp_hooks(
        model,
        blocks,
        lambda i, x: collected.setdefault(i, []).append(x.float()),
        batch_size=batch_size,
        desc="mlp inputs",
        progress=progress,
    )
    n = blocks.numel()
    keep = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[:max_points].sort().values
    return [torch.cat(collected[i])[keep] for i in range(len(collected))]
