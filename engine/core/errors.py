"""The one exception hierarchy of changefold.

Every error the user can act on derives from `ChangefoldError`; the CLI prints
its message (no traceback) and exits non-zero. Third-party exceptions are
wrapped into one of these at the boundary where they occur.
"""

from __future__ import annotations


class ChangefoldError(Exception):
    """Base class: a problem with a message that says what happened and the fix."""

    exit_code = 1


class ConfigError(ChangefoldError):
    """A setting (environment variable, flag) has a value that cannot be used."""

    exit_code = 2


class StackError(ChangefoldError):
    """A component of the local stack failed to install, start or stop.

    The message names the component, what was seen (for example the last lines
    of its log) and the fix.
    """

    def __init__(self, component: str, problem: str, *, seen: str = "", fix: str = "") -> None:
        self.component = component
        self.problem = problem
        self.seen = seen
        self.fix = fix
        parts = [f"{component}: {problem}"]
        if seen:
            parts.append("Seen:\n" + _indent(seen))
        if fix:
            parts.append(f"Fix: {fix}")
        super().__init__("\n".join(parts))


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines())


class EngineError(ChangefoldError):
    """The change engine (consumer, decoder, fold) cannot go on.

    Raised for problems that stop `changefold run`: Kafka unreachable, a topic
    that does not exist, a state file held by another process.
    """


class DecodeError(EngineError):
    """One change event cannot be decoded; the runner routes it to the dead letters.

    `reason` is the short explanation stored with the dead letter.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class StateError(EngineError):
    """The DuckDB state file cannot be opened, migrated or written."""


class StateLockedError(StateError):
    """Another process holds the DuckDB state file."""

    exit_code = 3


class KafkaUnavailableError(EngineError):
    """The Kafka brokers cannot be reached."""

    exit_code = 4


class TopicMissingError(EngineError):
    """A topic the engine was asked to consume does not exist."""

    exit_code = 5


class WorkloadError(ChangefoldError):
    """The workload generator (`changefold generate`) cannot start or had to stop.

    Raised when Postgres is unreachable, a demo schema is missing or does not
    match sql/source/, or a write fails; nothing half-written is left behind,
    because every generated Postgres transaction commits or rolls back whole.
    """


class WorkloadUsageError(WorkloadError):
    """A generator option is out of range (unknown domain, --rate 0, ...)."""

    exit_code = 2


class ApiError(ChangefoldError):
    """The read-only query API cannot start, or cannot be reached by a client."""


class QueryError(ApiError):
    """A query sent to the state was refused or failed; nothing was changed.

    `kind` says why: "refused" (not a read statement, or it reaches outside the
    state: files, network, extensions), "invalid" (DuckDB could not parse or
    bind it), "timeout" (interrupted after the statement timeout), "busy" (too
    many queries at once) or "failed" (DuckDB raised while running it). The
    message is DuckDB's own where DuckDB produced it.
    """

    exit_code = 2

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        self.message = message
        super().__init__(message)


class ViewError(ChangefoldError):
    """A derived view (sql/views/) cannot be installed or maintained.

    Raised at engine start for a view file that does not parse or reads an
    unknown table (the message names the file and quotes DuckDB), and during a
    batch when a view's SQL fails (the batch's transaction then rolls back).
    """


class ReplayError(ChangefoldError):
    """A replay or a state comparison cannot be done as asked (bounds, target file, inputs)."""

    exit_code = 2


class DemoError(ChangefoldError):
    """`changefold demo` cannot start or keep running one of its processes.

    The message names the process, what was seen (the last lines of its log) and
    the fix.
    """
