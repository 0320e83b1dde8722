"""Resolve the stack's jars (Kafka, Connect, Debezium, log4j2) once with Maven.

The folder carries a stamp with the hash of connectors/pom.xml: a changed pom
(a version bump) resolves again, an unchanged one is skipped.

With format=avro two more things are resolved, under the same jars folder and only
then: <jars>/avro/, the same classpath plus the Avro converter
(connectors/avro/pom.xml, which inherits connectors/pom.xml), for Connect; and
<jars>/registry/<version>/, the schema registry server (fetched with
`mvn dependency:copy` as a tar.gz and unpacked once; kept when the jars resolve again).
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

from engine.core.config import Settings
from engine.core.errors import StackError

log = logging.getLogger(__name__)

STAMP = ".resolved-from-pom"
#: Subfolder of the jars folder with the Avro converter's classpath (format=avro).
AVRO_DIR = "avro"
#: Subfolder of the jars folder with the registry server, one folder per version.
REGISTRY_DIR = "registry"


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
    # The registry server does not depend on the pom: keep it (140 MB to fetch).
    if (settings.jars_dir / REGISTRY_DIR).is_dir():
        (settings.jars_dir / REGISTRY_DIR).rename(tmp / REGISTRY_DIR)
    shutil.rmtree(settings.jars_dir, ignore_errors=True)
    tmp.rename(settings.jars_dir)
    return True


# -- format=avro: the converter's classpath and the registry server ---------------------


def avro_pom(settings: Settings) -> Path:
    return settings.connectors_dir / AVRO_DIR / "pom.xml"


def avro_jars_dir(settings: Settings) -> Path:
    return settings.jars_dir / AVRO_DIR


def _avro_hash(settings: Settings) -> str:
    return hashlib.sha256(
        (settings.connectors_dir / "pom.xml").read_bytes() + avro_pom(settings).read_bytes()
    ).hexdigest()


def avro_jars_ready(settings: Settings) -> bool:
    stamp = avro_jars_dir(settings) / STAMP
    return stamp.is_file() and stamp.read_text().strip() == _avro_hash(settings)


def ensure_avro_jars(settings: Settings) -> bool:
    """Resolve connectors/avro/pom.xml (the stack's jars plus the Avro converter) into
    <jars>/avro/ unless done. Returns True if Maven ran."""
    if avro_jars_ready(settings):
        return False
    out = avro_jars_dir(settings)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _mvn(
        settings,
        ["-f", str(avro_pom(settings)), "dependency:copy-dependencies", f"-DoutputDirectory={tmp}"],
        what=f"the jars declared in {avro_pom(settings)}",
        cleanup=tmp,
    )
    (tmp / STAMP).write_text(_avro_hash(settings) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return True


def registry_version(settings: Settings) -> str:
    """The registry server's version: the converter's (apicurio.version of the avro pom)."""
    text = avro_pom(settings).read_text()
    found = re.search(r"<apicurio\.version>([^<]+)</apicurio\.version>", text)
    if found is None:
        raise StackError(
            "registry",
            f"{avro_pom(settings)} declares no <apicurio.version>",
            fix="restore connectors/avro/pom.xml from the repository",
        )
    return found.group(1).strip()


def registry_app_dir(settings: Settings) -> Path:
    return settings.jars_dir / REGISTRY_DIR / registry_version(settings)


def registry_runner(settings: Settings) -> Path:
    """The registry server's runnable jar (Quarkus fast-jar: `java -jar` it)."""
    version = registry_version(settings)
    return registry_app_dir(settings) / f"apicurio-registry-app-{version}-runner.jar"


def registry_ready(settings: Settings) -> bool:
    return (registry_app_dir(settings) / STAMP).is_file() and registry_runner(settings).is_file()


def ensure_registry(settings: Settings) -> bool:
    """Fetch the registry server (io.apicurio:apicurio-registry-app:<v>:tar.gz:all) with
    Maven and unpack it once. Returns True if it was fetched."""
    if registry_ready(settings):
        return False
    version = registry_version(settings)
    out = registry_app_dir(settings)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    artifact = f"io.apicurio:apicurio-registry-app:{version}:tar.gz:all"
    _mvn(
        settings,
        ["dependency:copy", f"-Dartifact={artifact}", f"-DoutputDirectory={tmp}"],
        what=artifact,
        cleanup=tmp,
    )
    archives = list(tmp.glob("*.tar.gz"))
    if len(archives) != 1:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StackError("registry", f"Maven fetched no single archive of {artifact} into {tmp}")
    with tarfile.open(archives[0]) as tar:
        _extract(tar, tmp, artifact)
    archives[0].unlink()
    # The archive may hold the app in a folder of its own: lift it up.
    runner = next(tmp.rglob(f"apicurio-registry-app-{version}-runner.jar"), None)
    if runner is None:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StackError("registry", f"{artifact} holds no apicurio-registry-app-*-runner.jar")
    if runner.parent != tmp:
        for item in runner.parent.iterdir():
            item.rename(tmp / item.name)
    (tmp / STAMP).write_text(artifact + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return True


def _extract(tar: tarfile.TarFile, into: Path, what: str) -> None:
    """Unpack with the "data" filter; on a Python without extraction filters (before
    3.11.4, e.g. Debian 12's 3.11.2) only regular files and folders inside `into`."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(into, filter="data")
        return
    members = tar.getmembers()
    for m in members:
        if not (m.isfile() or m.isdir()) or m.name.startswith("/") or ".." in Path(m.name).parts:
            shutil.rmtree(into, ignore_errors=True)
            raise StackError("registry", f"{what}: refusing to unpack {m.name!r}")
    tar.extractall(into, members=members)  # every member checked above


def _mvn(settings: Settings, args: list[str], *, what: str, cleanup: Path) -> None:
    mvn = shutil.which(settings.stack.mvn)
    if mvn is None:
        shutil.rmtree(cleanup, ignore_errors=True)
        raise StackError(
            "jars",
            f"Maven ({settings.stack.mvn!r}) is not installed, and {what} is not yet in "
            f"{settings.jars_dir}",
            fix="install Maven (apt-get install maven) or set CHANGEFOLD_MVN to its path",
        )
    cmd = [mvn, "-q", "-B", *args]
    log.info("resolving: %s", " ".join(cmd))
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        shutil.rmtree(cleanup, ignore_errors=True)
        seen = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise StackError(
            "jars",
            f"Maven could not resolve {what} (exit {result.returncode})",
            seen=seen,
            fix="check the network access to Maven's repository and the versions in the pom; "
            "then run `changefold stack up` again",
        )
