"""The hub download path (data.source hub, model.source pretrained), against local folders shaped like the hub's.

No test touches the network (HF_HUB_OFFLINE=1, conftest): datasets.load_dataset reads a local folder of
jsonl / parquet files exactly as it reads a hub data set repo of those files.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from tiny_folders import save_tiny_checkpoint, sentence, write_jsonl

from moelab.data import hub as sources
from moelab.data.packing import read_jsonl
from moelab.models import materialise

ROOT = Path(__file__).resolve().parents[1]
SETS = ["RedPajamaC4", "RedPajamaGithub", "RedPajamaArXiv"]


@pytest.fixture
def slimpajama(tmp_path):
    """A SlimPajama-like repo: train/chunk1 and chunk2 jsonl files, domain in meta.redpajama_set_name."""
    repo = tmp_path / "SlimPajama-mini"
    for chunk in (1, 2):
        rows = [
            {
                "text": f"{SETS[i % 3]} doc {chunk}-{i}: {sentence(i)}",
                "meta": {"redpajama_set_name": SETS[i % 3]},
            }
            for i in range(30)
        ]
        write_jsonl(repo / "train" / f"chunk{chunk}" / "part.jsonl", rows)
    return repo


def spec_for(repo, name):
    return {
        "path": str(repo),
        "split": "train",
        "data_files": {"train": "train/*/*.jsonl"},
        "filter_field": "meta.redpajama_set_name",
        "filter_value": name,
    }


def test_pretrain_domain_keeps_only_its_rows_up_to_the_budget(slimpajama, tmp_path):
    out = tmp_path / "c4.jsonl"
    stats = sources.extract_hub_pretrain_domain(
        "c4", spec_for(slimpajama, "RedPajamaC4"), out, max_chars=2000, seed=1, shuffle_buffer=8
    )
    rows = read_jsonl(out)
    assert all(r["text"].startswith("RedPajamaC4 doc") for r in rows[:-1])
    assert ("RedPajamaC4 doc " + "x" * 10000).startswith(rows[-1]["text"][:16])  # the cut last one too
    assert sum(len(r["text"]) for r in rows) == stats["chars"] == 2000  # the last document is cut
    assert {r["domain"] for r in rows} == {"c4"} and stats["docs"] == len(rows)
    assert rows[0]["source"].startswith(f"hub:{slimpajama}:train:")


def test_pretrain_domain_is_a_function_of_the_seed(slimpajama, tmp_path):
    spec = spec_for(slimpajama, "RedPajamaGithub")
    big = 10**6  # the whole domain: 20 documents
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        sources.extract_hub_pretrain_domain(
            "github", spec, tmp_path / f"{name}.jsonl", max_chars=big, seed=seed
        )
    a, b, c = (read_jsonl(tmp_path / f"{n}.jsonl") for n in "abc")
    assert a == b
    assert [r["text"] for r in a] != [r["text"] for r in c]  # another seed, another order
    assert sorted(r["text"] for r in a) == sorted(r["text"] for r in c)  # of the same 20 documents
    assert len(a) == 20


def test_zstd_compressed_jsonl_like_slimpajama(tmp_path):
    """SlimPajama ships train/chunk*/example_train_*.jsonl.zst: the same path reads them (needs zstandard)."""
    import zstandard

    repo = tmp_path / "zst"
    (repo / "train" / "chunk1").mkdir(parents=True)
    rows = [{"text": sentence(i), "meta": {"redpajama_set_name": "RedPajamaBook"}} for i in range(5)]
    raw = "".join(json.dumps(r) + "\n" for r in rows).encode()
    (repo / "train" / "chunk1" / "example_train_0.jsonl.zst").write_bytes(
        zstandard.ZstdCompressor().compress(raw)
    )
    spec = {**spec_for(repo, "RedPajamaBook"), "data_files": {"train": "train/*/*.jsonl.zst"}}
    stats = sources.extract_hub_pretrain_domain(
        "book", spec, tmp_path / "book.jsonl", max_chars=10**6, seed=0
    )
    assert stats["docs"] == 5 and sorted(r["text"] for r in read_jsonl(tmp_path / "book.jsonl")) == sorted(
        r["text"] for r in rows
    )


def test_missing_text_field_names_field_and_leaves_no_file(slimpajama, tmp_path):
    spec = {**spec_for(slimpajama, "RedPajamaC4"), "text_field": "content"}
    out = tmp_path / "c4.jsonl"
    with pytest.raises(ValueError, match="content"):
        sources.extract_hub_pretrain_domain("c4", spec, out, max_chars=1000, seed=0)
    assert not out.exists() and not list(tmp_path.glob(".c4.jsonl.tmp*"))


def test_filter_without_match_fails_clearly(slimpajama, tmp_path):
    with pytest.raises(ValueError, match="no usable rows"):
        sources.extract_hub_pretrain_domain(
            "cc", spec_for(slimpajama, "RedPajamaCommonCrawl"), tmp_path / "cc.jsonl", max_chars=1000, seed=0
        )
    assert not (tmp_path / "cc.jsonl").exists()


def test_sft_formats_fields_parquet_and_sharegpt_conversations(tmp_path):
    orca = tmp_path / "orca"
    (orca / "data").mkdir(parents=True)
    pd.DataFrame(
        {
            "system_prompt": ["You are helpful.", "", "Be brief."],
            "question": ["What is 2+2?", "Name a colour.", "Say hi."],
            "response": ["4", "Blue", ""],  # the last one has no reply: skipped
        }
    ).to_parquet(orca / "data" / "train-00000-of-00001.parquet")
    spec = {"path": str(orca), "split": "train", "format": "fields"}
    spec |= {"prompt_fields": ["system_prompt", "question"], "response_field": "response"}
    stats = sources.extract_hub_sft_domain("orca", spec, tmp_path / "orca.jsonl", max_examples=10, seed=0)
    rows = {r["messages"][1]["content"]: r["messages"] for r in read_jsonl(tmp_path / "orca.jsonl")}
    assert stats["examples"] == 2 and stats["skipped"] == 1
    assert rows["4"][0] == {"role": "user", "content": "You are helpful.\n\nWhat is 2+2?"}
    assert rows["Blue"][0]["content"] == "Name a colour."  # the empty system prompt is left out

    share = write_jsonl(
        tmp_path / "sharegpt" / "sg.jsonl",
        [
            {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
            {"conversations": [{"from": "human", "value": "only a question"}]},
        ],
    )
    spec = {"path": str(share.parent), "format": "conversations", "messages_field": "conversations"}
    stats = sources.extract_hub_sft_domain(
        "sharegpt", spec, tmp_path / "sg_out.jsonl", max_examples=5, seed=0
    )
    (row,) = read_jsonl(tmp_path / "sg_out.jsonl")
    assert row["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert stats == {
        "domain": "sharegpt",
        "examples": 1,
        "skipped": 1,
        "chars": 7,
        "source": f"{share.parent}:train",
    }


def test_materialise_pretrained_from_a_hub_shaped_folder(tmp_path):
    src = save_tiny_checkpoint(tmp_path / "Llama-2-7b-hf")
    out = tmp_path / "dense"
    materialise.materialise_pretrained(str(src), out)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    a = AutoModelForCausalLM.from_pretrained(src)
    b = AutoModelForCausalLM.from_pretrained(out)
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), k
    assert AutoTokenizer.from_pretrained(out)("the a of")["input_ids"] == [3, 4, 5]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        materialise.materialise_pretrained(str(tmp_path / "missing" / "model"), tmp_path / "x")


@pytest.mark.slow  # ~55 s on 2 busy cores (three snakemake jobs)
def test_download_rules_take_the_hub_path(slimpajama, tmp_path):
    """snakemake download_pretrain_data / download_sft_data / download_model with data.source hub, all local."""
    from test_workflow import copy_workflow

    (tmp_path / "wf").mkdir()
    wf = copy_workflow(tmp_path / "wf")
    model = save_tiny_checkpoint(tmp_path / "hub-model")
    chats = write_jsonl(
        tmp_path / "chat" / "train.jsonl",
        [
            {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
            for i in range(5)
        ],
    )
    cfg = {
        "model": {"source": "pretrained", "pretrained": str(model)},
        "data": {
            "source": "hub",
            "pretrain_domains": ["c4", "github"],
            "pretrain_max_chars": 1000,
            "sft_domains": ["chat"],
            "sft_max_examples": 3,
            "hub": {
                "pretrain": {
                    "c4": spec_for(slimpajama, "RedPajamaC4"),
                    "github": spec_for(slimpajama, "RedPajamaGithub"),
                },
                "sft": {"chat": {"path": str(chats.parent)}},
            },
        },
        "pretrain": {"domain_weights": {"c4": 1, "github": 1, "code": 0, "books": 0, "web": 0, "wiki": 0}},
        "sft": {"domain_weights": {"chat": 1, "general": 0, "math": 0, "code": 0, "explain": 0}},
        "compress": {"calib_domain": "c4"},
        # MoE-SFT's roles name the demo's data sets: a config with other data sets says which stands for which
        "sft_mixture": {"roles": dict.fromkeys(["code", "math", "orca", "sharegpt"], "chat")},
    }
    # the CPT ablation's mixes name the demo domains: a config with other domains maps them (as config/paper.yaml)
    demo = yaml.safe_load((wf / "config.yaml").read_text())["cpt_ablation"]["runs"]
    cfg["cpt_ablation"] = {
        "runs": {
            name: {"domain_weights": {**{d: 0 for d in run["domain_weights"]}, "c4": 1, "github": 1}}
            for name, run in demo.items()
            if "domain_weights" in run
        }
    }
    # so do LLaMA-MoE v2's post-training stages (its weights name the demo's instruction data sets)
    post = yaml.safe_load((wf / "config.yaml").read_text())["post_training"]
    cfg["post_training"] = {
        stage: {"domain_weights": {**{d: 0 for d in post[stage]["domain_weights"]}, "chat": 1}}
        for stage in ("stage1", "stage2")
    }
    # the tiny hub model has 2 blocks: every recipe that drops blocks or FFN layers drops one
    recipes = yaml.safe_load((wf / "config.yaml").read_text())["compress"]["recipes"]
    cfg["compress"]["recipes"] = {
        name: [{**st, "n_drop": 1} if "n_drop" in st else st for st in steps]
        for name, steps in recipes.items()
    }
    (wf / "hub.yaml").write_text(json.dumps(cfg))
    targets = ["resources/data/pretrain/c4.jsonl", "resources/data/sft/chat.jsonl", "resources/models/dense"]
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", *targets, "--cores", "1", "--configfile", "hub.yaml"],
        cwd=wf,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    c4 = read_jsonl(wf / "resources/data/pretrain/c4.jsonl")
    assert sum(len(r["text"]) for r in c4) == 1000 and all(r["text"].startswith("Red") for r in c4)
    assert len(read_jsonl(wf / "resources/data/sft/chat.jsonl")) == 3
    assert (wf / "resources/models/dense/config.json").is_file()
    meta = json.loads((wf / "resources/data/pretrain/c4.jsonl.meta.json").read_text())
    assert meta["config"]["source"] == "hub"
    shutil.rmtree(wf)
