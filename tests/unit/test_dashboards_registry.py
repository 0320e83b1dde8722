"""The Pipeline page's schema registry section: where the schemas are with format json,
and with format avro a registry that does not answer or is not on this machine (the
subjects of a real registry are checked by the browser test on an avro stack)."""

from __future__ import annotations

import pytest
from dashboards_support import closed_port, data, nothing_up, open_page, texts


def test_sources_read_the_format_and_the_registry() -> None:
    src = data.Sources.from_env({})
    assert src.fmt == "json"
    assert src.registry_url == "http://127.0.0.1:58081" and src.registry_local
    src = data.Sources.from_env(
        {"CHANGEFOLD_FORMAT": "avro", "CHANGEFOLD_REGISTRY_HOST": "::1",
         "CHANGEFOLD_REGISTRY_PORT": "46081"}
    )  # fmt: skip
    assert src.fmt == "avro" and src.registry_url == "http://[::1]:46081" and src.registry_local
    for host, local in (("localhost", True), ("registry", False), ("10.1.2.3", False)):
        assert data.Sources.from_env({"CHANGEFOLD_REGISTRY_HOST": host}).registry_local is local
    with pytest.raises(data.DataError, match="CHANGEFOLD_REGISTRY_PORT"):
        data.Sources.from_env({"CHANGEFOLD_REGISTRY_PORT": "x"})


def test_json_format_says_the_schemas_travel_in_each_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nothing_up(monkeypatch)
    monkeypatch.delenv("CHANGEFOLD_FORMAT", raising=False)
    at = open_page("pipeline")
    assert any(h.value == "Schema registry" for h in at.subheader)
    notes = [c for c in texts(at.caption) if c.startswith("format json")]
    assert notes == [
        "format json: no schema registry, every message carries its own schema; the engine "
        "records each version it sees (Schema versions, with the engine's figures)"
    ]
    assert not any("Schema registry down" in e for e in texts(at.error))


def test_avro_format_with_the_registry_down_is_a_banner(monkeypatch: pytest.MonkeyPatch) -> None:
    nothing_up(monkeypatch)
    port = closed_port()
    monkeypatch.setenv("CHANGEFOLD_FORMAT", "avro")
    monkeypatch.setenv("CHANGEFOLD_REGISTRY_HOST", "127.0.0.1")
    monkeypatch.setenv("CHANGEFOLD_REGISTRY_PORT", str(port))
    at = open_page("pipeline")
    errors = [e for e in texts(at.error) if "Schema registry down" in e]
    assert len(errors) == 1
    assert f"http://127.0.0.1:{port}" in errors[0] and "CHANGEFOLD_REGISTRY_PORT" in errors[0]
    assert not any(c.startswith("format json") for c in texts(at.caption))


def test_a_registry_off_this_machine_is_not_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The host is not resolved or contacted: the section says so instead."""
    nothing_up(monkeypatch)
    monkeypatch.setenv("CHANGEFOLD_FORMAT", "avro")
    monkeypatch.setenv("CHANGEFOLD_REGISTRY_HOST", "registry")
    monkeypatch.setenv("CHANGEFOLD_REGISTRY_PORT", "8080")
    at = open_page("pipeline")
    assert any(
        "http://registry:8080 is not on this machine" in c and "changefold schemas" in c
        for c in texts(at.caption)
    )
    assert not any("Schema registry down" in e for e in texts(at.error))
