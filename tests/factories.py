"""Small on-disk datasets in the published layouts, built inside a test's tmp_path."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import polars as pl
from PIL import Image


def webp_bytes(colour: tuple[int, int, int], size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="WEBP", lossless=True)
    return buffer.getvalue()


def imagerewarddb_root(
    root: Path,
    rows: list[dict[str, Any]],
    *,
    split: str = "train",
    image_bytes: dict[str, bytes] | None = None,
    metadata_schema: dict[str, Any] | None = None,
) -> Path:
    """An ImageRewardDB root: ``metadata-<split>.parquet`` + ``images/<split>/<split>_1.zip``.

    Each row needs ``image_id``; other columns default to a valid image of prompt ``p0``. Images are
    written unless ``image_bytes`` maps the id to other bytes (or to ``b""`` to leave it out)."""
    image_bytes = image_bytes or {}
    zip_dir = root / "images" / split
    zip_dir.mkdir(parents=True, exist_ok=True)
    records = []
    written: set[str] = set()
    with zipfile.ZipFile(zip_dir / f"{split}_1.zip", "w") as archive:
        for index, row in enumerate(rows):
            image_id = row["image_id"]
            payload = image_bytes.get(image_id, webp_bytes((index * 40 % 255, 80, 160)))
            if payload and image_id not in written:
                archive.writestr(f"{image_id}.webp", payload)
                written.add(image_id)
            records.append(
                {
                    "image_path": f"images/{split}/{split}_1/{image_id}.webp",
                    "prompt_id": row.get("prompt_id", "000001-0001"),
                    "prompt": row.get("prompt", "two red circles"),
                    "classification": row.get("classification", "Shapes"),
                    "image_amount_in_total": row.get("image_amount_in_total", len(rows)),
                    "rank": row.get("rank", index + 1),
                    "overall_rating": row.get("overall_rating", 5),
                    "image_text_alignment_rating": row.get("image_text_alignment_rating", 5),
                    "fidelity_rating": row.get("fidelity_rating", 5),
                }
            )
    frame = pl.DataFrame(records, schema_overrides=metadata_schema or {}, strict=False)
    frame.write_parquet(root / f"metadata-{split}.parquet")
    return root
