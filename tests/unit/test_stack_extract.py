"""The registry archive is unpacked safely also on a Python without tarfile's extraction
filters (Debian 12's 3.11.2): regular files and folders inside the target, else refused."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from engine.core.errors import StackError
from engine.lab.stack.jars import _extract


def _archive(path: Path, names: list[str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name in names:
            data = b"x"
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("filters", [True, False])
def test_files_inside_are_unpacked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, filters: bool
) -> None:
    if not filters:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    archive = _archive(tmp_path / "a.tar.gz", ["app/lib/x.jar", "app/run.jar"])
    into = tmp_path / "out"
    with tarfile.open(archive) as tar:
        _extract(tar, into, "registry")
    assert (into / "app" / "lib" / "x.jar").read_bytes() == b"x"


def test_a_path_outside_is_refused_without_filters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    archive = _archive(tmp_path / "a.tar.gz", ["app/ok.jar", "../escape.jar"])
    into = tmp_path / "out"
    with tarfile.open(archive) as tar, pytest.raises(StackError, match="refusing to unpack"):
        _extract(tar, into, "registry")
    assert not (tmp_path / "escape.jar").exists()
