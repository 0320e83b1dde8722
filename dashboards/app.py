"""changefold dashboards: the entry page of `streamlit run dashboards/app.py`.

Pages (dashboards/app_pages/): Overview, Leaderboard, Fraud, Pipeline, SQL. Every
page reads through dashboards/data.py (the engine's query API, Kafka Connect's
REST API and Postgres), refreshes its live panels on its own, and shows a
banner, not a traceback, when a source is down.

Settings (environment): CHANGEFOLD_API_URL or CHANGEFOLD_API_PORT (the engine's
API, 127.0.0.1:58000), CHANGEFOLD_CONNECT_PORT (58083), CHANGEFOLD_PG_* (the
local stack's Postgres), CHANGEFOLD_DASHBOARD_REFRESH_S (3 s between refreshes).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

import data
import ui

# Not "pages/": Streamlit runs scripts in a folder of that name as pages of its own
# (without this entry script) when a deep link is the first request after a start.
PAGES = Path(__file__).parent / "app_pages"

# An emoji favicon: the browser draws it from an inline SVG. A ":material/..." favicon
# would be fetched from a font CDN, off the machine.
st.set_page_config(page_title="changefold", page_icon="🌀", layout="wide")

navigation = st.navigation(
    [
        st.Page(PAGES / "overview.py", title="Overview", icon=":material/dashboard:", default=True),
        st.Page(
            PAGES / "leaderboard.py",
            title="Leaderboard",
            icon=":material/leaderboard:",
            url_path="leaderboard",
        ),
        st.Page(PAGES / "fraud.py", title="Fraud", icon=":material/gpp_maybe:", url_path="fraud"),
        st.Page(
            PAGES / "pipeline.py",
            title="Pipeline",
            icon=":material/monitor_heart:",
            url_path="pipeline",
        ),
        st.Page(PAGES / "sql.py", title="SQL", icon=":material/database_search:", url_path="sql"),
    ]
)

with st.sidebar:
    st.toggle("Auto-refresh", value=True, key=ui.AUTO_KEY)
    st.slider(
        "Every (seconds)",
        min_value=1,
        max_value=30,
        value=max(1, round(data.sources().refresh_s)),
        key=ui.EVERY_KEY,
        disabled=not st.session_state.get(ui.AUTO_KEY, True),
    )
    st.caption(f"API {data.sources().api_url}")

navigation.run()
