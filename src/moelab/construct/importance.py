"""Gradient importance of FFN neurons (LLaMA-MoE, arXiv 2406.16554, sec. 3.1, Sharing methods).

For neuron j of a layer, h_j = act(gate_j x) * up_j x is its contribution to the input of down_proj; the
importance of j on a set of tokens is the mean over those tokens of |h_j * dL/dh_j|, the first-order
Taylor estimate of the change in loss when the neuron is removed (Molchanov et al. 2019).
L is the sum of the next-token cross-entropies of the batch, so that every token's own loss enters with
weight 1 and the score does not depend on how tokens are grouped into batches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from moelab.data.calibration import batches


def neuron_importance(
    model, blocks: torch.Tensor, batch_size: int = 4, progress: bool = True, desc: str = "importance"
) -> torch.Tensor:
    """Mean |h * dL/dh| of every FFN neuron of every layer over the tokens of `blocks`.

    Args:
        model: dense LlamaForCausalLM (its FFN is LlamaMLP: down_proj(act(gate_proj x) * up_proj x)).
        blocks: [n, T] token ids; every position counts as a token (n*T in the mean).
        batch_size: sequences per forward/backward pass (changes speed and memory, not the result beyond
            float rounding).
    Returns: [L, I] float64, v[l, j] = (1 / (n*T)) sum over tokens t of |h_tj * dL/dh_tj|.
    Raises: ValueError for empty `blocks`.
    Source: LLaMA-MoE sec. 3.1 (Sharing-Inner: importance |h * dL/dh| per data cluster).
    Note: parameters get no gradient (the graph starts at detached input embeddings that require grad).
    """
    if blocks.numel() == 0:
        raise ValueError("neuron_importance: no calibration tokens (empty blocks)")
    layers = model.model.layers
    sums = torch.zeros(len(layers), model.config.intermediate_size, dtype=torch.float64)
    handles = []
    for idx, layer in enumerate(layers):

        def _pre(mod, args, idx=idx):
            h = args[0]
            if h.requires_grad:
                value = h.detach()

                def _grad(g, value=value, idx=idx) -> None:  # must return None: the gradient is unchanged
                    sums[idx].add_((value * g).abs().double().sum(dim=(0, 1)))

                h.register_hook(_grad)

        handles.append(layer.mlp.down_proj.register_forward_pre_hook(_pre))
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(batches(blocks, batch_size), desc=desc, disable=not progress):
            embeds = model.get_input_embeddings()(batch).detach().requires_grad_(True)
            logits = model(inputs_embeds=embeds).logits  # [B, T, V]
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                batch[:, 1:].reshape(-1),
                reduction="sum",
            )
            loss.backward()
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return sums / blocks.numel()


def cluster_importance(
    model, cluster_blocks: list[torch.Tensor], batch_size: int = 4, progress: bool = True
) -> torch.Tensor:
    """`neuron_importance` separately on the blocks of each data cluster.

    Args:
        cluster_blocks: C tensors [n_c, T] (n_c >= 1), e.g. from `moelab.construct.text_clusters`.
    Returns: [C, L, I] float64.
    Raises: ValueError naming an empty cluster.
    """
    out = []
    for c, blocks in enumerate(cluster_blocks):
        if blocks.numel() == 0:
            raise ValueError(f"data cluster {c} has no calibration blocks")
        out.append(neuron_importance(model, blocks, batch_size, progress, desc=f"importance cluster {c}"))
    return torch.stack(out)
