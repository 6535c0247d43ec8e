"""Content fingerprints of stage inputs, and of the code that computes a stage.

A raw input file is fingerprinted by its content (BLAKE2b). Hashing gigabytes on every run would be
slow, so digests are memoized in a small SQLite table keyed by (path, size, mtime, inode): a file is
re-hashed only when it changes. A stage output (a Parquet file listed in a finished manifest) is
fingerprinted by its stage key instead, which already covers everything that produced it — including
images that the table only references by URI.
"""

from __future__ import annotations

import hashlib
import inspect
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

_CHUNK = 1 << 20
#: Paths per SQL lookup (below SQLite's bound-parameter limit) and threads that hash new files.
_SQL_BATCH = 500
_HASH_THREADS = 2
_memo_lock = threading.Lock()


def file_digest(path: Path) -> str:
    """BLAKE2b-128 of a file's bytes."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


class FingerprintMemo:
    """Digests of files, remembered across runs until the file's size, mtime or inode changes."""

    def __init__(self, database: Path) -> None:
        self.database = database
        existed = database.is_file()
        try:
            database.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as connection:
                connection.execute(
                    "CREATE TABLE IF NOT EXISTS digests (path TEXT PRIMARY KEY, size INTEGER, "
                    "mtime_ns INTEGER, inode INTEGER, digest TEXT)"
                )
        except (OSError, sqlite3.OperationalError):
            if not existed:
                raise
            # a read-only artifact root: the existing memo is read; storing a new digest would fail

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.database, timeout=60)

    def digest(self, path: Path) -> str:
        return self.digests([path])[0]

    def digests(self, paths: Sequence[Path]) -> list[str]:
        """Digests of ``paths`` in order: one memo lookup for all of them, the files that are new or
        changed hashed in a few threads (``hashlib`` releases the GIL while it hashes)."""
        resolved = [path.resolve() for path in paths]
        signatures = [_signature(path) for path in resolved]
        with _memo_lock, self._connect() as connection:
            known = {
                row[0]: (tuple(row[1:4]), row[4])
                for start in range(0, len(resolved), _SQL_BATCH)
                for row in connection.execute(
                    "SELECT path, size, mtime_ns, inode, digest FROM digests WHERE path IN "
                    f"({','.join('?' * len(resolved[start : start + _SQL_BATCH]))})",
                    [str(path) for path in resolved[start : start + _SQL_BATCH]],
                )
            }
        result = [""] * len(resolved)
        stale: list[int] = []
        for position, (path, signature) in enumerate(zip(resolved, signatures, strict=True)):
            entry = known.get(str(path))
            if entry is not None and entry[0] == signature:
                result[position] = entry[1]
            else:
                stale.append(position)
        if stale:
            with ThreadPoolExecutor(max_workers=_HASH_THREADS) as pool:
                fresh = list(pool.map(file_digest, [resolved[position] for position in stale]))
            with _memo_lock, self._connect() as connection:
                connection.executemany(
                    "INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?)",
                    [
                        (str(resolved[position]), *signatures[position], digest)
                        for position, digest in zip(stale, fresh, strict=True)
                    ],
                )
            for position, digest in zip(stale, fresh, strict=True):
                result[position] = digest
        return result


def _signature(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return (stat.st_size, stat.st_mtime_ns, stat.st_ino)


def path_fingerprint(path: Path, memo: FingerprintMemo) -> str:
    """Fingerprint of a file or a folder (every file below it, by relative path and content)."""
    if path.is_file():
        return memo.digest(path)
    if path.is_dir():
        files = sorted(
            (child for child in path.rglob("*") if child.is_file() and not child.name.startswith(".")),
            key=lambda child: str(child.relative_to(path)),
        )
        digests = memo.digests(files)
        entries = [
            (str(child.relative_to(path)), digest) for child, digest in zip(files, digests, strict=True)
        ]
        return hashlib.blake2b(repr(entries).encode(), digest_size=16).hexdigest()
    raise FileNotFoundError(f"stage input not found: {path}")


def _source_files(module: ModuleType) -> list[Path]:
    """The module's source file, or every ``.py`` file of a package (so that editing any reader
    invalidates a stage that lists ``data.readers``)."""
    if hasattr(module, "__path__"):
        return sorted(file for folder in module.__path__ for file in Path(folder).rglob("*.py"))
    return [Path(inspect.getsourcefile(module) or module.__file__)]


def code_fingerprint(modules: Iterable[ModuleType]) -> str:
    """Hash of the source of ``modules`` (packages: all their files): editing the code of a stage
    invalidates its cache."""
    digest = hashlib.blake2b(digest_size=16)
    for module in sorted(modules, key=lambda m: m.__name__):
        for file in _source_files(module):
            digest.update(f"{module.__name__}:{file.name}".encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def default_memo_path(artifacts_root: Path) -> Path:
    """Where the fingerprint memo of an artifact root lives."""
    return artifacts_root / ".cache" / "fingerprints.sqlite"


__all__ = [
    "FingerprintMemo",
    "code_fingerprint",
    "default_memo_path",
    "file_digest",
    "path_fingerprint",
]
