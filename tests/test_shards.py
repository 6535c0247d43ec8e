"""Sharded dedup and embed: shards cover their input exactly once, and the merge writes the unsharded
stage's tables (row for row, bit for bit) under the unsharded stage's key."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from prefect.artifacts import Artifact

from flows.build_alignment_data import build_alignment_data
from tasks.cache import StageResult
from tasks.dedup import dedup
from tasks.dedup_shards import dedup_shard, finished_dedup, merge_dedup_shards
from tasks.embed import ClipSpec, embed
from tasks.embed_shards import embed_shard, finished_embed, merge_embed_shards
from tasks.ingest import ingest_benchmark, ingest_ratings
from tasks.ratings import ratings
from tasks.shards import Shard, check_shard_count, shard_bounds
from tests.factories import imagerewarddb_root


def assert_same_tables(first: StageResult, second: StageResult) -> None:
    """Same table names, and each table with the same schema and exactly the same values in order."""
    assert first.paths.keys() == second.paths.keys()
    for table in first.paths:
        left, right = first.read(table), second.read(table)
        assert left.schema == right.schema, table
        assert left.equals(right), f"table {table} differs"


# --- shard_bounds ----------------------------------------------------------------------------------


def test_shard_bounds_by_hand() -> None:
    assert shard_bounds(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert shard_bounds(605, 2, align=256) == [(0, 512), (512, 605)]  # 3 batches: 2 + 1
    assert shard_bounds(100, 3, align=256) == [(0, 100), (100, 100), (100, 100)]
    assert shard_bounds(0, 2) == [(0, 0), (0, 0)]
    assert shard_bounds(7, 1, align=4) == [(0, 7)]


@pytest.mark.parametrize("align", [1, 3, 8])
def test_shard_bounds_cover_the_range_once_on_batch_boundaries(align: int) -> None:
    for total in range(0, 41):
        for count in range(1, 7):
            bounds = shard_bounds(total, count, align=align)
            assert len(bounds) == count
            covered = [row for start, stop in bounds for row in range(start, stop)]
            assert covered == list(range(total)), (total, count, align)
            blocks = [-(-(stop - start) // align) for start, stop in bounds]
            assert max(blocks) - min(blocks) <= 1 and blocks == sorted(blocks, reverse=True)
            for start, _ in bounds:
                assert start % align == 0 or start == total
            assert [Shard(index, count).bounds(total, align=align) for index in range(count)] == bounds


def test_bad_shard_numbers_are_refused() -> None:
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="shards must be a positive integer"):
            check_shard_count(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shard index must be in \[0, 2\), got 2"):
        Shard(2, 2)
    assert Shard(1, 4).label == "2/4" and Shard(1, 4).params() == {"shard": 1, "shards": 4}


# --- embed -----------------------------------------------------------------------------------------

#: Undecodable images, at both ends of a batch of 2 and inside a later shard.
BAD_IMAGES = {"i1", "i2", "i9"}
SMALL_BATCHES = ClipSpec(batch_size=2)


@pytest.fixture(scope="module")
def small_ratings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """11 images of 5 prompts (interleaved, so that prompts and images shard differently), three of
    them undecodable."""
    tmp = tmp_path_factory.mktemp("small")
    rows = [
        {"image_id": f"i{k}", "prompt_id": f"p{k % 5}", "prompt": f"{k % 5} red circles over a square"}
        for k in range(11)
    ]
    broken = {image: b"RIFF\x10\x00\x00\x00WEBPVP8 truncated" for image in BAD_IMAGES}
    root = imagerewarddb_root(tmp / "irdb", rows, image_bytes=broken)
    ingested = ingest_ratings(root, image_check="none", root=tmp / "art")
    return ratings(ingested.path, perspective="ranking", root=tmp / "art").path


@pytest.fixture(scope="module")
def unsharded_embed(small_ratings: Path, tmp_path_factory: pytest.TempPathFactory) -> StageResult:
    return embed(small_ratings, clip=SMALL_BATCHES, root=tmp_path_factory.mktemp("unsharded"))


@pytest.mark.parametrize("count", [1, 3, 8])
def test_merged_embed_shards_are_the_unsharded_embed(
    count: int, small_ratings: Path, unsharded_embed: StageResult, tmp_path: Path
) -> None:
    parts = [
        embed_shard(small_ratings, index, count, clip=SMALL_BATCHES, root=tmp_path) for index in range(count)
    ]
    assert sum(part.rows_in for part in parts) == 11
    merged = merge_embed_shards(small_ratings, parts, clip=SMALL_BATCHES, root=tmp_path)
    assert not merged.cached and merged.stage == "embed" and merged.key == unsharded_embed.key
    assert_same_tables(merged, unsharded_embed)
    assert sorted(merged.read("rejects")["record_id"]) == sorted(BAD_IMAGES)
    assert {k: v for k, v in merged.stats.items() if k != "shards"} == unsharded_embed.stats
    assert merged.stats["shards"] == [part.key for part in parts]
    if count == 8:  # 6 batches of 2 images, 3 of 2 prompts: the last shards embed nothing
        assert parts[-1].rows_in == 0 and parts[-1].read("text").height == 0


def test_embed_shards_are_cached_and_the_merged_embed_is_found(small_ratings: Path, tmp_path: Path) -> None:
    assert finished_embed(small_ratings, clip=SMALL_BATCHES, root=tmp_path) is None
    first = [embed_shard(small_ratings, index, 2, clip=SMALL_BATCHES, root=tmp_path) for index in range(2)]
    again = [embed_shard(small_ratings, index, 2, clip=SMALL_BATCHES, root=tmp_path) for index in range(2)]
    assert [part.cached for part in first] == [False, False] and [part.cached for part in again] == [
        True,
        True,
    ]
    assert len({part.key for part in first}) == 2, "the shard index is part of the key"
    merged = merge_embed_shards(small_ratings, first, clip=SMALL_BATCHES, root=tmp_path)
    found = finished_embed(small_ratings, clip=SMALL_BATCHES, root=tmp_path)
    assert found is not None and found.cached and found.key == merged.key and found.paths == merged.paths
    manifest = json.loads(Path(first[1].manifest_path).read_text())
    assert manifest["params"]["shard"] == 1 and manifest["stats"]["rows"] == [6, 11, 11]
    assert finished_embed(small_ratings, clip=ClipSpec(batch_size=3), root=tmp_path) is None


def test_a_merge_refuses_shards_out_of_order_or_from_other_inputs(
    small_ratings: Path, tmp_path: Path
) -> None:
    parts = [embed_shard(small_ratings, index, 2, clip=SMALL_BATCHES, root=tmp_path) for index in range(2)]
    with pytest.raises(ValueError, match="shard at position 0 of 2 is shard 1 of 2"):
        merge_embed_shards(small_ratings, parts[::-1], clip=SMALL_BATCHES, root=tmp_path)
    with pytest.raises(ValueError, match="shard at position 0 of 1 is shard 0 of 2"):
        merge_embed_shards(small_ratings, parts[:1], clip=SMALL_BATCHES, root=tmp_path)
    fewer = tmp_path / "fewer.parquet"
    pl.read_parquet(small_ratings).head(7).write_parquet(fewer)
    other = embed_shard(fewer, 1, 2, clip=SMALL_BATCHES, root=tmp_path)
    with pytest.raises(ValueError, match=r"covers rows \[4, 7\) of 7, expected to start at 6 of 11"):
        merge_embed_shards(small_ratings, [parts[0], other], clip=SMALL_BATCHES, root=tmp_path)
    with pytest.raises(ValueError, match="a merge needs at least one shard"):
        merge_embed_shards(small_ratings, [], clip=SMALL_BATCHES, root=tmp_path)


# --- dedup -----------------------------------------------------------------------------------------


def write_dedup_inputs(folder: Path, prompts: dict[str, str], captions: list[str]) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [(pid, text) for _ in range(2) for pid, text in prompts.items()]  # rows interleave prompts
    table = pl.DataFrame(
        {
            "image_id": [f"{pid}-{k}" for k, (pid, _) in enumerate(rows)],
            "prompt_id": [pid for pid, _ in rows],
            "prompt": [text for _, text in rows],
            "source_file": ["f"] * len(rows),
            "source_row": list(range(len(rows))),
        }
    )
    table.write_parquet(folder / "ratings.parquet")
    pl.DataFrame({"caption": captions}).write_parquet(folder / "benchmark.parquet")
    return folder / "ratings.parquet", folder / "benchmark.parquet"


def test_merged_dedup_shards_keep_the_nearest_caption_and_its_ties(tmp_path: Path) -> None:
    prompts = {
        "tie": "a photo of a red cat on a mat",  # one letter from "bat" and from "hat": "bat" sorts first
        "near": "two blue birds in a tree",  # 1/25 from the "!" caption, 1/24 from the singular one
        "far": "an unrelated prompt about boats",
        "copy": "One Green Star",
        "other": "a yellow square beside a circle",
    }
    captions = [
        "a photo of a red hat on a mat",
        "A Photo of a RED bat on a mat",
        "a photo of a red bat on a mat",
        "two blue bird in a tree",
        "two blue birds in a tree!",
        "one green star",
        "something else entirely",
    ]
    ratings_path, benchmark_path = write_dedup_inputs(tmp_path / "in", prompts, captions)
    unsharded = dedup(ratings_path, benchmark_path, root=tmp_path / "one")
    removed = {row["prompt_id"]: row for row in unsharded.read("removed").iter_rows(named=True)}
    assert removed.keys() == {"tie", "near", "copy"}
    assert removed["tie"]["nearest_caption"] == "a photo of a red bat on a mat"
    assert removed["tie"]["distance"] == pytest.approx(1 / 29, abs=1e-6)
    assert removed["near"]["nearest_caption"] == "two blue birds in a tree!"
    assert removed["near"]["distance"] == pytest.approx(1 / 25, abs=1e-6)
    for count in (2, 5, 7):  # 7: more shards than prompts, the last two empty
        root = tmp_path / f"sharded-{count}"
        parts = [dedup_shard(ratings_path, benchmark_path, i, count, root=root) for i in range(count)]
        assert sum(part.rows_in for part in parts) == len(prompts)
        merged = merge_dedup_shards(ratings_path, benchmark_path, parts, root=root)
        assert merged.stage == "dedup" and merged.key == unsharded.key
        assert_same_tables(merged, unsharded)
        assert {k: v for k, v in merged.stats.items() if k != "shards"} == unsharded.stats
        assert finished_dedup(ratings_path, benchmark_path, root=root) is not None


def test_a_dedup_shard_lists_each_of_its_prompts_with_its_nearest_caption(tmp_path: Path) -> None:
    prompts = {"a": "one green star", "b": "a blue circle", "c": "one green star!", "d": "two red squares"}
    ratings_path, benchmark_path = write_dedup_inputs(tmp_path, prompts, ["one green star", "two red square"])
    first, second = (
        dedup_shard(ratings_path, benchmark_path, i, 2, threshold=0.1, root=tmp_path) for i in range(2)
    )
    assert first.read().to_dicts() == [
        {"prompt_id": "a", "nearest_caption": "one green star", "distance": 0.0},
        {"prompt_id": "b", "nearest_caption": None, "distance": None},
    ]
    table = second.read()
    assert table["prompt_id"].to_list() == ["c", "d"] and table["nearest_caption"].to_list() == [
        "one green star",
        "two red square",
    ]
    assert table["distance"].to_list() == pytest.approx([1 / 15, 1 / 15], abs=1e-6)
    assert second.stats["prompts"] == [2, 4, 4] and second.stats["near"] == 2
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\)"):
        dedup_shard(ratings_path, benchmark_path, 0, 2, threshold=1.0, root=tmp_path)


def test_merged_dedup_on_the_demo_corpus(demo_corpus: Path, tmp_path: Path) -> None:
    ingested = ingest_ratings(demo_corpus / "imagerewarddb", split="train", root=tmp_path)
    benchmark = ingest_benchmark(demo_corpus / "mjbench", root=tmp_path)
    unsharded = dedup(ingested.path, benchmark.path, root=tmp_path / "one")
    parts = [dedup_shard(ingested.path, benchmark.path, i, 3, root=tmp_path / "three") for i in range(3)]
    merged = merge_dedup_shards(ingested.path, benchmark.path, parts, root=tmp_path / "three")
    assert unsharded.stats["prompts_removed"] > 0, "the demo benchmark copies some training prompts"
    assert merged.key == unsharded.key
    assert_same_tables(merged, unsharded)


# --- the flow --------------------------------------------------------------------------------------


def stage_rows(flow_name: str) -> list[dict]:
    artifact = Artifact.get(f"{flow_name}-stages")
    assert artifact is not None
    return artifact.data if isinstance(artifact.data, list) else json.loads(artifact.data)


@pytest.mark.usefixtures("prefect_harness")
def test_sharded_flow_builds_the_unsharded_tables_and_reuses_them(demo_corpus: Path, tmp_path: Path) -> None:
    paths = {
        "imagereward_path": str(demo_corpus / "imagerewarddb"),
        "benchmark_path": str(demo_corpus / "mjbench"),
    }
    one = build_alignment_data(**paths, artifacts_dir=str(tmp_path / "one"))
    two = build_alignment_data(**paths, artifacts_dir=str(tmp_path / "two"), shards=2)
    rows = stage_rows("build-alignment-data")
    assert [row["stage"] for row in rows] == [
        "ingest_ratings",
        "ingest_benchmark",
        "dedup_shard 1/2",
        "dedup_shard 2/2",
        "dedup",
        "ratings",
        "pairs",
        "embed_shard 1/2",
        "embed_shard 2/2",
        "embed",
        "negatives",
        "assemble_pairs",
    ]
    assert {row["status"] for row in rows} == {"computed"}
    for name in ("train", "validation"):
        assert Path(one[name]).name == Path(two[name]).name, "same stage keys for any shard count"
        assert pl.read_parquet(one[name]).equals(pl.read_parquet(two[name]))

    # A finished unsharded stage is the sharded stage's output too: nothing is recomputed.
    again = build_alignment_data(**paths, artifacts_dir=str(tmp_path / "one"), shards=2)
    assert again == one
    rows = stage_rows("build-alignment-data")
    assert "embed_shard 1/2" not in [row["stage"] for row in rows]
    assert {row["status"] for row in rows} == {"cached"}
