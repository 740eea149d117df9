"""Expert compute: every implementation equals the eager loop (forward and gradients), incl. empty experts
and widths that are not multiples of 16."""

import pytest
import torch
import torch.nn.functional as F

from moelab.models import LlamaMoEExperts
from moelab.models.experts import padded_index, sort_by_expert


def make_experts(sizes, impl, seed=0, H=32):
    torch.manual_seed(seed)
    ex = LlamaMoEExperts(H, sizes, "silu", impl)
    with torch.no_grad():
        for p in ex.parameters():
            p.normal_(0, 0.2)
    return ex


def naive(ex, x, idx, w):
    """Token-by-token definition: y_t = sum_j w[t, j] * E_idx[t, j](x_t)."""
    y = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(idx.shape[1]):
            sl = ex.expert_slice(int(idx[t, j]))
            h = F.silu(ex.gate_proj[sl] @ x[t]) * (ex.up_proj[sl] @ x[t])
            y[t] += w[t, j] * (ex.down_proj[:, sl] @ h)
    return y


def routing(T, N, K, seed, empty=()):
    g = torch.Generator().manual_seed(seed)
    allowed = torch.tensor([e for e in range(N) if e not in empty])
    idx = torch.stack([allowed[torch.randperm(len(allowed), generator=g)[:K]] for _ in range(T)])
    w = torch.rand(T, K, generator=g)
    return idx, w


def run(ex, x, idx, w):
    x = x.clone().requires_grad_()
    w = w.clone().requires_grad_()
    ex.zero_grad()
    y = ex(x, idx, w)
    (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    return [y.detach(), x.grad, w.grad, ex.gate_proj.grad, ex.up_proj.grad, ex.down_proj.grad]


def test_sort_by_expert_orders_slots_and_inverts():
    idx = torch.tensor([[2, 0], [0, 3], [2, 1]])
    order, inv_km, counts = sort_by_expert(idx, 5)
    assert counts.tolist() == [2, 1, 2, 1, 0]
    assert idx.reshape(-1)[order].tolist() == [0, 0, 1, 2, 2, 3]
    # inv_km[j*T + t] is where slot (t, j) went
    assert all(order[inv_km[j * 3 + t]] == t * 2 + j for t in range(3) for j in range(2))


def test_eager_equals_token_by_token_definition():
    ex = make_experts([16, 24, 8, 16], "eager")
    idx, w = routing(10, 4, 2, seed=1)
    x = torch.randn(10, 32)
    assert torch.allclose(ex(x, idx, w), naive(ex, x, idx, w), atol=1e-5)


@pytest.mark.parametrize("impl", ["fused", "grouped_mm"])
@pytest.mark.parametrize(
    "sizes, K, empty",
    [
        ([16, 16, 16, 16], 2, ()),
        ([16, 16, 16, 16], 2, (1, 3)),  # experts that receive no token
        ([37, 40, 13, 64], 3, (2,)),  # widths not multiples of 16, uneven
        ([24] * 8, 1, ()),
    ],
)
def test_implementation_equals_eager_forward_and_gradients(impl, sizes, K, empty):
    ref, other = make_experts(sizes, "eager"), make_experts(sizes, impl)
    idx, w = routing(33, len(sizes), K, seed=2, empty=empty)
    x = torch.randn(33, 32, generator=torch.Generator().manual_seed(3))
    names = ["y", "dx", "dw", "dgate", "dup", "ddown"]
    for name, a, b in zip(names, run(ref, x, idx, w), run(other, x, idx, w), strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), name
    if empty:  # parameters of experts without tokens get exactly zero gradient
        sl = ref.expert_slice(empty[0])
        assert torch.count_nonzero(other.gate_proj.grad[sl]) == 0
        assert torch.count_nonzero(other.down_proj.grad[:, sl]) == 0


def test_padded_index_rounds_width_up_and_points_padding_at_the_zero_row():
    idx = padded_index([37, 40, 13])
    assert idx.shape == (3, 48)
    assert idx[0, :37].tolist() == list(range(37)) and (idx[0, 37:] == 90).all()
    assert idx[2, :13].tolist() == list(range(77, 90))


def test_unknown_implementation_is_rejected():
    with pytest.raises(ValueError, match="moe_implementation"):
        LlamaMoEExperts(32, [16, 16], "silu", "triton")
