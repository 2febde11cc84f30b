"""Plotly figures in one style: titled, units on the axes, legends on top, UTC times.

Plotly draws a subset of HTML in every string; names from the data (the colour and
label columns) and titles are escaped here (``dashboard.escape``), so a name is drawn
as text, never as a link.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from dashboard.escape import plotly, plotly_columns

HEIGHT = 340
TIME_AXIS = "Time (UTC)"
PALETTE = [
    "#3A7CA5", "#E07A5F", "#81B29A", "#8E6C8A", "#F2A541",
    "#2A9D8F", "#C0392B", "#6D6875", "#5DA9E9", "#B5838D",
]  # fmt: skip
PART_COLORS = {
    "active": "#E07B39",
    "idle": "#9AA5B1",
    "unattributed": "#C9B458",
    "operational": "#3A7CA5",
    "embodied": "#8E6C8A",
    "cpu": "#3A7CA5",
    "dram": "#81B29A",
    "gpu": "#E07A5F",
}


def style(fig: go.Figure, title: str, y_title: str, x_title: str = TIME_AXIS) -> go.Figure:
    """The house style: title, axis titles, legend above the plot, compact margins."""
    fig.update_layout(
        title={"text": plotly(title), "x": 0, "xanchor": "left", "font": {"size": 16}},
        template="plotly_white",
        height=HEIGHT,
        margin={"l": 10, "r": 10, "t": 70, "b": 10},
        legend={
            "orientation": "h",
            "yanchor": "bottom",
            "y": 1.0,
            "xanchor": "left",
            "x": 0,
            "title": {"text": ""},
        },
        hovermode="x unified",
        colorway=PALETTE,
    )
    fig.update_xaxes(title_text=plotly(x_title), showgrid=True)
    # plain ticks in the axis title's unit: never "500µ" on a g axis, never "1e-05"
    fig.update_yaxes(
        title_text=plotly(y_title),
        rangemode="tozero",
        showgrid=True,
        exponentformat="none",
        separatethousands=True,
    )
    return fig


def stacked_area(
    df: pd.DataFrame,
    y: str,
    color: str,
    title: str,
    y_title: str,
    colors: dict[str, str] | None = None,
) -> go.Figure:
    """Series of ``color`` stacked over time."""
    fig = px.area(
        plotly_columns(df, color).sort_values("time"),
        x="time",
        y=y,
        color=color,
        color_discrete_map={plotly(k): v for k, v in (colors or {}).items()},
        color_discrete_sequence=PALETTE,
        line_shape="linear",
    )
    fig.update_traces(line={"width": 0.8})
    return style(fig, title, y_title)


def with_gaps(df: pd.DataFrame, by: str | None, bucket_ms: int) -> pd.DataFrame:
    """Insert an empty point where a series skips buckets, so its line breaks there
    instead of drawing a straight line across a time it has no data for."""
    out = []
    for _, group in df.groupby(by, sort=False) if by else [(None, df)]:
        group = group.sort_values("time")
        step = group["time"].diff() > pd.Timedelta(milliseconds=1.5 * bucket_ms)
        holes = group[step].assign(time=lambda g: g["time"] - pd.Timedelta(milliseconds=1))
        for column in holes.select_dtypes("number").columns:
            holes[column] = holes[column].astype(float) * float("nan")
        out += [group, holes]
    return pd.concat(out).sort_values("time") if out else df


def lines(
    df: pd.DataFrame,
    y: str,
    color: str | None,
    title: str,
    y_title: str,
    dash: str | None = None,
    bucket_ms: int | None = None,
    dash_map: dict[str, str] | None = None,
) -> go.Figure:
    """One line per ``color`` value (or one line), broken where a series has no data;
    ``dash_map`` gives a ``dash`` value its line style (``"solid"``, ``"dot"``)."""
    if bucket_ms:
        df = with_gaps(df, color, bucket_ms)
    fig = px.line(
        plotly_columns(df, color, dash).sort_values("time"),
        x="time",
        y=y,
        color=color,
        line_dash=dash,
        line_dash_map={plotly(k): v for k, v in (dash_map or {}).items()},
        color_discrete_sequence=PALETTE,
    )
    fig.update_traces(line={"width": 1.8})
    return style(fig, title, y_title)


def ranking(
    df: pd.DataFrame,
    value: str,
    label: str,
    title: str,
    x_title: str,
    fmt: Callable[[float], str] | None = None,
    color: str = "#3A7CA5",
) -> go.Figure:
    """A horizontal bar per ``label``, biggest on top, labelled with ``fmt(value)``."""
    data = df.sort_values(value, ascending=True)
    text = [fmt(float(x)) for x in data[value]] if fmt is not None else None
    fig = go.Figure(
        go.Bar(
            x=data[value],
            y=[plotly(x) for x in data[label]],
            orientation="h",
            marker_color=color,
            text=text,
            textposition="auto",
            hovertemplate="%{y}: %{text}<extra></extra>" if text else "%{y}: %{x}<extra></extra>",
        )
    )
    fig = style(fig, title, "", x_title)
    fig.update_layout(hovermode="closest", height=max(HEIGHT, 60 + 28 * len(data)))
    fig.update_yaxes(title_text="", rangemode=None, showgrid=False, automargin=True)
    fig.update_xaxes(exponentformat="none", separatethousands=True)
    return fig
