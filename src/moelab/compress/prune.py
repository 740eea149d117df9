"""Expert Slimming by pruning: zero weights inside the experts' linear maps (magnitude, Wanda, SparseGPT).

Source: "A unified framework for MoE compression" (arXiv 2406.02500), Expert Slimming: prune the Linear weights
inside the experts, with each expert's calibration statistics taken only from the tokens routed to it
(:mod:`moelab.compress.calibration`). Pruned: routed experts' gate/up/down slices and the shared experts'
gate/up/down weights (they see every token). Never pruned: attention, embeddings, norms, lm_head and the
router (upstream's Mixtral script pruned the router by accident; we do not).

Scores and comparison groups (the set of weights among which the lowest scores are zeroed):
    magnitude  |W_ij|                                                  group: the whole expert matrix
    wanda      |W_ij| * ||X_j||_2  (Wanda, arXiv 2306.11695, eq. 1)    group: each output row (Wanda sec. 3)
    sparsegpt  w^2 / [U]_jj^2, U upper Cholesky factor of H^-1,       group: each column block of
               H = X^T X + damping (SparseGPT, arXiv 2301.00774,      ``block_size`` columns, all rows
               Algorithm 1, adaptive mask selection), then OBS        together (Algorithm 1)
               updates of the remaining weights.
Unstructured sparsity p zeroes floor(p * |group|) weights of every group. N:M ("2:4", "4:8") keeps the N
highest-scoring of every M consecutive weights along the input dimension of every row (N kept of M, the 2:4
sparse tensor-core format: 2 non-zeros in every 4). Note: Wanda's and SparseGPT's reference scripts count
N as the zeroed weights; for 2:4 and 4:8 (N = M / 2) both readings give the same mask.

Weights are handled in [out, in] orientation as ``nn.Linear`` stores them; X is the map's input [N, in].
Masks are bool with True = kept. Scores and SparseGPT's algebra run in float32; the model's dtype is kept.
One-shot: all statistics come from the unpruned model (see calibration.py).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from moelab.compress.calibration import expert_linears, expert_weights, moe_blocks, routed_inputs

PRUNE_METHODS = ("magnitude", "wanda", "sparsegpt")
PRUNE_PATTERNS = ("unstructured", "2:4", "4:8")
UNROUTED_OPTIONS = ("magnitude", "skip")
MASK_GROUPS = ("matrix", "row")


# ---- argument checks -----------------------------------------------------------------------------------


def parse_pattern(pattern: str, sparsity: float | None) -> tuple[int, int] | None:
    """Validate ``pattern`` and ``sparsity`` together; returns (N, M) for an N:M pattern, None if unstructured.

    Raises ValueError naming the parameter: an unknown or malformed pattern, N > M or N < 1, sparsity given
    with an N:M pattern, sparsity missing or outside [0, 1) for "unstructured".
    """
    if pattern == "unstructured":
        if sparsity is None:
            raise ValueError('sparsity is required for pattern="unstructured" (a fraction in [0, 1))')
        if not 0.0 <= float(sparsity) < 1.0:
            raise ValueError(f"sparsity={sparsity} must lie in [0, 1) (the fraction of weights set to zero)")
        return None
    parts = pattern.split(":") if isinstance(pattern, str) else []
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(
            f'pattern={pattern!r} must be "unstructured" or "N:M" with integers N <= M (e.g. "2:4")'
        )
    n, m = int(parts[0]), int(parts[1])
    if not 1 <= n <= m:
        raise ValueError(f"pattern={pattern!r}: N:M keeps N of every M weights, so it needs 1 <= N <= M")
    if sparsity is not None:
        raise ValueError(
            f"sparsity={sparsity} cannot be given with pattern={pattern!r} (N:M fixes the sparsity at 1 - N/M)"
        )
    return n, m


def _check_group(group: str) -> None:
    if group not in MASK_GROUPS:
        raise ValueError(f"group={group!r} must be one of {MASK_GROUPS}")


# ---- masks from scores ---------------------------------------------------------------------------------


def lowest_mask(scores: torch.Tensor, sparsity: float, group: str) -> torch.Tensor:
    """Keep-mask zeroing the floor(sparsity * |group|) lowest scores of each group (ties: lower index first).

    Args: scores [out, in] float; group "matrix" (one group) or "row" (each output row).
    Returns: bool [out, in], True = kept.
    """
    flat = scores.reshape(1, -1) if group == "matrix" else scores
    k = int(flat.shape[1] * float(sparsity))
    keep = torch.ones_like(flat, dtype=torch.bool)
    if k:
        drop = torch.argsort(flat, dim=1, stable=True)[:, :k]
        keep.scatter_(1, drop, False)
    return keep.view_as(scores)


def n_m_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep-mask with the N highest scores of every M consecutive input columns of each row.

    Args: scores [out, in] with in divisible by M. Returns: bool [out, in], exactly N True per group.
    Raises: ValueError (names ``pattern``) when in is not a multiple of M.
    """
    rows, cols = scores.shape
    if cols % m:
        raise ValueError(f"pattern={n}:{m} needs the input dimension ({cols}) to be a multiple of M={m}")
    groups = scores.reshape(rows, cols // m, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(2, torch.topk(groups, n, dim=2).indices, True)
    return keep.view(rows, cols)


def _mask(scores: torch.Tensor, sparsity, pattern: str, group: str) -> torch.Tensor:
    nm = parse_pattern(pattern, sparsity)
    if nm is not None:
        return n_m_mask(scores, *nm)
    _check_group(group)
    return lowest_mask(scores, sparsity, group)


# ---- per-matrix methods --------------------------------------------------------------------------------


def magnitude_mask(
    W: torch.Tensor, sparsity: float | None = None, pattern: str = "unstructured", group: str = "matrix"
) -> torch.Tensor:
    """Magnitude pruning mask: score |W_ij|.

    Args:
        W: [out, in] weight (Linear orientation).
        sparsity: fraction in [0, 1) to zero (unstructured only).
        pattern: "unstructured" or "N:M" (N kept of every M consecutive inputs per row).
        group: comparison group for unstructured: "matrix" (default: the whole matrix, as per-layer
            magnitude pruning) or "row" (each output row, Wanda's group).
    Returns: bool [out, in], True = kept.
    Raises: ValueError for a bad sparsity / pattern / group (see :func:`parse_pattern`).
    """
    return _mask(W.detach().float().abs(), sparsity, pattern, group)


def wanda_scores(W: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """S_ij = |W_ij| * ||X_j||_2 (Wanda, arXiv 2306.11695, eq. 1).

    Args: W [out, in]; X [N, in], the linear's input on N calibration tokens (N >= 1).
    Returns: float32 [out, in].
    Raises: ValueError (names ``X``) for a shape mismatch or N = 0.
    """
    if X.dim() != 2 or X.shape[1] != W.shape[1]:
        raise ValueError(f"X must be [N, {W.shape[1]}] (inputs of a [out, in] weight), got {tuple(X.shape)}")
    if X.shape[0] == 0:
        raise ValueError("X holds no calibration token: Wanda cannot score this weight (N = 0)")
    return W.detach().float().abs() * X.float().norm(dim=0)[None, :]


def wanda_mask(
    W: torch.Tensor,
    X: torch.Tensor,
    sparsity: float | None = None,
    pattern: str = "unstructured",
    group: str = "row",
) -> torch.Tensor:
    """Wanda pruning mask: score |W_ij| * ||X_j||_2, compared within each output row (Wanda sec. 3).

    Args:
        W: [out, in]; X: [N, in] calibration inputs of this linear (N >= 1).
        sparsity, pattern: as :func:`magnitude_mask`; group: "row" (default, the paper's) or "matrix".
    Returns: bool [out, in], True = kept.
    Raises: ValueError for bad X / sparsity / pattern / group.
    """
    return _mask(wanda_scores(W, X), sparsity, pattern, group)


def hessian(X: torch.Tensor) -> torch.Tensor:
    """H = X^T X, float32 [in, in] (SparseGPT's layer-wise Hessian, up to a constant factor that cancels)."""
    X = X.float()
    return X.T @ X


@torch.no_grad()
def sparsegpt_prune(
    W: torch.Tensor,
    X: torch.Tensor | None = None,
    *,
    H: torch.Tensor | None = None,
    sparsity: float | None = None,
    pattern: str = "unstructured",
    block_size: int = 128,
    damp: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT: prune W with adaptive mask selection and OBS updates of the kept weights.

    Algorithm 1 of Frantar & Alistarh 2023 (arXiv 2301.00774), vectorised over rows:
        H = X^T X + damp * mean(diag(H)) * I;  U = upper Cholesky factor of H^-1 (H^-1 = U^T U)
        for each block of ``block_size`` columns [i, i+B):
            unstructured: mask = keep all but the floor(p * out * B) lowest w^2 / U_jj^2 of the block
            for j in the block (N:M: re-select the mask of columns j..j+M-1 per row when j % M == 0):
                err = (1 - mask[:, j]) * W[:, j] / U_jj
                W[:, j:i+B] -= err U[j, j:i+B]             (OBS update inside the block)
            W[:, i+B:] -= Err U[i:i+B, i+B:]                (lazy batch update of the later columns)
    The scale of H cancels (damping is relative), so H = X^T X is used without SparseGPT's 2/N factor.
    If H is all zeros (inputs identically 0), H = I: the method reduces to magnitude pruning per block.

    Args:
        W: [out, in] weight (any float dtype; not modified).
        X: [N, in] calibration inputs, or H: [in, in] precomputed X^T X (exactly one of them).
        sparsity / pattern: as :func:`magnitude_mask` (N:M groups never straddle blocks: B % M == 0).
        block_size: B, columns per lazy-update block (paper: 128). damp: relative damping (paper: 0.01).
    Returns: (W_new [out, in] in W's dtype with pruned weights exactly 0, mask bool [out, in], True = kept).
    Raises: ValueError for X and H both/neither given, shape mismatch, N = 0, bad sparsity / pattern,
        block_size < 1 or not a multiple of M, damp < 0.
    """
    nm = parse_pattern(pattern, sparsity)
    rows, cols = W.shape
    if (X is None) == (H is None):
        raise ValueError("sparsegpt_prune needs exactly one of X (inputs [N, in]) or H (X^T X [in, in])")
    if X is not None:
        if X.dim() != 2 or X.shape[1] != cols:
            raise ValueError(f"X must be [N, {cols}], got {tuple(X.shape)}")
        if X.shape[0] == 0:
            raise ValueError("X holds no calibration token: SparseGPT cannot score this weight (N = 0)")
        H = hessian(X)
    elif tuple(H.shape) != (cols, cols):
        raise ValueError(f"H must be [{cols}, {cols}], got {tuple(H.shape)}")
    if block_size < 1 or (nm is not None and block_size % nm[1]):
        raise ValueError(f"block_size={block_size} must be a positive multiple of M for pattern={pattern!r}")
    if damp < 0:
        raise ValueError(f"damp={damp} must be >= 0 (relative damping, paper: 0.01)")
    if nm is not None and cols % nm[1]:
        raise ValueError(f"pattern={pattern!r} needs the input dimension ({cols}) to be a multiple of M")

    H = H.to(device=W.device, dtype=torch.float64 if W.dtype == torch.float64 else torch.float32).clone()
    mean_diag = H.diagonal().mean()
    if mean_diag <= 0:
        H = torch.eye(cols, device=W.device, dtype=H.dtype)
    else:
        H.diagonal().add_(damp * mean_diag)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)  # [in, in]
    Wf = W.detach().to(H.dtype).clone()
    keep = torch.ones(rows, cols, dtype=torch.bool, device=W.device)

    for i in range(0, cols, block_size):
        i2 = min(i + block_size, cols)
        W1, U1 = Wf[:, i:i2], U[i:i2, i:i2]  # [out, B], [B, B]; W1 is a view into Wf
        d = U1.diagonal()  # [B]
        K1 = keep[:, i:i2]
        if nm is None:
            K1.copy_(lowest_mask(W1**2 / d**2, sparsity, "matrix"))
        Err = torch.zeros_like(W1)
        for j in range(i2 - i):
            if nm is not None and j % nm[1] == 0:
                g = slice(j, j + nm[1])
                K1[:, g] = n_m_mask(W1[:, g] ** 2 / d[g] ** 2, *nm)
            err = W1[:, j] * (~K1[:, j]) / d[j]  # [out], zero for kept weights
            W1[:, j:] -= err[:, None] * U1[j, j:][None, :]
            Err[:, j] = err
        if i2 < cols:
            Wf[:, i2:] -= Err @ U[i:i2, i2:]
    Wf.masked_fill_(~keep, 0.0)
    return Wf.to(W.dtype), keep


# ---- the model -----------------------------------------------------------------------------------------


def _statistic(method: str, X: torch.Tensor) -> torch.Tensor | None:
    """What a method keeps of X [N, in]: Wanda the column norms [in], SparseGPT X^T X [in, in]."""
    if method == "wanda":
        return X.norm(dim=0)
    if method == "sparsegpt":
        return hessian(X)
    return None


@torch.no_grad()
def prune_experts(
    model,
    batches: Iterable[dict] | None,
    method: str,
    sparsity: float | None = None,
    pattern: str = "unstructured",
    unrouted: str = "magnitude",
    *,
    layers: Iterable[int] | None = None,
    layers_per_pass: int | None = None,
    block_size: int = 128,
    damp: float = 0.01,
) -> dict:
    """Prune the experts' linear weights of a LlamaMoE in place (Expert Slimming, 2406.02500).

    Statistics come from one-shot calibration passes of the unpruned model (every layer's inputs from the
    parent); each routed expert only sees its routed tokens, the shared experts every token.

    Args:
        model: a ``LlamaMoEForCausalLM``.
        batches: calibration batches (dicts with ``input_ids`` [B, T], optional ``attention_mask``); re-read
            once per pass. May be None for "magnitude" (no data needed; tokens are then reported as None).
        method: "magnitude", "wanda" or "sparsegpt".
        sparsity: fraction in [0, 1) for pattern "unstructured"; must be None for N:M.
        pattern: "unstructured", "2:4", "4:8" (any "N:M" with N <= M is accepted).
        unrouted: for an expert no calibration token reaches (N_e = 0), which Wanda and SparseGPT cannot
            score: "magnitude" (default: prune it by magnitude with the same pattern) or "skip" (leave dense).
        layers: MoE layer indices to prune (default: all). layers_per_pass: layers captured per calibration
            pass (default: all in one pass; smaller bounds memory, statistics are reduced after each pass).
        block_size, damp: SparseGPT's (paper: 128, 0.01).
    Memory: the reduced statistics of every pruned layer are held until pruning starts (one-shot): Wanda
    [in] per linear, SparseGPT X^T X per expert ([H, H] shared by gate/up, [I_e, I_e] for down), i.e.
    4 * layers * experts * (H^2 + I_e^2) bytes (~0.35 GB for 30 layers x 8 experts, H = 576, I_e = 192;
    far more at Mixtral's size, where a sequential layer-by-layer variant would be needed).
    Returns:
        {"method", "pattern", "sparsity", "unrouted", "sparsity_achieved": fraction of zeros over all pruned
        experts' weights, "weights": their count, "layers": [{"layer", "unrouted": [expert ids with N_e = 0],
        "experts": [{"expert", "tokens": N_e, "scored_by": method | "magnitude" | "dense", "sparsity"}],
        "shared": same dict for the shared experts or None}]}; "sparsity" = zeros / weights over the
        expert's three matrices.
    Raises: ValueError naming the parameter: unknown method / unrouted, bad sparsity / pattern, batches None
        for a calibrated method, or a layer without an MoE FFN.
    """
    if method not in PRUNE_METHODS:
        raise ValueError(f"method={method!r} must be one of {PRUNE_METHODS}")
    if unrouted not in UNROUTED_OPTIONS:
        raise ValueError(f"unrouted={unrouted!r} must be one of {UNROUTED_OPTIONS}")
    parse_pattern(pattern, sparsity)
    blocks = moe_blocks(model)
    wanted = sorted(blocks) if layers is None else sorted(set(layers))
    missing = [i for i in wanted if i not in blocks]
    if missing:
        raise ValueError(f"layers={missing} have no MoE FFN (MoE layers: {sorted(blocks)})")
    if batches is None and method != "magnitude":
        raise ValueError(f"batches=None: method={method!r} needs calibration batches")

    # 1. one-shot statistics on the unpruned model: (layer, expert) -> {name: (weight view, N, statistic)}
    stats: dict[tuple, dict] = {}
    if batches is None:
        for i in wanted:
            for expert, name, weight in expert_weights(blocks[i]):
                stats.setdefault((i, expert), {})[name] = (weight, None, None)
    else:
        batches = list(batches)
        step = len(wanted) if layers_per_pass is None else max(1, int(layers_per_pass))
        for start in range(0, len(wanted), step):
            chunk = wanted[start : start + step]
            routed = routed_inputs(model, batches, layers=chunk)
            for i in chunk:
                last_x, last_stat = None, None
                for lin in expert_linears(blocks[i], routed[i], i):
                    n = lin.inputs.shape[0]
                    if lin.inputs is not last_x:  # gate and up share x_e: reduce it once
                        last_x, last_stat = lin.inputs, _statistic(method, lin.inputs) if n else None
                    stats.setdefault((i, lin.expert), {})[lin.name] = (lin.weight, n, last_stat)
            del routed

    # 2. prune
    report = {"method": method, "pattern": pattern, "sparsity": sparsity, "unrouted": unrouted, "layers": []}
    zeros = total = 0
    for i in wanted:
        entry = {"layer": i, "unrouted": [], "experts": [], "shared": None}
        for (layer, expert), maps in stats.items():
            if layer != i:
                continue
            tokens = next(iter(maps.values()))[1]
            scored_by = method
            if tokens == 0:
                entry["unrouted"].append(expert)
                if method != "magnitude":
                    scored_by = "dense" if unrouted == "skip" else "magnitude"
            z = t = 0
            for weight, _, stat in maps.values():
                if scored_by != "dense":
                    _prune_one(weight, stat, scored_by, sparsity, pattern, block_size, damp)
                z, t = z + int((weight == 0).sum()), t + weight.numel()
            item = {"expert": expert, "tokens": tokens, "scored_by": scored_by, "sparsity": z / t}
            if expert == "shared":
                entry["shared"] = item
            else:
                entry["experts"].append(item)
            zeros, total = zeros + z, total + t
        report["layers"].append(entry)
    report["sparsity_achieved"] = zeros / total if total else 0.0
    report["weights"] = total
    return report


def _prune_one(weight, stat, method, sparsity, pattern, block_size, damp) -> None:
    """Prune one [out, in] weight view in place with a reduced statistic (norms [in] or H [in, in])."""
    if method == "magnitude":
        keep = magnitude_mask(weight, sparsity, pattern)
    elif method == "wanda":
        keep = _mask(weight.float().abs() * stat[None, :], sparsity, pattern, "row")
    else:
        new, _ = sparsegpt_prune(
            weight, H=stat, sparsity=sparsity, pattern=pattern, block_size=block_size, damp=damp
        )
        weight.copy_(new)
        return
    weight.masked_fill_(~keep, 0)
