"""README's "What is and is not reproduced yet" section is the one the report registry generates, and the
README names only make targets the Makefile has."""

import re
from pathlib import Path

import pytest

from moelab.report import OUTPUTS, PAPERS, PENDING
from moelab.report.status import BEGIN, END, replace_section, section_of, status_markdown

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_readme_status_section_is_generated():
    text = README.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1, "README needs one BEGIN and one END status marker"
    assert section_of(text) == status_markdown(), (
        "README's status section differs from the report registry: run `make readme` "
        "(python -m moelab.report.status --write README.md)"
    )


def test_status_lists_every_registered_and_pending_item():
    md = status_markdown()
    for paper in PAPERS:
        assert f"| `{paper}` |" in md
        for name in (*OUTPUTS[paper], *PENDING.get(paper, {})):
            assert f"| `{name}` |" in md, f"{paper}/{name} missing from the status table"


def test_status_follows_the_built_stages():
    some_built = status_markdown(stages=["dense", "moe"])
    line = next(x for x in some_built.splitlines() if "| `llama_moe` | `table_main`" in x)
    assert "| partly built | `dense`, `moe` / `pretrain`, `pretrain_active` |" in line
    line = next(x for x in some_built.splitlines() if "`table_sampling`" in x)
    assert "| built (target `llama_moe_sampling`) | our runs |" in line
    none_built = status_markdown(stages=[])
    line = next(x for x in none_built.splitlines() if "| `llama_moe` | `table_main`" in x)
    assert "| not built yet |" in line


def test_replace_section_round_trip():
    text = f"# t\n\n{BEGIN}\nold\n{END}\n\nafter\n"
    new = replace_section(text, "new\n")
    assert section_of(new) == "new\n" and new.endswith(f"{END}\n\nafter\n")
    with pytest.raises(ValueError, match="markers"):
        replace_section("no markers", "x")


def test_readme_make_targets_exist():
    phony = re.search(r"^\.PHONY:(.*)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()
    named = set(re.findall(r"`make ([a-z]+)", README.read_text()))
    assert named and named <= set(phony), (
        f"README names make targets the Makefile lacks: {named - set(phony)}"
    )
