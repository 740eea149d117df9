"""iDAT (arXiv 2403.15750): its tables and figures (report registry)."""

from __future__ import annotations

from moelab.report.paper_table import Claim, Column, Row, TableSpec
from moelab.report.papers.common import LAYOUT_ONLY, Output, task_columns

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
    columns=(
        *task_columns(*VTAB),
        Column("mean", kind="average"),
        Column("params_m", kind="extra", unit="M"),
    ),
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
    notes=(LAYOUT_ONLY,),
)

TABLES: tuple[TableSpec, ...] = (IDAT_VTAB,)

EXTRA_OUTPUTS: dict[str, Output] = {}
PENDING: dict[str, str] = {}
