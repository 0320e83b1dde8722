"""SQL: read-only queries over the state, with examples, a results table and downloads."""

from __future__ import annotations

import streamlit as st

import data
import export
import queries
import ui

EXAMPLES = dict(queries.EXAMPLES)
TEXT_KEY = "sql_text"
SUBMITTED_KEY = "sql_submitted"

st.title(":material/database_search: SQL")
st.markdown(
    "One read-only statement (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN) over the engine's "
    "DuckDB state: the mirrors `bank.*` and `arcade.*`, the views `live.*`, and the "
    "engine's own tables `_changefold.*`. Writes, file access and extensions are refused."
)

if TEXT_KEY not in st.session_state:  # first visit: show the first example's answer
    st.session_state[TEXT_KEY] = queries.EXAMPLES[0][1]
    st.session_state[SUBMITTED_KEY] = queries.EXAMPLES[0][1]


def use_example() -> None:
    picked = st.session_state.get("sql_example")
    if picked in EXAMPLES:
        st.session_state[TEXT_KEY] = EXAMPLES[picked]


st.selectbox(
    "Example queries", list(EXAMPLES), index=None, placeholder="Pick an example to load it",
    key="sql_example", on_change=use_example,
)  # fmt: skip
st.text_area("Query", key=TEXT_KEY, height=180)
c1, c2, c3 = st.columns([1, 1, 3])
with c1:
    run = st.button("Run", type="primary", key="sql_run", shortcut="ctrl+enter")
with c2:
    max_rows = st.number_input("Max rows", 1, 10000, 1000, step=100, key="sql_max_rows")
with c3:
    rerun = st.toggle("Re-run on every refresh", value=False, key="sql_live")
if run:
    st.session_state[SUBMITTED_KEY] = st.session_state[TEXT_KEY]


def results() -> None:
    sql = st.session_state.get(SUBMITTED_KEY)
    if not sql:
        st.caption("Run a query to see its rows here.")
        return
    try:
        result = data.query(sql, max_rows=int(max_rows))
    except data.DataError as exc:
        ui.banner(exc, own_query=True)
        return
    frame = result.frame
    st.caption(
        f"{result.row_count:,} row(s)"
        + (" · **truncated** (raise Max rows, or narrow the query)" if result.truncated else "")
        + f" · {result.elapsed_ms:.1f} ms"
    )
    st.dataframe(frame, hide_index=True, key="sql_result")
    d1, d2, _ = st.columns([1, 1, 4])
    d1.download_button(
        "CSV",
        export.to_csv(frame),
        icon=":material/download:",
        file_name="changefold-query.csv",
        mime="text/csv",
        on_click="ignore",
        key="sql_csv",
    )
    d2.download_button(
        "Parquet",
        export.to_parquet(frame),
        icon=":material/download:",
        file_name="changefold-query.parquet",
        mime="application/vnd.apache.parquet",
        on_click="ignore",
        key="sql_parquet",
    )


st.fragment(run_every=ui.refresh_every() if rerun else None)(results)()
