"""Construction ablations, one run (rules construct_method, construct_eval; construct_cpt: scripts/train.py)."""

from pathlib import Path

from moelab.construct import construct_variant, save_partition
from moelab.data import read_jsonl
from moelab.evaluate import run_lm_eval
from moelab.io import count_parameters, load_model, save_model
from moelab.provenance import Provenance, write_json
from moelab.runtime import resolve_device, setup

sm = snakemake  # noqa: F821
log = setup(sm.log[0], sm.threads, sm.params.seed)
run = sm.wildcards.run


def construct():
    c, a, spec = sm.params.construct, sm.params.ablation, sm.params.spec
    prov = Provenance(
        config={"construct": c, "construct_ablation": a, "spec": spec},
        inputs=[sm.input.dense],
        seed=sm.params.seed,
    )
    dense, tokenizer = load_model(sm.input.dense)
    texts = {Path(p).stem: [r["text"] for r in read_jsonl(p)] for p in sm.input.data}
    out = construct_variant(
        dense,
        tokenizer,
        spec,
        seed=sm.params.seed,
        texts=texts,
        calib_tokens=a["calib_tokens"],
        calib_seq_len=a["calib_seq_len"],
        remainder=a["remainder"],
        router_type=c.get("router_type", "noisy_topk"),
        gate_network=c.get("gate_network", "mlp"),
        balance_loss_weight=c.get("balance_loss_weight", 0.01),
        score_scale_factor=c.get("score_scale_factor"),
    )
    stats = {
        **out.stats,
        "spec": spec,
        "parameters": {"dense": count_parameters(dense), "moe": count_parameters(out.model)},
    }
    save_model(out.model, tokenizer, Path(sm.output.model))
    save_partition(out.partition, sm.output.partition, {"run": run, "seed": sm.params.seed})
    write_json(sm.output.stats, stats)
    for path in (sm.output.model, sm.output.partition, sm.output.stats):
        prov.write(path, extra={"timing_s": stats["timing_s"]})
    log.info("%s: %s", run, stats["timing_s"])


def evaluate():
    p = sm.params
    prov = Provenance(config={"tasks": p.tasks, "limit": p.limit}, inputs=[sm.input.model], seed=p.seed)
    result = run_lm_eval(
        Path(sm.input.model),
        p.tasks,
        Path(sm.input.data[0]).parent,
        limit=p.limit,
        num_fewshot=0,
        batch_size=p.batch_size,
        device=resolve_device(p.device),
        dtype=p.dtype,
        seed=p.seed,
    )
    result.update(run=run, phase=sm.wildcards.phase)
    write_json(sm.output[0], result)
    prov.write(sm.output[0])
    log.info("%s after %s: average %s", run, sm.wildcards.phase, result["average"])


{"construct_method": construct, "construct_eval": evaluate}[sm.rule]()
