"""A naive reference of every non-embedding data stage, written only to compare against the real ones.

Each function does the same work as its stage (read the stage's input files, compute, write Parquet)
the way a first straightforward version would: rows as Python dicts and plain loops, no polars
expressions, no thread pools. Specifically:

- ingest: the metadata read with pyarrow into dicts, every field checked in a loop, every image header
  opened one after the other;
- dedup: a Python loop of ``rapidfuzz.process.extractOne`` (one query prompt against all captions);
- pairs: a pure-Python pairing loop (``itertools.combinations`` per prompt);
- negatives: NumPy brute-force nearest neighbours (similarity matrix blocks and a full ``argsort`` per
  query) and dict lookups;
- ratings and assemble: loops over dicts (sort, seeded permutation, a BLAKE2b per row for the split).

The outputs hold the same rows as the stages' (checked by :func:`compare_outputs` and the smoke test),
so the speed ratios compare equal work.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import math
import re
import zipfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

Row = dict[str, Any]
RATING_COLUMNS = ("overall_rating", "image_text_alignment_rating", "fidelity_rating")
PERSPECTIVE_COLUMNS = {
    "alignment": ("image_text_alignment_rating", 1),
    "fidelity": ("fidelity_rating", 1),
    "overall": ("overall_rating", 1),
    "ranking": ("rank", -1),
}
_BUCKETS = 1_000_000


def read_rows(path: str | Path, columns: Sequence[str] | None = None) -> list[Row]:
    return pq.read_table(path, columns=list(columns) if columns else None).to_pylist()


def write_rows(rows: list[Row], path: Path, schema: pa.Schema | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=schema) if rows or schema else pa.table({})
    pq.write_table(table, path, compression="zstd")
    return path


# ------------------------------------------------------------------------------------------ ingest


def _header_problem(data: bytes | None, uri: str) -> str | None:
    if data is None:
        return f"{uri}: file not found"
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Exception as error:  # noqa: BLE001 - the reference records any failure as a reason
        return f"{uri}: not an image ({error})"
    return None if width and height else f"{uri}: empty image"


class _ImageLookup:
    """Finds ``image_path`` as an extracted file or a member of ``<folder>.zip`` (one listing each)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.archives: dict[str, zipfile.ZipFile | None] = {}
        self.members: dict[str, set[str]] = {}

    def _archive(self, folder: str) -> zipfile.ZipFile | None:
        if folder not in self.archives:
            path = self.root / f"{folder}.zip"
            self.archives[folder] = zipfile.ZipFile(path) if path.is_file() else None
            self.members[folder] = set(self.archives[folder].namelist()) if self.archives[folder] else set()
        return self.archives[folder]

    def uri_and_bytes(self, image_path: str) -> tuple[str, bytes | None]:
        extracted = self.root / image_path
        if extracted.is_file():
            return str(extracted), extracted.read_bytes()
        folder, _, name = image_path.rpartition("/")
        archive = self._archive(folder)
        for member in (name, f"{folder.rsplit('/', 1)[-1]}/{name}"):
            if archive is not None and member in self.members[folder]:
                return f"{self.root / folder}.zip::{member}", archive.read(member)
        return str(extracted), None


def ingest_ratings(dataset: Path, split: str, out: Path, *, rating_range=(1.0, 7.0)) -> dict[str, int]:
    """Read ``metadata-{split}.parquet``, check every row and image header, write the valid rows."""
    file = dataset / f"metadata-{split}.parquet"
    lookup = _ImageLookup(dataset)
    low, high = rating_range
    seen: set[str] = set()
    kept, rejected = [], []
    for source_row, row in enumerate(read_rows(file)):
        image_path = row.get("image_path")
        image_id = re.sub(r"(.)\.[^.]*$", r"\1", image_path.rsplit("/", 1)[-1]) if image_path else None
        problem = None
        for field in ("prompt_id", "prompt"):
            if row.get(field) is None or not str(row[field]).strip():
                problem = f"{field} is missing"
        if not image_id:
            problem = "image_path is missing"
        elif image_id in seen:
            problem = f"duplicate image_id {image_id}"
        for column in RATING_COLUMNS:
            value = row.get(column)
            if value is not None and (math.isnan(value) or not low <= value <= high):
                problem = f"{column} = {value} outside [{low}, {high}]"
        if row.get("rank") is not None and row["rank"] < 1:
            problem = "rank below 1"
        uri, data = lookup.uri_and_bytes(image_path) if image_path else ("", None)
        if problem is None:
            problem = _header_problem(data, uri)
        if problem is not None:
            rejected.append({"source_row": source_row, "record_id": image_id, "reason": problem})
            continue
        seen.add(image_id)
        kept.append(
            {
                "image_id": image_id,
                "prompt_id": str(row["prompt_id"]),
                "prompt": row["prompt"],
                "image_uri": uri,
                "classification": row.get("classification"),
                "split": split,
                "rank": row.get("rank"),
                **{
                    column: None if row.get(column) is None else float(row[column])
                    for column in RATING_COLUMNS
                },
                "source_file": str(file),
                "source_row": source_row,
            }
        )
    write_rows(kept, out / "ingest_ratings.parquet")
    write_rows(rejected, out / "ingest_ratings.rejects.parquet")
    return {"rows_in": len(kept) + len(rejected), "rows_kept": len(kept)}


def ingest_benchmark(shard: Path, out: Path) -> dict[str, int]:
    """Read an MJ-Bench HF shard's captions and labels; keep rows with a caption and a 0/1/null label."""
    kept, rejected, seen = [], [], set()
    subset = shard.name.split("-", 1)[0]
    for source_row, row in enumerate(read_rows(shard, ["caption", "label", "info"])):
        item_id = f"{subset}-{source_row}"
        caption, label = row.get("caption"), row.get("label")
        if caption is None or not caption.strip() or label not in (0, 1, None) or item_id in seen:
            rejected.append({"source_row": source_row, "record_id": item_id})
            continue
        seen.add(item_id)
        kept.append(
            {
                "item_id": item_id,
                "subset": subset,
                "caption": caption,
                "image0_uri": f"{shard}::image0[{source_row}]",
                "image1_uri": f"{shard}::image1[{source_row}]",
                "label": label,
                "source_row": source_row,
            }
        )
    write_rows(kept, out / "ingest_benchmark.parquet")
    return {"rows_in": len(kept) + len(rejected), "rows_kept": len(kept)}


# ------------------------------------------------------------------------------------------- dedup


def normalize(text: str) -> str:
    return " ".join(text.casefold().split())


def dedup(ratings_path: Path, benchmark_path: Path, out: Path, *, threshold: float = 0.1) -> dict[str, int]:
    """A loop of ``extractOne`` per distinct prompt; drop every image of a near-duplicate prompt."""
    rows = read_rows(ratings_path)
    captions = sorted({normalize(row["caption"]) for row in read_rows(benchmark_path, ["caption"])})
    prompts: dict[str, str] = {}
    for row in rows:
        prompts.setdefault(row["prompt_id"], row["prompt"])
    removed: dict[str, float] = {}
    for prompt_id, prompt in prompts.items():
        best = process.extractOne(
            normalize(prompt), captions, scorer=Levenshtein.normalized_distance, score_cutoff=threshold
        )
        if best is not None:
            removed[prompt_id] = best[1]
    kept = [row for row in rows if row["prompt_id"] not in removed]
    write_rows(kept, out / "dedup.parquet")
    write_rows([{"prompt_id": p, "distance": d} for p, d in removed.items()], out / "dedup.removed.parquet")
    return {"rows_in": len(rows), "rows_kept": len(kept), "prompts_removed": len(removed)}


# ----------------------------------------------------------------------------------------- ratings


def ratings(dedup_path: Path, out: Path, *, perspective: str = "alignment") -> dict[str, int]:
    column, sign = PERSPECTIVE_COLUMNS[perspective]
    rows = read_rows(dedup_path)
    scored = []
    for row in rows:
        value = row.get(column)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        scored.append({**row, "score": float(value) * sign})
    write_rows(scored, out / "ratings.parquet")
    return {"rows_in": len(rows), "rows_kept": len(scored)}


# ------------------------------------------------------------------------------------------- pairs


def pairs(ratings_path: Path, out: Path) -> dict[str, int]:
    """Every unordered pair of images of a prompt; the higher score is chosen, ties skipped."""
    by_prompt: dict[str, list[Row]] = defaultdict(list)
    for row in read_rows(ratings_path):
        by_prompt[row["prompt_id"]].append(row)
    result, combinations, ties = [], 0, 0
    for prompt_id, images in by_prompt.items():
        for a, b in itertools.combinations(images, 2):
            combinations += 1
            if a["score"] == b["score"]:
                ties += 1
                continue
            chosen, rejected = (a, b) if a["score"] > b["score"] else (b, a)
            result.append(
                {
                    "pair_id": f"{prompt_id}:{chosen['image_id']}>{rejected['image_id']}",
                    "kind": "rating",
                    "prompt_id": prompt_id,
                    "chosen_prompt": chosen["prompt"],
                    "chosen_image_id": chosen["image_id"],
                    "chosen_image_uri": chosen["image_uri"],
                    "rejected_prompt": rejected["prompt"],
                    "rejected_image_id": rejected["image_id"],
                    "rejected_image_uri": rejected["image_uri"],
                    "chosen_score": chosen["score"],
                    "rejected_score": rejected["score"],
                }
            )
    write_rows(result, out / "pairs.parquet")
    return {"combinations": combinations, "ties": ties, "pairs": len(result)}


# --------------------------------------------------------------------------------------- negatives


def brute_force_nearest_other(
    base: np.ndarray,
    queries: np.ndarray,
    query_groups: Sequence[int],
    base_groups: Sequence[int],
    *,
    search_k: int,
    block: int = 1024,
) -> list[int]:
    """For each query the most similar base row of another group among its ``search_k`` nearest
    (-1 if none): similarity blocks by NumPy, a full argsort per row, a Python scan of the top k."""
    chosen = []
    for start in range(0, len(queries), block):
        similarities = queries[start : start + block] @ base.T
        for offset, row in enumerate(similarities):
            order = np.argsort(-row, kind="stable")[:search_k]
            group = query_groups[start + offset]
            chosen.append(next((int(i) for i in order if base_groups[i] != group), -1))
    return chosen


def negatives(
    ratings_path: Path, images_path: Path, texts_path: Path, out: Path, *, search_k: int = 32
) -> dict[str, int]:
    scored = read_rows(ratings_path)
    images = read_rows(images_path)
    texts = read_rows(texts_path)
    embedded = {row["image_id"] for row in images}
    best: dict[str, float] = {}
    for row in scored:
        if row["image_id"] in embedded:
            best[row["prompt_id"]] = max(best.get(row["prompt_id"], -math.inf), row["score"])
    anchors = [r for r in scored if r["image_id"] in embedded and r["score"] == best[r["prompt_id"]]]
    codes: dict[str, int] = {}
    group_of = {row["prompt_id"]: codes.setdefault(normalize(row["prompt"]), len(codes)) for row in texts}
    text_row = {row["prompt_id"]: i for i, row in enumerate(texts)}
    image_row = {row["image_id"]: i for i, row in enumerate(images)}
    text_base = np.array([row["embedding"] for row in texts], dtype=np.float32)
    image_base = np.array([row["embedding"] for row in images], dtype=np.float32)
    anchor_groups = [group_of[a["prompt_id"]] for a in anchors]
    neg_text = brute_force_nearest_other(
        text_base,
        text_base[[text_row[a["prompt_id"]] for a in anchors]],
        anchor_groups,
        [group_of[row["prompt_id"]] for row in texts],
        search_k=search_k,
    )
    neg_image = brute_force_nearest_other(
        image_base,
        image_base[[image_row[a["image_id"]] for a in anchors]],
        anchor_groups,
        [group_of[row["prompt_id"]] for row in images],
        search_k=search_k,
    )
    uri_of = {row["image_id"]: row["image_uri"] for row in scored}
    result = []
    for anchor, text_index, image_index in zip(anchors, neg_text, neg_image, strict=True):
        common = {
            "prompt_id": anchor["prompt_id"],
            "chosen_prompt": anchor["prompt"],
            "chosen_image_id": anchor["image_id"],
            "chosen_image_uri": anchor["image_uri"],
            "chosen_score": anchor["score"],
            "rejected_score": None,
        }
        if text_index >= 0:
            other = texts[text_index]
            result.append(
                {
                    **common,
                    "kind": "negative_text",
                    "pair_id": f"{anchor['prompt_id']}:{anchor['image_id']}>text:{other['prompt_id']}",
                    "rejected_prompt": other["prompt"],
                    "rejected_image_id": anchor["image_id"],
                    "rejected_image_uri": anchor["image_uri"],
                }
            )
        if image_index >= 0:
            other_id = images[image_index]["image_id"]
            result.append(
                {
                    **common,
                    "kind": "negative_image",
                    "pair_id": f"{anchor['prompt_id']}:{anchor['image_id']}>image:{other_id}",
                    "rejected_prompt": anchor["prompt"],
                    "rejected_image_id": other_id,
                    "rejected_image_uri": uri_of.get(other_id),
                }
            )
    write_rows(result, out / "negatives.parquet")
    return {"anchors": len(anchors), "pairs": len(result)}


# ---------------------------------------------------------------------------------------- assemble


def assemble(
    pair_paths: Sequence[Path], out: Path, *, seed: int = 0, validation_fraction: float = 0.1
) -> dict:
    rows = [row for path in pair_paths for row in read_rows(path)]
    rows.sort(key=lambda row: row["pair_id"])
    permutation = np.random.default_rng(seed).permutation(len(rows))
    cut = int(validation_fraction * _BUCKETS)
    shuffled = []
    for index in permutation:
        row = dict(rows[int(index)])
        digest = hashlib.blake2b(f"{seed}:{row['prompt_id']}".encode(), digest_size=8).digest()
        row["split"] = "validation" if int.from_bytes(digest) % _BUCKETS < cut else "train"
        shuffled.append(row)
    write_rows([row for row in shuffled if row["split"] == "train"], out / "assemble.parquet")
    write_rows([row for row in shuffled if row["split"] == "validation"], out / "assemble.validation.parquet")
    return {"rows": len(shuffled)}
