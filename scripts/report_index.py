"""index.md of one paper: every table and figure, or why it is not reproduced yet (rule paper_index)."""

from pathlib import Path

from moelab.provenance import Provenance
from moelab.runtime import setup

sm = snakemake  # noqa: F821
setup(sm.log[0], 1, 0)
prov = Provenance(config={"paper": sm.wildcards.paper})
out = Path(sm.output[0])
tmp = out.with_name(out.name + ".tmp")
tmp.write_text(sm.params.text)
tmp.replace(out)
prov.write(out)
