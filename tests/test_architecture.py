"""The floors of src/moelab (docs/architecture.md): imports flow down, floor-4 stages never import each other,
no loops between packages. Every import counts, those inside functions included."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# top-level module or package of moelab -> floor (0 = ground)
FLOORS = {
    "errors": 0,
    "runtime": 0,
    "provenance": 0,
    "files": 0,
    "papers": 0,
    "config_keys": 0,
    "model_facts": 0,
    "models": 1,
    "io": 1,
    "data": 2,
    "mixture": 3,
    "construct": 4,
    "train": 4,
    "compress": 4,
    "evaluate": 4,
    "adapters": 4,
    "dynamic": 4,
    "graphs": 4,
    "report": 5,
    "config": 5,
    "resources": 5,
}
STAGE_FLOOR = 4  # stage packages: may use every lower floor, never each other


def _unit(module: str) -> str | None:
    """The moelab top-level unit of a dotted module name ("moelab.data.hub" -> "data"), or None."""
    parts = module.split(".")
    return parts[1] if parts[0] == "moelab" and len(parts) > 1 else None


def _imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute dotted module) of every import in a file, relative imports resolved."""
    package = ".".join(path.relative_to(root).with_suffix("").parts)
    if path.name == "__init__.py":
        package = package.rsplit(".", 1)[0] + ".__init__"
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: -node.level]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            out.append((node.lineno, name))
            out += [(node.lineno, f"{name}.{a.name}") for a in node.names if name == "moelab"]
    return out


def floor_violations(root: Path, floors: dict[str, int] = FLOORS) -> list[str]:
    """Every import of a higher floor or of another stage package, every unit missing from `floors`, and every
    import loop between units, as "file:line: message" strings (empty: the house is one-way)."""
    problems, edges = [], {}
    for path in sorted((root / "moelab").rglob("*.py")):
        rel = path.relative_to(root)
        here = _unit(".".join(rel.with_suffix("").parts))
        if here in (None, "__init__"):  # moelab/__init__.py
            continue
        if here not in floors:
            problems.append(f"{rel}: {here!r} has no floor in FLOORS (docs/architecture.md)")
            continue
        for line, module in _imports(path, root):
            there = _unit(module)
            if there is None or there == here or there == "__init__":
                continue
            if there not in floors:
                continue  # reported where that unit is defined
            edges.setdefault(here, set()).add(there)
            if floors[there] > floors[here]:
                problems.append(
                    f"{rel}:{line}: {here} (floor {floors[here]}) imports {module} (floor {floors[there]})"
                )
            elif floors[there] == floors[here] == STAGE_FLOOR:
                problems.append(f"{rel}:{line}: stage {here} imports stage {there} ({module})")
    seen, stack = set(), []

    def visit(unit):
        if unit in stack:
            problems.append("import loop: " + " -> ".join([*stack[stack.index(unit) :], unit]))
            return
        if unit in seen:
            return
        seen.add(unit)
        stack.append(unit)
        for nxt in sorted(edges.get(unit, ())):
            visit(nxt)
        stack.pop()

    for unit in sorted(edges):
        visit(unit)
    return problems


def test_src_moelab_imports_flow_down_the_floors():
    assert floor_violations(SRC) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in {"moelab/__init__.py": "", **files}.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "needle"),
    [
        # an upward import, hidden inside a function
        (
            {"moelab/data/__init__.py": "def f():\n    from moelab.train import loop\n"},
            "data (floor 2) imports moelab.train",
        ),
        # a relative import that climbs out of its package
        ({"moelab/models/x.py": "from ..report import tables\n"}, "models (floor 1) imports moelab.report"),
        # two stage packages
        (
            {"moelab/compress/a.py": "import moelab.construct.build\n"},
            "stage compress imports stage construct",
        ),
        # `from moelab import evaluate` names the unit through the package
        ({"moelab/io.py": "from moelab import evaluate\n"}, "io (floor 1) imports moelab.evaluate"),
        # a new package nobody placed
        ({"moelab/newstage/__init__.py": ""}, "'newstage' has no floor"),
    ],
)
def test_the_checker_catches_a_planted_violation(tmp_path, files, needle):
    problems = floor_violations(_tree(tmp_path, files))
    assert any(needle in p for p in problems), problems


def test_the_checker_catches_a_loop_on_one_floor(tmp_path):
    root = _tree(
        tmp_path,
        {"moelab/files.py": "import moelab.errors\n", "moelab/errors.py": "from moelab import files\n"},
    )
    assert any(p.startswith("import loop: errors -> files -> errors") for p in floor_violations(root))
    clean = _tree(tmp_path / "ok", {"moelab/files.py": "import moelab.errors\n", "moelab/errors.py": ""})
    assert floor_violations(clean) == []
