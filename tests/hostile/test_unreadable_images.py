"""Case 3: an image that a stage finds unreadable is in no assembled pair.

The battery's input: a PNG cut in half (its header intact, so a header check passes it) among the
images of an ImageRewardDB zip."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl
import pytest
from PIL import Image

from tasks.assemble import assemble_pairs
from tasks.embed import embed
from tasks.ingest import ingest_ratings
from tasks.pairs import pairs
from tasks.ratings import ratings
from tests.factories import imagerewarddb_root

pytestmark = pytest.mark.hostile_case(3)


def truncated_png() -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(buffer, format="PNG")
    data = buffer.getvalue()
    return data[: len(data) // 2]


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """One prompt, four images ranked 1-4; ``bad`` (rank 2) is the truncated PNG."""
    rows = [{"image_id": name, "rank": rank} for rank, name in enumerate(["a", "bad", "c", "d"], start=1)]
    return imagerewarddb_root(tmp_path / "irdb", rows, image_bytes={"bad": truncated_png()})


def assembled_ids(result) -> set[str]:
    both = pl.concat([result.read(), result.read("validation")])
    return set(both["chosen_image_id"]) | set(both["rejected_image_id"])


def test_ingest_decodes_by_default(dataset: Path, tmp_path: Path) -> None:
    art = tmp_path / "art"
    ingested = ingest_ratings(dataset, root=art)
    rejects = ingested.read("rejects")
    assert rejects["record_id"].to_list() == ["bad"] and rejects["field"].to_list() == ["image_uri"]
    assert "cannot decode image" in rejects["reason"][0]
    assembled = assemble_pairs(
        [pairs(ratings(ingested.path, perspective="ranking", root=art).path, root=art).path], root=art
    )
    assert "bad" not in assembled_ids(assembled) and assembled.rows_kept == 3  # 3 of 3 pairs of a, c, d


def test_assemble_drops_pairs_whose_image_embed_rejected(dataset: Path, tmp_path: Path) -> None:
    """With the cheaper header check the truncated PNG passes ingest; embed rejects it, and assemble
    moves the pairs that use it (built before embed) to its rejects with embed's reason."""
    art = tmp_path / "art"
    ingested = ingest_ratings(dataset, image_check="header", root=art)
    assert ingested.rows_kept == 4
    scored = ratings(ingested.path, perspective="ranking", root=art)
    built = pairs(scored.path, root=art)
    assert built.read().height == 6  # every pair of 4 ranked images: 3 of them use "bad"
    embedded = embed(scored.path, root=art)
    assert embedded.read("rejects")["record_id"].to_list() == ["bad"]
    assembled = assemble_pairs([built.path], image_rejects=[embedded.paths["rejects"]], root=art)
    assert "bad" not in assembled_ids(assembled)
    assert (assembled.rows_in, assembled.rows_kept, assembled.rows_rejected) == (6, 3, 3)
    rejects = assembled.read("rejects")
    assert set(rejects["stage"]) == {"assemble_pairs"}
    assert all(
        reason.startswith(
            ("chosen image bad was rejected by embed: ", "rejected image bad was rejected by embed: ")
        )
        for reason in rejects["reason"]
    )
