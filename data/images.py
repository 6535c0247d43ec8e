"""Resolve image references (``*_uri`` columns) to bytes and PIL images, safely.

Three forms, see :mod:`data.schemas`:

- ``path/to/file.webp``
- ``path/to/archive.zip::member.webp``
- ``path/to/shard.parquet::column[row]`` (an HF ``Image`` struct ``{bytes, path}`` or raw bytes)

Archives and Parquet columns are opened once per process and kept in small LRU caches, so resolving
thousands of members of the same zip costs one central-directory read.
"""

from __future__ import annotations

import io
import re
import threading
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image, UnidentifiedImageError

SEPARATOR = "::"
_PARQUET_MEMBER = re.compile(r"^(?P<column>[^\[\]]+)\[(?P<row>\d+)\]$")

# Decompression-bomb guard: real T2I images are at most a few megapixels.
Image.MAX_IMAGE_PIXELS = 64_000_000
#: Default limit on the uncompressed size of one zip member read as an image (declared and actual).
MAX_MEMBER_BYTES = 64 * 1024 * 1024


class ImageError(ValueError):
    """An image reference cannot be resolved or decoded. The message names the reference."""


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference: a container file and, for archives / Parquet, a member."""

    container: str
    member: str | None = None

    @classmethod
    def parse(cls, uri: str) -> ImageRef:
        if not isinstance(uri, str) or not uri:
            raise ImageError(f"image reference must be a non-empty string, got {uri!r}")
        if SEPARATOR in uri:
            container, member = uri.split(SEPARATOR, 1)
            if not member:
                raise ImageError(f"image reference {uri!r} has an empty member after '::'")
            return cls(container, member)
        return cls(uri)

    def __str__(self) -> str:
        return self.container if self.member is None else f"{self.container}{SEPARATOR}{self.member}"


def zip_member_uri(archive: str | Path, member: str) -> str:
    """The reference of ``member`` inside zip ``archive``."""
    return f"{archive}{SEPARATOR}{member}"


def parquet_cell_uri(shard: str | Path, column: str, row: int) -> str:
    """The reference of the image in ``column`` at 0-based ``row`` of Parquet file ``shard``."""
    return f"{shard}{SEPARATOR}{column}[{row}]"


_lock = threading.Lock()


@lru_cache(maxsize=64)
def _zip(path: str) -> zipfile.ZipFile:
    return zipfile.ZipFile(path)


@lru_cache(maxsize=16)
def _parquet_column(path: str, column: str) -> list:
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=[column])
    return table.column(column).to_pylist()


def _read_member(archive: zipfile.ZipFile, uri: str, member: str, limit: int) -> bytes:
    """A zip member's bytes, refused when its declared or actual uncompressed size exceeds ``limit``
    (the stream is read at most ``limit + 1`` bytes far, so a bomb never expands in memory)."""
    info = archive.getinfo(member)
    if info.file_size > limit:
        raise ImageError(
            f"{uri}: zip member declares {info.file_size} bytes uncompressed, over the limit of {limit}"
        )
    with archive.open(info) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ImageError(
            f"{uri}: zip member expands past the limit of {limit} bytes (declared {info.file_size})"
        )
    return data


def read_image_bytes(uri: str, *, max_member_bytes: int = MAX_MEMBER_BYTES) -> bytes:
    """The encoded bytes behind ``uri``; :class:`ImageError` naming ``uri`` when absent, or when a zip
    member is larger than ``max_member_bytes`` uncompressed."""
    ref = ImageRef.parse(uri)
    container = ref.container
    try:
        if ref.member is None:
            return Path(container).read_bytes()
        if container.endswith(".zip"):
            with _lock:  # ZipFile objects are not safe for concurrent reads
                return _read_member(_zip(container), uri, ref.member, max_member_bytes)
        if container.endswith(".parquet"):
            match = _PARQUET_MEMBER.match(ref.member)
            if match is None:
                raise ImageError(f"{uri}: Parquet member must look like column[row]")
            cells = _parquet_column(container, match["column"])
            row = int(match["row"])
            if row >= len(cells):
                raise ImageError(f"{uri}: row {row} out of range ({len(cells)} rows)")
            cell = cells[row]
            data = cell.get("bytes") if isinstance(cell, dict) else cell
            if not data:
                raise ImageError(f"{uri}: no image bytes in this cell")
            return bytes(data)
        raise ImageError(f"{uri}: unsupported container (expected .zip or .parquet before '::')")
    except ImageError:
        raise
    except FileNotFoundError as exc:
        raise ImageError(f"{uri}: file not found ({exc.filename})") from exc
    except KeyError as exc:
        raise ImageError(f"{uri}: no such member in archive") from exc
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise ImageError(f"{uri}: cannot read ({exc})") from exc


#: Signatures that name one format unambiguously (WebP is ``RIFF<size>WEBP``, handled apart).
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
)


def _signature_format(data: bytes) -> str | None:
    """The format the leading bytes name (WEBP, PNG, JPEG, GIF), or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    return None


def _pil_open(data: bytes) -> Image.Image:
    """``Image.open`` of ``data``, trying first the one plugin its signature names.

    Without a hint Pillow probes its registered plugins in turn, which costs ~70 µs per image (5x the
    header parse itself). Bytes the named plugin cannot identify go through the full probe, so every
    outcome (the image or the error) is the one ``Image.open`` gives.
    """
    hinted = _signature_format(data)
    if hinted is not None:
        try:
            return Image.open(io.BytesIO(data), formats=[hinted])
        except UnidentifiedImageError:
            pass
    return Image.open(io.BytesIO(data))


def open_image(uri: str, *, mode: str = "RGB") -> Image.Image:
    """Decode the image behind ``uri`` fully and convert it to ``mode``."""
    data = read_image_bytes(uri)
    try:
        with _pil_open(data) as image:
            image.load()
            return image.convert(mode)
    except (OSError, Image.DecompressionBombError, ValueError) as exc:
        raise ImageError(f"{uri}: cannot decode image ({exc})") from exc


def check_image(uri: str, *, decode: bool = False) -> str | None:
    """``None`` if ``uri`` is a readable image, else the reason. ``decode`` forces a full decode
    (catches truncated files) instead of reading only the header."""
    try:
        if decode:
            open_image(uri)
            return None
        data = read_image_bytes(uri)
        with _pil_open(data) as image:
            width, height = image.size
        if width == 0 or height == 0:
            return f"{uri}: empty image ({width}x{height})"
        return None
    except ImageError as exc:
        return str(exc)
    except (OSError, Image.DecompressionBombError, ValueError, SyntaxError) as exc:
        return f"{uri}: not an image ({exc})"


def clear_caches() -> None:
    """Close cached archives and drop cached Parquet columns (tests, long-running workers)."""
    _zip.cache_clear()
    _parquet_column.cache_clear()
