"""Case 9: a zip member is never expanded whole into memory past a size limit.

The attacker's archive holds a small member that expands to far more than any image (here 4 MiB of
zeros, with the limit lowered to 1 MiB to stand for the 2 GiB of the battery), once honestly declared
and once with its declared size patched down to 100 bytes."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import pytest

import data.images
from data.images import ImageError, check_image, clear_caches, read_image_bytes

pytestmark = pytest.mark.hostile_case(9)

LIMIT = 1024 * 1024
BOMB = b"\0" * (4 * LIMIT)


@pytest.fixture(autouse=True)
def _fresh_zip_cache():
    clear_caches()
    yield
    clear_caches()


def bomb_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb.webp", BOMB)
    return path


def test_declared_size_over_the_limit_is_refused(tmp_path: Path) -> None:
    archive = bomb_zip(tmp_path / "images.zip")
    assert archive.stat().st_size < 16 * 1024  # small on disk
    uri = f"{archive}::bomb.webp"
    with pytest.raises(ImageError) as caught:
        read_image_bytes(uri, max_member_bytes=LIMIT)
    assert str(caught.value) == (
        f"{uri}: zip member declares {len(BOMB)} bytes uncompressed, over the limit of {LIMIT}"
    )
    assert read_image_bytes(uri, max_member_bytes=len(BOMB)) == BOMB  # a limit that allows it
    assert 16 * 1024 * 1024 <= data.images.MAX_MEMBER_BYTES <= 1024 * 1024 * 1024  # sane for images


def test_a_lying_declared_size_is_refused(tmp_path: Path) -> None:
    archive = bomb_zip(tmp_path / "images.zip")
    data = bytearray(archive.read_bytes())
    local = data.index(b"PK\x03\x04")
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, local + 22, 100)  # uncompressed size in the local header
    struct.pack_into("<I", data, central + 24, 100)  # and in the central directory
    archive.write_bytes(bytes(data))
    uri = f"{archive}::bomb.webp"
    with pytest.raises(ImageError, match=f"^{uri}: "):
        read_image_bytes(uri, max_member_bytes=LIMIT)
    assert check_image(uri).startswith(f"{uri}: ")  # the ingest check reports it as a reason


def test_the_default_limit_refuses_a_bomb(tmp_path: Path) -> None:
    """Without any limit passed (as every reader calls it): 128 MiB of zeros, about 128 KiB zipped."""
    size = 128 * 1024 * 1024
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("bomb.webp", bytes(size))
    uri = f"{archive}::bomb.webp"
    with pytest.raises(ImageError, match=f"^{uri}: zip member declares {size} bytes uncompressed"):
        read_image_bytes(uri)
    assert data.images.MAX_MEMBER_BYTES < size
