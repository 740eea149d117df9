"""Expert Slimming by weight-only quantisation of the experts' linear maps: RTN, GPTQ, AWQ (fake quantisation).

Source: "A unified framework for MoE compression" (arXiv 2406.02500), Expert Slimming: 4-bit weight-only
quantisation of the Linear weights inside the experts (AWQ group 128; GPTQ group 128 with desc_act). Only the
experts are quantised (routed experts' gate/up/down slices and the shared experts' Linear weights); attention,
embeddings, norms, lm_head and the router keep their weights.

Fake quantisation: every weight is quantised to a b-bit integer grid and immediately dequantised back to float32
in place, so the model computes with exactly the values a low-bit kernel would use (quality numbers at demo
scale; no packed storage, no speed-up). :func:`weight_bits_report` gives the bytes the packed weights would take.

Grid (shared by all methods): asymmetric, one (scale, zero) per group of ``group_size`` consecutive input
columns of a weight in [out, in] orientation (``group_size=-1``: one group per output row). For a group w:
    lo = min(min w, 0), hi = max(max w, 0)                       (the range always holds 0, as GPTQ's quantiser)
    scale = (hi - lo) / (2^b - 1)   (scale 0, an all-zero group, is replaced by 1: no NaN, w' = 0 exactly)
    zero = round(-lo / scale)       (in [0, 2^b - 1]: storable in b bits because lo <= 0 <= hi)
    q = clamp(round(w / scale) + zero, 0, 2^b - 1),   w' = (q - zero) * scale
For a group that holds both signs (nearly every weight group) this is the plain min/max grid; one-signed groups
get a grid stretched to 0 (deviation from AWQ's pseudo-quantiser, which uses min/max and clamps the zero point).
``round`` is round-half-to-even (torch.round). When ``group_size`` does not divide the input width, the last
group of each row is shorter (in % group_size columns, its own scale and zero); a group_size at least the input
width is one group per row. (SmolLM2's hidden 576 = 4 x 128 + 64.)

Calibration (GPTQ, AWQ): each routed expert sees only the tokens the router sends to it
(:mod:`moelab.compress.calibration`, one forward pass of the unquantised model for all layers: one-shot across
layers). Inside an expert, gate_proj and up_proj are quantised first and down_proj is calibrated on the hidden
state act(x G'^T) * (x U'^T) of the *quantised* gate/up ("true sequential" inside the expert, as GPTQ's LLaMA
script and AutoGPTQ's default). Shared experts see every token; each shared expert of the concatenated FFN is
quantised on its own slice (groups never straddle two experts).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from functools import partial

import torch
import torch.nn.functional as F

from moelab.compress.calibration import expert_linear_inputs, moe_blocks, routed_inputs

QUANT_METHODS = ("rtn", "gptq", "awq")
UNROUTED_MODES = ("rtn", "skip")
BITS_RANGE = (2, 8)
METHOD_OPTIONS = {
    "rtn": {},
    "gptq": {"desc_act": True, "static_groups": False, "block_size": 128, "percdamp": 0.01},
    "awq": {"n_grid": 20, "clip": True, "clip_grid": 20, "max_shrink": 0.5, "clip_tokens": 512},
}
PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


# ---- checks and the grid ------------------------------------------------------------------------------


def _check_bits(bits) -> int:
    lo, hi = BITS_RANGE
    if isinstance(bits, bool) or not isinstance(bits, int) or not lo <= bits <= hi:
        raise ValueError(f"bits={bits!r} must be an int in [{lo}, {hi}] (8 and 4 are the baselines)")
    return bits


def _check_group_size(group_size) -> int:
    if (
        isinstance(group_size, bool)
        or not isinstance(group_size, int)
        or not (group_size == -1 or group_size >= 1)
    ):
        raise ValueError(f"group_size={group_size!r} must be -1 (one group per output row) or a positive int")
    return group_size


def _group_width(group_size: int, in_features: int) -> int:
    """Columns per group for an input width (-1 or a size >= the width: the whole row)."""
    _check_group_size(group_size)
    return in_features if group_size == -1 else min(group_size, in_features)


def _check_matrix(W: torch.Tensor, name: str = "W") -> None:
    if W.dim() != 2 or W.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 2-D weight [out, in], got shape {tuple(W.shape)}")


def _grid(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero) of the asymmetric grid over the last dim of w [..., n] (module docstring): [..., 1] each."""
    lo = w.amin(dim=-1, keepdim=True).clamp(max=0)
    hi = w.amax(dim=-1, keepdim=True).clamp(min=0)
    scale = (hi - lo) / (2**bits - 1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # all-zero group: any scale gives w' = 0
    return scale, torch.round(-lo / scale)


def _fake_quant(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """w' = (clamp(round(w / scale) + zero, 0, 2^b - 1) - zero) * scale (broadcast shapes)."""
    q = torch.clamp(torch.round(w / scale) + zero, 0, 2**bits - 1)
    return (q - zero) * scale


def _group_grid(W: torch.Tensor, bits: int, g: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group (scale, zero), each [R, ceil(C / g)], of W [R, C] in groups of g consecutive columns.

    The remainder group is padded with zero columns, which leaves its grid unchanged (the range holds 0 anyway).
    """
    R, C = W.shape
    Wp = F.pad(W, (0, (-C) % g)).view(R, -1, g)  # [R, G, g]
    scale, zero = _grid(Wp, bits)
    return scale[..., 0], zero[..., 0]


def rtn_quantize(W: torch.Tensor, bits: int = 4, group_size: int = 128) -> torch.Tensor:
    """Round-to-nearest fake quantisation of W [out, in] on the asymmetric group grid (module docstring).

    Returns: float32 [out, in], the dequantised weights (at most 2^bits distinct values per group, each within
        scale / 2 of the original). Raises: ValueError for bits outside [2, 8], a bad group_size or W not 2-D.
    """
    _check_matrix(W)
    bits = _check_bits(bits)
    W = W.detach().float()
    g = _group_width(group_size, W.shape[1])
    scale, zero = _group_grid(W, bits, g)
    col_group = torch.arange(W.shape[1], device=W.device) // g  # [C]
    return _fake_quant(W, scale[:, col_group], zero[:, col_group], bits)


# ---- GPTQ ---------------------------------------------------------------------------------------------


def gptq_hessian(X: torch.Tensor) -> torch.Tensor:
    """H = 2 X^T X in float64 for inputs X [N, C] (GPTQ eq. 2's Hessian of ||W X^T - W' X^T||^2).

    The reference averages over tokens (2/N X^T X); GPTQ's result does not depend on H's scale (the damping is
    relative to mean(diag H)), so the sum is used.
    """
    _check_matrix(X, "X")
    X = X.detach().float()
    return 2.0 * (X.T @ X).double()


def gptq_quantize(
    W: torch.Tensor,
    X: torch.Tensor | None = None,
    *,
    H: torch.Tensor | None = None,
    bits: int = 4,
    group_size: int = 128,
    desc_act: bool = True,
    static_groups: bool = False,
    block_size: int = 128,
    percdamp: float = 0.01,
) -> torch.Tensor:
    """GPTQ fake quantisation of W [out, in] (Frantar et al. 2022, arXiv 2210.17323, Alg. 1 with groups).

    Columns are quantised one at a time on the group grid; each column's rounding error, divided by the
    diagonal of U = chol(H^-1) (upper), is spread over the not-yet-quantised columns through U's row (OBS update,
    eq. 3 in Cholesky form); updates are applied lazily in blocks of ``block_size`` columns (sec. 4, step 2).

    Args:
        W: [out, in] weights. X: [N, in] calibration inputs, or H: [in, in] a precomputed :func:`gptq_hessian`
            (exactly one of the two).
        desc_act: act-order (AutoGPTQ's desc_act): columns in decreasing diag(H), permuted back at the end
            (ties keep their original order).
        static_groups: only with desc_act. False (AutoGPTQ's default, the original GPTQ repository's act-order):
            groups are runs of ``group_size`` consecutive columns *in the processing order*, and a group's scale
            and zero are computed when the loop enters it, from the current (error-updated) weights; a packed
            kernel then needs the per-column group index (g_idx). True (AutoGPTQ ``static_groups``): groups are
            the original contiguous column groups, their grid computed up front from the original weights.
            Without desc_act both are the same order; the grid is taken at group entry (False) or up front (True).
        block_size: lazy-batch width (128 in the paper and reference).
        percdamp: damping lambda = percdamp * mean(diag H) added to diag H (0.01, the reference default).
    Dead columns (diag H = 0: an input that is 0 on every calibration token) get H_jj = 1 and W[:, j] = 0, as in
    the reference (they never contribute to the calibration outputs).
    Returns: float32 [out, in] dequantised weights.
    Raises: ValueError for bad bits / group_size / block_size / percdamp, wrong shapes, neither or both of X and
        H, an all-zero H (no calibration signal), or an H + damping that is not positive definite.
    """
    _check_matrix(W)
    bits = _check_bits(bits)
    R, C = W.shape
    g = _group_width(group_size, C)
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size={block_size!r} must be a positive int")
    if not percdamp >= 0:
        raise ValueError(f"percdamp={percdamp!r} must be >= 0")
    if (X is None) == (H is None):
        raise ValueError("gptq_quantize needs exactly one of X (calibration inputs) and H (Hessian)")
    if X is not None and X.shape[-1] != C:
        raise ValueError(f"X has {X.shape[-1]} columns but W has {C} inputs")
    H = gptq_hessian(X) if X is not None else H.detach().double().clone()
    if H.shape != (C, C):
        raise ValueError(f"H must be [{C}, {C}] for W of shape {tuple(W.shape)}, got {tuple(H.shape)}")
    W = W.detach().float().clone()
    dead = torch.diagonal(H) == 0
    if bool(dead.all()):
        raise ValueError(
            "H is zero: no calibration signal for GPTQ (use rtn_quantize for an unrouted expert)"
        )
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    if static_groups:
        s_static, z_static = _group_grid(W, bits, g)  # [R, G] on the original column groups
    perm = (
        torch.argsort(torch.diagonal(H), descending=True, stable=True)
        if desc_act
        else torch.arange(C, device=W.device)
    )
    W, H = W[:, perm], H[perm][:, perm]
    H.diagonal().add_(percdamp * torch.diagonal(H).mean())
    L, info = torch.linalg.cholesky_ex(H)
    if info:
        raise ValueError(f"H + damping is not positive definite: raise percdamp={percdamp}")
    U, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(L), upper=True)
    if info:
        raise ValueError(f"H^-1 is not positive definite: raise percdamp={percdamp}")
    U = U.float()  # [C, C] upper: row j holds column j's update weights over the later columns
    group_of = (perm // g) if static_groups else None  # original group of processed column j
    Q = torch.empty_like(W)
    scale = zero = None
    for i1 in range(0, C, block_size):
        i2 = min(i1 + block_size, C)
        W1, U1 = W[:, i1:i2].clone(), U[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)  # [R, i2 - i1] scaled errors of this block
        for i in range(i2 - i1):
            j = i1 + i
            if static_groups:
                scale, zero = s_static[:, group_of[j], None], z_static[:, group_of[j], None]
            elif j % g == 0:  # entering a group: grid from the current weights of its columns j .. j+g-1
                end = min(j + g, C)
                cols = W1[:, i : end - i1]
                if end > i2:  # the group reaches past this block: add the lazy updates still pending
                    cols = torch.cat([cols, W[:, i2:end] - Err1[:, :i] @ U[i1:j, i2:end]], dim=1)
                scale, zero = _grid(cols, bits)
            w = W1[:, i]
            q = _fake_quant(w[:, None], scale, zero, bits)[:, 0]
            Q[:, j] = q
            err = (w - q) / U1[i, i]
            W1[:, i:] -= err[:, None] * U1[i, i:][None, :]
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    return Q[:, torch.argsort(perm)]


# ---- AWQ ----------------------------------------------------------------------------------------------


def _output_error(X: torch.Tensor, W: torch.Tensor, Wq: torch.Tensor) -> float:
    """||X W^T - X W'^T||_F^2 (X [N, C], W [R, C])."""
    return float((X @ (W - Wq).T).pow(2).sum())


def awq_search_scale(
    W: torch.Tensor, X: torch.Tensor, bits: int = 4, group_size: int = 128, n_grid: int = 20
) -> tuple[torch.Tensor, float]:
    """AWQ's per-input-channel scale s = mean_t |x_tj|^alpha, alpha on the grid {0, 1/n, ..., (n-1)/n}
    (Lin et al. 2023, arXiv 2306.00978, sec. 3.2, eq. 4-5), minimising ||Q(W diag(s)) diag(s)^-1 X^T - W X^T||^2.

    s is clamped at 1e-4 and normalised by sqrt(max s * min s) as in the reference (the grid is scale-equivariant,
    so this changes nothing but the range). alpha = 0 gives s = 1, i.e. RTN, so the chosen error is <= RTN's.
    Args: W [out, in], X [N, in] (N >= 1). Returns: (s [in] float32, alpha).
    """
    _check_matrix(W)
    _check_matrix(X, "X")
    if X.shape[1] != W.shape[1]:
        raise ValueError(f"X has {X.shape[1]} columns but W has {W.shape[1]} inputs")
    if isinstance(n_grid, bool) or not isinstance(n_grid, int) or n_grid < 1:
        raise ValueError(f"n_grid={n_grid!r} must be a positive int")
    W, X = W.detach().float(), X.detach().float()
    x_mean = X.abs().mean(dim=0)  # [C]
    best = (math.inf, torch.ones_like(x_mean), 0.0)
    for k in range(n_grid):
        alpha = k / n_grid
        s = x_mean.pow(alpha).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        err = _output_error(X, W, rtn_quantize(W * s, bits, group_size) / s)
        if err < best[0]:
            best = (err, s, alpha)
    return best[1], best[2]


def awq_clip(
    W: torch.Tensor,
    X: torch.Tensor,
    bits: int = 4,
    group_size: int = 128,
    n_grid: int = 20,
    max_shrink: float = 0.5,
    max_tokens: int = 512,
) -> torch.Tensor:
    """AWQ's weight clipping search (reference ``auto_clip``): per (row, group) clip |w| at m = r * max|w|,
    r in {1, 1 - 1/n, ..., > 1 - max_shrink}, the r minimising the group's partial output error
    mean_t (x_tg . (w_g - Q(clamp(w_g, -m, m))))^2 on at most ``max_tokens`` tokens (every k-th, as the reference).

    Args: W [out, in] (already scaled by s), X [N, in] (already divided by s). Returns: clipped W, float32.
    """
    W, X = W.detach().float(), X.detach().float()
    R, C = W.shape
    g = _group_width(group_size, C)
    X = X[:: max(1, math.ceil(X.shape[0] / max_tokens))]
    pad = (-C) % g  # zero columns: no effect on outputs, grid or abs max
    Wg = F.pad(W, (0, pad)).view(R, -1, g)  # [R, G, g]
    Xg = F.pad(X, (0, pad)).view(X.shape[0], -1, g).transpose(0, 1)  # [G, N, g]
    org = torch.bmm(Xg, Wg.permute(1, 2, 0))  # [G, N, R] per-group partial outputs
    org_max = Wg.abs().amax(dim=-1, keepdim=True)  # [R, G, 1]
    best_err = torch.full(org_max.shape[:2], math.inf, device=W.device)
    best_max = org_max.clone()
    for i in range(max(1, int(max_shrink * n_grid))):
        m = org_max * (1 - i / n_grid)
        cw = torch.clamp(Wg, -m, m)
        qw = _fake_quant(cw, *_grid(cw, bits), bits)
        err = (torch.bmm(Xg, qw.permute(1, 2, 0)) - org).pow(2).mean(dim=1).T  # [R, G]
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_max = torch.where(better[..., None], m, best_max)
    return torch.clamp(Wg, -best_max, best_max).reshape(R, -1)[:, :C]


def awq_quantize(
    W: torch.Tensor,
    X: torch.Tensor,
    bits: int = 4,
    group_size: int = 128,
    n_grid: int = 20,
    clip: bool = True,
    clip_grid: int = 20,
    max_shrink: float = 0.5,
    clip_tokens: int = 512,
) -> torch.Tensor:
    """AWQ fake quantisation: w' = Q(clip(W diag(s))) diag(s)^-1 (arXiv 2306.00978, sec. 3.2).

    s from :func:`awq_search_scale`; with ``clip`` (default True, as the reference llm-awq / AutoAWQ run it) the
    scaled weight is clipped by :func:`awq_clip` on the scaled inputs X diag(s)^-1 before the RTN grid.
    A real kernel stores Q(W diag(s)) and folds diag(s)^-1 into the previous op (the norm for gate/up, up_proj
    for down_proj); fake quantisation keeps fp32 weights, so the scale is folded back into W' directly. One s per
    matrix (gate and up each get their own; the reference shares one s over the matrices reading the same input,
    the one foldable into a norm): a deviation that can only lower the error.
    Returns: float32 [out, in]. Raises: ValueError for bad bits / group_size / n_grid / shapes.
    """
    s, _ = awq_search_scale(W, X, bits, group_size, n_grid)
    return _awq_apply(W, X, s, bits, group_size, clip, clip_grid, max_shrink, clip_tokens)


def _awq_apply(W, X, s, bits, group_size, clip, clip_grid, max_shrink, clip_tokens) -> torch.Tensor:
    Ws = W.detach().float() * s
    if clip:
        Ws = awq_clip(Ws, X.detach().float() / s, bits, group_size, clip_grid, max_shrink, clip_tokens)
    return rtn_quantize(Ws, bits, group_size) / s


# ---- the experts of a model ---------------------------------------------------------------------------


def _expert_matrices(block) -> Iterator[tuple[str, int, dict]]:
    """(kind, expert id, {projection: (parameter, index)}) for every expert of a ``LlamaMoESparseBlock``.

    ``parameter.data[index]`` is that expert's weight in [out, in] orientation (gate/up rows [I_e, H], down
    columns [H, I_e]). kind "routed" (``block.experts``) or "shared" (each shared expert's slice of
    ``block.shared_experts``). (A private iterator: calibration.py may later offer a shared one.)
    """
    experts = block.experts
    for e in range(experts.num_experts):
        rows = experts.expert_slice(e)
        yield (
            "routed",
            e,
            {
                "gate_proj": (experts.gate_proj, (rows, slice(None))),
                "up_proj": (experts.up_proj, (rows, slice(None))),
                "down_proj": (experts.down_proj, (slice(None), rows)),
            },
        )
    shared = block.shared_experts
    if shared is not None:
        start = 0
        for j, size in enumerate(shared.expert_sizes):
            rows = slice(start, start + size)
            start += size
            yield (
                "shared",
                j,
                {
                    "gate_proj": (shared.gate_proj.weight, (rows, slice(None))),
                    "up_proj": (shared.up_proj.weight, (rows, slice(None))),
                    "down_proj": (shared.down_proj.weight, (slice(None), rows)),
                },
            )


def _method_options(method: str, options: dict) -> dict:
    if method not in QUANT_METHODS:
        raise ValueError(f"unknown quantisation method {method!r}; valid: {', '.join(QUANT_METHODS)}")
    valid = METHOD_OPTIONS[method]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for method {method!r}; valid: {', '.join(valid) or 'none'}"
        )
    return {**valid, **options}


def _quantize_matrix(method, W, X, H, bits, group_size, opts) -> tuple[torch.Tensor, dict]:
    """One [out, in] matrix by ``method`` on inputs X [N, in] (N >= 1 for gptq/awq); (W', extra report)."""
    if method == "rtn":
        return rtn_quantize(W, bits, group_size), {}
    if method == "gptq":
        return gptq_quantize(W, H=H, bits=bits, group_size=group_size, **opts), {}
    s, alpha = awq_search_scale(W, X, bits, group_size, opts["n_grid"])
    Wq = _awq_apply(
        W, X, s, bits, group_size, opts["clip"], opts["clip_grid"], opts["max_shrink"], opts["clip_tokens"]
    )
    return Wq, {"alpha": alpha}


def _shared_linear_inputs(shared, rows: slice, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Shared expert ``rows`` of ``LlamaMoESharedExperts`` on every token x [N, H]: its three maps' inputs."""
    gate, up = shared.gate_proj.weight[rows].float(), shared.up_proj.weight[rows].float()
    return {"gate_proj": x, "up_proj": x, "down_proj": shared.act_fn(x @ gate.T) * (x @ up.T)}


@torch.no_grad()
def quantize_experts(
    model,
    batches: Iterable[dict] | None = None,
    method: str = "rtn",
    bits: int = 4,
    group_size: int = 128,
    unrouted: str = "rtn",
    layers: Iterable[int] | None = None,
    layers_per_pass: int | None = None,
    **options,
) -> dict:
    """Fake-quantise every expert's linear weights of a LlamaMoE model in place (Expert Slimming, 2406.02500).

    Args:
        model: ``LlamaMoEForCausalLM``; only expert weights change (router, attention, embeddings, norms, lm_head
            are untouched).
        batches: calibration dicts (``input_ids`` [B, T], optional ``attention_mask``), see
            :func:`moelab.compress.calibration.routed_inputs`; required for gptq/awq; optional for rtn (then
            the report has no errors). All layers' inputs are captured in one pass before any weight changes.
        method: "rtn", "gptq" or "awq". bits: 2..8. group_size: input columns per group (-1: per row).
        unrouted: for gptq/awq, an expert no calibration token reaches (N_e = 0) cannot be calibrated:
            "rtn" quantises it by RTN, "skip" leaves it in full precision. Such experts are listed in the report
            (with rtn, which needs no calibration, the option does not apply).
        layers: decoder layers to quantise (default: every MoE layer).
        layers_per_pass: capture the calibration inputs of this many layers per forward pass (default: all in
            one pass). Chunks are processed last layers first, so every pass still sees an unquantised prefix:
            the inputs are the uncompressed model's either way (one-shot), at one pass per chunk and the memory
            of one chunk's inputs (paper scale: ~4 GB per layer at H = 4096 and 128 x 2048 tokens).
        **options: method options (``METHOD_OPTIONS``): gptq desc_act, static_groups, block_size, percdamp;
            awq n_grid, clip, clip_grid, max_shrink, clip_tokens.
    Returns: {"method", "bits", "group_size", "unrouted", "options", "layers", "unrouted_experts": [{"layer",
        "expert"}], "experts": [one record per expert: "layer", "kind" (routed/shared), "expert", "tokens" N_e,
        "quantized_by" (method, "rtn" for an unrouted fallback, None when skipped), "matrices": {projection:
        {"norm": ||X W^T||_F, "error": ||X (W - W')^T||_F on that matrix's inputs X (down_proj: the hidden
        state of the quantised gate/up), awq: "alpha"}}, "output_error": ||E'(x) - E(x)||_F / ||E(x)||_F, the
        expert's relative output error on its tokens}]}. Errors are absent (None / {}) without tokens.
    Raises: ValueError for an unknown method / option / unrouted mode, bad bits or group_size, gptq/awq without
        batches, layers without an MoE FFN, or a model without MoE layers.
    """
    opts = _method_options(method, options)
    bits = _check_bits(bits)
    group_size = _check_group_size(group_size)
    if unrouted not in UNROUTED_MODES:
        raise ValueError(f"unrouted={unrouted!r} must be one of {', '.join(UNROUTED_MODES)}")
    blocks = moe_blocks(model)
    wanted = sorted(blocks) if layers is None else sorted(set(layers))
    missing = [i for i in wanted if i not in blocks]
    if missing:
        raise ValueError(f"layers {missing} have no MoE FFN (MoE layers: {sorted(blocks)})")
    if batches is None and method != "rtn":
        raise ValueError(f"batches: method {method!r} needs calibration batches")
    per_pass = max(1, len(wanted)) if layers_per_pass is None else layers_per_pass
    if isinstance(per_pass, bool) or not isinstance(per_pass, int) or per_pass < 1:
        raise ValueError(f"layers_per_pass={layers_per_pass!r} must be a positive int or None")
    batches = None if batches is None else list(batches)  # iterated once per pass
    chunks = [wanted[i : i + per_pass] for i in range(0, len(wanted), per_pass)]
    records = []
    for chunk in reversed(chunks):  # last layers first: the layers a pass captures are still unquantised
        routed = routed_inputs(model, batches, chunk) if batches is not None else None
        for layer in chunk:
            records += _quantize_layer(blocks[layer], layer, routed, method, unrouted, bits, group_size, opts)
        del routed
    records.sort(key=lambda r: r["layer"])  # stable: experts keep their order within a layer
    unrouted_list = [{"layer": r["layer"], "expert": r["expert"]} for r in records if r.pop("_unrouted")]
    return {
        "method": method,
        "bits": bits,
        "group_size": group_size,
        "unrouted": unrouted,
        "options": opts,
        "layers": wanted,
        "unrouted_experts": unrouted_list,
        "experts": records,
    }


def _quantize_layer(block, layer, routed, method, unrouted, bits, group_size, opts) -> list[dict]:
    """Quantise every expert of one ``LlamaMoESparseBlock`` in place; one record per expert (report layout)."""
    records = []
    for kind, e, mats in _expert_matrices(block):
        inputs_fn = None  # () -> this expert's linear inputs from the current weights
        if routed is not None and kind == "routed":
            inputs_fn = partial(expert_linear_inputs, block.experts, routed[layer], e)
        elif routed is not None:
            rows = mats["gate_proj"][1][0]
            inputs_fn = partial(_shared_linear_inputs, block.shared_experts, rows, routed[layer].x)
        record = _quantize_expert(mats, inputs_fn, method, unrouted, bits, group_size, opts)
        unrouted_hit = method != "rtn" and record["tokens"] == 0
        records.append({"layer": layer, "kind": kind, "expert": e, **record, "_unrouted": unrouted_hit})
    return records


def _quantize_expert(mats, inputs_fn, method, unrouted, bits, group_size, opts) -> dict:
    """Quantise one expert's three matrices in place: gate/up on x, then down on the quantised hidden state.

    inputs_fn() -> {projection: inputs [N, in]} from the current weights (None: no calibration data).
    """
    W = {name: p.data[idx].float().clone() for name, (p, idx) in mats.items()}  # copies, not views
    inputs = inputs_fn() if inputs_fn is not None else None
    n = None if inputs is None else int(inputs["gate_proj"].shape[0])
    by = method
    if method != "rtn" and n == 0:
        by = "rtn" if unrouted == "rtn" else None
    record = {"tokens": n, "quantized_by": by, "matrices": {}, "output_error": None}
    if by is None:
        return record
    y_ref = inputs["down_proj"] @ W["down_proj"].T if n else None
    H = gptq_hessian(inputs["gate_proj"]) if by == "gptq" else None  # shared by gate and up
    for name in PROJECTIONS:
        if name == "down_proj" and n:
            # true sequential: down_proj is calibrated on the hidden state of the quantised gate/up
            inputs = {**inputs, "down_proj": inputs_fn()["down_proj"]}
            H = gptq_hessian(inputs["down_proj"]) if by == "gptq" else None
        X = inputs[name] if n else None
        Wq, extra = _quantize_matrix(by, W[name], X, H, bits, group_size, opts)
        p, idx = mats[name]
        p.data[idx] = Wq.to(p.dtype)
        if n:
            norm = float((X @ W[name].T).norm())
            record["matrices"][name] = {
                "norm": norm,
                "error": math.sqrt(_output_error(X, W[name], Wq)),
                **extra,
            }
    if n:
        y = inputs["down_proj"] @ mats["down_proj"][0].data[mats["down_proj"][1]].float().T
        record["output_error"] = float((y - y_ref).norm() / y_ref.norm().clamp(min=1e-30))
    return record


def weight_bits_report(model, bits: int = 4, group_size: int = 128, g_idx: bool = False) -> dict:
    """Bytes the expert weights would take packed at ``bits`` (a count, not a measurement).

    Per [out, in] expert matrix: out * in * bits / 8 bytes of integers, plus out * ceil(in / g) groups each
    with an fp16 scale (2 bytes) and a b-bit zero (bits / 8 bytes); ``g_idx`` (GPTQ desc_act without static
    groups) adds an int32 group index per input column. Compared with fp32 (4 bytes) and fp16 (2 bytes) weights.
    Returns: {"bits", "group_size", "params", "groups", "bytes": {"fp32", "fp16", "quantized"},
        "bits_per_weight" (quantized bytes * 8 / params), "ratio_fp16" (quantized / fp16)}.
    """
    bits = _check_bits(bits)
    group_size = _check_group_size(group_size)
    params = groups = cols = 0
    for block in moe_blocks(model).values():
        for _, _, mats in _expert_matrices(block):
            for p, idx in mats.values():
                out, inp = p.data[idx].shape
                params += out * inp
                groups += out * math.ceil(inp / _group_width(group_size, inp))
                cols += inp
    quantized = params * bits / 8 + groups * (2 + bits / 8) + (4 * cols if g_idx else 0)
    return {
        "bits": bits,
        "group_size": group_size,
        "params": params,
        "groups": groups,
        "bytes": {"fp32": 4 * params, "fp16": 2 * params, "quantized": quantized},
        "bits_per_weight": quantized * 8 / params,
        "ratio_fp16": quantized / (2 * params),
    }
