"""Registry of every paper's tables and figures: what each shows, which of our runs fill it.

:data:`OUTPUTS` (paper -> output name -> :class:`Output`) lists every file under ``results/papers/<paper>/``
that a rule produces (``tests/test_report_papers.py`` checks each has one). :data:`PENDING` lists the
figures and tables of the papers that no stage of the pipeline can draw yet; they appear in each paper's
``index.md`` as "not reproduced yet" (we never draw placeholder figures: a figure exists only when the data it
plots exist).

Our runs are named by source keys ``stage/paper`` = ``results/eval/{stage}/{paper}.json``. Keys whose stage
the workflow does not have yet (e.g. ``sft_dynamic/moe_sft``) show ``not reproduced yet`` until a rule
produces them; the stage names are the contract for the helpers that add those stages.
"""

from __future__ import annotations

from dataclasses import dataclass

from moelab.report.paper_table import Claim, Column, Row, TableSpec

PAPERS = (
    "llama_moe",
    "llama_moe_v2",
    "moe_sft",
    "moe_compression",
    "sparse_adapter",
    "idat",
    "pad_net",
    "graphs_gpt",
)


@dataclass(frozen=True)
class Output:
    """One table (CSV + Markdown) or figure (PNG + PDF) under ``results/papers/<paper>/``.

    ``rule`` is the Snakemake rule producing it (default ``<paper>_<name>``); ``in_all`` False keeps an
    expensive output (the construction ablations) out of ``rule all`` / ``papers``, ``target`` is then the rule
    that builds it; ``caption`` is the file under ``report/`` (default ``<paper>_<name>.rst``).
    """

    kind: str  # "table" | "figure"
    title: str
    rule: str = ""
    in_all: bool = True
    spec: TableSpec | None = None
    target: str = ""
    caption: str = ""

    @property
    def extensions(self) -> tuple[str, str]:
        return ("csv", "md") if self.kind == "table" else ("png", "pdf")


def _tasks(*names, unit="%") -> tuple[Column, ...]:
    return tuple(Column(n, unit=unit) for n in names)


AVG = Column("average", kind="average")
AVG_COMMON = Column("avg_common", kind="avg_common", label="avg (common)")

# ---- LLaMA-MoE (arXiv 2406.16554) -----------------------------------------------------------------------
LLAMA_MOE_TASKS = (
    "sciq", "piqa", "winogrande", "arc_easy", "arc_challenge", "hellaswag",
    "logiqa", "boolq", "lambada", "nq_open", "mmlu",
)  # fmt: skip
LM_DENSE, LM_MOE, LM_CPT = "ours: dense start model", "ours: MoE as constructed", "ours: MoE after CPT"
LLAMA_MOE_MAIN = TableSpec(
    paper="llama_moe",
    name="table_main",
    title="LLaMA-MoE main table (official README): published vs ours",
    published_table="main",
    columns=(*_tasks(*LLAMA_MOE_TASKS), AVG, AVG_COMMON),
    rows=(
        Row("Sheared-LLaMA-2.7B", published="Sheared-LLaMA-2.7B"),
        Row("Open-LLaMA-3B-v2", published="Open-LLaMA-3B-v2"),
        Row("LLaMA-MoE-3.0B (2/16)", published="LLaMA-MoE-3.0B (2/16)"),
        Row("LLaMA-MoE-3.5B (4/16)", published="LLaMA-MoE-3.5B (4/16)"),
        Row(LM_DENSE, ours="dense/llama_moe"),
        Row(LM_MOE, ours="moe/llama_moe"),
        Row(LM_CPT, published="LLaMA-MoE-3.5B (2/8)", ours="pretrain/llama_moe"),
    ),
    claims=(
        Claim("continual pre-training recovers what the FFN split cost (LLaMA-MoE sec. 4).", LM_CPT, LM_MOE),
        Claim(
            "after 200B tokens of CPT the MoE (2/8, avg 57.6) beats dense models of similar activated size "
            "(Sheared-LLaMA-2.7B 56.4); at our scale we compare with the dense model it was built from.",
            LM_CPT,
            LM_DENSE,
        ),
    ),
)
LM_SFT_BEFORE, LM_SFT = "ours: MoE after CPT (before SFT)", "ours: MoE after CPT + SFT"
LLAMA_MOE_SFT = TableSpec(
    paper="llama_moe",
    name="table_sft",
    title="LLaMA-MoE instruction tuning (Deita-6K; official README): published vs ours",
    published_table="sft",
    columns=(
        *_tasks("mmlu", "arc_challenge", "hellaswag", "truthfulqa"),
        Column("mt_bench", kind="published", unit="score", label="MT-Bench"),
        AVG_COMMON,
    ),
    rows=(
        Row("Sheared-LLaMA-2.7B + Deita-6K", published="Sheared-LLaMA-2.7B + Deita-6K"),
        Row("LLaMA-MoE-3.5B (4/16) + Deita-6K", published="LLaMA-MoE-3.5B (4/16) + Deita-6K"),
        Row(LM_SFT_BEFORE, ours="sft_base/moe_sft"),
        Row(LM_SFT, published="LLaMA-MoE-3.5B (2/8) + Deita-6K", ours="sft/moe_sft"),
    ),
    claims=(
        Claim(
            "the instruction-tuned LLaMA-MoE beats the instruction-tuned dense Sheared-LLaMA-2.7B; with no "
            "dense SFT run here we check that SFT improves the CPT model.",
            LM_SFT,
            LM_SFT_BEFORE,
        ),
    ),
)
_LAYOUT = "Published numbers unverified: the paper's layout is mirrored with empty cells."
LLAMA_MOE_SAMPLING = TableSpec(
    paper="llama_moe",
    name="table_sampling",
    title="LLaMA-MoE ablation: domain sampling strategies during CPT",
    published_table="sampling",
    columns=(
        Column("loss", kind="extra", unit="nats", label="loss after N tokens", higher_is_better=False),
        Column("average", kind="eval_average", label="downstream average"),
    ),
    rows=(
        Row("uniform", published="uniform", ours="pretrain_uniform/llama_moe"),
        Row("static LLaMA mix", published="static LLaMA mix", ours="pretrain_llama_mix/llama_moe"),
        Row(
            "ours: static Sheared-LLaMA mix", published="static Sheared-LLaMA mix", ours="pretrain/llama_moe"
        ),
        Row(
            "dynamic (Sheared-LLaMA)", published="dynamic (Sheared-LLaMA)", ours="pretrain_dynamic/llama_moe"
        ),
    ),
    claims=(
        Claim(
            "static Sheared-LLaMA weights converge faster than dynamic sampling.",
            "ours: static Sheared-LLaMA mix",
            "dynamic (Sheared-LLaMA)",
        ),
    ),
    notes=(_LAYOUT, "Our main CPT run uses config pretrain.domain_weights (default: the Sheared-LLaMA mix)."),
)
LLAMA_MOE_FILTERING = TableSpec(
    paper="llama_moe",
    name="table_filtering",
    title="LLaMA-MoE ablation: data filtering during CPT",
    published_table="filtering",
    columns=LLAMA_MOE_SAMPLING.columns,
    rows=(
        Row("ours: no filtering", published="no filtering", ours="pretrain/llama_moe"),
        Row("advertisement removal", published="advertisement removal", ours="pretrain_adfilter/llama_moe"),
        Row("fluency filtering", published="fluency filtering", ours="pretrain_fluency/llama_moe"),
    ),
    claims=(Claim("fluency filtering helps CPT.", "fluency filtering", "ours: no filtering"),),
    notes=(_LAYOUT, "Our CPT data are not filtered."),
)

# ---- LLaMA-MoE v2 (arXiv 2411.15708) --------------------------------------------------------------------
V2_TASKS = (
    "mmlu", "gsm8k", "humaneval", "ifeval", "boolq", "sciq", "piqa", "arc_challenge", "truthfulqa", "hellaswag",
)  # fmt: skip
V2_DENSE, V2_OURS = "ours: instructed dense start model", "ours: MLP-MoE of this run + SFT"
LLAMA_MOE_V2_MAIN = TableSpec(
    paper="llama_moe_v2",
    name="table_main",
    title="LLaMA-MoE v2 main table (official README): published vs ours",
    published_table="main",
    columns=(*_tasks(*V2_TASKS), AVG_COMMON),
    rows=(
        Row(V2_DENSE, published="Llama-3-8B-Instruct", ours="dense/llama_moe_v2"),
        Row(
            "ours: MLP-MoE 8top2, two-stage post-training",
            published="MLP-MoE 8top2 (7B tok)",
            ours="v2_post/llama_moe_v2",
        ),
        Row("MLP-MoE 8top2 (8.4B tok)", published="MLP-MoE 8top2 (8.4B tok)"),
        Row(
            "ours: MLP-MoE 1+7top1, two-stage post-training",
            published="MLP-MoE 1+7top1 (7B tok)",
            ours="v2_shared/llama_moe_v2",
        ),
        Row("SmolLM2-1.7B", published="SmolLM2-1.7B"),
        Row(V2_OURS, ours="sft/llama_moe_v2"),
    ),
    claims=(
        Claim(
            "post-training recovers much of the instructed model's ability, but the MoE stays below it "
            "(Llama-3-8B-Instruct 67.2 vs 40.6 MMLU).",
            V2_DENSE,
            V2_OURS,
        ),
    ),
    notes=(
        "'ours: MLP-MoE of this run' is the main pipeline's model: with config.yaml an Independent-Random "
        "MLP MoE of the instructed SmolLM2 start model after CPT and one SFT stage; with config/paper_v2.yaml "
        "v2's 8top2 vanilla split of Llama-3-8B-Instruct post-trained right after construction (one SFT run "
        "over the two stages' data), with config/paper_v2_1s7.yaml added its 1+7top1 model.",
    ),
)

# ---- MoE-SFT dynamic data mixing (arXiv 2406.11256) -----------------------------------------------------
MOE_SFT_GROUPS = (
    Column("mmlu"),
    Column("bbh"),
    Column("gsm8k"),
    Column("qa", tasks=("arc_easy", "arc_challenge", "boolq"), label="QA"),
    Column("mbpp"),
)
SFT_UNIFORM, SFT_BEFORE = "ours: uniform", "ours: before SFT (CPT model)"
_STRATEGIES = {
    "static (proportional to size)": "sft_static_size",
    "static (gate-load weights)": "sft_static_gate",
    "dynamic (gate-load redundancy)": "sft_dynamic",
    "dynamic final weights, static": "sft_dynamic_final",
    "random weights per round": "sft_random",
    "sequential (cycle)": "sft_sequential",
    "reference loss (DoReMi-like)": "sft_refloss",
    "inverse redundancy": "sft_inverse",
}
MOE_SFT_MAIN = TableSpec(
    paper="moe_sft",
    name="table_main",
    title="MoE-SFT main table (dynamic data mixing for MoE instruction tuning): published vs ours",
    published_table="main",
    columns=(
        *MOE_SFT_GROUPS,
        AVG,
        Column("mt_bench", kind="published", unit="score", label="MT-Bench"),
        AVG_COMMON,
    ),
    rows=(
        Row(SFT_UNIFORM, published="uniform", ours="sft/moe_sft"),
        *(Row(s, published=s, ours=f"{stage}/moe_sft") for s, stage in _STRATEGIES.items()),
        Row(SFT_BEFORE, ours="sft_base/moe_sft"),
    ),
    claims=(
        Claim(
            "re-weighting the data sets by gate-load redundancy beats the uniform mix at equal budget.",
            "dynamic (gate-load redundancy)",
            SFT_UNIFORM,
        ),
        Claim(
            "(sanity check, not a paper claim) SFT improves the model it starts from.",
            SFT_UNIFORM,
            SFT_BEFORE,
        ),
    ),
    notes=(
        "Published main-table numbers were not retrieved: the layout is mirrored. QA = mean of ARC-e, ARC-c "
        "and BoolQ; average = mean of the five groups. Our SFT run mixes config sft.domain_weights "
        "(default uniform).",
    ),
)
MOE_SFT_WEIGHTS = TableSpec(
    paper="moe_sft",
    name="table_final_weights",
    title="MoE-SFT: final dynamic sampling weights (percent of examples)",
    published_table="final_weights",
    columns=tuple(Column(n, kind="extra") for n in ("code", "math", "orca", "sharegpt")),
    rows=(
        Row(
            "ours: dynamic, final weights",
            published="dynamic, LLaMA-MoE-3.5B (2/8)",
            ours="sft_dynamic/moe_sft",
        ),
    ),
)

# ---- MoE compression (arXiv 2406.02500) -----------------------------------------------------------------
MC_TASKS = ("arc_challenge", "boolq", "hellaswag", "mmlu", "openbookqa", "piqa", "rte", "winogrande")
MC_ORIG, MC_BLOCK = "ours: before compression", "ours: Block Drop"
MOE_COMPRESSION_MAIN = TableSpec(
    paper="moe_compression",
    name="table_main",
    title="MoE compression (Expert Slimming / Trimming): published vs ours",
    published_table="main",
    columns=(
        *_tasks(*MC_TASKS),
        AVG,
        AVG_COMMON,
        Column("retained", kind="retained", label="retained %"),
        Column("params_m", kind="extra", unit="M", label="params (M)"),
        Column("speedup", kind="extra", unit="x", label="speed-up"),
        Column("memory_gb", kind="extra", unit="GB", label="memory (GB)", higher_is_better=False),
    ),
    rows=(
        Row(MC_ORIG, published="Mixtral-8x7B (original)", ours="compress_base/moe_compression"),
        Row(
            "Expert Drop", published="Expert Drop (keep 6 of 8)", ours="compress_expert_drop/moe_compression"
        ),
        Row("Layer Drop", published="Layer Drop (8 of 32)", ours="compress_layer_drop/moe_compression"),
        Row(MC_BLOCK, published="Block Drop (5 of 32)", ours="compress/moe_compression"),
        Row(
            "Block Drop + 4-bit AWQ",
            published="Block Drop + 4-bit AWQ (recipe)",
            ours="compress_block_drop_awq/moe_compression",
        ),
    ),
    claims=(
        Claim(
            "compression keeps >92% of the original model's performance (Mixtral-8x7B).",
            MC_BLOCK,
            MC_ORIG,
            kind="retained",
            threshold=92.0,
        ),
    ),
    reference=MC_ORIG,
    notes=(
        "Per-method published numbers are unverified (layout only); the headline (6.05x decoding speed-up, "
        "20.0 GB, >92% retained) is the paper's abstract. retained % = avg_common / avg_common of the model "
        "before compression; params = total parameters after compression (block_scores.json).",
    ),
)

# ---- SparseAdapter (arXiv 2210.04284) -------------------------------------------------------------------
GLUE = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte")
SA_DENSE, SA_SPARSE = "ours: Houlsby adapter", "ours: Houlsby + SparseAdapter"
SPARSE_ADAPTER_GLUE = TableSpec(
    paper="sparse_adapter",
    name="table_glue",
    title="SparseAdapter on GLUE (RoBERTa-base): published vs ours",
    published_table="glue",
    columns=(*_tasks(*GLUE), AVG, AVG_COMMON),
    rows=(
        Row("full fine-tuning", published="full fine-tuning"),
        Row(SA_DENSE, published="Houlsby adapter", ours="adapter_dense/sparse_adapter"),
        Row(SA_SPARSE, published="Houlsby adapter + SparseAdapter", ours="adapter_sparse/sparse_adapter"),
        *(
            Row(m, published=m)
            for a in ("Pfeiffer adapter", "LoRA", "MAM adapter")
            for m in (a, f"{a} + SparseAdapter")
        ),
    ),
    claims=(Claim("adapters pruned at initialisation stay as good as dense ones.", SA_SPARSE, SA_DENSE),),
    notes=(_LAYOUT,),
)
SPARSE_ADAPTER_LARGE = TableSpec(
    paper="sparse_adapter",
    name="table_large_sparse",
    title="SparseAdapter: Large-Sparse vs full fine-tuning (paper Figure 1)",
    published_table="large_sparse",
    columns=(Column("average", kind="eval_average"),),
    rows=(
        Row("ours: full fine-tuning", published="full fine-tuning", ours="full_ft/sparse_adapter"),
        Row(
            "ours: Large-Sparse",
            published="Large-Sparse SparseAdapter",
            ours="adapter_large_sparse/sparse_adapter",
        ),
    ),
    claims=(
        Claim(
            "Large-Sparse even beats full fine-tuning (79.6 vs 79.0).",
            "ours: Large-Sparse",
            "ours: full fine-tuning",
        ),
    ),
)

# ---- iDAT (arXiv 2403.15750) ----------------------------------------------------------------------------
VTAB = (
    "cifar100", "caltech101", "dtd", "flowers102", "pets", "svhn", "sun397", "camelyon", "eurosat", "resisc45",
    "retinopathy", "clevr_count", "clevr_dist", "dmlab", "kitti", "dsprites_loc", "dsprites_ori",
    "smallnorb_azim", "smallnorb_ele",
)  # fmt: skip
IDAT_VTAB = TableSpec(
    paper="idat",
    name="table_vtab",
    title="iDAT on VTAB-1K (ViT-B/16 student, ViT-S/16 teacher): published vs ours",
    published_table="vtab",
    columns=(*_tasks(*VTAB), Column("mean", kind="average"), Column("params_m", kind="extra", unit="M")),
    rows=(
        Row("ours: adapter", published="Adapter (sequential)", ours="adapter/idat"),
        Row("ours: adapter + iDAT", published="Adapter (sequential) + iDAT", ours="idat/idat"),
        Row("AdaptFormer", published="AdaptFormer"),
        Row("AdaptFormer + iDAT", published="AdaptFormer + iDAT"),
    ),
    claims=(
        Claim(
            "inverse distillation adds +2.66 mean VTAB-1K accuracy for +0.07M parameters.",
            "ours: adapter + iDAT",
            "ours: adapter",
        ),
    ),
    notes=(_LAYOUT,),
)

# ---- PAD-Net (arXiv 2211.05528) -------------------------------------------------------------------------
PAD_IMAGENET = TableSpec(
    paper="pad_net",
    name="table_imagenet",
    title="PAD-Net on ImageNet (DY-Conv): published vs ours",
    published_table="imagenet",
    columns=(
        Column("params_m", kind="extra", unit="M"),
        Column("flops_m", kind="extra", unit="M"),
        Column("top1"),
    ),
    rows=(
        *(
            Row(f"{a} {m}", published=f"{a} {m}")
            for a in ("ResNet-10", "ResNet-18", "ResNet-50", "MobileNetV2")
            for m in ("static", "CondConv", "DY-Conv", "PAD-DY-Conv")
        ),
        Row("ours: small CNN DY-Conv", ours="dyconv/pad_net"),
        Row("ours: small CNN PAD-DY-Conv", ours="pad_dyconv/pad_net"),
    ),
    claims=(
        Claim(
            "keeping only ~30% of the parameters dynamic matches or beats the fully dynamic network.",
            "ours: small CNN PAD-DY-Conv",
            "ours: small CNN DY-Conv",
        ),
    ),
    notes=(_LAYOUT,),
)
GLUE8 = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte")
PAD_GLUE = TableSpec(
    paper="pad_net",
    name="table_glue",
    title="PAD-Net on GLUE dev (BERT-base + MoE): published vs ours",
    published_table="glue",
    columns=(*_tasks(*GLUE8), AVG, AVG_COMMON),
    rows=(
        Row("BERT-base", published="BERT-base"),
        Row("ours: MoE", published="BERT-base + MoE", ours="moe_text/pad_net"),
        Row("ours: PAD-MoE", published="BERT-base + PAD-MoE", ours="pad_moe/pad_net"),
    ),
    claims=(
        Claim(
            "PAD-MoE with 50% dynamic parameters beats the fully dynamic MoE (+1.9 GLUE).",
            "ours: PAD-MoE",
            "ours: MoE",
        ),
    ),
    notes=(_LAYOUT,),
)
PAD_ABLATION = TableSpec(
    paper="pad_net",
    name="table_ablation",
    title="PAD-Net ablations: mode partition and scale factors",
    published_table="ablation",
    columns=(Column("glue_average", kind="eval_average"), Column("top1")),
    rows=(
        Row("ours: IMP partition", published="IMP partition (kappa sweep)", ours="pad_imp/pad_net"),
        Row("ours: random partition", published="random partition", ours="pad_random/pad_net"),
        Row("without l_d / l_s scales", published="without l_d / l_s scales", ours="pad_noscale/pad_net"),
    ),
    claims=(
        Claim(
            "iterative mode partition beats a random partition.",
            "ours: IMP partition",
            "ours: random partition",
        ),
    ),
    notes=(_LAYOUT,),
)

# ---- GraphsGPT (arXiv 2402.02464) -----------------------------------------------------------------------
ROC = ("tox21", "toxcast", "sider", "hiv", "bbbp", "bace")
RMSE = ("esol", "freesolv", "lipo")
GRAPHS_MOLECULENET = TableSpec(
    paper="graphs_gpt",
    name="table_moleculenet",
    title="GraphsGPT on MoleculeNet: published vs ours (ROC-AUC %, RMSE)",
    published_table="moleculenet",
    columns=(
        *_tasks(*ROC),
        *(Column(n, unit="RMSE", higher_is_better=False) for n in RMSE),
    ),
    rows=(
        Row("ours: graph words", published="GraphsGPT", ours="graphs/graphs_gpt"),
        Row("best prior method", published="best prior method"),
        Row("ours: Morgan fingerprints", ours="graphs_morgan/graphs_gpt"),
    ),
    claims=(
        Claim(
            "graph words are better molecular features than the baselines (state of the art on 8 of 9 tasks).",
            "ours: graph words",
            "ours: Morgan fingerprints",
            columns=ROC,
        ),
    ),
    notes=(_LAYOUT,),
)
GRAPHS_GENERATION = TableSpec(
    paper="graphs_gpt",
    name="table_generation",
    title="GraphsGPT generation (MOSES / ZINC250k): published vs ours",
    published_table="generation",
    columns=(
        *_tasks("validity", "uniqueness", "novelty"),
        Column("fcd", unit="score", higher_is_better=False),
        *_tasks("snn", "frag", "scaf", "intdiv", unit="score"),
    ),
    rows=(
        Row("ours: GraphsGPT (MOSES)", published="GraphsGPT (MOSES)", ours="graphs_generation/graphs_gpt"),
        Row("GraphsGPT (ZINC250k)", published="GraphsGPT (ZINC250k)"),
    ),
    notes=(_LAYOUT,),
)

TABLES: tuple[TableSpec, ...] = (
    LLAMA_MOE_MAIN,
    LLAMA_MOE_SFT,
    LLAMA_MOE_SAMPLING,
    LLAMA_MOE_FILTERING,
    LLAMA_MOE_V2_MAIN,
    MOE_SFT_MAIN,
    MOE_SFT_WEIGHTS,
    MOE_COMPRESSION_MAIN,
    SPARSE_ADAPTER_GLUE,
    SPARSE_ADAPTER_LARGE,
    IDAT_VTAB,
    PAD_IMAGENET,
    PAD_GLUE,
    PAD_ABLATION,
    GRAPHS_MOLECULENET,
    GRAPHS_GENERATION,
)

# Figures drawn from our data (rules in rules/report.smk and rules/construct_ablation.smk).
FIGURES = {
    "llama_moe": {
        "fig_pretrain_loss": Output("figure", "Continual pre-training loss"),
        "fig_expert_load": Output("figure", "Expert load per domain per layer, and specialisation by layer"),
        "fig_construction_loss": Output(
            "figure", "CPT loss per construction method", in_all=False, target="llama_moe_construction"
        ),
    },
    "moe_sft": {
        "fig_expert_load_by_dataset": Output("figure", "Expert load per SFT data set per layer"),
    },
}
# The construction ablations (rules/construct_ablation.smk): expensive, own targets, not in `rule all`.
_VARIANT = {"rule": "construct_variant_table", "in_all": False, "caption": "construct_variant_table.rst"}
EXTRA_TABLES = {
    "llama_moe": {
        "table_construction": Output(
            "table", "Expert construction ablation", in_all=False, target="llama_moe_construction"
        ),
        "table_configurations": Output(
            "table",
            "Expert configurations (8/16 experts, top-2/4)",
            target="llama_moe_construction",
            **_VARIANT,
        ),
    },
    "llama_moe_v2": {
        "table_granularity": Output(
            "table",
            "Granularity at equal activation (8e top-2 ...)",
            target="llama_moe_v2_ablation",
            **_VARIANT,
        ),
        "table_mlp_vs_attention": Output(
            "table", "MLP MoE vs attention MoE", target="llama_moe_v2_ablation", **_VARIANT
        ),
    },
}


def _build_outputs() -> dict[str, dict[str, Output]]:
    out: dict[str, dict[str, Output]] = {p: {} for p in PAPERS}
    for spec in TABLES:
        out[spec.paper][spec.name] = Output("table", spec.title, spec=spec)
    for group in (EXTRA_TABLES, FIGURES):
        for paper, items in group.items():
            out[paper].update(items)
    return {
        paper: {
            name: Output(
                o.kind,
                o.title,
                o.rule or f"{paper}_{name}",
                o.in_all,
                o.spec,
                o.target,
                o.caption or f"{paper}_{name}.rst",
            )
            for name, o in items.items()
        }
        for paper, items in out.items()
    }


OUTPUTS: dict[str, dict[str, Output]] = _build_outputs()

# Tables and figures of the papers that no stage draws yet (listed in index.md as not reproduced yet).
PENDING: dict[str, dict[str, str]] = {
    "llama_moe": {
        "fig_sampling_loss": "CPT loss curves of static vs dynamic sampling (needs the dynamic-sampling CPT run)",
    },
    "llama_moe_v2": {},
    "moe_sft": {
        "fig_sampling_weights": "sampling weight of each data set over steps (needs the dynamic-mixture SFT run;"
        " our uniform run has constant weights, so no figure is drawn)",
    },
    "moe_compression": {
        "table_speed": "prefill / decode tokens/s and peak memory by prompt length (needs the speed benchmark)",
    },
    "sparse_adapter": {
        "fig_sparsity": "accuracy vs sparse ratio (20-80%) per pruner (needs the SparseAdapter stage)",
        "fig_large_sparse": "Large-Sparse width sweep (needs the SparseAdapter stage)",
    },
    "idat": {},
    "pad_net": {},
    "graphs_gpt": {},
}


def table_spec(paper: str, name: str) -> TableSpec:
    """The registered :class:`TableSpec` of ``paper``/``name``.

    Raises:
        KeyError: naming the paper/table when it is not a registered generic table.
    """
    out = OUTPUTS.get(paper, {}).get(name)
    if out is None or out.spec is None:
        known = sorted(f"{s.paper}/{s.name}" for s in TABLES)
        raise KeyError(f"no paper table {paper}/{name}; registered: {', '.join(known)}")
    return out.spec


def paper_files(paper: str, root: str = "results/papers", in_all_only: bool = False) -> list[str]:
    """Every file of ``paper``'s registered outputs (``<root>/<paper>/<name>.<ext>``), registry order."""
    return [
        f"{root}/{paper}/{name}.{ext}"
        for name, o in OUTPUTS[paper].items()
        if o.in_all or not in_all_only
        for ext in o.extensions
    ]


def index_markdown(paper: str) -> str:
    """``index.md`` of a paper: every table and figure with its files, or why it is not reproduced yet."""
    lines = [f"# {paper}: tables and figures", "", "| item | what | files / status |", "|---|---|---|"]
    for name, o in OUTPUTS[paper].items():
        files = ", ".join(f"[{name}.{e}]({name}.{e})" for e in o.extensions)
        note = "" if o.in_all else f" (not in `all`; target: `snakemake --cores all {o.target}`)"
        lines.append(f"| {name} | {o.title} | {files}{note} |")
    for name, why in PENDING.get(paper, {}).items():
        lines.append(f"| {name} | {why} | not reproduced yet |")
    lines += [
        "",
        f"Rebuild one file: `snakemake --cores all results/papers/{paper}/<item>.<ext>`; "
        f"all of them: `snakemake --cores all {paper}`.",
    ]
    return "\n".join(lines) + "\n"
