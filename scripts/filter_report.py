"""Rule filter_report: every per-domain filter report (results/filters/{filter}/{domain}.csv) in one CSV."""

from moelab.data.filters import REPORT_FIELDS, concat_reports
from moelab.files import read_csv, write_csv
from moelab.provenance import Provenance
from moelab.runtime import setup

sm = snakemake  # noqa: F821
log = setup(sm.log[0], sm.threads)
rows = concat_reports([read_csv(path) for path in sm.input], names=list(sm.input))
write_csv(rows, sm.output[0], REPORT_FIELDS)
Provenance(config={}, inputs=list(sm.input)).write(sm.output[0], extra={"rows": len(rows)})
log.info("filter report: %d rows from %d files", len(rows), len(sm.input))
