"""Hard-negative stage: FAISS nearest neighbours over the open_clip embeddings.

For every prompt t and each of its best-rated images i_k (the anchors):

- ``negative_text``: the most similar *other* prompt t_neg (cosine of text embeddings) gives the pair
  (t, i_k) ≻ (t_neg, i_k): the same image, a prompt that almost but not quite describes it;
- ``negative_image``: the most similar image of another prompt i_neg (cosine of image embeddings)
  gives (t, i_k) ≻ (t, i_neg): the same prompt, an image that looks alike but was made for another.

"Other" means another ``prompt_id`` whose normalized text also differs (repeated prompts are not
negatives of each other). Each (anchor, kind) without a usable neighbour among the ``search_k``
nearest is rejected with that reason.
"""

from __future__ import annotations

import sys
from pathlib import Path

import faiss
import numpy as np
import polars as pl

import data.schemas
import data.validate
import tasks.dedup
from data.schemas import PAIRS_SCHEMA
from data.validate import reject_rows
from tasks.cache import MAIN, REJECTS, Stage, StageOutput, StageResult, run_stage
from tasks.dedup import normalize_prompt
from tasks.prefect_stage import stage_task

NEGATIVES = Stage("negatives", 1, (sys.modules[__name__], data.validate, tasks.dedup, data.schemas))


def _matrix(frame: pl.DataFrame) -> np.ndarray:
    return np.ascontiguousarray(frame["embedding"].to_numpy(), dtype=np.float32)


def nearest_other(
    base: np.ndarray, queries: np.ndarray, query_groups: np.ndarray, base_groups: np.ndarray, *, search_k: int
) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, the index of the most similar ``base`` row (inner product) whose group differs
    from the query's group, and that similarity; -1 / NaN when none is among the ``search_k`` nearest."""
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    k = min(search_k, base.shape[0])
    similarities, neighbours = index.search(queries, k)
    usable = (neighbours >= 0) & (base_groups[np.clip(neighbours, 0, None)] != query_groups[:, None])
    has_any = usable.any(axis=1)
    first = usable.argmax(axis=1)
    rows = np.arange(queries.shape[0])
    chosen = np.where(has_any, neighbours[rows, first], -1)
    similarity = np.where(has_any, similarities[rows, first], np.nan)
    return chosen, similarity


def _anchors(scored: pl.DataFrame, images: pl.DataFrame) -> pl.DataFrame:
    """Best-rated embedded images of each prompt."""
    embedded = scored.join(images.select("image_id"), on="image_id", how="semi")
    return embedded.filter(pl.col("score") == pl.col("score").max().over("prompt_id"))


def _reject(anchors: pl.DataFrame, missing: np.ndarray, kind: str, reason: str) -> pl.DataFrame:
    return reject_rows(anchors.filter(pl.Series(missing)), stage="negatives", field=kind, reason=reason)


def mine_negatives(
    scored: pl.DataFrame, images: pl.DataFrame, texts: pl.DataFrame, *, search_k: int = 32
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, float]]:
    """(hard-negative pairs in PAIRS_SCHEMA, rejected (anchor, kind) rows, statistics)."""
    anchors = _anchors(scored, images)
    text_group = texts["prompt"].map_elements(normalize_prompt, return_dtype=pl.String)
    group_codes = {text: code for code, text in enumerate(text_group.unique().sort().to_list())}
    prompt_group = dict(zip(texts["prompt_id"].to_list(), (group_codes[t] for t in text_group), strict=True))

    # Text negatives: query each anchor's prompt embedding against all prompt embeddings.
    text_row = {prompt_id: row for row, prompt_id in enumerate(texts["prompt_id"].to_list())}
    anchor_text_rows = np.array([text_row[p] for p in anchors["prompt_id"].to_list()], dtype=np.int64)
    text_base = _matrix(texts)
    text_groups = np.array([prompt_group[p] for p in texts["prompt_id"].to_list()], dtype=np.int64)
    anchor_groups = text_groups[anchor_text_rows]
    neg_text, text_similarity = nearest_other(
        text_base, text_base[anchor_text_rows], anchor_groups, text_groups, search_k=search_k
    )

    # Image negatives: query each anchor image against all images of other prompts.
    image_row = {image_id: row for row, image_id in enumerate(images["image_id"].to_list())}
    anchor_image_rows = np.array([image_row[i] for i in anchors["image_id"].to_list()], dtype=np.int64)
    image_base = _matrix(images)
    image_groups = np.array([prompt_group[p] for p in images["prompt_id"].to_list()], dtype=np.int64)
    neg_image, image_similarity = nearest_other(
        image_base, image_base[anchor_image_rows], anchor_groups, image_groups, search_k=search_k
    )

    base = anchors.select(
        "prompt_id",
        pl.col("prompt").alias("chosen_prompt"),
        pl.col("image_id").alias("chosen_image_id"),
        pl.col("image_uri").alias("chosen_image_uri"),
        pl.col("score").alias("chosen_score"),
    )
    found_text, found_image = neg_text >= 0, neg_image >= 0
    negative_texts = texts.select("prompt_id", "prompt")[neg_text[found_text]]
    text_pairs = base.filter(pl.Series(found_text)).with_columns(
        pl.lit("negative_text").alias("kind"),
        negative_texts["prompt"].alias("rejected_prompt"),
        pl.col("chosen_image_id").alias("rejected_image_id"),
        pl.col("chosen_image_uri").alias("rejected_image_uri"),
        pl.format("{}:{}>text:{}", "prompt_id", "chosen_image_id", pl.lit(negative_texts["prompt_id"])).alias(
            "pair_id"
        ),
    )
    uri_of = scored.select("image_id", "image_uri")
    negative_images = images.select("image_id")[neg_image[found_image]].join(
        uri_of, on="image_id", how="left", maintain_order="left"
    )
    image_pairs = base.filter(pl.Series(found_image)).with_columns(
        pl.lit("negative_image").alias("kind"),
        pl.col("chosen_prompt").alias("rejected_prompt"),
        negative_images["image_id"].alias("rejected_image_id"),
        negative_images["image_uri"].alias("rejected_image_uri"),
        pl.format(
            "{}:{}>image:{}", "prompt_id", "chosen_image_id", pl.lit(negative_images["image_id"])
        ).alias("pair_id"),
    )
    pairs = pl.concat(
        [
            frame.with_columns(pl.lit(None, dtype=pl.Float32).alias("rejected_score")).select(
                list(PAIRS_SCHEMA)
            )
            for frame in (text_pairs, image_pairs)
        ]
    ).cast(PAIRS_SCHEMA)
    rejects = pl.concat(
        [
            _reject(anchors, ~found_text, "negative_text", f"no other prompt among the {search_k} nearest"),
            _reject(
                anchors,
                ~found_image,
                "negative_image",
                f"no image of another prompt among the {search_k} nearest",
            ),
        ]
    )
    stats = {
        "anchors": anchors.height,
        "negative_text_pairs": text_pairs.height,
        "negative_image_pairs": image_pairs.height,
        "mean_text_similarity": float(np.nanmean(text_similarity)) if found_text.any() else None,
        "mean_image_similarity": float(np.nanmean(image_similarity)) if found_image.any() else None,
    }
    return pairs, rejects, stats


def negatives(
    scored_path: str | Path,
    images_path: str | Path,
    texts_path: str | Path,
    *,
    search_k: int = 32,
    root: str | Path | None = None,
) -> StageResult:
    """Stage: hard-negative pairs (one text and one image negative per best-rated image)."""

    def compute() -> StageOutput:
        scored = pl.read_parquet(scored_path)
        images = pl.read_parquet(images_path)
        texts = pl.read_parquet(texts_path)
        table, rejects, stats = mine_negatives(scored, images, texts, search_k=search_k)
        attempts = 2 * int(stats["anchors"])
        return StageOutput(
            tables={MAIN: table, REJECTS: rejects}, rows_in=attempts, rows_kept=table.height, stats=stats
        )

    return run_stage(
        NEGATIVES,
        params={"search_k": search_k},
        inputs={"scored": scored_path, "images": images_path, "texts": texts_path},
        compute=compute,
        root=root,
    )


negatives_task = stage_task(negatives, name="negatives")
