"""A failed connector task is reported with its root cause, not only Connect's wrapper."""

from __future__ import annotations

from engine.lab.stack.supervisor import _problem, trace_summary

#: The shape of a task's trace when the schema registry refuses a schema (format=avro,
#: an incompatible change under a subject's BACKWARD compatibility).
REFUSED = """org.apache.kafka.connect.errors.ConnectException: Tolerance exceeded in error handler
\tat org.apache.kafka.connect.runtime.errors.RetryWithToleranceOperator.execAndHandleError(X.java:1)
\tat java.base/java.lang.Thread.run(Thread.java:840)
Caused by: org.apache.kafka.connect.errors.DataException: Failed to serialize
\tat io.apicurio.registry.utils.converter.SerdeBasedConverter.fromConnectData(X.java:1)
\t... 12 more
Caused by: io.apicurio.registry.rest.client.exception.RuleViolationException: Incompatible artifact
\t... 20 more
"""


def test_the_summary_names_the_root_cause() -> None:
    assert trace_summary(REFUSED) == (
        "org.apache.kafka.connect.errors.ConnectException: Tolerance exceeded in error handler; "
        "Caused by: io.apicurio.registry.rest.client.exception.RuleViolationException: "
        "Incompatible artifact"
    )
    assert trace_summary("org.postgresql.util.PSQLException: x\n\tat y") == (
        "org.postgresql.util.PSQLException: x"
    )
    assert trace_summary("") == ""


def test_a_failed_task_problem_carries_the_root_cause() -> None:
    status = {
        "connector": {"state": "RUNNING"},
        "tasks": [{"id": 0, "state": "FAILED", "trace": REFUSED}],
    }
    source = {"answers": True, "slot_exists": True, "slot_active": True}
    problem = _problem(status, source)
    assert problem is not None and problem.startswith("task 0 FAILED: ")
    assert "RuleViolationException: Incompatible artifact" in problem
