"""The SQL page (Streamlit AppTest): examples, results, downloads, refusals, API down."""

from __future__ import annotations

from typing import Any

import pytest
from dashboards_support import Served, nothing_up, open_page, queries, texts


def run_sql(at: Any, sql: str) -> Any:
    at.text_area(key="sql_text").input(sql)
    at.button(key="sql_run").click().run()
    return at


def test_first_visit_shows_the_first_example_answered(served: Served) -> None:
    at = open_page("sql")
    sql = queries.EXAMPLES[0][1]
    assert at.text_area(key="sql_text").value == sql
    table = at.dataframe[0].value
    expected = served.rows("SELECT rank, name FROM live.leaderboard ORDER BY rank LIMIT 10")
    assert list(table[["rank", "name"]].itertuples(index=False, name=None)) == expected
    assert any(c.startswith("10 row(s)") for c in texts(at.caption))


def test_examples_load_into_the_editor_and_all_run(served: Served) -> None:
    at = open_page("sql")
    for title, sql in queries.EXAMPLES:
        at.selectbox(key="sql_example").set_value(title).run()
        assert at.text_area(key="sql_text").value == sql
        at.button(key="sql_run").click().run()
        assert not at.exception and not at.error, f"example {title!r}: {texts(at.error)}"
        assert at.dataframe, f"example {title!r} shows no table"


def test_a_query_its_rows_truncation_and_downloads(served: Served) -> None:
    at = open_page("sql")
    at.number_input(key="sql_max_rows").set_value(3).run()
    run_sql(at, "SELECT account_id, balance FROM bank.accounts ORDER BY account_id")
    table = at.dataframe[0].value
    expected = served.rows("SELECT account_id FROM bank.accounts ORDER BY account_id LIMIT 3")
    assert [(int(a),) for a in table["account_id"]] == expected
    assert any("3 row(s) · **truncated**" in c for c in texts(at.caption))
    buttons = {b.proto.label: b.proto.url for b in at.download_button}
    assert sorted(buttons) == ["CSV", "Parquet"]
    assert all(url.startswith("/mock/media/") for url in buttons.values())


BAD = {
    "SELEC 1": "syntax error",
    "INSERT INTO bank.accounts (account_id) VALUES (999999)": "refused",
    "COPY bank.accounts TO '/tmp/accounts.csv'": "refused",
    "ATTACH '/tmp/other.duckdb' AS other": "refused",
    "SELECT * FROM read_csv('/etc/passwd')": "read_csv",
    "SELECT 1; SELECT 2": "2 statements",
    "SELECT * FROM no_such_table": "does not exist",
}


@pytest.mark.parametrize("sql", list(BAD))
def test_bad_statements_get_a_clear_error_and_change_nothing(served: Served, sql: str) -> None:
    before = served.rows("SELECT count(*), max(account_id) FROM bank.accounts")
    at = run_sql(open_page("sql"), sql)
    errors = texts(at.error)
    assert len(errors) == 1 and errors[0].startswith("**The query failed**")
    assert BAD[sql] in errors[0].lower() or BAD[sql] in errors[0]
    assert not at.dataframe
    assert served.rows("SELECT count(*), max(account_id) FROM bank.accounts") == before


def test_api_down_shows_a_banner_when_running(monkeypatch: pytest.MonkeyPatch) -> None:
    url = nothing_up(monkeypatch)
    at = open_page("sql")
    errors = texts(at.error)
    assert len(errors) == 1 and "Engine down" in errors[0] and url in errors[0]
    run_sql(at, "SELECT 42")
    assert len(texts(at.error)) == 1 and not at.dataframe
