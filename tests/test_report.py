"""Report basics: published numbers load with their schema, Markdown + CSV tables, loss figure files."""

import pandas as pd
import pytest

from moelab.report import PAPERS, load_published, plot_loss_curves, write_table
from moelab.report.tables import PUBLISHED_COLUMNS


def test_published_llama_moe_main_numbers():
    pub = load_published("llama_moe")
    main = pub[pub.table == "main"]
    row = main[(main.model == "LLaMA-MoE-3.5B (2/8)") & (main.task == "average")]
    assert row.value.item() == 57.6 and row.verified.item()
    assert set(main.groupby("model").size()) == {12}  # 11 tasks + average per model
    # the README's averages are the means of its 11 tasks (each rounded to 0.1)
    for model, group in main.groupby("model"):
        tasks = group[group.task != "average"].value
        assert abs(tasks.mean() - group[group.task == "average"].value.item()) <= 0.1, model


@pytest.mark.parametrize("paper", PAPERS)
def test_every_paper_has_published_csv(paper):
    pub = load_published(paper)
    assert tuple(pub.columns) == PUBLISHED_COLUMNS and (pub.paper == paper).all()
    assert pub.verified.dtype == bool and pub.source.str.len().min() > 0
    # never invented: an unverified row holds no number unless it says where it comes from
    assert pub.value.isna().any() or pub.verified.all()
    assert not pub.duplicated(["table", "model", "task"]).any()


def test_published_numbers_from_the_papers_mds():
    sft = load_published("moe_sft")
    final = sft[sft.table == "final_weights"]
    weights = final[final.model == "dynamic, LLaMA-MoE-3.5B (2/8)"].set_index("task").value
    # official repo conf/prob_map/llama_moe_dynamic_final.json, x100 to 2 decimals
    assert weights.to_dict() == {"code": 28.51, "math": 32.02, "orca": 21.49, "sharegpt": 17.98}
    main = sft[sft.table == "main"].set_index(["model", "task"]).value
    assert main["uniform", "mmlu"] == 32.48 and main["uniform", "mt_bench"] == 5.07  # NAACL 2025 Table 1
    # the paper's Avg. is the mean of MMLU, BBH, GSM8K, MBPP and QA (each printed to 2 decimals)
    tasks = ["mmlu", "bbh", "gsm8k", "mbpp", "qa"]
    for model in main.index.get_level_values("model").unique():
        row = main[model]
        if row[tasks].notna().all() and pd.notna(row.get("average")):
            assert abs(row[tasks].mean() - row["average"]) <= 0.01, model
    comp = load_published("moe_compression").set_index(["model", "task"]).value
    headline = "AWQ 4-bit + Layer Drop (8 of 32)"  # TMLR Table 3: the abstract's 6.05x / 20.0 GB / 92.4%
    assert comp[headline, "speedup"] == 6.05 and comp[headline, "memory_gb"] == 20.0
    assert comp[headline, "average"] / comp["Mixtral-8x7B (original)", "average"] > 0.92
    tasks = ["arc_challenge", "boolq", "hellaswag", "mmlu", "openbookqa", "piqa", "rte", "winogrande"]
    for model in set(comp.index.get_level_values("model")):  # each row's average is the mean of its 8 tasks
        assert abs(sum(comp[model, t] for t in tasks) / 8 - comp[model, "average"]) <= 0.06, model
    v2 = load_published("llama_moe_v2").set_index(["model", "task"]).value
    assert v2["Llama-3-8B-Instruct", "mmlu"] == 67.2 and v2["SmolLM2-1.7B", "hellaswag"] == 72.6
    sa = load_published("sparse_adapter").set_index(["table", "model", "task"]).value
    assert sa["large_sparse", "Large-Sparse SparseAdapter", "average"] == 79.6
    assert sa["large_sparse", "full fine-tuning", "average"] == 79.0
    assert sa["glue"].isna().all()
    lm = load_published("llama_moe").set_index(["table", "model", "task"]).value
    assert lm["sft", "LLaMA-MoE-3.5B (2/8) + Deita-6K", "mt_bench"] == 4.72


def test_write_table(tmp_path):
    df = pd.DataFrame({"model": ["a", "b"], "x": [1.0, None]})
    write_table(df, tmp_path / "t.csv", tmp_path / "t.md", "T", ["note one"])
    assert pd.read_csv(tmp_path / "t.csv").shape == df.shape
    md = (tmp_path / "t.md").read_text()
    assert md.startswith("# T") and "| a" in md and md.rstrip().endswith("note one")


def test_loss_figure_written(tmp_path):
    log = tmp_path / "log.csv"
    pd.DataFrame({"tokens": [10, 20, 30], "lm_loss": [5.0, 4.0, 3.5]}).to_csv(log, index=False)
    plot_loss_curves({"run": log}, tmp_path / "f.png", tmp_path / "f.pdf", "t")
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "f.pdf").read_bytes()[:4] == b"%PDF"
    empty = tmp_path / "empty.csv"
    empty.write_text("tokens,lm_loss\n")
    with pytest.raises(ValueError, match="no rows"):
        plot_loss_curves({"run": empty}, tmp_path / "g.png", tmp_path / "g.pdf", "t")
