"""sha256 of every materialised file (rule manifest)."""

from pathlib import Path

from moelab.files import write_manifest
from moelab.runtime import setup

sm = snakemake  # noqa: F821
setup(sm.log[0], sm.threads, 0)
files = []
for item in sm.input:
    p = Path(item)
    files.extend(sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p])
write_manifest(files, Path(sm.output[0]), root=Path(sm.params.root))
