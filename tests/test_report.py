"""Report: published numbers beside ours, markdown + CSV, loss figure files."""

import pandas as pd
import pytest

from moelab.report import load_published, main_table, plot_loss_curves, write_table
from moelab.report.tables import NOT_YET, llama_moe_main_notes

OURS = {
    "dense": {"primary": {"arc_easy": 0.60, "piqa": 0.70}},
    "moe": {"primary": {"arc_easy": 0.30, "piqa": 0.52}},
    "pretrain": {"primary": {"arc_easy": 0.40, "piqa": 0.60}},
}


def test_published_llama_moe_main_numbers():
    pub = load_published("llama_moe")
    row = pub[(pub.model == "LLaMA-MoE-3.5B (2/8)") & (pub.task == "average")]
    assert row.value.item() == 57.6
    assert set(pub.groupby("model").size()) == {12}  # 11 tasks + average per model


def test_main_table_has_published_and_ours(tmp_path):
    df = main_table(load_published("llama_moe"), OURS)
    assert list(df.source[:5]) == ["published (official README)"] * 5
    ours = df[df.source == "ours"].set_index("model")
    assert ours.loc["pretrain", "arc_easy"] == 40.0 and ours.loc["pretrain", "avg_common"] == 50.0
    assert ours.loc["pretrain", "mmlu"] == NOT_YET
    pub = df[df.model == "LLaMA-MoE-3.5B (2/8)"].iloc[0]
    assert pub.avg_common == round((65.3 + 77.6) / 2, 1)
    write_table(df, tmp_path / "t.csv", tmp_path / "t.md", "T", ["note one"])
    assert pd.read_csv(tmp_path / "t.csv").shape == df.shape
    md = (tmp_path / "t.md").read_text()
    assert md.startswith("# T") and "| LLaMA-MoE-3.5B (2/8)" in md and md.rstrip().endswith("note one")


def test_notes_state_whether_the_claim_holds():
    cfg = {"pretrain": {"steps": 10, "batch_size": 2, "seq_len": 8}}
    notes = " ".join(llama_moe_main_notes(OURS, cfg, chance=37.5))
    assert "Construction costs 24.0 points" in notes and "recovers 9.0" in notes
    assert "does not hold at this scale" in notes and "160 tokens, 8.0e-10 of the paper's 200B" in notes


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


def test_claim_not_judged_when_dense_is_at_chance():
    at_chance = {k: {"primary": {"arc_easy": 0.25, "piqa": 0.5}} for k in ("dense", "moe", "pretrain")}
    cfg = {"pretrain": {"steps": 1, "batch_size": 1, "seq_len": 8}}
    assert "cannot be judged" in " ".join(llama_moe_main_notes(at_chance, cfg, chance=37.5))
