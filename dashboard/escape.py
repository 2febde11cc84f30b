"""Names from the data made safe for the medium that shows them.

Every name the dashboard reads comes from outside: process names and command lines from
any local user, host, app, zone, provider and unit tags from any agent that can write
to the fleet's InfluxDB. Each medium interprets some of them:

- Streamlit's Markdown (``st.markdown``, ``caption``, ``info``, ``warning``, metric
  labels) turns ``[x](//evil)`` into a link, ``**x**`` into bold, ``:red[x]`` into
  colour: :func:`md` backslash-escapes every ASCII punctuation character (CommonMark
  lets any of them be escaped). What is matched in the text after parsing, where
  escapes no longer count (``:smile:`` emoji, ``:material/x:`` icons, the bare
  ``www.x``, ``http://x`` and ``a@x`` GFM autolinks), is broken by an invisible word
  joiner after ``:``, ``@`` and ``www``.
- Plotly's text (titles, legends, axis ticks, hovers, bar labels) interprets a subset
  of HTML (``<a href>``, ``<b>``, ``<br>``, entities): :func:`plotly` escapes ``&``,
  ``<`` and ``>``, so the name is drawn as its own characters.
- Plain-text widgets (``st.dataframe`` cells, select options, ``st.text``, ``st.code``)
  need nothing and get the raw name.

Control characters (newlines, escapes) become U+FFFD in both, so a name cannot start a
new Markdown block or move the cursor of whoever reads it.
"""

from __future__ import annotations

import html
import re
from dataclasses import replace

import pandas as pd

from agent.report import SciReport

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character
WORD_JOINER = "\u2060"  # invisible; breaks what is matched in the text after parsing
_WWW = re.compile(r"(www)(?=\\\.)", re.IGNORECASE)


def md(text: object) -> str:
    """``text`` as literal Markdown: shown as typed, never a link, image, emphasis or icon."""
    escaped = _PUNCTUATION.sub(r"\\\1", _CONTROL.sub("\ufffd", str(text)))
    escaped = escaped.replace("\\:", "\\:" + WORD_JOINER).replace("\\@", "\\@" + WORD_JOINER)
    return _WWW.sub("\\1" + WORD_JOINER, escaped)


def plotly(text: object) -> str:
    """``text`` for any Plotly string (title, legend, tick, hover, label): no markup."""
    return html.escape(_CONTROL.sub("\ufffd", str(text)), quote=False)


def plotly_columns(df: pd.DataFrame, *columns: str | None) -> pd.DataFrame:
    """A copy of ``df`` whose ``columns`` (the names Plotly will draw) are escaped, once each."""
    chosen = {c for c in columns if c is not None and c in df.columns}
    return df.assign(**{c: [plotly(x) for x in df[c]] for c in chosen}) if chosen else df


def report_markdown(report: SciReport) -> str:
    """``report.to_markdown()`` with every name in it (app, unit, hosts, components,
    zones, providers) escaped, for showing on a page; the download keeps the raw names."""
    sources = [
        {k: md(v) if isinstance(v, str) else v for k, v in s.items()}
        for s in report.intensity_sources
    ]
    safe = replace(
        report,
        app=md(report.app),
        unit=md(report.unit) if report.unit is not None else None,
        hosts=[md(h) for h in report.hosts],
        measured=[md(c) for c in report.measured],
        modelled=[md(c) for c in report.modelled],
        intensity_sources=sources,
    )
    return safe.to_markdown()
