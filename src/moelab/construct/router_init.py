"""Router initialisation of a converted MoE: random (Kaiming), zero, or balanced k-means centroids.

- "random": Kaiming-uniform gate networks (torch's nn.Linear default), the LLaMA-MoE / v2 default
  (:func:`init_router_`, also used for the routers of a fresh conversion and of attention MoE).
- "zero": every gate-network weight 0, so all experts get the same logit: routing starts uniform and the
  choice among equal logits is left to the noisy router's noise in training (torch.topk order otherwise).
- "kmeans": LLaMA-MoE v2 "gradient split plus": the MLP inputs of each layer on calibration text are
  clustered by balanced k-means into N clusters; router row e = unit-normalised centroid e, so a token is
  sent to the experts whose centroids point most in its direction. For the "mlp" gate network
  (Linear(H, N) - tanh - Linear(N, N)) the first Linear holds the centroids and the second is the identity
  (tanh is monotone, so the top-k order is that of the centroid scores).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from tqdm.auto import tqdm

from .clustering import balanced_kmeans

ROUTER_INITS = ("random", "zero", "kmeans")


def init_router_(router: nn.Module, generator: torch.Generator) -> None:
    """Initialise a router in place: gate-network Linear weights ~ kaiming-uniform(a=sqrt(5)) (torch's nn.Linear
    default, as the LLaMA-MoE "mlp" gate upstream), noise weights (if any) zero (LLaMA-MoE upstream)."""
    for name, module in router.named_modules():
        if isinstance(module, nn.Linear):
            if name == "weight_noise":
                nn.init.zeros_(module.weight)
            else:
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)


def _gate_linears(router: nn.Module) -> list[nn.Linear]:
    net = getattr(router, "gate_network", None)
    if net is None:
        raise ValueError(f"router {type(router).__name__} has no trainable gate_network to initialise")
    return [m for m in net.modules() if isinstance(m, nn.Linear)]


@torch.no_grad()
def init_routers(
    moe,
    method: str,
    seed: int,
    mlp_inputs: list[torch.Tensor] | None = None,
    progress: bool = True,
) -> None:
    """Initialise the MLP router of every MoE layer of `moe` in place.

    Args:
        moe: LlamaMoEForCausalLM.
        method: one of ROUTER_INITS.
        seed: Kaiming generator seed ("random") or k-means seed ("kmeans", layer l uses seed + l).
        mlp_inputs: "kmeans" only: per decoder layer the FFN inputs [n, H] of the dense model on calibration
            text (`moelab.construct.calibration.mlp_inputs`); n must be divisible by the layer's N.
    Raises: ValueError for an unknown method, a missing `mlp_inputs`, or a router without a gate network.
    Source: LLaMA-MoE v2 sec. 3 (router: Kaiming init; "gradient split plus": k-means centroids).
    """
    if method not in ROUTER_INITS:
        raise ValueError(f"unknown router init {method!r}; valid: {ROUTER_INITS}")
    if method == "kmeans" and mlp_inputs is None:
        raise ValueError("router init 'kmeans' needs mlp_inputs (FFN inputs of the dense model)")
    generator = torch.Generator().manual_seed(int(seed))
    cfg = moe.config
    for layer_idx in tqdm(cfg.moe_layer_indices, desc=f"router init {method}", disable=not progress):
        router = moe.model.layers[layer_idx].mlp.router
        linears = _gate_linears(router)
        if method == "random":
            init_router_(router, generator)
        elif method == "zero":
            for lin in linears:
                nn.init.zeros_(lin.weight)
        else:
            n = cfg.layer_num_experts(layer_idx)
            x = mlp_inputs[layer_idx]
            usable = x.shape[0] - x.shape[0] % n
            _, centroids = balanced_kmeans(x[:usable], n, seed + layer_idx)
            w = nn.functional.normalize(centroids, dim=1).to(linears[0].weight.dtype)
            linears[0].weight.copy_(w)
            for lin in linears[1:]:
                lin.weight.copy_(torch.eye(n, dtype=lin.weight.dtype))
