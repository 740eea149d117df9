"""Partially dynamic MoE experts (PAD-Net, arXiv 2211.05528, section 3, "PAD-MoE").

Expert i's weight for each projection P: l_d M_P (.) W_{P,i} + l_s (1 - M_P) (.) W_{P,s}, with one mask M_P
[out, in] and one static W_{P,s} shared by all experts, and one phi for the module (the layer). In an MoE the
expert weights do not depend on the input, so at inference every expert is one ordinary FFN; the mask only
cuts parameters: E * nnz(M) + (numel - nnz(M)) per projection instead of E * numel.

FFN forms (``ffn_type``): "mlp" (BERT: down(act(up x + b_up)) + b_down) and "swiglu" (LLaMA:
down(act(gate x) * up x)). The module takes the routing from the caller, so any router fits: the call is
``experts(hidden [N, H], top_k_index [N, k], top_k_weights [N, k]) -> [N, H]`` (the transformers experts
signature), y_n = sum_j top_k_weights[n, j] * E_{top_k_index[n, j]}(x_n).

Layout: fused 3-D weights [E, out, in] like transformers' experts (up_proj / gate_proj [E, I, H],
down_proj [E, H, I]); statics ``<proj>_static`` [out, in]; masks ``<proj>_mask`` [out, in] (buffers);
with bias, ``<proj>_bias`` [E, out], ``<proj>_bias_static`` [out], ``<proj>_bias_mask`` [out].
Init: every expert and the static copy like nn.Linear (Kaiming uniform, a = sqrt(5)), independently.

Shape legend: N tokens, H hidden, I intermediate, E experts, k top_k.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from moelab.dynamic.options import ACTIVATIONS, FFN_TYPES, check_choice, check_num_kernels, check_positive_int
from moelab.dynamic.partial import PartiallyDynamic, Partition

_ACT = {"gelu": F.gelu, "relu": F.relu, "silu": F.silu}


class PADExperts(PartiallyDynamic):
    """E partially dynamic expert FFNs sharing one mask and one static weight per projection.

    Args:
        num_experts: E >= 1.
        hidden_size: H; intermediate_size: I (per expert).
        ffn_type: "mlp" (up, down) or "swiglu" (gate, up, down).
        activation: "gelu", "relu" or "silu".
        bias: biases per expert (partitioned like the weights: own masks).
        scale: learn l_d / l_s (phi); False = the no-scale ablation (l_d = l_s = 1).
    Raises: ValueError naming the argument (num_experts < 1, sizes < 1, unknown ffn_type / activation).
    """

    def __init__(
        self,
        num_experts: int,
        hidden_size: int,
        intermediate_size: int,
        ffn_type: str = "mlp",
        activation: str = "gelu",
        bias: bool = False,
        scale: bool = True,
    ):
        super().__init__()
        check_num_kernels(num_experts, "num_experts")
        check_positive_int(hidden_size, "hidden_size")
        check_positive_int(intermediate_size, "intermediate_size")
        self.ffn_type = check_choice("ffn_type", ffn_type, FFN_TYPES)
        self.activation = check_choice("activation", activation, ACTIVATIONS)
        self.act_fn = _ACT[activation]
        self.num_experts, self.hidden_size, self.intermediate_size = (
            num_experts,
            hidden_size,
            intermediate_size,
        )
        self.has_bias = bool(bias)
        inner = (
            intermediate_size,
            hidden_size,
        )  # [out, in] of gate_proj / up_proj; down_proj is its transpose
        self.projections = {"up_proj": inner, "down_proj": inner[::-1]}
        if ffn_type == "swiglu":
            self.projections = {"gate_proj": inner, **self.projections}
        for name, (out_f, in_f) in self.projections.items():
            weight = torch.empty(num_experts, out_f, in_f)
            static = torch.empty(out_f, in_f)
            for w in (*weight, static):
                nn.init.kaiming_uniform_(w, a=math.sqrt(5))
            setattr(self, name, nn.Parameter(weight))
            setattr(self, f"{name}_static", nn.Parameter(static))
            self.register_buffer(f"{name}_mask", torch.ones(out_f, in_f))
            if bias:
                bound = 1.0 / math.sqrt(in_f)
                setattr(
                    self,
                    f"{name}_bias",
                    nn.Parameter(torch.empty(num_experts, out_f).uniform_(-bound, bound)),
                )
                setattr(self, f"{name}_bias_static", nn.Parameter(torch.empty(out_f).uniform_(-bound, bound)))
                self.register_buffer(f"{name}_bias_mask", torch.ones(out_f))
        self._init_scale(scale)

    @torch.no_grad()
    def copy_dense_ffn(self, weights: dict[str, torch.Tensor]) -> None:
        """Upcycle a dense FFN: every expert W_i and the static W_s become copies of it (masks unchanged).

        Args: weights: {"up_proj": [I, H], "down_proj": [H, I]} (+ "gate_proj" [I, H] for swiglu; +
            "<proj>_bias" [out] when bias=True), e.g. BERT's intermediate / output dense layers.
        Then, for any mask and l_d = l_s = 1, every expert computes the dense FFN.
        Raises: ValueError naming the missing, unexpected or mis-shaped key.
        """
        expected = {p.name: p.static.shape for p in self.partitions()}
        if set(weights) != set(expected):
            raise ValueError(f"weights keys {sorted(weights)} must be exactly {sorted(expected)}")
        for part in self.partitions():
            w = weights[part.name]
            if tuple(w.shape) != tuple(part.static.shape):
                raise ValueError(
                    f"weights[{part.name!r}] has shape {tuple(w.shape)}, expected {tuple(part.static.shape)}"
                )
            part.static.copy_(w)
            part.dynamic.copy_(w.unsqueeze(0).expand_as(part.dynamic))

    def partitions(self) -> list[Partition]:
        """Per projection: weight (mask [out, in], dynamic [E, out, in]) and, with bias, its bias."""
        parts = []
        for name in self.projections:
            parts.append(Partition(name, *(getattr(self, f"{name}{s}") for s in ("_mask", "", "_static"))))
            if self.has_bias:
                keys = ("_bias_mask", "_bias", "_bias_static")
                parts.append(Partition(f"{name}_bias", *(getattr(self, f"{name}{s}") for s in keys)))
        return parts

    def expert_weights(self) -> dict[str, torch.Tensor]:
        """Every expert's effective tensors: {name: l_d M (.) W_i + l_s (1 - M) (.) W_s}, [E, out, in] / [E, out]."""
        return {p.name: self.combine(p.mask, p.dynamic, p.static) for p in self.partitions()}

    def expert_forward(self, x: torch.Tensor, weights: dict[str, torch.Tensor], e: int) -> torch.Tensor:
        """E_e(x): [n, H] -> [n, H] with the effective tensors `weights` (from :meth:`expert_weights`)."""

        def linear(name, inp):
            return F.linear(inp, weights[name][e], weights[f"{name}_bias"][e] if self.has_bias else None)

        if self.ffn_type == "swiglu":
            h = self.act_fn(linear("gate_proj", x)) * linear("up_proj", x)
        else:
            h = self.act_fn(linear("up_proj", x))
        return linear("down_proj", h)

    def forward(
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        """y_n = sum_j top_k_weights[n, j] * E_{top_k_index[n, j]}(x_n).

        Args: hidden_states [N, H]; top_k_index [N, k] int64 in [0, E); top_k_weights [N, k] (the router's).
        Returns: [N, H] in hidden_states' dtype (accumulated in it; experts with no token are skipped).
        Raises: ValueError if the shapes disagree.
        """
        if (
            hidden_states.dim() != 2
            or top_k_index.shape != top_k_weights.shape
            or (top_k_index.shape[0] != hidden_states.shape[0])
        ):
            raise ValueError(
                f"hidden_states {tuple(hidden_states.shape)} must be [N, H] and top_k_index "
                f"{tuple(top_k_index.shape)} / top_k_weights {tuple(top_k_weights.shape)} both [N, k]"
            )
        weights = self.expert_weights()
        out = torch.zeros_like(hidden_states)
        for e in torch.unique(top_k_index).tolist():
            token, slot = torch.nonzero(top_k_index == e, as_tuple=True)  # routed (token, choice) pairs
            y = self.expert_forward(hidden_states[token], weights, e)  # [n_e, H]
            out.index_add_(0, token, y * top_k_weights[token, slot].unsqueeze(-1).to(y.dtype))
        return out

    def extra_repr(self) -> str:
        return (
            f"num_experts={self.num_experts}, hidden_size={self.hidden_size}, "
            f"intermediate_size={self.intermediate_size}, ffn_type={self.ffn_type!r}, "
            f"activation={self.activation!r}, bias={self.has_bias}, scale={self.scale}"
        )
