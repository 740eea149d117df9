"""Recovery fine-tuning after compression: LoRA adapters, a few optimizer steps of causal-LM loss, merged back.

Source: LoRA, Hu et al. 2021 (arXiv 2106.09685): a frozen weight W [out, in] gets a trainable low-rank update,
    W' = W + (alpha / r) * B A,   A [r, in] random, B [out, r] zero (so W' = W at step 0), eq. (3) / sec. 4.1;
after training, B A is added into W (no extra inference cost, sec. 4.1). The MoE compression paper (arXiv
2406.02500) fine-tunes its compressed Mixtral with LoRA (r = 32, Alpaca-GPT4, 3 epochs) and reports that part of
the loss is recovered; here the text is the calibration domain's (``compress.recovery_domain``) and the amounts
are demo-sized step parameters.

What is adapted (``target_modules``, names of ``moelab.compress.recipe.LORA_TARGETS``), all through peft
(``peft.LoraConfig`` + ``get_peft_model``, merged with ``merge_and_unload``):
    nn.Linear modules named q_proj / k_proj / v_proj / o_proj / gate_proj / up_proj / down_proj (attention, the
        shared experts, dense FFNs): peft's LoRA layers (``target_modules``; dropout on the adapter input).
    The routed experts of ``LlamaMoEExperts`` (gate_proj / up_proj / down_proj): not nn.Linear but one
        concatenated parameter per map (gate/up [I_tot, H], down [H, I_tot]; ``moelab.models.experts``), so
        they are peft parameter targets (``target_parameters``): W += (alpha/r) B A with B [out, r], A [r, in]
        over the whole concatenated weight. Deviation from a per-expert adapter: the experts share A
        (gate/up) or B (down) and each owns its rows (columns) of the other factor, so the update of the
        layer has rank r in total, not r per expert. peft's parameter adapters take no dropout, so
        ``dropout`` > 0 with routed-expert targets is refused.
    "router": the nn.Linear maps inside every module named ``router``; only when asked (routing is the MoE's
        structure, and the default recovery leaves it as compression left it).
Everything else (embeddings, lm_head, norms, routers by default) is frozen and comes back bitwise unchanged.

Compressed structure is kept:
    pruned weights: every exact zero of a target weight is treated as pruned and written back to zero after the
        merge (a LoRA update B A is dense and cannot be masked per weight inside peft): deviation, the adapters
        train with the update at pruned positions, which the merge then drops; the held-out loss after
        recovery is measured on that final, masked model, so the report shows what the saved model does.
    quantised weights: the expert weights hold fake-quantised values; a merged update would leave the b-bit
        grid, so ``moelab.compress.recipe.check_order`` refuses expert targets after a quantisation step
        (recover first, then quantise: the paper-sensible order; or adapt attention only).
    dropped blocks / layers / experts: LoRA only adapts what is left; the config and shapes do not change.

Training: AdamW (weight decay 0), constant lr, gradient norm clipped to 1.0, mean token cross-entropy (nats) of
next-token prediction, no balance loss (the routers are frozen). The model runs in eval mode (no router noise,
no capacity dropping: the routing the compressed model is served with); only the adapters' dropout is on.
Same seed, same adapters, batches and dropout masks (CPU), hence the same merged weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from moelab.compress.recipe import LORA_DEFAULTS, LORA_EXPERT

DEFAULTS = LORA_DEFAULTS
GRAD_CLIP = 1.0


def pack_recovery(documents: list[torch.Tensor], seq_len: int, heldout: int, seed: int):
    """Recovery documents -> (held-out blocks [heldout, T], training blocks [n, T]), disjoint, seeded.

    Args:
        documents: token ids per document (1-D LongTensors, EOS last;
            ``moelab.data.calibration.calibration_and_recovery``), joined in order and cut into T-token blocks.
        seq_len: T. heldout: blocks held out for the loss before / after. seed: the draw (one randperm).
    Raises: ValueError if the documents give fewer than heldout + 1 blocks (names the sizes).
    """
    stream = torch.cat(documents) if documents else torch.zeros(0, dtype=torch.long)
    n = len(stream) // seq_len
    if n < heldout + 1:
        raise ValueError(
            f"lora_recovery: the recovery text ({len(documents)} documents, {len(stream)} tokens) gives {n} blocks "
            f"of seq_len={seq_len}, fewer than heldout_sequences={heldout} + 1 training block; lower seq_len or "
            f"heldout_sequences, or give more recovery text (compress.recovery_domain, data.pretrain_max_chars)"
        )
    blocks = stream[: n * seq_len].view(n, seq_len)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return blocks[order[:heldout]], blocks[order[heldout:]]


def lm_loss(model, ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy (nats) of ``ids`` [B, T] and the number of predicted tokens B (T - 1)."""
    logits = model(input_ids=ids, use_cache=False).logits[:, :-1]
    target = ids[:, 1:]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1), reduction="sum")
    return loss, target.numel()


@torch.no_grad()
def heldout_loss(model, blocks: torch.Tensor, batch_size: int) -> float:
    """Mean next-token cross-entropy (nats per token) of ``model`` in eval mode on ``blocks`` [n, T]."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    for ids in blocks.split(batch_size):
        loss, n = lm_loss(model, ids.to(model.device))
        total, count = total + loss.item(), count + n
    model.train(was)
    return total / count


def find_targets(model, target_modules) -> tuple[dict[str, list[str]], dict[str, list[tuple]]]:
    """The modules ``target_modules`` name in ``model``.

    Returns: ({target name: full names of the nn.Linear modules it adapts}, {target name: [(experts module
        name, LlamaMoEExperts, parameter name)]} for the routed experts' concatenated weights).
    Raises: ValueError naming ``target_modules`` if a name matches nothing in the model.
    """
    from moelab.models.experts import LlamaMoEExperts

    linear = {t: [] for t in target_modules}
    fused = {t: [] for t in target_modules}
    routers = [n for n, m in model.named_modules() if n.rsplit(".", 1)[-1] == "router"]
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        in_router = any(name.startswith(r + ".") for r in routers)
        if isinstance(module, nn.Linear):
            if in_router:
                if "router" in linear:
                    linear["router"].append(name)
            elif leaf in linear:
                linear[leaf].append(name)
        if isinstance(module, LlamaMoEExperts):
            for p in LORA_EXPERT:
                if p in fused:
                    fused[p].append((name, module, p))
    missing = [t for t in target_modules if not linear[t] and not fused[t]]
    if missing:
        raise ValueError(
            f"lora_recovery: target_modules {missing} match no module of {type(model).__name__} "
            f"(remove them from target_modules)"
        )
    return linear, fused


def lora_recovery(
    model,
    batches,
    recovery: list[torch.Tensor] | None = None,
    *,
    steps: int = DEFAULTS["steps"],
    lr: float = DEFAULTS["lr"],
    r: int = DEFAULTS["r"],
    alpha: float = DEFAULTS["alpha"],
    dropout: float = DEFAULTS["dropout"],
    batch_size: int = DEFAULTS["batch_size"],
    seq_len: int = DEFAULTS["seq_len"],
    heldout_sequences: int = DEFAULTS["heldout_sequences"],
    target_modules=tuple(LORA_DEFAULTS["target_modules"]),
    seed: int = DEFAULTS["seed"],
) -> dict:
    """LoRA recovery fine-tuning of a compressed model, in place: train adapters, merge them, keep the zeros.

    Args:
        model: a causal LM (``LlamaMoEForCausalLM`` or any HF decoder with nn.Linear projections).
        batches: the calibration batches (unused: recovery trains on ``recovery``, which shares no token with
            them: ``moelab.data.calibration.calibration_and_recovery``; the registry signature).
        recovery: recovery text, token ids per document (1-D LongTensors, EOS last). Cut into ``seq_len``
            blocks; ``heldout_sequences`` of them (seeded) are held out, the others are the training blocks,
            cycled in a seeded order if ``steps * batch_size`` exceeds them (``epochs`` in the report).
        steps: optimizer steps. lr: AdamW learning rate (constant). r, alpha: LoRA rank and scale (alpha / r).
        dropout: peft's dropout on the nn.Linear adapters' input; must be 0 when routed experts are targets
            (peft's parameter adapters take none, see module docstring).
        batch_size: sequences per step. seq_len: tokens per sequence T.
        target_modules: names of ``moelab.compress.recipe.LORA_TARGETS`` (default: attention and experts).
        seed: adapter initialisation, block draw, dropout masks (the global RNG is restored afterwards).
    Returns:
        {"targets": {name: modules adapted}, "trainable_params", "steps", "train_blocks", "heldout_blocks",
         "tokens" (trained), "epochs", "train_loss" (per step, nats), "loss_before" / "loss_after" (held-out,
         nats per token, before recovery and on the merged model), "pruned_zeros_kept"}.
    Raises:
        ValueError: no recovery text, too little of it (:func:`pack_recovery`), a target that matches nothing
            in the model (:func:`find_targets`), or ``dropout`` > 0 with routed-expert targets; all before any
            weight changes.
    """
    if recovery is None:
        raise ValueError(
            "lora_recovery needs recovery text: run_recipe(..., recovery=<token ids per document>)"
        )
    import peft

    linear, fused = find_targets(model, list(target_modules))
    linear_names = [n for names in linear.values() for n in names]
    param_names = [f"{name}.{pname}" for group in fused.values() for name, _, pname in group]
    if dropout and param_names:
        raise ValueError(
            f"lora_recovery: dropout={dropout} with routed-expert targets "
            f"{sorted(t for t in target_modules if fused[t])}: peft's LoRA on a parameter (target_parameters) "
            f"takes no dropout; set dropout to 0, or target_modules to attention projections only"
        )
    heldout, train = pack_recovery(recovery, seq_len, heldout_sequences, seed)
    device = model.device
    loss_before = heldout_loss(model, heldout, batch_size)
    requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    modules = dict(model.named_modules())
    # the zeros of every target weight count as pruned: (module, parameter name) -> mask of zeros
    weights = [(modules[n], "weight") for n in linear_names] + [
        (experts, pname) for group in fused.values() for _, experts, pname in group
    ]
    zeros = {}
    for module, pname in weights:
        mask = getattr(module, pname) == 0
        if mask.any():
            zeros[(module, pname)] = mask
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)  # peft draws lora_A (kaiming-uniform) from the global RNG; lora_B starts at 0
        config = peft.LoraConfig(
            r=r,
            lora_alpha=alpha,
            lora_dropout=dropout,
            target_modules=linear_names,
            target_parameters=param_names or None,
            bias="none",
        )
        lora = peft.get_peft_model(model, config)  # freezes everything but the adapters
        params = [p for n, p in lora.named_parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        model.eval()
        for name, module in lora.named_modules():
            if "lora_dropout" in name and isinstance(module, nn.Dropout):
                module.train()
        train_loss, merge = [], False
        try:
            for step in range(steps):
                pick = torch.arange(step * batch_size, (step + 1) * batch_size) % len(train)
                loss, n = lm_loss(lora, train[pick].to(device))
                loss = loss / n
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
                opt.step()
                train_loss.append(round(loss.item(), 4))
            merge = True
        finally:  # merge after training; on an error, drop the adapters and leave the model as it came
            with torch.no_grad():
                lora.merge_and_unload() if merge else lora.unload()
                for (module, pname), mask in zeros.items():
                    getattr(module, pname)[mask] = 0
            for n, p in model.named_parameters():
                p.requires_grad_(requires_grad.get(n, True))
            model.eval()
    return {
        "targets": {t: len(linear[t]) + len(fused[t]) for t in target_modules},
        "trainable_params": sum(p.numel() for p in params),
        "steps": steps,
        "train_blocks": len(train),
        "heldout_blocks": len(heldout),
        "tokens": steps * batch_size * seq_len,
        "epochs": round(steps * batch_size / len(train), 3),
        "train_loss": train_loss,
        "loss_before": round(loss_before, 4),
        "loss_after": round(heldout_loss(model, heldout, batch_size), 4),
        "pruned_zeros_kept": int(sum(m.sum().item() for m in zeros.values())),
    }
