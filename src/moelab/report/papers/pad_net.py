"""PAD-Net (arXiv 2211.05528): its tables and figures (report registry)."""

from __future__ import annotations

from moelab.report.paper_table import Claim, Column, Row, TableSpec
from moelab.report.papers.common import AVG, AVG_COMMON, GLUE_TASKS, LAYOUT_ONLY, Output, task_columns

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
    notes=(LAYOUT_ONLY,),
)
PAD_GLUE = TableSpec(
    paper="pad_net",
    name="table_glue",
    title="PAD-Net on GLUE dev (BERT-base + MoE): published vs ours",
    published_table="glue",
    columns=(*task_columns(*GLUE_TASKS), AVG, AVG_COMMON),
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
    notes=(LAYOUT_ONLY,),
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
    notes=(LAYOUT_ONLY,),
)

TABLES: tuple[TableSpec, ...] = (
    PAD_IMAGENET,
    PAD_GLUE,
    PAD_ABLATION,
)

EXTRA_OUTPUTS: dict[str, Output] = {}
PENDING: dict[str, str] = {}
