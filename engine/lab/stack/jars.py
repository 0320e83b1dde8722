"""Resolve the stack's jars (Kafka, Connect, Debezium, log4j2) once with Maven.

The folder carries a stamp with the hash of connectors/pom.xml: a changed pom
(a version bump) resolves again, an unchanged one is skipped.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess

from engine.core.config import Settings
from engine.core.errors import StackError

log = logging.getLogger(__name__)

STAMP = ".resolved-from-pom"


def pom_hash(settings: Settings) -> str:
    return hashlib.sha256((settings.connectors_dir / "pom.xml").read_bytes()).hexdigest()


def jars_ready(settings: Settings) -> bool:
    stamp = settings.jars_dir / STAMP
    return stamp.is_file() and stamp.read_text().strip() == pom_hash(settings)


def ensure_jars(settings: Settings) -> bool:
    """Resolve the jars unless already present. Returns True if Maven ran."""
    if jars_ready(settings):
        return False
    mvn = shutil.which(settings.stack.mvn)
    if mvn is None:
        raise StackError(
            "jars",
            f"Maven ({settings.stack.mvn!r}) is not installed, and the Kafka/Connect/Debezium jars "
            f"are not yet in {settings.jars_dir}",
            fix="install Maven (apt-get install maven) or set CHANGEFOLD_MVN to its path",
        )
    pom = settings.connectors_dir / "pom.xml"
    tmp = settings.jars_dir.with_name(settings.jars_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp}",
    ]
    log.info("resolving jars: %s", " ".join(cmd))
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        seen = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise StackError(
            "jars",
            f"Maven could not resolve the jars declared in {pom} (exit {result.returncode})",
            seen=seen,
            fix="check the network access to Maven's repository and the versions in the pom; "
            "then run `changefold stack up` again",
        )
    (tmp / STAMP).write_text(pom_hash(settings) + "\n")
    shutil.rmtree(settings.jars_dir, ignore_errors=True)
    tmp.rename(settings.jars_dir)
    return True
