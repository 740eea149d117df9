"""Expert-construction ablation, one method (rules construct_method, construct_cpt, construct_eval)."""

from pathlib import Path

from moelab.construct import construct_moe, save_partition
from moelab.data import read_jsonl
from moelab.evaluate import run_lm_eval
from moelab.io import count_parameters, load_model, save_model
from moelab.provenance import Provenance, write_json
from moelab.runtime import resolve_device, setup
from moelab.train.pretrain import run_pretrain

sm = snakemake  # noqa: F821
log = setup(sm.log[0], sm.threads, sm.params.seed)
method = sm.wildcards.method


def construct():
    c, a = sm.params.construct, sm.params.ablation
    prov = Provenance(
        config={"construct": c, "construct_ablation": a}, inputs=[sm.input.dense], seed=sm.params.seed
    )
    dense, tokenizer = load_model(sm.input.dense)
    texts = {Path(p).stem: [r["text"] for r in read_jsonl(p)] for p in sm.input.data}
    out = construct_moe(
        dense,
        tokenizer,
        method,
        num_experts=c["num_experts"],
        top_k=c["top_k"],
        seed=sm.params.seed,
        texts=texts,
        calib_tokens=a["calib_tokens"],
        calib_seq_len=a["calib_seq_len"],
        router_init=a["router_init"],
        num_shared_experts=a["num_shared_experts"],
        remainder=a["remainder"],
        router_type=c.get("router_type", "noisy_topk"),
        gate_network=c.get("gate_network", "mlp"),
        balance_loss_weight=c.get("balance_loss_weight", 0.01),
        score_scale_factor=c.get("score_scale_factor"),
    )
    stats = {
        **out.stats,
        "parameters": {"dense": count_parameters(dense), "moe": count_parameters(out.model)},
    }
    save_model(out.model, tokenizer, Path(sm.output.model))
    save_partition(out.partition, sm.output.partition, {"method": method, "seed": sm.params.seed})
    write_json(sm.output.stats, stats)
    for path in (sm.output.model, sm.output.partition, sm.output.stats):
        prov.write(path, extra={"timing_s": stats["timing_s"]})
    log.info("%s: %s", method, stats["timing_s"])


def cpt():
    prov = Provenance(config=sm.params.train, inputs=[sm.input.model, *sm.input.data], seed=sm.params.seed)
    summary = run_pretrain(
        Path(sm.input.model),
        {Path(p).stem: Path(p) for p in sm.input.data},
        sm.params.train,
        Path(sm.output.model),
        Path(sm.output.log_csv),
        Path(sm.params.ckpt_dir),
        sm.params.seed,
        resolve_device(sm.params.device),
        sm.params.dtype,
    )
    write_json(sm.output.summary, summary)
    for path in (sm.output.model, sm.output.log_csv, sm.output.summary):
        prov.write(path, extra=summary)
    log.info("%s CPT: %s", method, summary)


def evaluate():
    cfg = sm.params.evaluate
    prov = Provenance(config=cfg, inputs=[sm.input.model], seed=sm.params.seed)
    result = run_lm_eval(
        Path(sm.input.model),
        cfg["tasks"],
        Path(sm.input.data[0]).parent,
        limit=sm.params.limit,
        num_fewshot=cfg.get("num_fewshot", 0),
        batch_size=cfg.get("batch_size", 16),
        device=resolve_device(sm.params.device),
        dtype=sm.params.dtype,
        seed=sm.params.seed,
    )
    result["method"] = method
    write_json(sm.output[0], result)
    prov.write(sm.output[0])
    log.info("%s: average %s", method, result["average"])


{"construct_method": construct, "construct_cpt": cpt, "construct_eval": evaluate}[sm.rule]()
