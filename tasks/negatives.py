"""Hard-negative stage: FAISS nearest neighbours over the open_clip embeddings.

For every prompt t and each of its best-rated images i_k (the anchors):

- ``negative_text``: the most similar *other* prompt t_neg (cosine of text embeddings) gives the pair
  (t, i_k) ≻ (t_neg, i_k): the same image, a prompt that almost but not quite describes it;
- ``negative_image``: the most similar image of another prompt i_neg (cosine of image embeddings)
  gives (t, i_k) ≻ (t, i_neg): the same prompt, an image that looks alike but was made for another.

"Other" means another ``prompt_id`` whose normalized text also differs (repeated prompts are not
negatives of each other). Each (anchor, kind) without a usable neighbour among the ``search_k``
nearest is rejected with that reason.

Search: ``index="flat"`` is exact brute force, whose cost grows with anchors x images, i.e. with the
square of the dataset (~3 s at ImageRewardDB's 50k images on 2 cores, ~100x that at 10x the size).
``index="ivf"`` is FAISS' inverted-file index (sqrt(n) k-means lists, ``probes`` of them searched per
query, seeded, so deterministic): approximate, for large datasets; docs/BENCHMARKS.md gives its speed
and how often it picks the same negative as the exact search (99.5-99.9%). ``index="auto"`` (the
flows' default) searches exactly below ``AUTO_IVF_MIN_ROWS`` rows and with IVF from there on.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

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


SearchIndex = Literal["auto", "flat", "ivf"]
#: From this many rows on, ``index="auto"`` uses the IVF index (ImageRewardDB's ~50k images stay exact).
AUTO_IVF_MIN_ROWS = 200_000
#: k-means iterations and training points per list of the IVF index (FAISS wants >= 39 per list).
IVF_TRAINING_ITERATIONS = 10
IVF_POINTS_PER_LIST = 64


def build_index(
    base: np.ndarray, kind: SearchIndex = "flat", *, probes: int = 16, seed: int = 0
) -> faiss.Index:
    """An inner-product index over ``base``: exact (``flat``) or an IVF index with ``round(sqrt(n))``
    lists trained on a seeded sample, ``probes`` lists searched per query."""
    dimension = base.shape[1]
    if kind == "auto":
        kind = "ivf" if base.shape[0] >= AUTO_IVF_MIN_ROWS else "flat"
    if kind == "flat":
        index = faiss.IndexFlatIP(dimension)
        index.add(base)
        return index
    if kind != "ivf":
        raise ValueError(f"unknown search index {kind!r}; choose 'auto', 'flat' or 'ivf'")
    lists = max(1, round(float(np.sqrt(base.shape[0]))))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dimension), dimension, lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = IVF_TRAINING_ITERATIONS
    index.cp.seed = seed
    sample_size = min(base.shape[0], IVF_POINTS_PER_LIST * lists)
    sample = np.random.default_rng(seed).choice(base.shape[0], size=sample_size, replace=False)
    index.train(base[np.sort(sample)])
    index.add(base)
    index.nprobe = min(probes, lists)
    return index


def nearest_other(
    base: np.ndarray,
    queries: np.ndarray,
    query_groups: np.ndarray,
    base_groups: np.ndarray,
    *,
    search_k: int,
    index: SearchIndex = "flat",
    probes: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, the index of the most similar ``base`` row (inner product) whose group differs
    from the query's group, and that similarity; -1 / NaN when none is among the ``search_k`` nearest."""
    if isinstance(search_k, bool) or not isinstance(search_k, int) or search_k < 1:
        raise ValueError(f"search_k must be a positive integer, got {search_k!r}")
    if base.shape[0] == 0 or queries.shape[0] == 0:  # nothing to search: no neighbour for any query
        return np.full(queries.shape[0], -1, dtype=np.int64), np.full(queries.shape[0], np.nan)
    searcher = build_index(base, index, probes=probes)
    k = min(search_k, base.shape[0])
    try:
        similarities, neighbours = searcher.search(queries, k)
    except AssertionError as error:  # FAISS checks its arguments with bare assertions
        raise RuntimeError(
            f"FAISS search of {queries.shape[0]} queries among {base.shape[0]} rows (k={k}) failed: {error!r}"
        ) from error
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


def _group_codes(texts: pl.DataFrame) -> pl.Series:
    """One integer per distinct normalized prompt text, for each row of ``texts``
    (:func:`normalize_prompt` runs once per distinct raw text)."""
    distinct = texts["prompt"].unique().to_list()
    normalized = pl.DataFrame(
        {"prompt": distinct, "_normalized": [normalize_prompt(text) for text in distinct]},
        schema={"prompt": pl.String, "_normalized": pl.String},
    )
    coded = texts.select("prompt").join(normalized, on="prompt", how="left", maintain_order="left")
    return coded["_normalized"].rank("dense").cast(pl.Int64).alias("_group")


def _rows_of(keys: pl.Series, table: pl.DataFrame, column: str) -> np.ndarray:
    """Row numbers in ``table`` of each value of ``keys`` (matched on ``table[column]``, unique);
    a KeyError naming the first value that is missing."""
    lookup = table.select(column).with_row_index("_row")
    found = keys.to_frame(column).join(lookup, on=column, how="left", maintain_order="left")["_row"]
    if found.null_count():
        missing = keys.filter(found.is_null())[0]
        raise KeyError(f"{column} {missing!r} not found")
    return found.to_numpy().astype(np.int64)


def mine_negatives(
    scored: pl.DataFrame,
    images: pl.DataFrame,
    texts: pl.DataFrame,
    *,
    search_k: int = 32,
    index: SearchIndex = "flat",
    probes: int = 16,
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, float]]:
    """(hard-negative pairs in PAIRS_SCHEMA, rejected (anchor, kind) rows, statistics)."""
    anchors = _anchors(scored, images)
    text_groups = _group_codes(texts).to_numpy()

    # Text negatives: each anchor's prompt embedding against all prompt embeddings. Anchors of one
    # prompt share their query, so each distinct anchor prompt is searched once.
    anchor_text_rows = _rows_of(anchors["prompt_id"], texts, "prompt_id")
    query_rows, query_of_anchor = np.unique(anchor_text_rows, return_inverse=True)
    text_base = _matrix(texts)
    anchor_groups = text_groups[anchor_text_rows]
    neg_text, text_similarity = nearest_other(
        text_base,
        text_base[query_rows],
        text_groups[query_rows],
        text_groups,
        search_k=search_k,
        index=index,
        probes=probes,
    )
    neg_text, text_similarity = neg_text[query_of_anchor], text_similarity[query_of_anchor]

    # Image negatives: query each anchor image against all images of other prompts.
    anchor_image_rows = _rows_of(anchors["image_id"], images, "image_id")
    image_base = _matrix(images)
    image_groups = text_groups[_rows_of(images["prompt_id"], texts, "prompt_id")]
    neg_image, image_similarity = nearest_other(
        image_base,
        image_base[anchor_image_rows],
        anchor_groups,
        image_groups,
        search_k=search_k,
        index=index,
        probes=probes,
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
    index: SearchIndex = "auto",
    probes: int = 16,
    root: str | Path | None = None,
) -> StageResult:
    """Stage: hard-negative pairs (one text and one image negative per best-rated image). ``index``
    picks exact search (``flat``), the approximate IVF index (``ivf``) or one by size (``auto``, the
    default, as in the build flows: called with the flows' defaults, the stage finds their outputs)."""
    if index not in ("auto", "flat", "ivf"):
        raise ValueError(f"unknown search index {index!r}; choose 'auto', 'flat' or 'ivf'")
    if isinstance(search_k, bool) or not isinstance(search_k, int) or search_k < 1:
        raise ValueError(f"search_k must be a positive integer, got {search_k!r}")

    def compute() -> StageOutput:
        scored = pl.read_parquet(scored_path)
        images = pl.read_parquet(images_path)
        texts = pl.read_parquet(texts_path)
        table, rejects, stats = mine_negatives(
            scored, images, texts, search_k=search_k, index=index, probes=probes
        )
        attempts = 2 * int(stats["anchors"])
        return StageOutput(
            tables={MAIN: table, REJECTS: rejects}, rows_in=attempts, rows_kept=table.height, stats=stats
        )

    params: dict[str, object] = {"search_k": search_k}
    if index != "flat":
        params.update(index=index, probes=probes)
    return run_stage(
        NEGATIVES,
        params=params,
        inputs={"scored": scored_path, "images": images_path, "texts": texts_path},
        compute=compute,
        root=root,
    )


negatives_task = stage_task(negatives, name="negatives")
