"""Create or update every connector in a folder of connector JSON files.

Run once by compose.yaml's `register` service, after the Connect worker is
healthy. Each file is `{"name": ..., "config": {...}}`; its config is PUT to
`/connectors/<name>/config`, which creates the connector or replaces its config,
so running this again is harmless. Standard library only: it runs in a bare
Python image.

Environment: CONNECT_URL (default http://connect:8083), CONNECTORS_DIR
(default /connectors), REGISTER_TIMEOUT_S (default 120).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

#: Statuses worth retrying: 409 while the worker group rebalances, 5xx while it starts.
RETRYABLE = {409, 500, 502, 503, 504}


def load(path: Path) -> tuple[str, dict[str, str]]:
    doc = json.loads(path.read_text())
    name, config = doc.get("name"), doc.get("config")
    if not isinstance(name, str) or not isinstance(config, dict):
        raise SystemExit(f"{path}: expected {{'name': str, 'config': {{...}}}}; fix the file")
    return name, config


def put_config(base_url: str, name: str, config: dict[str, str], deadline: float) -> int:
    url = f"{base_url}/connectors/{urllib.parse.quote(name, safe='')}/config"
    body = json.dumps(config).encode()
    while True:
        request = urllib.request.Request(
            url, data=body, method="PUT", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return int(response.status)
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")
            if err.code not in RETRYABLE or time.monotonic() > deadline:
                raise SystemExit(f"PUT {url} failed: HTTP {err.code}: {detail}") from None
            print(f"{name}: HTTP {err.code}, retrying: {detail}", flush=True)
        except (urllib.error.URLError, OSError) as err:
            if time.monotonic() > deadline:
                raise SystemExit(f"PUT {url} failed: {err}; is the Connect worker up?") from None
            print(f"{name}: {err}, retrying", flush=True)
        time.sleep(2)


def main() -> int:
    base_url = os.environ.get("CONNECT_URL", "http://connect:8083").rstrip("/")
    folder = Path(os.environ.get("CONNECTORS_DIR", "/connectors"))
    deadline = time.monotonic() + float(os.environ.get("REGISTER_TIMEOUT_S", "120"))
    files = sorted(folder.glob("*.json"))
    if not files:
        print(f"no connector files (*.json) in {folder}; mount connectors/ there", file=sys.stderr)
        return 1
    for path in files:
        name, config = load(path)
        status = put_config(base_url, name, config, deadline)
        verb = "created" if status == 201 else "updated"
        print(f"{name}: {verb} from {path.name} (HTTP {status})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
