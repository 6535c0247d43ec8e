"""Case 7: reading finished stages needs no write access to the artifact root.

Tests run as any user (root ignores file modes), so instead of a read-only mount they check what a
read-only root forbids: a fully cached rerun creates, changes or removes no file under the root (no
``.lock`` file, no fingerprint-memo write); a stage that must be computed where no lock can be created
says why it needs write access."""

from __future__ import annotations

from pathlib import Path

import pytest

import tasks.cache
from tasks.ingest import ingest_ratings
from tests.factories import imagerewarddb_root

pytestmark = pytest.mark.hostile_case(7)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(path): (path.stat().st_size, path.stat().st_mtime_ns) for path in root.rglob("*")}


def test_a_fully_cached_run_writes_nothing(tmp_path: Path) -> None:
    dataset = imagerewarddb_root(tmp_path / "db", [{"image_id": f"i{n}"} for n in range(3)])
    art = tmp_path / "art"
    first = ingest_ratings(dataset, root=art)
    for lock in art.rglob("*.lock"):
        lock.unlink()  # as a copy of the artifacts (or a fresh read-only mount) would be
    before = snapshot(art)
    again = ingest_ratings(dataset, root=art)
    assert again.cached and again.path == first.path
    assert snapshot(art) == before


def test_a_stage_to_compute_says_it_needs_write_access(tmp_path: Path, monkeypatch) -> None:
    class ReadOnlyLock:
        def __init__(self, path: str) -> None:
            self.path = path

        def acquire(self) -> None:
            raise PermissionError(13, "Permission denied", self.path)

    monkeypatch.setattr(tasks.cache, "FileLock", ReadOnlyLock)
    dataset = imagerewarddb_root(tmp_path / "db", [{"image_id": "i0"}])
    with pytest.raises(OSError) as caught:
        ingest_ratings(dataset, root=tmp_path / "art")
    message = str(caught.value)
    assert message.startswith(
        f"{tmp_path / 'art' / 'ingest_ratings'}: stage ingest_ratings has no finished output"
    )
    assert "needs write access to the artifact root ([Errno 13] Permission denied" in message


def test_a_built_tiny_backbone_is_read_without_writing(tmp_path: Path) -> None:
    """The train flow's demo backbone: once built, using it again creates no lock file."""
    from tasks.train import tiny_backbone

    art = tmp_path / "art"
    first = tiny_backbone(root=art)
    for lock in art.rglob("*.lock"):
        lock.unlink()
    before = snapshot(art)
    assert tiny_backbone(root=art) == first
    assert snapshot(art) == before
