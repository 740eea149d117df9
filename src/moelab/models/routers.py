"""Routers (gates) of the LLaMA-MoE family and their balance losses.

Shape legend: T = number of tokens (batch * sequence, flattened), H = hidden size, N = num_experts,
K = top_k. Every router maps x [T, H] to a `RouterOutput`. Logits, weights and losses are float32.
"""

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class RouterOutput(NamedTuple):
    """What a router returns for one MoE layer.

    logits:        [T, N] float32, the logits the top-k selection was made on (noisy in training).
    top_k_weights: [T, K] float32, gate weights g of the selected experts (before the output scale).
    top_k_index:   [T, K] int64, selected expert ids, highest weight first.
    balance_loss:  [] float32, this layer's un-weighted balance loss.
    importance:    [N] float32, sum over tokens of the gate weights (Shazeer et al. 2017, eq. 6).
    load:          [N] float32, tokens per expert: smooth estimate (noisy router in training) or count.
    """

    logits: torch.Tensor
    top_k_weights: torch.Tensor
    top_k_index: torch.Tensor
    balance_loss: torch.Tensor
    importance: torch.Tensor
    load: torch.Tensor


def cv_squared(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Squared coefficient of variation var(x) / (mean(x)^2 + eps) of a 1-D tensor; 0 for fewer than 2 values.

    Source: Shazeer et al. 2017 (arXiv 1701.06538), sec. 4 / appendix A, CV(X) = std(X) / mean(X).
    Uses the population variance (mean of squared deviations) as Shazeer's reference code.
    Deviation from LLaMA-MoE upstream: it used torch's default unbiased variance (a factor N/(N-1) larger).
    """
    if x.numel() < 2:
        return x.new_zeros((), dtype=torch.float32)
    x = x.float()
    return x.var(unbiased=False) / (x.mean() ** 2 + eps)


def switch_balance_loss(probs: torch.Tensor, top_k_index: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Switch-Transformer balance loss N * sum_i f_i P_i, generalised to top-k.

    Args:
        probs: [T, N] float, softmax of the router logits over all experts.
        top_k_index: [T, K] int64, selected experts.
    Returns: [] float32. f_i = fraction of the T*K routed slots sent to expert i (sum_i f_i = 1),
        P_i = mean over tokens of probs[:, i]. Equals 1 for perfectly uniform routing.
    Source: Fedus et al. 2021 (arXiv 2101.03961) eq. 4-6. Note: HF Mixtral's
        `load_balancing_loss_func` divides the counts by T only, so its value is K times this one.
    """
    T, K = top_k_index.shape
    counts = torch.zeros(num_experts, dtype=torch.float32, device=probs.device)
    counts.scatter_add_(
        0, top_k_index.reshape(-1), torch.ones(T * K, dtype=torch.float32, device=probs.device)
    )
    f = counts / (T * K)
    P = probs.float().mean(dim=0)
    return num_experts * torch.sum(f * P)


def build_gate_network(
    hidden_size: int, num_experts: int, kind: str, gate_hidden_size: int | None = None
) -> nn.Module:
    """The network mapping x [T, H] to router logits [T, N].

    "linear": Linear(H, N); "mlp": Linear(H, W) -> tanh -> Linear(W, N) (LLaMA-MoE upstream default), with
    W = gate_hidden_size or N (W differs from N after Expert Drop removed routed experts).
    Raises ValueError for another kind.
    """
    if kind == "linear":
        return nn.Linear(hidden_size, num_experts, bias=False)
    if kind == "mlp":
        width = gate_hidden_size or num_experts
        return nn.Sequential(
            nn.Linear(hidden_size, width, bias=False),
            nn.Tanh(),
            nn.Linear(width, num_experts, bias=False),
        )
    raise ValueError(f"gate_network must be 'linear' or 'mlp', got {kind!r}")


def _hard_load(top_k_index: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Tokens routed to each expert, [N] float32 (no gradient)."""
    counts = torch.zeros(num_experts, dtype=torch.float32, device=top_k_index.device)
    ones = torch.ones(top_k_index.numel(), dtype=torch.float32, device=top_k_index.device)
    return counts.scatter_add_(0, top_k_index.reshape(-1), ones)


def smooth_load(
    clean_logits: torch.Tensor, noisy_logits: torch.Tensor, noise_std: torch.Tensor, top_k: int
) -> torch.Tensor:
    """Shazeer's differentiable estimate of the load: sum over tokens of P(expert i is in the top-k).

    Args:
        clean_logits: [T, N] W_g x (no noise).
        noisy_logits: [T, N] clean_logits + standard-normal * noise_std (the values the top-k was taken on).
        noise_std: [T, N] > 0, softplus(W_noise x) + noise_epsilon.
        top_k: K < N.
    Returns: [N] float32. For token x and expert i, with the noise of the other experts held fixed,
        P(x, i) = Phi((clean_i - kth_excluding(noisy, K, i)) / noise_std_i), where kth_excluding is the
        K-th largest noisy logit among the other experts: the (K+1)-th largest overall if i is itself in
        the top-K, else the K-th largest.
    Source: Shazeer et al. 2017 (arXiv 1701.06538), appendix A, eq. 8-10.
    Deviation from LLaMA-MoE upstream: upstream decided "i is in the top-K" by comparing the noise term alone
    against the threshold; here the full noisy logit is compared, as in the paper.
    """
    N = clean_logits.shape[-1]
    if not 1 <= top_k < N:
        raise ValueError(f"smooth_load needs 1 <= top_k < num_experts, got top_k={top_k}, N={N}")
    top_vals = noisy_logits.topk(top_k + 1, dim=-1).values  # [T, K+1]
    threshold_if_in = top_vals[:, top_k : top_k + 1]  # [T, 1] (K+1)-th largest
    threshold_if_out = top_vals[:, top_k - 1 : top_k]  # [T, 1] K-th largest
    is_in = noisy_logits > threshold_if_in
    threshold = torch.where(is_in, threshold_if_in, threshold_if_out)
    z = (clean_logits.float() - threshold.float()) / noise_std.float()
    prob = 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))  # standard normal CDF
    return prob.sum(dim=0)


class NoisyTopKRouter(nn.Module):
    """Noisy top-k gating (Shazeer et al. 2017) with the CV^2(importance) + CV^2(load) balance loss.

    logits = G(x) + eps * (softplus(W_noise x) + noise_epsilon), eps ~ N(0, 1), noise in training mode only;
    g = softmax over the top-k logits. Balance loss = CV^2(importance) + CV^2(load) (Shazeer eq. 6-11), with
    load the smooth estimate `smooth_load` when noise is on and top_k < N, else the hard token count.
    W_noise is zero-initialised (LLaMA-MoE upstream), so the initial noise std is noise_epsilon.

    Shapes: x [T, H] -> RouterOutput (see its docstring).
    """

    def __init__(
        self,
        hidden_size: int,
        num_experts: int,
        top_k: int,
        gate_network: str,
        noise_epsilon: float,
        gate_hidden_size: int | None = None,
    ):
        super().__init__()
        self.num_experts, self.top_k, self.noise_epsilon = num_experts, top_k, noise_epsilon
        self.gate_network = build_gate_network(hidden_size, num_experts, gate_network, gate_hidden_size)
        self.weight_noise = nn.Linear(hidden_size, num_experts, bias=False)
        nn.init.zeros_(self.weight_noise.weight)

    def forward(self, x: torch.Tensor) -> RouterOutput:
        clean = self.gate_network(x).float()  # [T, N]
        noisy, noise_std = clean, None
        if self.training:
            noise_std = F.softplus(self.weight_noise(x).float()) + self.noise_epsilon
            noisy = clean + torch.randn_like(clean) * noise_std
        top_logits, top_index = noisy.topk(self.top_k, dim=-1)  # [T, K]
        weights = torch.softmax(top_logits, dim=-1)
        importance = torch.zeros_like(clean).scatter(1, top_index, weights).sum(dim=0)  # [N]
        if noise_std is not None and self.top_k < self.num_experts:
            load = smooth_load(clean, noisy, noise_std, self.top_k)
        else:
            load = _hard_load(top_index, self.num_experts)
        balance_loss = cv_squared(importance) + cv_squared(load)
        return RouterOutput(noisy, weights, top_index, balance_loss, importance, load)


class SoftmaxTopKRouter(nn.Module):
    """Softmax -> top-k -> renormalise routing (Mixtral; LLaMA-MoE v2 sec. 3) with the Switch balance loss.

    p = softmax(G(x)) over all N experts; g = top-k of p divided by their sum.
    Balance loss = N * sum_i f_i P_i (`switch_balance_loss`). No noise.

    Shapes: x [T, H] -> RouterOutput; importance = sum of g per expert, load = hard token count.
    """

    def __init__(
        self,
        hidden_size: int,
        num_experts: int,
        top_k: int,
        gate_network: str,
        gate_hidden_size: int | None = None,
    ):
        super().__init__()
        self.num_experts, self.top_k = num_experts, top_k
        self.gate_network = build_gate_network(hidden_size, num_experts, gate_network, gate_hidden_size)

    def forward(self, x: torch.Tensor) -> RouterOutput:
        logits = self.gate_network(x).float()  # [T, N]
        probs = torch.softmax(logits, dim=-1)
        top_p, top_index = probs.topk(self.top_k, dim=-1)  # [T, K]
        weights = top_p / top_p.sum(dim=-1, keepdim=True)
        importance = torch.zeros_like(probs).scatter(1, top_index, weights).sum(dim=0)
        load = _hard_load(top_index, self.num_experts)
        balance_loss = switch_balance_loss(probs, top_index, self.num_experts)
        return RouterOutput(logits, weights, top_index, balance_loss, importance, load)


class SwitchTop1Router(nn.Module):
    """Switch-Transformer routing: top-1 of softmax(G(x)) with an expert capacity; overflow tokens are dropped.

    capacity C = ceil(capacity_factor * T / N) tokens per expert; tokens claim capacity in order (token 0
    first, as Switch); a token beyond its expert's capacity gets gate weight 0, so the MoE block adds
    nothing and the residual stream carries it unchanged. g = the top-1 probability (not renormalised).
    Deviation: tokens are dropped in training mode only; in eval mode every token is processed, so that
    scores do not depend on batch composition and generate() with a KV cache equals generate() without.
    Balance loss = N * sum_i f_i P_i over the router's choices before dropping (`switch_balance_loss`).
    load = tokens actually processed per expert (after dropping); importance = sum of kept g.
    Source: Fedus et al. 2021 (arXiv 2101.03961) sec. 2.2 (capacity factor), eq. 4-6 (loss).
    """

    def __init__(
        self,
        hidden_size: int,
        num_experts: int,
        gate_network: str,
        capacity_factor: float,
        gate_hidden_size: int | None = None,
    ):
        super().__init__()
        if capacity_factor <= 0:
            raise ValueError(f"capacity_factor must be > 0, got {capacity_factor}")
        self.num_experts, self.top_k, self.capacity_factor = num_experts, 1, capacity_factor
        self.gate_network = build_gate_network(hidden_size, num_experts, gate_network, gate_hidden_size)

    def capacity(self, num_tokens: int) -> int:
        """Tokens each expert may process: ceil(capacity_factor * T / N)."""
        return math.ceil(self.capacity_factor * num_tokens / self.num_experts)

    def forward(self, x: torch.Tensor) -> RouterOutput:
        logits = self.gate_network(x).float()  # [T, N]
        probs = torch.softmax(logits, dim=-1)
        top_p, top_index = probs.max(dim=-1, keepdim=True)  # [T, 1]
        one_hot = F.one_hot(top_index[:, 0], self.num_experts)  # [T, N]
        position = (torch.cumsum(one_hot, dim=0) * one_hot).sum(
            dim=-1, keepdim=True
        )  # 1-based rank in expert
        kept = (
            position <= self.capacity(x.shape[0])
            if self.training
            else torch.ones_like(top_p, dtype=torch.bool)
        )
        weights = top_p * kept
        importance = torch.zeros_like(probs).scatter(1, top_index, weights).sum(dim=0)
        load = (one_hot * kept).sum(dim=0).float()
        balance_loss = switch_balance_loss(probs, top_index, self.num_experts)
        return RouterOutput(logits, weights, top_index, balance_loss, importance, load)


class FrozenRandomRouter(nn.Module):
    """Untrained routers for ablations: a frozen, seeded random projection picks the experts.

    r = x R^T with R [N, H] ~ N(0, 1/H) drawn from `seed` and never trained (a buffer, saved with the model);
    the top-k of r are the selected experts. For any fixed token the entries of r are i.i.d. over the draw of
    R, so every k-subset of experts is equally likely: a uniform random assignment that is still a
    deterministic function of the token (so generate() with a KV cache equals generate() without).
        weighting "uniform": g = 1/k for each selected expert (router_type "uniform").
        weighting "softmax": g = softmax(r) over the top-k (router_type "random": a random, untrained gate).
    Balance loss is 0 (nothing to train); load = token counts, importance = sum of g.
    Ablation baselines in the spirit of hash / random routing (Roller et al. 2021, arXiv 2106.04426).
    """

    def __init__(self, hidden_size: int, num_experts: int, top_k: int, weighting: str, seed: int):
        super().__init__()
        if weighting not in ("uniform", "softmax"):
            raise ValueError(f"weighting must be 'uniform' or 'softmax', got {weighting!r}")
        self.num_experts, self.top_k, self.weighting = num_experts, top_k, weighting
        g = torch.Generator().manual_seed(int(seed))
        self.register_buffer(
            "projection", torch.randn(num_experts, hidden_size, generator=g) / hidden_size**0.5
        )

    def forward(self, x: torch.Tensor) -> RouterOutput:
        logits = F.linear(x.float(), self.projection.float())  # [T, N]
        top_logits, top_index = logits.topk(self.top_k, dim=-1)  # [T, K]
        if self.weighting == "uniform":
            weights = torch.full_like(top_logits, 1.0 / self.top_k)
        else:
            weights = torch.softmax(top_logits, dim=-1)
        importance = torch.zeros_like(logits).scatter(1, top_index, weights).sum(dim=0)
        load = _hard_load(top_index, self.num_experts)
        return RouterOutput(logits, weights, top_index, logits.new_zeros(()), importance, load)


def build_router(config, layer_idx: int) -> nn.Module:
    """Router of decoder layer `layer_idx` from a `LlamaMoEConfig` (fields `router_type`, per-layer N_l)."""
    h, n, k = config.hidden_size, config.layer_num_experts(layer_idx), config.top_k
    w = config.layer_gate_hidden_size(layer_idx)
    if config.router_type == "noisy_topk":
        return NoisyTopKRouter(h, n, k, config.gate_network, config.noise_epsilon, w)
    if config.router_type == "softmax_topk":
        return SoftmaxTopKRouter(h, n, k, config.gate_network, w)
    if config.router_type == "switch_top1":
        return SwitchTop1Router(h, n, config.gate_network, config.capacity_factor, w)
    if config.router_type in ("uniform", "random"):
        weighting = "uniform" if config.router_type == "uniform" else "softmax"
        return FrozenRandomRouter(h, n, k, weighting, config.router_seed + layer_idx)
    raise ValueError(
        f"router_type {config.router_type!r} is not one of "
        "'noisy_topk', 'softmax_topk', 'switch_top1', 'uniform', 'random'"
    )
