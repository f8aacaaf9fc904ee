from __future__ import annotations

import json
from pathlib import Path

import pytest

from artifacts import (
    ArtifactError,
    ArtifactNotFoundError,
    CorruptArtifactError,
    IncompatibleArtifactError,
    Manifest,
    checksum_files,
    staged_directory,
)
from artifacts.storage import STAGING_PREFIX


def _build(directory: Path, payload: bytes = b"data") -> Manifest:
    (directory / "a.bin").write_bytes(payload)
    (directory / "sub").mkdir(exist_ok=True)
    (directory / "sub" / "b.txt").write_text("hello")
    manifest = Manifest(
        kind="thing", format_version=1, created_at="2026-01-01T00:00:00Z", files=checksum_files(directory)
    )
    manifest.write(directory)
    return manifest


def test_manifest_round_trip_and_verify(tmp_path: Path) -> None:
    written = _build(tmp_path)
    read = Manifest.read(tmp_path, kind="thing", max_format_version=1)
    assert read == written
    assert sorted(read.files) == ["a.bin", "sub/b.txt"]
    read.verify(tmp_path)
    assert json.loads((tmp_path / "manifest.json").read_text())["content_id"] == written.content_id


def test_content_id_depends_on_files_not_build_time(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for d in (a, b, c):
        d.mkdir()
    ma, mb, mc = _build(a), _build(b), _build(c, payload=b"other")
    assert ma.content_id == mb.with_updates(created_at="2030-01-01T00:00:00Z").content_id
    assert ma.content_id != mc.content_id


def test_verify_reports_changed_and_missing_files(tmp_path: Path) -> None:
    manifest = _build(tmp_path)
    (tmp_path / "a.bin").write_bytes(b"tampered")
    (tmp_path / "sub" / "b.txt").unlink()
    with pytest.raises(CorruptArtifactError, match=r"a\.bin: checksum mismatch; sub/b\.txt: missing"):
        manifest.verify(tmp_path)


def test_read_rejects_wrong_kind_newer_format_and_garbage(tmp_path: Path) -> None:
    _build(tmp_path)
    with pytest.raises(IncompatibleArtifactError, match="expected a 'other'"):
        Manifest.read(tmp_path, kind="other")
    with pytest.raises(IncompatibleArtifactError, match="newer than this code reads"):
        Manifest.read(tmp_path, max_format_version=0)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptArtifactError, match="unreadable manifest"):
        Manifest.read(tmp_path)
    with pytest.raises(ArtifactNotFoundError):
        Manifest.read(tmp_path / "nowhere")


def test_staged_directory_publishes_only_on_success(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with pytest.raises(RuntimeError), staged_directory(dest) as staging:
        (staging / "partial").write_text("x")
        raise RuntimeError("build failed")
    assert not dest.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(STAGING_PREFIX)]

    with staged_directory(dest) as staging:
        (staging / "file").write_text("v1")
    assert (dest / "file").read_text() == "v1"

    with pytest.raises(ArtifactError, match="already exists"), staged_directory(dest):
        pass
    with staged_directory(dest, overwrite=True) as staging:
        (staging / "file").write_text("v2")
    assert (dest / "file").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_leftover_staging_from_a_dead_build_is_cleaned(tmp_path: Path) -> None:
    leftover = tmp_path / f"{STAGING_PREFIX}out-deadbeef"
    leftover.mkdir()
    (leftover / "junk").write_text("half written")
    with staged_directory(tmp_path / "out") as staging:
        (staging / "file").write_text("ok")
    assert not leftover.exists()
