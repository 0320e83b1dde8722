"""A small client of the query API (used by `changefold sql`, `snapshot` and the tools)."""

from __future__ import annotations

from typing import Any

import httpx

from engine.core.errors import ApiError, QueryError


class ApiClient:
    def __init__(self, url: str, *, timeout_s: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def health(self, *, timeout_s: float = 2.0) -> dict[str, Any] | None:
        """The API's /health answer, or None when nothing answers at the URL."""
        try:
            response = httpx.get(f"{self.url}/health", timeout=timeout_s)
        except httpx.TransportError:
            return None
        if response.status_code != 200:
            return None
        try:
            body = response.json()
        except ValueError:
            return None
        return body if isinstance(body, dict) and body.get("status") == "ok" else None

    def query(self, sql: str, *, max_rows: int | None = None) -> dict[str, Any]:
        """The JSON answer of POST /query; QueryError carries the API's refusal or error."""
        body: dict[str, Any] = {"sql": sql, "format": "json"}
        if max_rows is not None:
            body["max_rows"] = max_rows
        try:
            response = httpx.post(f"{self.url}/query", json=body, timeout=self.timeout_s)
        except httpx.TransportError as exc:
            raise ApiError(
                f"the query API at {self.url} did not answer ({exc}); is the engine "
                "(`changefold run`) still running?"
            ) from None
        answer = self._json_object(response, "the query API")
        if response.status_code != 200:
            raise QueryError(
                str(answer.get("error", "failed")), str(answer.get("message", response.text))
            )
        return answer

    def snapshot(self, *, timeout_s: float = 900.0) -> dict[str, Any]:
        """POST /snapshot: the engine writes a consistent copy of its state into a new file
        under its home and answers where (`path`) and as of what (`consistency`)."""
        try:
            response = httpx.post(f"{self.url}/snapshot", timeout=timeout_s)
        except httpx.TransportError as exc:
            raise ApiError(
                f"the engine's API at {self.url} did not answer the snapshot request ({exc})"
            ) from None
        answer = self._json_object(response, "the API")
        if response.status_code != 200 or "path" not in answer:
            raise ApiError(
                f"the engine's API at {self.url} could not write a snapshot: "
                f"{answer.get('message', response.text)}"
            )
        return answer

    def _json_object(self, response: httpx.Response, what: str) -> dict[str, Any]:
        """The answer's JSON object; ApiError when the answer is not one (not our API)."""
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise ApiError(
                f"{what} at {self.url} answered HTTP {response.status_code} without JSON; is "
                "that URL the changefold engine's API?"
            )
        return answer
