"""Paper tables (published / ours / delta per cell, verdicts, provenance), expert-load figures, and the
registry: every table and figure has a rule, a caption, and a line in its paper's index."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from moelab.provenance import Provenance
from moelab.report import (
    NOT_EVALUATED,
    NOT_YET,
    OUTPUTS,
    PAPERS,
    PENDING,
    TABLES,
    Claim,
    Column,
    Row,
    TableSpec,
    compression_extras,
    index_markdown,
    load_published,
    paper_files,
    paper_table,
    plot_expert_load,
    table_markdown,
    table_spec,
    verdict,
    write_paper_table,
)
from moelab.report.figures import _pick_layers
from moelab.report.papers.llama_moe import LM_CPT, LM_DENSE, LM_MOE
from moelab.report.papers.moe_compression import MC_BLOCK, MC_ORIG
from moelab.report.papers.moe_sft import SFT_UNIFORM
from moelab.report.tables import read_eval

ROOT = Path(__file__).resolve().parents[1]


def ev(n=None, **acc):
    """An evaluation result; with ``n`` every task records its example count (binomial standard errors)."""
    tasks = {t: {"acc": p, "n": n} for t, p in acc.items()} if n else {}
    return {"primary": acc, "average": sum(acc.values()) / len(acc), "tasks": tasks}


OURS = {
    "dense/llama_moe": ev(1000, arc_easy=0.60, piqa=0.70),
    "moe/llama_moe": ev(1000, arc_easy=0.30, piqa=0.52),
    "pretrain/llama_moe": ev(1000, arc_easy=0.40, piqa=0.60),
}


def cell(long, row, col):
    return long[(long.row == row) & (long.column == col)].iloc[0]


def test_llama_moe_main_published_ours_delta():
    spec = table_spec("llama_moe", "table_main")
    long = paper_table(spec, load_published("llama_moe"), OURS)
    assert len(long) == len(spec.rows) * len(spec.columns)
    c = cell(long, LM_CPT, "arc_easy")
    assert (c.published, c.ours, c.delta, c.unit) == (65.3, 40.0, -25.3, "%")
    assert bool(c.verified) and c.published_from == "official README" and c.ours_from == "pretrain/llama_moe"
    assert cell(long, LM_CPT, "mmlu").ours == NOT_EVALUATED and pd.isna(cell(long, LM_CPT, "mmlu").delta)
    assert cell(long, LM_CPT, "average").ours == NOT_EVALUATED  # 2 of 11 tasks: no paper-comparable average
    assert cell(long, LM_CPT, "average").published == 57.6
    common = cell(long, LM_CPT, "avg_common")  # mean over arc_easy, piqa for published and ours
    assert (common.published, common.ours, common.delta) == (71.45, 50.0, -21.45)
    assert cell(long, "Sheared-LLaMA-2.7B", "avg_common").published == round((63.3 + 76.9) / 2, 2)
    assert pd.isna(cell(long, "Sheared-LLaMA-2.7B", "arc_easy").ours)  # published-only row: no ours
    assert cell(long, LM_DENSE, "piqa").ours == 70.0 and pd.isna(cell(long, LM_DENSE, "piqa").published)
    v = [verdict(spec, claim, long) for claim in spec.claims]
    assert (
        "MoE after CPT above MoE as constructed on 2 of 2 tasks, tied on 0 (mean 50.0 vs 41.0, difference +9.0"
        in v[0]
        and "the claim holds" in v[0]
    )
    assert "not judged (dense, activated FFN width, after CPT: not reproduced yet)" in v[1]
    assert "on 0 of 2 tasks, tied on 0 (mean 50.0 vs 65.0, difference -15.0" in v[2]
    assert "the claim does not hold" in v[2]


def test_missing_stage_is_not_reproduced_yet():
    spec = table_spec("llama_moe", "table_main")
    long = paper_table(spec, load_published("llama_moe"), {"dense/llama_moe": OURS["dense/llama_moe"]})
    assert (long[long.row == LM_MOE].ours == NOT_YET).all() and (
        long[long.row == LM_CPT].ours == NOT_YET
    ).all()
    assert long[long.row == LM_CPT].delta.isna().all()
    assert "not judged (MoE after CPT: not reproduced yet)" in verdict(spec, spec.claims[0], long)
    # a paper with no stage at all: every our cell says so, and the Markdown says the numbers are not here
    glue = table_spec("pad_net", "table_glue")
    long = paper_table(glue, load_published("pad_net"), {})
    ours_rows = long[long.ours_from.notna()]
    assert len(ours_rows) and (ours_rows.ours == NOT_YET).all()


def test_write_paper_table_csv_markdown_provenance(tmp_path):
    spec = table_spec("llama_moe", "table_main")
    long = paper_table(spec, load_published("llama_moe"), OURS)
    prov = Provenance(config={"k": 1}, inputs=[])
    csv, md = tmp_path / "p" / "table_main.csv", tmp_path / "p" / "table_main.md"
    write_paper_table(spec, long, csv, md, notes=["scale note"])
    prov.write(csv)
    back = pd.read_csv(csv)
    assert list(back.columns) == ["row", "column", "published", "ours", "delta", "ours_se", "unit", "verified",
                                  "published_from", "ours_from"]  # fmt: skip
    got = back[(back.row == LM_CPT) & (back.column == "arc_easy")].iloc[0]
    assert (float(got.published), float(got.ours), float(got.delta)) == (65.3, 40.0, -25.3)
    text = md.read_text()
    assert text.startswith("# LLaMA-MoE main table")
    assert f"| {LM_CPT} | published (LLaMA-MoE-3.5B (2/8)) | 88.4 |" in text
    assert "|  | ours - published | " in text and "| -25.3 |" in text and "scale note" in text
    assert text.count("Claim:") == 3 and not list(tmp_path.glob("p/*.tmp"))
    meta = json.loads((tmp_path / "p" / "table_main.csv.meta.json").read_text())
    assert meta["config"] == {"k": 1} and meta["versions"]["python"] and meta["git_commit"]


def test_moe_sft_main_table_published_beside_ours(tmp_path):
    spec = table_spec("moe_sft", "table_main")
    long = paper_table(
        spec,
        load_published("moe_sft"),
        {"sft_uniform/moe_sft": ev(arc_easy=0.5, arc_challenge=0.3, boolq=0.7)},
    )
    qa = cell(long, SFT_UNIFORM, "qa")
    assert qa.ours == 50.0 and qa.published == 60.85 and qa.delta == -10.85 and bool(qa.verified)
    assert cell(long, SFT_UNIFORM, "mmlu").ours == NOT_EVALUATED
    assert cell(long, "dynamic (gate-load redundancy)", "qa").ours == NOT_YET
    write_paper_table(spec, long, tmp_path / "t.csv", tmp_path / "t.md")
    text = (tmp_path / "t.md").read_text()
    assert (
        "| ours: uniform | published (uniform) | 32.48 | 29.18 | 5.91 | 60.85 | 14.52 | 28.59 | 5.07 |"
        in text
    )
    assert "not judged (dynamic (gate-load redundancy): not reproduced yet)" in text
    # the inverse-redundancy row: only GSM8K, MBPP and MT-Bench are published (Table 5)
    inverse = paper_table(table_spec("moe_sft", "table_baselines"), load_published("moe_sft"), {})
    assert cell(inverse, "inverse redundancy", "gsm8k").published == 5.84


def test_moe_sft_repo_weights_land_in_their_cells(tmp_path):
    """Hand-picked weights of the official repo's conf/prob_map files, in percent, marked verified."""
    pub = load_published("moe_sft")
    spec = table_spec("moe_sft", "table_sampling_weights")
    long = paper_table(spec, pub, {})
    size = cell(long, "static (proportional to size)", "orca")  # datasize.json orca 0.86719935
    assert size.published == 86.72 and bool(size.verified)
    assert size.published_from == "repo conf/prob_map/datasize.json"
    assert cell(long, "static (gate-load weights)", "math").published == 31.73  # gate_load.json 0.31725
    assert cell(long, "uniform", "sharegpt").published == 25.0
    assert cell(long, "dynamic final weights, static (MoLM-700M-4B)", "code").published == 93.48
    final = paper_table(table_spec("moe_sft", "table_final_weights"), pub, {})
    code = cell(final, "ours: dynamic, final weights", "code")  # llama_moe_dynamic_final.json 0.285066
    assert code.published == 28.51 and code.published_from.endswith("llama_moe_dynamic_final.json")
    assert cell(final, "paper: dynamic, MoLM-700M-4B", "sharegpt").published == 1.97
    write_paper_table(spec, long, tmp_path / "w.csv", tmp_path / "w.md")
    assert "86.72" in (tmp_path / "w.md").read_text()
    # the main table (NAACL 2025 Tables 1, 2 and 5): hand-checked cells; the inverse row has no MMLU
    main = pub[pub.table == "main"].set_index(["model", "task"]).value
    assert main["dynamic (gate-load redundancy)", "gsm8k"] == 11.90 and main["uniform", "average"] == 28.59
    assert main["static (gate-load weights)", "mt_bench"] == 4.98 and pd.isna(
        main["inverse redundancy", "mmlu"]
    )


def test_compression_retained_and_params():
    spec = table_spec("moe_compression", "table_main")
    ours = {
        "compress_base/moe_compression": ev(10000, arc_challenge=0.50, piqa=0.70),
        "compress/moe_compression": ev(10000, arc_challenge=0.40, piqa=0.68),
    }
    report = {"params_before": {"total": 3_394_176}, "params_after": {"total": 3_332_080}}
    extras = compression_extras({"compress/moe_compression": report})
    long = paper_table(spec, load_published("moe_compression"), ours, extras)
    assert cell(long, MC_BLOCK, "retained").ours == round(100 * 54.0 / 60.0, 2)
    assert cell(long, MC_ORIG, "retained").ours == 100.0
    assert cell(long, MC_BLOCK, "params_m").ours == 3.332 and cell(long, MC_ORIG, "params_m").ours == 3.394
    assert cell(long, MC_BLOCK, "speedup").ours == NOT_EVALUATED
    headline = "AWQ 4-bit + Layer Drop (the headline)"  # the paper's Table 3 row of its 6.05x / 20.0 GB
    assert (
        cell(long, headline, "speedup").published == 6.05
        and cell(long, headline, "memory_gb").published == 20.0
    )
    assert cell(long, MC_ORIG, "average").published == 71.5 and cell(long, MC_BLOCK, "mmlu").published == 67.9
    v = verdict(spec, spec.claims[0], long)
    assert "Block Drop keeps 90.0%" in v and "does not hold" in v and "threshold 92%" in v
    with pytest.raises(KeyError, match="compress/moe_compression has no params_after"):
        compression_extras({"compress/moe_compression": {"params_before": {"total": 1}}})


def test_verdict_chance_and_lower_is_better():
    pub = pd.DataFrame(
        columns=["paper", "table", "model", "task", "value", "shots", "source", "verified", "note"]
    )
    spec = TableSpec("p", "t", "T", "main", (Column("piqa"), Column("boolq")), (Row("a", ours="a/p"), Row("b", ours="b/p")),
                     claims=(Claim("a beats b.", "a", "b"),))  # fmt: skip
    long = paper_table(spec, pub, {"a/p": ev(piqa=0.51, boolq=0.50), "b/p": ev(piqa=0.49, boolq=0.50)})
    assert "cannot be judged here (both within 2 points of chance, 50.0)" in verdict(
        spec, spec.claims[0], long
    )
    rmse = TableSpec("p", "t", "T", "main", (Column("esol", unit="RMSE", higher_is_better=False),),
                     (Row("a", ours="a/p"), Row("b", ours="b/p")), claims=(Claim("a beats b.", "a", "b"),))  # fmt: skip
    long = paper_table(rmse, pub, {"a/p": ev(esol=0.9), "b/p": ev(esol=1.3)})
    assert cell(long, "a", "esol").ours == 0.9  # RMSE is not scaled to percent
    assert "a above b on 1 of 1 tasks, tied on 0" in verdict(rmse, rmse.claims[0], long)
    with pytest.raises(KeyError, match="names a row"):
        verdict(rmse, Claim("x", "a", "zzz"), long)
    with pytest.raises(ValueError, match="unknown row 'zzz'"):
        TableSpec("p", "t", "T", "main", (Column("x"),), (Row("a"),), claims=(Claim("x", "a", "zzz"),))
    with pytest.raises(ValueError, match="duplicate row labels"):
        TableSpec("p", "t", "T", "main", (Column("x"),), (Row("a"), Row("a")))


def test_unknown_published_model_and_bad_eval_file(tmp_path):
    spec = TableSpec("llama_moe", "t", "T", "main", (Column("piqa"),), (Row("x", published="GPT-9"),))
    with pytest.raises(KeyError, match="GPT-9"):
        paper_table(spec, load_published("llama_moe"), {})
    with pytest.raises(KeyError, match="registered"):
        table_spec("llama_moe", "table_nope")
    bad = tmp_path / "e.json"
    bad.write_text(json.dumps({"tasks": {}}))
    with pytest.raises(ValueError, match="e.json has no 'primary'"):
        read_eval(bad)


@pytest.mark.parametrize("spec", TABLES, ids=lambda s: f"{s.paper}/{s.name}")
def test_every_registered_table_builds_from_published_alone(spec, tmp_path):
    long = paper_table(spec, load_published(spec.paper), {})
    assert set(long.row) == {r.label for r in spec.rows}
    published_rows = {r.published for r in spec.rows if r.published}
    pub = load_published(spec.paper)
    assert published_rows <= set(pub[pub.table == spec.published_table].model)
    write_paper_table(spec, long, tmp_path / "t.csv", tmp_path / "t.md")
    assert (tmp_path / "t.md").read_text().count("Claim:") == len(spec.claims)


def routing_fixture(tmp_path, layers=6, experts=4):
    rows = []
    for layer in range(layers):
        for source in ("web", "code"):
            for e in range(experts):
                frac = 0.7 if e == (layer + (source == "code")) % experts else 0.1
                rows.append({"source": source, "kind": "pretrain_domain", "layer": layer, "expert": e,
                             "tokens": int(100 * frac), "fraction": frac})  # fmt: skip
    gate = pd.DataFrame(rows)
    spec = pd.DataFrame({"layer": range(layers), "score": [0.1 * i for i in range(layers)]})
    return gate, spec


def test_expert_load_figure_written(tmp_path):
    gate, spec = routing_fixture(tmp_path)
    layers = plot_expert_load(gate, spec, "pretrain_domain", tmp_path / "f.png", tmp_path / "f.pdf", "t")
    assert layers == [0, 2, 3, 5]  # first, last and two evenly spaced between
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "f.png").stat().st_size > 5000
    assert (tmp_path / "f.pdf").read_bytes()[:4] == b"%PDF"
    plot_expert_load(gate, None, "pretrain_domain", tmp_path / "g.png", tmp_path / "g.pdf", "t", max_layers=2)
    with pytest.raises(ValueError, match="layer, score"):
        plot_expert_load(gate, spec.iloc[:0], "pretrain_domain", tmp_path / "g.png", tmp_path / "g.pdf", "t")
    assert (tmp_path / "g.png").stat().st_size > 0
    with pytest.raises(ValueError, match="no rows of kind 'sft_domain'"):
        plot_expert_load(gate, spec, "sft_domain", tmp_path / "h.png", tmp_path / "h.pdf", "t")
    with pytest.raises(ValueError, match="no column 'fraction'"):
        plot_expert_load(
            gate.drop(columns="fraction"),
            spec,
            "pretrain_domain",
            tmp_path / "h.png",
            tmp_path / "h.pdf",
            "t",
        )
    assert not (tmp_path / "h.png").exists()
    assert _pick_layers([0, 1, 2], 4) == [0, 1, 2]


def test_registry_captions_and_index():
    assert set(OUTPUTS) == set(PAPERS) == set(PENDING)
    for paper, items in OUTPUTS.items():
        assert items, paper  # every paper has at least one table
        for name, out in items.items():
            assert (ROOT / "report" / out.caption).is_file(), f"no caption for {paper}/{name}"
            assert out.rule and (out.in_all or out.target)
        index = index_markdown(paper)
        for name in [*items, *PENDING[paper]]:
            assert f"| {name} |" in index
        for name in PENDING[paper]:
            assert re.search(rf"\| {name} \|.*\| not reproduced yet \|", index)
    assert "results/papers/llama_moe/table_construction.csv" not in paper_files("llama_moe", in_all_only=True)
    assert "results/papers/llama_moe/table_construction.csv" in paper_files("llama_moe")


@pytest.mark.slow
def test_every_registered_output_has_its_rule(tmp_path):
    """A dry run asking for every registered file: each is made by the rule the registry names."""
    from test_workflow import copy_workflow

    wf = copy_workflow(tmp_path)
    files = [f for paper in PAPERS for f in paper_files(paper)]
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", *files, "--configfile", "config/smoke.yaml"],
        cwd=wf, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    producer = {}
    for block in re.findall(r"rule (\w+):\n(.*?)\n\n", proc.stdout, re.S):
        out = re.search(r"output: (.*)", block[1])
        for f in out.group(1).split(", ") if out else []:
            producer[f] = block[0]
    for paper, items in OUTPUTS.items():
        for name, out in items.items():
            for ext in out.extensions:
                assert producer.get(f"results/papers/{paper}/{name}.{ext}") == out.rule, (paper, name, ext)
    # `all` holds every paper's outputs except the construction ablation
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", "config/smoke.yaml"],
                          cwd=wf, capture_output=True, text=True)  # fmt: skip
    assert (
        proc.returncode == 0 and "construct_method" not in proc.stdout and "moe_sft_table_main" in proc.stdout
    )


def write_fixture_results(wf: Path) -> None:
    """Evaluation, compression, training-log and routing files as the upstream rules write them."""
    acc = {"arc_easy": 0.5, "arc_challenge": 0.3, "piqa": 0.6, "sciq": 0.7, "boolq": 0.6, "hellaswag": 0.3}
    pairs = [
        "dense/llama_moe",
        "moe/llama_moe",
        "pretrain/llama_moe",
        "pretrain_active/llama_moe",
        "sft_base/moe_sft",
        "sft/moe_sft",
        "compress_base/moe_compression",
        "compress/moe_compression",
        "dense/llama_moe_v2",
        "sft/llama_moe_v2",
        "sft_uniform/moe_sft",
        "sft_dynamic/moe_sft",
    ]  # the last two: MoE-SFT mixture runs, seeds merged
    for i, pair in enumerate(pairs):
        stage, paper = pair.split("/")
        prim = {t: round(v - 0.01 * i, 3) for t, v in acc.items()}
        res = {"stage": stage, "paper": paper, "suite": "local", "limit": 4, "primary": prim,
               "tasks": {t: {"acc": v, "num_fewshot": 0, "n": 4} for t, v in prim.items()},
               "average": sum(prim.values()) / len(prim)}  # fmt: skip
        path = wf / "results" / "eval" / stage / f"{paper}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res))
    for seed in (1227, 1228):  # the dynamic mixture run's summaries (final weights, weights over rounds)
        path = wf / "results" / "sft_mixture" / "dynamic" / f"seed{seed}" / "summary.json"
        path.parent.mkdir(parents=True)
        weights = [
            {"code": 0.25, "explain": 0.25, "general": 0.25, "math": 0.25},
            {"code": 0.1, "explain": 0.5, "general": 0.2, "math": 0.2},
        ]
        rounds = [
            {"step": s, "losses": dict.fromkeys(w, 1.0), "gate_loads": dict.fromkeys(w, [3, 1]), "weights": w}
            for s, w in zip((0, 5), weights, strict=True)
        ]
        path.write_text(json.dumps({"rounds": rounds, "final_weights": weights[-1]}))  # fmt: skip
    (wf / "results" / "compress" / "block_drop").mkdir(parents=True)
    (wf / "results" / "compress" / "block_drop" / "recipe.json").write_text(
        json.dumps({"params_before": {"total": 3_000_000}, "params_after": {"total": 2_500_000}})
    )
    (wf / "results" / "pretrain").mkdir(parents=True)
    pd.DataFrame({"step": [1, 2, 3], "tokens": [8, 16, 24], "lm_loss": [5.0, 4.5, 4.2]}).to_csv(
        wf / "results" / "pretrain" / "log.csv", index=False
    )
    gate, spec = routing_fixture(wf)
    for stage in ("pretrain", "sft"):
        d = wf / "results" / "routing" / stage
        d.mkdir(parents=True)
        pd.concat([gate, gate.assign(kind="sft_domain")]).to_csv(d / "gate_load.csv", index=False)
        spec.to_csv(d / "specialisation.csv", index=False)
        (d / "coselection.csv").write_text("layer,expert_i,expert_j,count,fraction\n")
    (wf / "resources").mkdir()
    (wf / "resources" / "manifest.json").write_text("{}")


@pytest.mark.slow
def test_papers_target_and_offline_report_from_fixture_results(tmp_path):
    """`snakemake papers` on fixture upstream results runs only the report rules; `--report` writes the HTML."""
    from test_workflow import copy_workflow, snakemake

    wf = copy_workflow(tmp_path)
    write_fixture_results(wf)
    smoke = ("--configfile", "config/smoke.yaml")
    out = snakemake("papers", "--cores", "2", *smoke, cwd=wf).stderr
    assert "rule evaluate" not in out and "rule pretrain" not in out
    paper = wf / "results" / "papers"
    for p in PAPERS:
        for f in paper_files(p, in_all_only=True):
            path = wf / f
            assert path.stat().st_size > 0, f
            assert json.loads(Path(f"{path}.meta.json").read_text())["git_commit"], f
        assert "| index" not in (paper / p / "index.md").read_text()
    main = pd.read_csv(paper / "llama_moe" / "table_main.csv")
    cpt = main[(main.row == LM_CPT) & (main.column == "arc_easy")].iloc[0]
    assert (float(cpt.published), float(cpt.ours), float(cpt.delta)) == (65.3, 48.0, -17.3)
    comp = pd.read_csv(paper / "moe_compression" / "table_main.csv")
    assert set(comp[comp.column == "params_m"].ours.dropna()) >= {"3.0", "2.5"}
    assert "Claim:" in (paper / "moe_sft" / "table_main.md").read_text()
    assert not (paper / "llama_moe" / "table_construction.csv").exists()  # not in `papers`
    snakemake("--report", "results/report.html", *smoke, cwd=wf)
    html = (wf / "results" / "report.html").read_text(errors="replace")
    assert len(html) > 10_000


def test_unverified_published_number_is_marked():
    pub = pd.DataFrame(
        [
            ["p", "main", "M", "piqa", 70.0, 0, "paper", False, ""],
            ["p", "main", "M", "boolq", 60.0, 0, "paper", True, ""],
        ],
        columns=["paper", "table", "model", "task", "value", "shots", "source", "verified", "note"],
    )
    spec = TableSpec(
        "p", "t", "T", "main", (Column("piqa"), Column("boolq")), (Row("ours: m", published="M", ours="m/p"),)
    )
    long = paper_table(spec, pub, {"m/p": ev(piqa=0.75, boolq=0.5)})
    md = table_markdown(spec, long)
    assert "| ours: m | published (M) | 70.0* | 60.0 |" in md
    assert "|  | ours | 75.0 | 50.0 |" in md and "|  | ours - published | +5.0 | -10.0 |" in md
