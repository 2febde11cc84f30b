"""Data access for the dashboard: one ``DataSource`` protocol, two implementations."""

from dashboard.data.base import DataSource, DataSourceError

__all__ = ["DataSource", "DataSourceError"]
