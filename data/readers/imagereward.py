"""ImageRewardDB readers: the published layout, HF Parquet shards and ImageReward's ``test.json``.

All three produce RATINGS_SCHEMA rows (one per image). Ratings are kept as Float32 exactly as found:
null stays null and NaN stays NaN; range checks are the ingest stage's job. Images are never opened,
only referenced (see :mod:`data.images` for the reference forms); a row whose image path resolves
(symlinks included) outside the image root is rejected (:data:`data.readers.common.OUTSIDE_ROOT`).

Layouts (see docs DATASETS.md):

- published: ``<root>/metadata-{split}.parquet`` with ``image_path`` like
  ``images/train/train_1/<uuid>.webp``; the image is the extracted file ``<root>/<image_path>`` if
  present, else member ``<uuid>.webp`` (or ``train_1/<uuid>.webp``) of ``<root>/images/train/train_1.zip``,
  else the expected extracted path (the ingest stage then reports it missing).
- HF shards: ``<split>-00000-of-00032.parquet`` with an embedded ``image`` struct ``{bytes, path}``.
- ``test.json``: ``[{id, prompt, generations: [paths], ranking: [ints]}]``, one row per generation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from data.images import SEPARATOR
from data.readers.common import (
    FieldProblem,
    FolderIndex,
    Parsed,
    PathGuard,
    ReaderError,
    ReadResult,
    RejectLog,
    as_id,
    as_int,
    as_text,
    concat_results,
    existing_path,
    leading_token,
    load_json_records,
    parquet_cell_uris,
    parquet_schema,
    parse_fields,
    parse_float,
    parse_id,
    parse_int,
    parse_text,
    read_parquet_columns,
    reject_outside_roots,
    require_columns,
    show_value,
    split_rejects,
    stem_expr,
    struct_has_field,
)
from data.schemas import RATINGS_SCHEMA, conform

RATING_COLUMNS = ("overall_rating", "image_text_alignment_rating", "fidelity_rating")
#: Columns every ImageRewardDB Parquet file must have (besides ``image_path`` / ``image``).
METADATA_COLUMNS = ("prompt_id", "prompt", "rank", *RATING_COLUMNS)
OPTIONAL_COLUMNS = ("classification",)
METADATA_GLOB = "metadata-*.parquet"


def read_imagereward(
    path: str | Path, *, split: str | None = None, image_root: str | Path | None = None
) -> ReadResult:
    """Read ImageRewardDB from whatever ``path`` is.

    - a folder holding ``metadata-*.parquet`` (or one such file): the published layout;
    - a ``.parquet`` shard, or a folder of shards (searched recursively): HF ``datasets`` shards;
    - a ``.json`` file: ImageReward's ``test.json``.

    ``split`` selects one split of the published layout / the shards (by file name); for
    ``test.json`` it names the split (default ``test``). ``image_root`` is where images live
    (default: the metadata's folder, or the JSON's folder); it is ignored for shards.
    """
    source = existing_path(path)
    if source.is_dir():
        if any(source.glob(METADATA_GLOB)):
            return read_imagereward_metadata(source, split=split, image_root=image_root)
        return read_imagereward_shards(source, split=split)
    if source.suffix == ".json":
        return read_imagereward_test_json(source, image_root=image_root, split=split or "test")
    if source.suffix == ".parquet":
        if source.name.startswith("metadata-"):
            return read_imagereward_metadata(source, split=split, image_root=image_root)
        return read_imagereward_shards(source, split=split)
    raise ReaderError(f"{source}: not an ImageRewardDB folder, .parquet or .json file")


# --------------------------------------------------------------------------------------------
# Published layout: metadata-{split}.parquet + images (extracted or zipped)


def metadata_files(root: Path, split: str | None) -> list[Path]:
    """The metadata files of ``root`` (one when ``split`` is given)."""
    if split is not None:
        return [existing_path(root / f"metadata-{split}.parquet")]
    files = sorted(root.glob(METADATA_GLOB))
    if not files:
        raise ReaderError(f"{root}: no {METADATA_GLOB} files")
    return files


def read_imagereward_metadata(
    path: str | Path, *, split: str | None = None, image_root: str | Path | None = None
) -> ReadResult:
    """Read ``metadata-{split}.parquet`` files (a root folder or one file) with their images."""
    source = existing_path(path)
    if source.is_dir():
        files, root = metadata_files(source, split), source
    else:
        files, root = [source], source.parent
    images = Path(image_root).expanduser().resolve() if image_root is not None else root
    index = FolderIndex()
    return concat_results((_read_metadata_file(file, images, index) for file in files), RATINGS_SCHEMA)


def _read_metadata_file(file: Path, image_root: Path, index: FolderIndex) -> ReadResult:
    schema = parquet_schema(file)
    require_columns(file, schema, ("image_path", *METADATA_COLUMNS))
    optional = [name for name in OPTIONAL_COLUMNS if name in schema.names]
    frame = read_parquet_columns(file, ["image_path", *METADATA_COLUMNS, *optional])
    fields = {"image_path": parse_text(frame, "image_path"), **_metadata_fields(frame)}
    kept, rejects = split_rejects(frame, fields, source_file=file, record_id=stem_expr("image_path"))
    table = kept.with_columns(
        image_id=stem_expr("image_path"),
        image_uri=locate_images(image_root, kept["image_path"], index),
        split=pl.lit(file.stem.removeprefix("metadata-")),
        source_file=pl.lit(str(file)),
    )
    result = ReadResult(_finish(table, file), rejects)
    return reject_outside_roots(
        result, PathGuard(image_root), {"image_uri": "image_path"}, record_id="image_id"
    )


def _metadata_fields(frame: pl.DataFrame) -> dict[str, Parsed]:
    """Parsers for the metadata columns shared by the published layout and the HF shards."""
    fields = {
        "prompt_id": parse_id(frame, "prompt_id"),
        "prompt": parse_text(frame, "prompt"),
        "rank": parse_int(frame, "rank"),
        **{name: parse_float(frame, name) for name in RATING_COLUMNS},
    }
    if "classification" in frame.columns:
        fields["classification"] = parse_text(frame, "classification", required=False)
    return fields


def _finish(table: pl.DataFrame, file: Path) -> pl.DataFrame:
    if "classification" not in table.columns:
        table = table.with_columns(classification=pl.lit(None, dtype=pl.String))
    return conform(table, RATINGS_SCHEMA, where=str(file))


def locate_images(image_root: Path, image_paths: pl.Series, index: FolderIndex | None = None) -> pl.Series:
    """The image reference of each relative ``image_path`` under ``image_root``.

    Each folder ``d`` of the paths is listed once: an extracted ``<root>/d/<name>`` wins, else a
    member ``<name>`` or ``<basename(d)>/<name>`` of ``<root>/d.zip`` (whose member list is read
    only when some of the folder's images are not extracted), else the expected extracted path is
    returned, so a missing image is reported by the stage that checks images.
    """
    index = index or FolderIndex()
    frame = pl.DataFrame({"image_path": image_paths.cast(pl.String)}).with_columns(
        folder=pl.col("image_path").str.extract(r"^(.*)/", 1).fill_null(""),
        name=pl.col("image_path").str.split("/").list.last(),
    )
    lookups = [
        _available_images(image_root, folder, names, index)
        for folder, names in frame.group_by("folder").agg("name").iter_rows()
    ]
    lookup = pl.concat(lookups, how="vertical") if lookups else pl.DataFrame(schema=_LOOKUP_SCHEMA)
    lookup = lookup.unique(["folder", "name"], keep="first", maintain_order=True)
    expected = pl.lit(f"{image_root}/") + pl.col("image_path")
    joined = frame.join(lookup, on=["folder", "name"], how="left", maintain_order="left")
    return joined.select(pl.coalesce("uri", expected).alias("image_uri"))["image_uri"]


_LOOKUP_SCHEMA = {"folder": pl.String, "name": pl.String, "uri": pl.String}


def _available_images(image_root: Path, folder: str, wanted: list[str], index: FolderIndex) -> pl.DataFrame:
    """(folder, name, uri) of the images available for ``folder``, extracted files first."""
    directory = image_root / folder if folder else image_root
    listing = index.names(directory)
    extracted = pl.Series("name", sorted(listing), dtype=pl.String)
    found = [pl.DataFrame({"name": extracted}).with_columns(uri=pl.lit(f"{directory}/") + pl.col("name"))]
    if folder and not listing.issuperset(wanted):
        archive = directory.with_name(directory.name + ".zip")
        members = pl.DataFrame({"member": pl.Series(index.members(archive), dtype=pl.String)})
        found.append(
            members.with_columns(
                parent=pl.col("member").str.extract(r"^(.*)/", 1).fill_null(""),
                name=pl.col("member").str.split("/").list.last(),
            )
            .filter(pl.col("parent").is_in(["", directory.name]) & (pl.col("name") != ""))
            .select("name", uri=pl.lit(f"{archive}{SEPARATOR}") + pl.col("member"))
        )
    return (
        pl.concat(found, how="vertical")
        .with_columns(folder=pl.lit(folder, dtype=pl.String))
        .select(list(_LOOKUP_SCHEMA))
    )


# --------------------------------------------------------------------------------------------
# HF datasets Parquet shards with an embedded image column


def shard_files(path: Path, split: str | None) -> list[Path]:
    """``path`` itself, or the ``*.parquet`` files under folder ``path`` (optionally of one split)."""
    files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
    if split is not None:
        files = [file for file in files if leading_token(file) == split]
    if not files:
        wanted = f" of split {split!r}" if split else ""
        raise ReaderError(f"{path}: no Parquet shards{wanted}")
    return files


def read_imagereward_shards(path: str | Path, *, split: str | None = None) -> ReadResult:
    """Read HF shards (``train-00000-of-00032.parquet``); the split is the file name's first token."""
    files = shard_files(existing_path(path), split)
    return concat_results((_read_shard(file) for file in files), RATINGS_SCHEMA)


def _read_shard(file: Path) -> ReadResult:
    schema = parquet_schema(file)
    require_columns(file, schema, ("image", *METADATA_COLUMNS))
    optional = [name for name in OPTIONAL_COLUMNS if name in schema.names]
    image_path = ["image.path"] if struct_has_field(schema, "image", "path") else []
    frame = read_parquet_columns(file, [*METADATA_COLUMNS, *optional, *image_path])
    fallback_id = pl.lit(f"{file.stem}-") + pl.col("source_row").cast(pl.String)
    embedded_id = pl.when(stem_expr("image.path") != "").then(stem_expr("image.path")) if image_path else None
    image_id = fallback_id if embedded_id is None else pl.coalesce(embedded_id, fallback_id)
    frame = frame.with_columns(image_id=image_id)
    kept, rejects = split_rejects(
        frame, _metadata_fields(frame), source_file=file, record_id=pl.col("image_id")
    )
    table = kept.with_columns(
        image_uri=parquet_cell_uris(file, "image", kept["source_row"]),
        split=pl.lit(leading_token(file)),
        source_file=pl.lit(str(file)),
    )
    return ReadResult(_finish(table, file), rejects)


# --------------------------------------------------------------------------------------------
# ImageReward's test.json


def read_imagereward_test_json(
    path: str | Path, *, image_root: str | Path | None = None, split: str = "test"
) -> ReadResult:
    """One row per generation of each ``{id, prompt, generations, ranking}`` item.

    Ratings are null; ``rank`` is ``ranking[k]``; ``image_uri`` is ``<image_root>/<generation>``
    (``image_root`` defaults to the JSON's folder). An item whose ``ranking`` length differs from
    ``generations`` is rejected (field ``ranking``), as is any item with an unparsable field.
    """
    file = existing_path(path)
    root = Path(image_root).expanduser().resolve() if image_root is not None else file.parent
    items = load_json_records(file)
    log = RejectLog(file)
    rows: dict[str, list[Any]] = {
        key: [] for key in ("prompt_id", "prompt", "generation", "rank", "source_row")
    }
    parsers = {"id": as_id, "prompt": as_text, "generations": _as_paths, "ranking": _as_ranks}
    for row, item in enumerate(items):
        if not isinstance(item, dict):
            log.not_an_object(row, item)
            continue
        values, problems = parse_fields(item, parsers)
        generations, ranking = values.get("generations"), values.get("ranking")
        if generations is not None and ranking is not None and len(generations) != len(ranking):
            problems["ranking"] = f"{len(ranking)} ranks for {len(generations)} generations"
        if problems:
            log.add(row, values.get("id"), problems)
            continue
        count = len(generations)
        rows["prompt_id"] += [values["id"]] * count
        rows["prompt"] += [values["prompt"]] * count
        rows["generation"] += generations
        rows["rank"] += ranking
        rows["source_row"] += [row] * count
    frame = pl.DataFrame(
        rows,
        schema={
            "prompt_id": pl.String,
            "prompt": pl.String,
            "generation": pl.String,
            "rank": pl.Int64,
            "source_row": pl.Int64,
        },
    )
    table = frame.with_columns(
        image_id=stem_expr("generation"),
        image_uri=pl.lit(f"{root}/") + pl.col("generation"),
        classification=pl.lit(None, dtype=pl.String),
        split=pl.lit(split),
        **{name: pl.lit(None, dtype=pl.Float32) for name in RATING_COLUMNS},
        source_file=pl.lit(str(file)),
    )
    result = ReadResult(conform(table, RATINGS_SCHEMA, where=str(file)), log.frame())
    return reject_outside_roots(result, PathGuard(root), {"image_uri": "generations"}, record_id="prompt_id")


def _as_paths(value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        raise _problem("not a non-empty list of image paths", value)
    for entry in value:
        as_text(entry)
    return value


def _as_ranks(value: Any) -> list[int]:
    if not isinstance(value, list):
        raise _problem("not a list of integer ranks", value)
    ranks = [as_int(entry) for entry in value]
    if any(not _INT32_MIN <= rank <= _INT32_MAX for rank in ranks):  # type: ignore[operator]
        raise _problem("rank outside the Int32 range", value)
    return ranks  # type: ignore[return-value]


_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def _problem(reason: str, value: Any) -> FieldProblem:
    return FieldProblem(f"{reason}: {show_value(value)}")
