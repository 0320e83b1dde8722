"""How large a value DuckDB would build while planning a query: constant folding.

DuckDB evaluates a function whose arguments are all constants once, while it plans
the query (`repeat('x', 1000000000)`, `lpad('a', 1e9, 'b')`, `range(200000000)` as a
list). No interrupt reaches that work, and it is not counted where a query's memory
is watched, so one such call can grow the engine by gigabytes. `folded_bytes`
estimates, from the statement's syntax tree (DuckDB's `json_serialize_sql`), the
size of the value a constant expression builds; the query API refuses a statement
in which one passes its bound. Expressions that read a table are not constant: they
run as the query executes, where the statement timeout and the memory watchdog
reach them.

Pure functions over the JSON tree; an estimate errs on the large side for the
functions that build values from a count (repeat, lpad/rpad, range,
generate_series, list_resize/array_resize) and adds up the arguments' sizes for
every other function.
"""

from __future__ import annotations

from typing import Any

#: Bytes a number or another fixed-size constant takes, as counted here.
_FIXED = 16
#: Bytes per element of a list built from a count.
_PER_ELEMENT = 8


def constant_int(expr: Any) -> int | None:
    """The integer value of a constant numeric expression (a literal, a cast of one,
    arithmetic of such), or None."""
    if not isinstance(expr, dict):
        return None
    kind = expr.get("class")
    if kind == "CONSTANT":
        literal = expr.get("literal") or {}
        text = str(literal.get("text", literal.get("value", "")))
        try:
            return int(float(text))
        except (TypeError, ValueError, OverflowError):
            return None
    if kind == "CAST":
        return constant_int(expr.get("child"))
    if kind == "FUNCTION":
        name = str(expr.get("function_name", "")).lower()
        args = [constant_int(a) for a in _arguments(expr)]
        if any(a is None for a in args) or not args:
            return None
        values = [a for a in args if a is not None]
        if name == "-" and len(values) == 1:
            return -values[0]
        if name in ("+", "-", "*") and len(values) == 2:
            a, b = values
            # capped: a size past 2**62 is past every bound anyway
            result = a + b if name == "+" else a - b if name == "-" else a * b
            return max(min(result, 2**62), -(2**62))
        if name in ("**", "^", "pow", "power") and len(values) == 2:
            base, exponent = values
            if abs(base) <= 1 or exponent < 0:
                return base**exponent if exponent >= 0 else 0
            return 2**62 if exponent > 62 else max(min(base**exponent, 2**62), -(2**62))
    return None


def folded_bytes(expr: Any) -> int | None:
    """Estimated bytes of the value a constant expression builds while the query is
    planned; None when the expression is not constant (it reads a table, a column,
    a subquery, a parameter)."""
    if not isinstance(expr, dict):
        return None
    kind = expr.get("class")
    if kind == "CONSTANT":
        literal = expr.get("literal") or {}
        if literal.get("kind") in ("STRING", "VARCHAR", "BLOB"):
            return len(str(literal.get("text", literal.get("value", ""))))
        return _FIXED
    if kind == "CAST":
        return folded_bytes(expr.get("child"))
    if kind != "FUNCTION":
        return None
    args = _arguments(expr)
    sizes = [folded_bytes(a) for a in args]
    if any(s is None for s in sizes):
        return None
    known = [s for s in sizes if s is not None]
    name = str(expr.get("function_name", "")).lower()
    counts = [constant_int(a) for a in args]
    if name == "repeat" and len(args) == 2 and counts[1] is not None:
        return known[0] * max(counts[1], 0)
    if name in ("lpad", "rpad") and len(args) >= 2 and counts[1] is not None:
        return max(counts[1], 0)
    if name in ("range", "generate_series") and 1 <= len(args) <= 3:
        return _range_elements(counts) * _PER_ELEMENT
    if name in ("list_resize", "array_resize") and len(args) >= 2 and counts[1] is not None:
        return known[0] + max(counts[1], 0) * max(known[-1] if len(args) == 3 else 0, _PER_ELEMENT)
    return sum(known) if known else _FIXED


def largest_folded(tree: Any) -> int:
    """The largest estimate over every function call of a syntax tree (0: none)."""
    largest = 0
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("type") == "TABLE_FUNCTION":
                # A table function streams its rows as the query executes: only its
                # arguments are folded while planning.
                function = item.get("function")
                stack.extend(_arguments(function) if isinstance(function, dict) else [])
                continue
            if item.get("class") == "FUNCTION":
                size = folded_bytes(item)
                if size is not None and size > largest:
                    largest = size
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return largest


def _arguments(expr: dict[str, Any]) -> list[Any]:
    out = []
    for arg in expr.get("arguments") or expr.get("children") or []:
        out.append(arg.get("expression", arg) if isinstance(arg, dict) else arg)
    return out


def _range_elements(counts: list[int | None]) -> int:
    """Elements of range(stop) / range(start, stop[, step]); unknown bounds: none known."""
    if any(c is None for c in counts):
        return 0
    values = [c for c in counts if c is not None]
    if len(values) == 1:
        return max(values[0], 0)
    start, stop = values[0], values[1]
    step = values[2] if len(values) == 3 else 1
    if step == 0:
        return 0
    return max((stop - start) // step, 0)
