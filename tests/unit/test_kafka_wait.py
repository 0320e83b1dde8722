"""Reaching Kafka at start: attempts with growing pauses, a log line each, a deadline.

The unreachable broker is real: a loopback port nobody listens on.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest

from engine.core.config import Settings
from engine.core.errors import KafkaUnavailableError
from engine.ingest import kafka_group
from engine.ingest.kafka_group import open_consumer


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _io_threads() -> int:
    return sum(t.name.startswith("kafka-io") for t in threading.enumerate())


def test_an_unreachable_broker_is_tried_again_until_the_deadline(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Attempts of 1 s (10 s in use), so that a short wait holds several.
    monkeypatch.setattr(kafka_group, "BOOTSTRAP_TIMEOUT_MS", 1000)
    port = _closed_port()
    settings = Settings.from_env({}, kafka_port=port, kafka_wait_s=5)
    threads_before = _io_threads()
    caplog.set_level(logging.INFO, logger="engine.ingest.kafka_group")
    t0 = time.monotonic()
    with pytest.raises(KafkaUnavailableError) as err:
        open_consumer(settings, "member-1", group_id="g")
    elapsed = time.monotonic() - t0
    # The wait is kept: not given up early, not outlasted by more than an attempt's second.
    assert 5.0 <= elapsed < 8.0, elapsed
    attempts = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # Pauses of 1 s, 2 s, ... between attempts: several attempts in 5 s.
    assert len(attempts) >= 2, attempts
    for n, line in enumerate(attempts, start=1):
        assert f"127.0.0.1:{port}" in line
        assert f"attempt {n}," in line
        assert "CHANGEFOLD_KAFKA_WAIT_S" in line
    message = str(err.value)
    assert f"cannot reach Kafka at 127.0.0.1:{port}" in message
    assert f"after {len(attempts) + 1} attempts" in message
    assert "CHANGEFOLD_KAFKA_WAIT_S" in message
    assert err.value.exit_code == 4
    # A failed attempt leaves no IO thread behind.
    time.sleep(0.2)
    assert _io_threads() == threads_before


def test_a_wait_of_0_makes_one_attempt(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kafka_group, "BOOTSTRAP_TIMEOUT_MS", 1000)
    port = _closed_port()
    settings = Settings.from_env({}, kafka_port=port, kafka_wait_s=0)
    caplog.set_level(logging.INFO, logger="engine.ingest.kafka_group")
    t0 = time.monotonic()
    with pytest.raises(KafkaUnavailableError) as err:
        open_consumer(settings, "member-1", group_id="g")
    assert time.monotonic() - t0 < 3.0
    assert "after 1 attempt in" in str(err.value)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
