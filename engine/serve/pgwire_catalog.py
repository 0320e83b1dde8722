"""Postgres catalog dialect that DuckDB's pg_catalog does not speak, rewritten for it.

DuckDB ships a pg_catalog schema (pg_class, pg_namespace, pg_attribute, pg_type,
...), enough for most of what psql's meta-commands (`\\dt`, `\\dn`, `\\d table`)
and tools' schema browsers ask. Their queries also use a few Postgres-only forms,
rewritten here in the query text before it goes through the query API's checks
like any other text:

- `x OPERATOR(pg_catalog.~) y` -> `x ~ y` (and the other regex operators);
- `COLLATE pg_catalog.default` / `"default"` / `"C"` -> dropped;
- `pg_catalog.pg_get_userbyid(...)` -> `'changefold'` (the one user);
- `pg_catalog.pg_encoding_to_char(...)` -> `'UTF8'`.

Only text that names `pg_catalog.` is touched; a rewrite never widens what a
query may do (the checks run on the result).
"""

from __future__ import annotations

import re

_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"OPERATOR\s*\(\s*pg_catalog\.(~\*|!~\*|~|!~|=|<>)\s*\)", re.I), r"\1"),
    (re.compile(r"\s+COLLATE\s+pg_catalog\.(?:default|\"default\"|\"C\")", re.I), ""),
    (re.compile(r"pg_catalog\.pg_get_userbyid\s*\([^()]*\)", re.I), "'changefold'"),
    (re.compile(r"pg_catalog\.pg_encoding_to_char\s*\([^()]*\)", re.I), "'UTF8'"),
)


def rewrite(sql: str) -> str:
    """`sql` with the Postgres-only catalog forms above replaced by DuckDB's."""
    if "pg_catalog." not in sql.lower():
        return sql
    for pattern, replacement in _RULES:
        sql = pattern.sub(replacement, sql)
    return sql
