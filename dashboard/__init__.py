"""The Streamlit dashboard: reads the embedded store or InfluxDB (``sci-agent dashboard``).

Only this package imports pandas, plotly and streamlit; the agent never imports it.
"""
