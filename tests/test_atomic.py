"""reward.atomic: a write either replaces the file whole or leaves the old one, and no temporary."""

from __future__ import annotations

from pathlib import Path

import pytest

from reward.atomic import replace_atomically, write_text_atomically


def test_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("old", encoding="utf-8")
    write_text_atomically("new ✓", target)
    assert target.read_text(encoding="utf-8") == "new ✓"
    assert [path.name for path in tmp_path.iterdir()] == ["report.json"]


def test_a_failing_write_keeps_the_old_file_and_removes_its_temporary(tmp_path: Path) -> None:
    target = tmp_path / "table.parquet"
    target.write_bytes(b"old")

    def write_half_then_fail(temporary: Path) -> None:
        temporary.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_atomically(target, write_half_then_fail)
    assert target.read_bytes() == b"old"
    assert [path.name for path in tmp_path.iterdir()] == ["table.parquet"]
