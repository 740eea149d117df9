"""What is and is not reproduced yet: README's status section, generated from the report registry.

For every paper the registry (:data:`moelab.report.OUTPUTS`, :data:`moelab.report.PENDING`,
:data:`moelab.report.TABLES`) lists its tables and figures; a table row of ours reads
``results/eval/<stage>/<paper>.json``, so a row is *built* when the workflow has that stage
(``moelab.evaluate.plan.STAGES``, and the MoE-SFT mixture runs ``sft_<run>`` of config.yaml). Published numbers are those checked in under
``moelab/report/published/<paper>.csv`` (:func:`moelab.report.load_published`).

Regenerate README's section (between :data:`BEGIN` and :data:`END`) with ``make readme``, i.e.
``python -m moelab.report.status --write README.md``; ``python -m moelab.report.status`` prints it.
``tests/test_readme.py`` fails when README differs from :func:`status_markdown`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

from moelab.report import OUTPUTS, PAPERS, PENDING, TABLES, load_published

BEGIN = "<!-- BEGIN status (generated: make readme; do not edit by hand) -->"
END = "<!-- END status -->"


def _built_stages(config_path: str | Path = "config.yaml") -> tuple[str, ...]:
    """The pipeline's stages (``moelab.evaluate.plan.STAGES``), the MoE-SFT mixture runs (``sft_<run>``,
    rules/sft_mixture.smk), the post-training runs (``<run>``, rules/post_training.smk) and the compression
    recipes evaluated (``compress/<recipe>``, rules/compress.smk) of the demo config when ``config_path`` exists."""
    import yaml

    from moelab.evaluate.plan import STAGES

    path = Path(config_path)
    cfg = yaml.safe_load(path.read_text()) if path.exists() else {}
    runs = (cfg.get("sft_mixture") or {}).get("runs") or {}
    post = (cfg.get("post_training") or {}).get("table") or []
    recipes = (cfg.get("compress") or {}).get("methods") or []
    return (*STAGES, *(f"sft_{run}" for run in runs), *post, *(f"compress/{r}" for r in recipes))


def _published(spec) -> tuple[str, int]:
    """Cell text of the published numbers of ``spec``, and how many cells hold a number."""
    pub = load_published(spec.paper)
    pub = pub[pub["table"] == spec.published_table]
    filled = pub[pub["value"].notna()]
    if filled.empty:
        return "none yet (layout only)", 0
    sources = "; ".join(sorted(set(filled["source"])))
    unverified = int((~filled["verified"]).sum())
    checked = f"{unverified} unverified (marked *)" if unverified else "verified"
    return f"{len(filled)} of {len(pub)} cells, {checked}; from: {sources}", len(filled)


def _stage_label(source: str, paper: str) -> str:
    stage, of = source.rsplit("/", 1)
    return f"`{stage}`" if of == paper else f"`{source}`"


def status_markdown(stages: Iterable[str] | None = None) -> str:
    """The Markdown of README's "What is and is not reproduced yet" section (without the markers).

    Args:
        stages: evaluation stages the workflow builds (default: ``moelab.evaluate.plan.STAGES``).

    Returns:
        A summary of which papers have published numbers and rows of ours, the stages built and the ones
        the registry's rows wait for, then one table line per registered or pending table and figure.
    """
    built = tuple(_built_stages() if stages is None else stages)
    specs = {(s.paper, s.name): s for s in TABLES}
    lines = [
        "| paper (target) | table / figure | status | our rows: stage built / stage not built yet "
        "| published numbers checked in |",
        "|---|---|---|---|---|",
    ]
    with_published: dict[str, int] = {}
    with_ours: set[str] = set()
    waiting: set[str] = set()
    for paper in PAPERS:
        first = f"`{paper}`"
        with_published[paper] = 0
        for name, out in OUTPUTS[paper].items():
            spec = specs.get((paper, name))
            where = "" if out.in_all else f" (target `{out.target}`)"
            if spec is None:
                with_ours.add(paper)
                published = "-" if out.kind == "figure" else "not tracked here"
                status, ours = f"built{where}", "our runs"
            else:
                sources = spec.sources()
                have = [s for s in sources if s.rsplit("/", 1)[0] in built]
                lack = [s for s in sources if s.rsplit("/", 1)[0] not in built]
                waiting.update(s.rsplit("/", 1)[0] for s in lack)
                if have:
                    with_ours.add(paper)
                status = ("built" if not lack else "partly built" if have else "not built yet") + where
                ours = " / ".join(
                    ", ".join(_stage_label(s, paper) for s in group) or "-" for group in (have, lack)
                )
                published, n = _published(spec)
                with_published[paper] += n
            lines.append(f"| {first} | `{name}` | {status} | {ours} | {published} |")
            first = ""
        for name, why in PENDING.get(paper, {}).items():
            lines.append(f"| {first} | `{name}` | not built yet | {why} | - |")
            first = ""

    def names(papers) -> str:
        return ", ".join(f"`{p}`" for p in papers) or "none"

    have_pub = [p for p in PAPERS if with_published[p]]
    summary = [
        "Published numbers checked in: "
        + ", ".join(f"`{p}` ({with_published[p]} cells)" for p in have_pub)
        + f"; layout only (no number yet): {names(p for p in PAPERS if not with_published[p])}.",
        f"Our own numbers (at least one row or figure): {names(p for p in PAPERS if p in with_ours)}; "
        f"none yet: {names(p for p in PAPERS if p not in with_ours)}.",
        f"Stages the workflow builds: {', '.join(f'`{s}`' for s in built)}. "
        f"Stages the tables wait for (no rule yet; their cells read `not reproduced yet`): "
        f"{', '.join(f'`{s}`' for s in sorted(waiting)) or 'none'}.",
    ]
    return "\n\n".join(summary) + "\n\n" + "\n".join(lines) + "\n"


def replace_section(text: str, section: str) -> str:
    """``text`` with the part between the :data:`BEGIN` and :data:`END` lines replaced by ``section``.

    Raises:
        ValueError: the markers are missing or out of order.
    """
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README lacks the markers {BEGIN!r} ... {END!r} (in this order)")
    head = text[: start + len(BEGIN)]
    return f"{head}\n{section}{text[end:]}"


def section_of(text: str) -> str:
    """The text between the :data:`BEGIN` line and the :data:`END` line (as :func:`replace_section` writes it).

    Raises:
        ValueError: the markers are missing or out of order.
    """
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README lacks the markers {BEGIN!r} ... {END!r} (in this order)")
    return text[start + len(BEGIN) + 1 : end]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="README", help="rewrite this file's section in place")
    args = parser.parse_args(argv)
    section = status_markdown()
    if args.write:
        path = Path(args.write)
        path.write_text(replace_section(path.read_text(), section))
    else:
        sys.stdout.write(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
