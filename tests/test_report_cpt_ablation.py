"""CPT data ablation tables (moelab.report.cpt_ablation) and their runs (moelab.config.cpt_ablation_runs)."""

import copy
import math

import pandas as pd
import pytest
from test_config import default_config

from moelab.config import cpt_ablation_runs
from moelab.errors import ConfigError
from moelab.report.cpt_ablation import (
    ablation_notes,
    ablation_table,
    average_se,
    compare_rows,
    mean_sd,
    read_rounds,
)


def record(run, seed, losses, average=0.5, n=100):
    rounds = pd.DataFrame(
        [{"step": s, "tokens": 10 * s, "domain": d, "loss": v + 1 - s, "reference": None, "weight": 0.5}
         for s in (0, 1) for d, v in losses.items()]
    )  # fmt: skip
    return {
        "run": run,
        "seed": seed,
        "heldout_loss": losses,
        "average": average,
        "primary": {"t1": average, "t2": average},
        "tasks": {"t1": {"n": n}, "t2": {"n": n}},
        "rounds": rounds,
    }


def test_average_se_by_hand():
    # two tasks at p = .5 on n = 100: SE_i = .05, average SE = sqrt(2 * .05^2) / 2 = .035355
    assert average_se(record("a", 1, {"x": 1.0})) == pytest.approx(0.05 / math.sqrt(2), rel=1e-9)
    assert mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0) and mean_sd([4.0]) == (4.0, None)


def seeds_for(gap):
    return [
        record("sheared_mix", 1, {"web": 5.0, "code": 3.0}),  # avg 4.0
        record("sheared_mix", 2, {"web": 5.2, "code": 3.2}),  # avg 4.2: sd .1414
        record("dynamic_sheared_llama", 1, {"web": 5.0 + gap, "code": 3.0 + gap}),
        record("dynamic_sheared_llama", 2, {"web": 5.2 + gap, "code": 3.2 + gap}),
    ]


def test_table_means_spreads_and_a_within_noise_verdict():
    df = ablation_table(["sheared_mix", "dynamic_sheared_llama"], seeds_for(0.1), "sampling")
    row = df.set_index("run").loc["sheared_mix"]
    assert (
        row["seeds"] == 2 and row["loss_avg"] == pytest.approx(4.1) and row["loss_web"] == pytest.approx(5.1)
    )
    assert row["loss_avg_sd"] == pytest.approx(math.sqrt(0.02), abs=1e-4)
    assert row["downstream_avg"] == 50.0 and row["downstream_se"] == 3.5
    # noise = 1.96 sqrt(2 (.1414 / sqrt 2)^2) = 1.96 * .1414 = .277 > .1
    sentence = compare_rows(df, "sheared_mix", "dynamic_sheared_llama")
    assert "within noise" in sentence and "+-0.277" in sentence
    notes = ablation_notes(df, "sampling", 40, 2048, 50)
    assert "The finding (static at least as fast) holds here" in notes[1]


def test_a_difference_beyond_the_seed_noise_is_called():
    df = ablation_table(["sheared_mix", "dynamic_sheared_llama"], seeds_for(1.0), "sampling")
    sentence = compare_rows(df, "sheared_mix", "dynamic_sheared_llama")
    assert "static Sheared-LLaMA mix is lower beyond the seed noise" in sentence
    one_seed = ablation_table(["sheared_mix", "dynamic_sheared_llama"], seeds_for(-1.0)[::2], "sampling")
    assert "cannot be judged" in compare_rows(one_seed, "sheared_mix", "dynamic_sheared_llama")


def test_filtering_rows_use_the_filtering_labels():
    recs = [record("sheared_mix", 1, {"web": 5.0}), record("filter_fluency", 1, {"web": 4.0})]
    df = ablation_table(["sheared_mix", "filter_fluency"], recs, "filtering")
    assert list(df.label) == ["no filtering (Sheared-LLaMA mix)", "fluency filtering"]
    with pytest.raises(ValueError, match="'filter_ads' has no evaluated seed"):
        ablation_table(["filter_ads"], recs, "filtering")


def test_read_rounds_takes_run_and_seed_from_the_path(tmp_path):
    path = tmp_path / "results/cpt_ablation/uniform/seed1228/rounds.csv"
    path.parent.mkdir(parents=True)
    record("uniform", 1228, {"web": 5.0})["rounds"].to_csv(path, index=False)
    got = read_rounds(path)
    assert (got["run"], got["seed"], len(got["rounds"])) == ("uniform", 1228, 2)
    with pytest.raises(ValueError, match="seed<seed>/rounds.csv"):
        read_rounds(tmp_path / "rounds.csv")


def test_runs_headline_seeds_and_own_strategy():
    cfg = copy.deepcopy(default_config())
    cfg["pretrain"]["mixture"]["strategy"] = "sheared_llama"  # the main run's strategy does not carry over
    runs = cpt_ablation_runs(cfg)
    assert sorted(k for k in runs if k.startswith("sheared_mix/")) == [
        "sheared_mix/seed1227",
        "sheared_mix/seed1228",
    ]
    assert (
        "uniform/seed1228" not in runs
        and runs["uniform/seed1227"]["train"]["mixture"]["strategy"] == "static"
    )
    assert runs["uniform/seed1227"]["train"]["mixture"]["init"] == "uniform"
    assert runs["filter_both/seed1227"]["filter"] == "both"
    assert runs["llama_mix/seed1227"]["train"]["domain_weights"]["code"] == 0.065


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda a: a.update(headline=["nope"]), r"cpt_ablation.headline names unknown run\(s\) \['nope'\]"),
        (lambda a: a["runs"].update(bad={"domain_weights": {"arxiv": 1.0}}), "runs.bad.domain_weights names"),
        (lambda a: a["runs"].update(bad={"eta": -1.0}), r"cpt_ablation.runs.bad.eta must be >= 0"),
    ],
)
def test_bad_runs_name_the_key(mutate, needle):
    cfg = copy.deepcopy(default_config())
    mutate(cfg["cpt_ablation"])
    with pytest.raises(ConfigError, match=needle):
        cpt_ablation_runs(cfg)
