"""SwiGLU experts stored as one dense FFN whose neurons are grouped into contiguous expert blocks.

Layout (the dense LLaMA FFN layout, neurons permuted so that each expert's neurons are contiguous):
    gate_proj [I_tot, H], up_proj [I_tot, H], down_proj [H, I_tot], I_tot = sum(expert_sizes);
    expert e owns neurons offsets[e] : offsets[e] + expert_sizes[e].
    E_e(x) = down_e (act(gate_e x) * up_e x)   (SwiGLU, Shazeer 2020; the LLaMA FFN).
So a dense -> MoE conversion is a permutation of neurons, and widths may differ between experts.

Expert compute implementations (all give the same result; `eager` is the reference):
    "eager":      autograd through a loop over experts on contiguous slices of expert-sorted tokens.
    "fused":      the same loop inside one autograd.Function with a hand-written backward: no full-size
                  zero-filled gradients per slice, gathers instead of scatter-adds, routing weights folded
                  into the down projection. Fastest on CPU.
    "grouped_mm": torch._grouped_mm on expert-sorted tokens (one kernel per projection; for GPUs); experts
                  are zero-padded to a common width that is a multiple of 16 elements (CPU kernels need
                  16-byte-aligned strides; padded neurons contribute exactly 0 and get 0 gradient).
    "auto":       "grouped_mm" on CUDA, else "fused".

Shape legend: T tokens, H hidden, K top_k, S = T*K routed (token, expert) slots, N experts, I_e widths.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

MOE_IMPLEMENTATIONS = ("auto", "eager", "fused", "grouped_mm")


def sort_by_expert(
    top_k_index: torch.Tensor, num_experts: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Order the S = T*K routed slots by expert.

    Args: top_k_index [T, K] int64 (slot s = t*K + j is the j-th choice of token t).
    Returns: order [S] (slot ids stable-sorted by expert; slot s belongs to token s // K),
        inv_km [K*T] (for each (j, t) in K-major order, the sorted position of slot t*K + j), and
        counts [N] int64 (slots per expert, zeros for empty experts).
    """
    T, K = top_k_index.shape
    flat = top_k_index.reshape(-1)
    order = torch.argsort(flat, stable=True)
    inv = torch.empty_like(order)
    inv[order] = torch.arange(order.numel(), device=order.device)
    inv_km = inv.view(T, K).t().reshape(-1)  # K-major: a sum over K is then a sum over the leading dim
    counts = torch.bincount(flat, minlength=num_experts)
    return order, inv_km, counts


def _combine(out_sorted: torch.Tensor, inv_km: torch.Tensor, T: int, K: int) -> torch.Tensor:
    """y[t] = sum_j out_sorted[position of slot (t, j)]: [S, H] -> [T, H] (gather + sum over leading dim)."""
    return out_sorted.index_select(0, inv_km).view(K, T, -1).sum(dim=0)


# ---- eager reference -----------------------------------------------------------------------------------


def loop_experts_forward(
    x_sorted: torch.Tensor,
    counts: list[int],
    gate_proj: torch.Tensor,
    up_proj: torch.Tensor,
    down_proj: torch.Tensor,
    expert_sizes: list[int],
    act_fn,
) -> torch.Tensor:
    """Reference expert compute: one SwiGLU per expert on its contiguous slice of sorted slots.

    Args:
        x_sorted: [S, H] inputs sorted by expert; counts[e] rows for expert e.
        gate_proj, up_proj: [I_tot, H]; down_proj: [H, I_tot] (see module docstring).
    Returns: [S, H] expert outputs in the same (sorted) order.
    """
    outs, start, off = [], 0, 0
    for c, width in zip(counts, expert_sizes, strict=True):
        if c > 0:
            xe = x_sorted[start : start + c]
            h = act_fn(F.linear(xe, gate_proj[off : off + width])) * F.linear(xe, up_proj[off : off + width])
            outs.append(F.linear(h, down_proj[:, off : off + width]))
        start, off = start + c, off + width
    if not outs:
        return x_sorted.new_zeros(x_sorted.shape)
    return torch.cat(outs, dim=0)


def eager_experts_forward(experts, x, top_k_index, top_k_weights):
    """`LlamaMoEExperts` forward with plain autograd (reference for the other implementations)."""
    T, K = top_k_index.shape
    order, inv_km, counts = sort_by_expert(top_k_index, experts.num_experts)
    x_sorted = x.index_select(0, order // K)  # [S, H]
    out = loop_experts_forward(
        x_sorted,
        counts.tolist(),
        experts.gate_proj,
        experts.up_proj,
        experts.down_proj,
        experts.expert_sizes,
        experts.act_fn,
    )
    out = out * top_k_weights.reshape(-1).index_select(0, order).unsqueeze(-1).to(out.dtype)
    return _combine(out, inv_km, T, K)


# ---- fused: one autograd.Function ----------------------------------------------------------------------


class _FusedSwiGLUExperts(torch.autograd.Function):
    """y = sum_j w[t, j] E_{idx[t, j]}(x_t) with SiLU-gated experts, forward and backward by hand.

    Per expert e with token ids tok_e (c_e rows, gathered xe = x[tok_e]) and routing weights we:
        g = xe G_e^T, u = xe U_e^T, h = silu(g) * u, y[tok_e] += (we * h) D_e^T
    Backward (de = dy[tok_e]): dD_e = (we h)^T de, dh' = de D_e, dwe = rowsum(dh' * h), dh = we dh',
        du = dh * silu(g), dg = silu'(g) * dh * u, dG_e = dg^T xe, dU_e = du^T xe, dx[tok_e] += dg G_e + du U_e.
    Every temporary is per expert ([c_e, H] or [c_e, I_e]); no [T*K, H] buffer is built. Big fresh CPU buffers
    cost page faults on every call (glibc maps allocations > 32 MB afresh), which made gather-based
    versions ~10% slower at the LLaMA-7B shape. index_add_ is deterministic on CPU; on CUDA it uses atomics,
    use "grouped_mm" there (the "auto" choice).
    """

    @staticmethod
    def forward(ctx, x, top_k_weights, gate, up, down, top_k_index, sizes):
        T, H = x.shape
        K = top_k_index.shape[1]
        order, _, counts_t = sort_by_expert(top_k_index, len(sizes))
        counts = counts_t.tolist()
        tok = order // K  # [S] token of each expert-sorted slot
        ws = top_k_weights.reshape(-1).index_select(0, order).to(x.dtype)  # [S]
        y = x.new_zeros(T, H)
        saved, s, off = [], 0, 0
        for c, width in zip(counts, sizes, strict=True):
            if c:
                tok_e, sl = tok[s : s + c], slice(off, off + width)
                xe = x.index_select(0, tok_e)  # [c, H]
                g = torch.mm(xe, gate[sl].t())  # [c, I_e]
                u = torch.mm(xe, up[sl].t())
                h = F.silu(g).mul_(u)
                y.index_add_(0, tok_e, torch.mm(h * ws[s : s + c, None], down[:, sl].t()))
                saved += [g, u, h]
            s, off = s + c, off + width
        ctx.save_for_backward(x, gate, up, down, tok, order, ws, *saved)
        ctx.counts, ctx.sizes, ctx.K = counts, sizes, K
        ctx.w_dtype = top_k_weights.dtype
        return y

    @staticmethod
    def backward(ctx, dy):
        x, gate, up, down, tok, order, ws, *saved = ctx.saved_tensors
        dy = dy.contiguous()
        dx, dws = torch.zeros_like(x), torch.zeros_like(ws)
        dgate, dup = torch.empty_like(gate), torch.empty_like(up)
        ddown_t = down.new_empty(down.shape[1], down.shape[0])  # [I_tot, H]: rows per expert are contiguous
        s = off = j = 0
        for c, width in zip(ctx.counts, ctx.sizes, strict=True):
            sl = slice(off, off + width)
            if c:
                g, u, h = saved[j : j + 3]
                j += 3
                tok_e, we = tok[s : s + c], ws[s : s + c, None]
                xe, de = x.index_select(0, tok_e), dy.index_select(0, tok_e)  # [c, H]
                torch.mm((h * we).t(), de, out=ddown_t[sl])
                dh = torch.mm(de, down[:, sl])  # grad wrt (we * h), [c, I_e]
                dws[s : s + c] = (dh * h).sum(dim=1)
                dh.mul_(we)
                du = dh * F.silu(g)
                dg = torch.ops.aten.silu_backward(dh.mul_(u), g)
                torch.mm(dg.t(), xe, out=dgate[sl])
                torch.mm(du.t(), xe, out=dup[sl])
                dxe = torch.mm(dg, gate[sl])
                dxe.addmm_(du, up[sl])
                dx.index_add_(0, tok_e, dxe)
            else:
                dgate[sl].zero_()
                dup[sl].zero_()
                ddown_t[sl].zero_()
            s, off = s + c, off + width
        dw = torch.empty_like(dws).index_copy_(0, order, dws).view(-1, ctx.K).to(ctx.w_dtype)
        return dx, dw, dgate, dup, ddown_t.t().contiguous(), None, None


def fused_experts_forward(experts, x, top_k_index, top_k_weights):
    """`LlamaMoEExperts` forward through `_FusedSwiGLUExperts` (SiLU activation only)."""
    return _FusedSwiGLUExperts.apply(
        x,
        top_k_weights,
        experts.gate_proj,
        experts.up_proj,
        experts.down_proj,
        top_k_index,
        experts.expert_sizes,
    )


# ---- grouped_mm ---------------------------------------------------------------------------------------


def padded_index(expert_sizes: list[int], multiple: int = 16) -> torch.Tensor:
    """[N, W] neuron ids per expert, W = max width rounded up to `multiple`; padding = I_tot (a zero row)."""
    width = -(-max(expert_sizes) // multiple) * multiple
    total = sum(expert_sizes)
    idx = torch.full((len(expert_sizes), width), total, dtype=torch.long)
    off = 0
    for e, size in enumerate(expert_sizes):
        idx[e, :size] = torch.arange(off, off + size)
        off += size
    return idx


def grouped_mm_experts_forward(experts, x, top_k_index, top_k_weights):
    """`LlamaMoEExperts` forward with torch._grouped_mm (3 grouped GEMMs over expert-sorted slots).

    Equal widths that are a multiple of 16 use free views of the weights; other widths are zero-padded
    (gathered through `padded_index`, so gradients flow back to the unpadded parameters).
    """
    T, K = top_k_index.shape
    H = x.shape[1]
    N, sizes = experts.num_experts, experts.expert_sizes
    order, inv_km, counts = sort_by_expert(top_k_index, N)
    offs = torch.cumsum(counts, dim=0).to(torch.int32)
    xs = x.index_select(0, order // K)  # [S, H]
    if len(set(sizes)) == 1 and sizes[0] % 16 == 0:
        width = sizes[0]
        gate_w = experts.gate_proj.view(N, width, H)
        up_w = experts.up_proj.view(N, width, H)
        down_w = experts.down_proj.view(H, N, width).permute(1, 2, 0)  # [N, W, H]
    else:
        idx = padded_index(sizes).to(x.device)
        width = idx.shape[1]
        zero_row = experts.gate_proj.new_zeros(1, H)
        gate_w = torch.cat([experts.gate_proj, zero_row]).index_select(0, idx.reshape(-1)).view(N, width, H)
        up_w = torch.cat([experts.up_proj, zero_row]).index_select(0, idx.reshape(-1)).view(N, width, H)
        down_t = torch.cat([experts.down_proj.t(), zero_row])
        down_w = down_t.index_select(0, idx.reshape(-1)).view(N, width, H)
    g = torch._grouped_mm(xs, gate_w.transpose(1, 2).contiguous(), offs=offs)  # [S, W]
    u = torch._grouped_mm(xs, up_w.transpose(1, 2).contiguous(), offs=offs)
    h = experts.act_fn(g) * u
    out = torch._grouped_mm(h, down_w.contiguous(), offs=offs)  # [S, H]
    out = out * top_k_weights.reshape(-1).index_select(0, order).unsqueeze(-1).to(out.dtype)
    return _combine(out, inv_km, T, K)


EXPERT_FORWARDS = {
    "eager": eager_experts_forward,
    "fused": fused_experts_forward,
    "grouped_mm": grouped_mm_experts_forward,
}


class LlamaMoEExperts(nn.Module):
    """The routed SwiGLU experts of one MoE layer (layout in the module docstring).

    forward(x [T, H], top_k_index [T, K], top_k_weights [T, K]) -> [T, H]
        y_t = sum_j top_k_weights[t, j] * E_{top_k_index[t, j]}(x_t)
    Tokens are sorted by expert and each expert runs once on a contiguous slice (no loop over tokens);
    outputs are gathered back to token order and summed over the K slots (deterministic, no scatter-add).
    `implementation` selects the compute (see module docstring); all are tested against "eager".
    """

    def __init__(
        self, hidden_size: int, expert_sizes: list[int], hidden_act: str = "silu", implementation="auto"
    ):
        super().__init__()
        if not expert_sizes or any(s < 1 for s in expert_sizes):
            raise ValueError(f"expert_sizes must be a non-empty list of positive ints, got {expert_sizes}")
        if implementation not in MOE_IMPLEMENTATIONS:
            raise ValueError(
                f"moe_implementation must be one of {MOE_IMPLEMENTATIONS}, got {implementation!r}"
            )
        self.hidden_size = hidden_size
        self.expert_sizes = [int(s) for s in expert_sizes]
        self.num_experts = len(self.expert_sizes)
        self.hidden_act = hidden_act
        self.implementation = implementation
        total = sum(self.expert_sizes)
        self.gate_proj = nn.Parameter(torch.empty(total, hidden_size))
        self.up_proj = nn.Parameter(torch.empty(total, hidden_size))
        self.down_proj = nn.Parameter(torch.empty(hidden_size, total))
        self.act_fn = ACT2FN[hidden_act]

    def expert_slice(self, e: int) -> slice:
        """The neuron range of expert `e` in gate_proj/up_proj rows and down_proj columns."""
        start = sum(self.expert_sizes[:e])
        return slice(start, start + self.expert_sizes[e])

    def resolved_implementation(self, device: torch.device) -> str:
        """The implementation used on `device` ("auto" -> grouped_mm on CUDA, fused elsewhere)."""
        impl = self.implementation
        if impl == "auto":
            impl = "grouped_mm" if device.type == "cuda" else "fused"
        if impl == "fused" and self.hidden_act != "silu":
            impl = "eager"  # the fused backward is written for SiLU
        return impl

    def forward(
        self, x: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        return EXPERT_FORWARDS[self.resolved_implementation(x.device)](self, x, top_k_index, top_k_weights)

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, expert_sizes={self.expert_sizes}, implementation={self.implementation}"
