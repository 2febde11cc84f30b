"""The pages' typed, cached queries (``dashboard.queries.Queries``) over a real store."""

from __future__ import annotations

import inspect
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st

from dashboard.data.base import DataSource, Hosts
from dashboard.data.sqlite_source import SqliteSource
from dashboard.queries import Queries
from dashboard.timerange import TimeRange
from tests import dashboard_data as data

#: DataSource members that are not queries a page makes through the cache.
NOT_CACHED = {"kind", "describe", "cache_key", "units_per_second"}


class CountingSource(SqliteSource):
    """The real store source, counting the queries that reach it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.calls: Counter[str] = Counter()

    def app_totals(self, hosts: Hosts, rng: TimeRange) -> pd.DataFrame:
        self.calls["app_totals"] += 1
        return super().app_totals(hosts, rng)

    def top_processes(self, host: str, rng: TimeRange, n: int = 10) -> pd.DataFrame:
        self.calls["top_processes"] += 1
        return super().top_processes(host, rng, n)


@pytest.fixture(scope="module")
def end() -> int:
    return data.end_ms()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, end: int) -> Path:
    path = tmp_path_factory.mktemp("queries") / "store.db"
    data.fill(path, end)
    return path


@pytest.fixture(autouse=True)
def clear_cache() -> None:
    st.cache_data.clear()


def test_every_query_of_the_source_has_a_typed_method_with_its_signature() -> None:
    queries = {
        name
        for name, member in vars(DataSource).items()
        if callable(member) and not name.startswith("_") and name not in NOT_CACHED
    }
    assert queries, "no query found on DataSource"
    for name in sorted(queries):
        wanted = inspect.signature(getattr(DataSource, name))
        got = inspect.signature(getattr(Queries, name))
        assert got == wanted, f"Queries.{name}{got} differs from DataSource.{name}{wanted}"
    extra = {n for n in vars(Queries) if not n.startswith("_")} - queries - {"src"}
    assert not extra, f"Queries has methods the source lacks: {extra}"


def test_answers_are_the_sources_and_repeats_come_from_the_cache(
    store: Path, end: int
) -> None:
    src = CountingSource(store)
    rng, earlier = TimeRange.ending(end, 6 * 3600), TimeRange.ending(end - 3600_000, 6 * 3600)
    cached = Queries(src)
    first = cached.app_totals(None, rng)
    pd.testing.assert_frame_equal(first, SqliteSource(store).app_totals(None, rng))
    assert not first.empty
    again = Queries(src).app_totals(None, rng)  # a new facade, as each page run makes
    pd.testing.assert_frame_equal(again, first)
    assert src.calls["app_totals"] == 1
    cached.app_totals(None, earlier)
    host = str(SqliteSource(store).hosts(end)["host"].iloc[0])
    cached.app_totals((host,), rng)
    assert src.calls["app_totals"] == 3
    cached.top_processes(host, rng, 10)
    cached.top_processes(host, rng, 10)
    cached.top_processes(host, rng, 3)
    assert src.calls["top_processes"] == 2


def test_sources_with_another_identity_never_share_entries(
    store: Path, tmp_path: Path, end: int
) -> None:
    rng = TimeRange.ending(end, 6 * 3600)
    copy = tmp_path / "copy.db"
    copy.write_bytes(store.read_bytes())
    one, other = CountingSource(store), CountingSource(copy)
    Queries(one).app_totals(None, rng)
    Queries(other).app_totals(None, rng)
    assert one.calls["app_totals"] == other.calls["app_totals"] == 1
