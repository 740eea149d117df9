"""Batch-1 speed, memory, size and FLOPs of one compression recipe's model beside its parent (rule compress_speed)."""

from moelab.compress.footprint import RecipeFootprint
from moelab.evaluate.compress_speed import measure_recipe
from moelab.provenance import Provenance, write_json
from moelab.runtime import resolve_device, setup

sm = snakemake  # noqa: F821
cfg, steps = sm.params.speed, sm.params.steps
log = setup(sm.log[0], sm.threads, sm.params.seed)
prov = Provenance(
    config={**cfg, "steps": steps}, inputs=[sm.input.parent, sm.input.model], seed=sm.params.seed
)
record = measure_recipe(
    sm.input.parent,
    sm.input.model,
    cfg["prompt_lens"],
    repeats=cfg["repeats"],
    warmup=cfg["warmup"],
    seed=sm.params.seed,
    device=resolve_device(sm.params.device),
    dtype=sm.params.dtype,
    interleave=cfg["interleave"],
    log=log,
    footprint=RecipeFootprint(steps, sm.params.dtype),
)
record = {"recipe": sm.wildcards.recipe, "steps": steps, **record}
log.info("recipe %s: %s (%s)", sm.wildcards.recipe, record["summary"], record["kernels"])
write_json(sm.output[0], record)
prov.write(sm.output[0], extra={"summary": record["summary"], "machine": record["machine"]})
