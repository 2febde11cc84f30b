"""The SCI report as CSV (Markdown and JSON come from ``agent.report.SciReport``)."""

from __future__ import annotations

import csv
import io

from agent.report import SciReport

CSV_FIELDS = (
    "app", "unit", "period_start", "period_end", "hosts", "intervals", "sci_g_per_unit",
    "carbon_g", "energy_kwh", "intensity_gco2_per_kwh", "operational_g", "embodied_g",
    "units", "measured", "modelled",
)  # fmt: skip


def report_csv(report: SciReport) -> str:
    """The report's figures as one CSV row under a header (lists joined with "; ")."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_FIELDS)
    row = []
    for name in CSV_FIELDS:
        value = getattr(report, name)
        row.append("; ".join(value) if isinstance(value, list) else value)
    writer.writerow(row)
    return out.getvalue()
