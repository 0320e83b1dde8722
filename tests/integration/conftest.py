"""The real stack (Postgres, Kafka, Connect with Debezium), started once per test session
and wire format.

It runs in a fresh home on free ports, so it never touches a developer's own
`.stack/`; the resolved jars are shared. It is stopped at the end, even on failure.

Formats: every integration test runs once per format in CHANGEFOLD_TEST_FORMATS
(comma separated, "json" and/or "avro"); unset, that is `json` for a developer's quick
loop and `json,avro` when CI=true. With `avro` the stack also runs the schema registry
and the connectors write Confluent-framed Avro. Test ids carry the format
(`test_x[avro]`). Pytest groups the tests by format, so one stack runs at a time.
A test that is by nature about one format is marked `@pytest.mark.formats("json")`
with the reason in the marker's `reason=`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import free_ports

from engine.core.config import FORMATS, Settings
from engine.decode import avro
from engine.lab.stack.supervisor import Stack


def test_formats() -> list[str]:
    """The formats the integration tests run under (CHANGEFOLD_TEST_FORMATS, else by CI)."""
    raw = os.environ.get("CHANGEFOLD_TEST_FORMATS", "").strip()
    if not raw:
        raw = "json,avro" if os.environ.get("CI", "").lower() in ("true", "1") else "json"
    formats = [f.strip() for f in raw.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise pytest.UsageError(
            f"CHANGEFOLD_TEST_FORMATS={raw!r}: use a comma-separated list of "
            + " and ".join(map(repr, FORMATS))
        )
    return list(dict.fromkeys(formats))


test_formats.__test__ = False  # type: ignore[attr-defined]  # not a test of pytest's


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "formats(*names, reason): the wire formats a test runs under (default: every "
        "format of CHANGEFOLD_TEST_FORMATS); `reason` says why it is limited",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize `stack` (indirectly, every test that uses it) over the formats."""
    if "stack" not in metafunc.fixturenames:
        return
    formats = test_formats()
    marker = metafunc.definition.get_closest_marker("formats")
    params = []
    for fmt in formats:
        marks = []
        if marker is not None and fmt not in marker.args:
            reason = marker.kwargs.get("reason")
            if not reason:
                raise pytest.UsageError(
                    f"{metafunc.definition.nodeid}: @pytest.mark.formats needs reason=..."
                )
            marks.append(pytest.mark.skip(reason=f"{fmt}: not run under this format: {reason}"))
        params.append(pytest.param(fmt, id=fmt, marks=marks))
    metafunc.parametrize("stack", params, indirect=True, scope="session")


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest) -> Iterator[Settings]:
    """Settings of a running stack of the format `request.param`; stopped (and its data
    removed) after the session, or when the tests of the next format start."""
    fmt: str = getattr(request, "param", "json")
    # Not under pytest's tmp dir: that is private to root, and Postgres runs as
    # an unprivileged user that must reach its data folder.
    home = Path(tempfile.mkdtemp(prefix=f"changefold-it-{fmt}-"))
    home.chmod(0o755)
    pg, kafka, controller, connect, registry = free_ports(5)
    settings = Settings.from_env(
        home=home,
        pg_port=pg,
        kafka_port=kafka,
        kafka_controller_port=controller,
        connect_port=connect,
        registry_port=registry,
        format=fmt,
    )
    st = Stack(settings)
    try:
        st.up(echo=lambda line: print(line, flush=True))
        # What the tests decode in this process (an engine run in-process, a topic read)
        # reads Avro through this stack's registry; engines run as children get it from
        # settings.child_env().
        avro.use_registry(settings.stack.registry_url if settings.stack.avro else None)
        yield settings
    finally:
        # The tests after this stack's decode without a registry. (A session-scoped stack
        # is torn down when its format's tests are over, but the last one only when the
        # session ends, after the unit tests: those reset it themselves, unit/conftest.)
        avro.use_registry(None)
        st.down(echo=lambda line: print(line, flush=True))
        if not os.environ.get("CHANGEFOLD_KEEP_TEST_STACK"):
            shutil.rmtree(home, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything in this folder needs the real stack: mark it `integration`."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)
