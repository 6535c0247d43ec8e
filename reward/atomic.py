"""Atomic file writes: write a temporary file beside the target, flush it to disk, rename it over the
target (``os.replace``). A reader, or a process killed mid-write, sees the old file or the new one,
never a part. Standard library only, so any module (and the GPU benchmark) can use it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path


def replace_atomically(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write`` on a temporary path beside ``path``, fsync that file, then rename it to ``path``.
    The temporary file is removed if anything fails."""
    path = Path(path)
    temporary = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        write(temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text_atomically(text: str, path: str | Path) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    replace_atomically(path, lambda target: target.write_text(text, encoding="utf-8"))
