"""Command lines and logging config for the stack's two JVM processes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from engine.core.config import Settings
from engine.core.errors import StackError

_LOG4J2 = """\
status = warn
name = changefold
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.out.ref = out
logger.kafka.name = org.apache.kafka
logger.kafka.level = warn
logger.state.name = state.change.logger
logger.state.level = warn
logger.reflections.name = org.reflections
logger.reflections.level = error
logger.debezium.name = io.debezium
logger.debezium.level = info
logger.connect.name = org.apache.kafka.connect.runtime
logger.connect.level = info
"""


def check_java(settings: Settings) -> None:
    """Fail early, with the fix, when no Java 17+ runtime is available."""
    java = shutil.which(settings.stack.java)
    if java is None:
        raise StackError(
            "java",
            f"no Java runtime found ({settings.stack.java!r}); Kafka and Kafka Connect need "
            "Java 17+",
            fix="install one (apt-get install default-jre-headless) or set JAVA_HOME / "
            "CHANGEFOLD_JAVA",
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    text = out.stderr + out.stdout
    version = _major_version(text)
    if version is not None and version < 17:
        raise StackError(
            "java",
            f"{java} is Java {version}; Kafka 4 needs Java 17 or newer",
            seen=text.strip(),
            fix="install Java 17+ (apt-get install openjdk-17-jre-headless) and set JAVA_HOME",
        )


def _major_version(text: str) -> int | None:
    import re

    match = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def java_command(
    settings: Settings,
    *,
    main_class: str,
    args: list[str],
    heap: str,
    log_config: Path,
    marker: str,
    classpath: Path | None = None,
) -> list[str]:
    """java argv running `main_class` on the resolved jars' classpath (or on the jars of
    `classpath`)."""
    return [
        settings.stack.java,
        f"-Xms{heap}",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log_config}",
        f"-Dchangefold.component={marker}",
        "-cp",
        str((classpath or settings.jars_dir) / "*"),
        main_class,
        *args,
    ]


def write_log_config(path: Path, level: str = "INFO") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_LOG4J2.format(level=level))
    return path


def write_properties(path: Path, props: dict[str, str | int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# written by changefold; edits are overwritten on `changefold stack up`"]
    lines += [f"{k}={v}" for k, v in props.items()]
    path.write_text("\n".join(lines) + "\n")
    return path
