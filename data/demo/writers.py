"""Deterministic file writers: zips, JSON and Parquet (plain, or in Hugging Face ``datasets`` form).

Same input, same bytes: zip entries carry a fixed timestamp and mode, JSON is written with fixed
separators, and Parquet files are written by pyarrow with fixed options.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)

#: The Hugging Face ``Image`` feature's storage type.
HF_IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


class DeterministicZip:
    """A stored (uncompressed: WebP is already compressed) zip whose bytes depend only on its
    members' names, order and content."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED)

    def add(self, name: str, data: bytes) -> None:
        info = zipfile.ZipInfo(name, date_time=FIXED_ZIP_TIME)
        info.compress_type = zipfile.ZIP_STORED
        info.create_system = 3
        info.external_attr = 0o644 << 16
        self._zip.writestr(info, data)

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> DeterministicZip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_json(path: Path, data: Any, *, indent: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=indent, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")


def hf_features(schema: pa.Schema, image_columns: tuple[str, ...] = ()) -> dict[str, Any]:
    """The ``datasets`` feature description of ``schema`` (image columns as ``Image``)."""
    features: dict[str, Any] = {}
    for schema_field in schema:
        if schema_field.name in image_columns:
            features[schema_field.name] = {"_type": "Image"}
        else:
            features[schema_field.name] = {
                "dtype": str(schema_field.type).replace("large_", ""),
                "_type": "Value",
            }
    return features


def write_parquet(path: Path, table: pa.Table, *, hf_image_columns: tuple[str, ...] | None = None) -> None:
    """Write ``table``; with ``hf_image_columns`` also the schema metadata by which Hugging Face
    ``datasets`` restores its features (so its ``Image`` columns decode as images)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if hf_image_columns is not None:
        info = {"info": {"features": hf_features(table.schema, hf_image_columns)}}
        table = table.replace_schema_metadata({"huggingface": json.dumps(info, separators=(",", ":"))})
    pq.write_table(table, path, compression="zstd", row_group_size=50_000, write_statistics=True)


def hf_image(data: bytes, name: str) -> dict[str, Any]:
    """One cell of an HF ``Image`` column with embedded bytes."""
    return {"bytes": data, "path": name}
