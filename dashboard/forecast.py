"""The grid's forecast and its greenest window, for the Grid page.

The logic lives in ``agent.grid.forecast`` (the CLI's ``greenest-window`` uses it too);
this module keeps the names the dashboard imports.
"""

from __future__ import annotations

from agent.grid.forecast import Forecast, Window, fetch_forecast, greenest_window, window_mean

__all__ = ["Forecast", "Window", "fetch_forecast", "greenest_window", "window_mean"]
