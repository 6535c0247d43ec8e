"""Assemble: seeded shuffle, split by prompt, stable under new data, nothing lost."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from data.schemas import PAIRS_SCHEMA, SAFETY_SCHEMA
from tasks.assemble import assemble_pair_tables, assemble_pairs, assemble_unpaired, split_of


def pair_table(prompts: int, per_prompt: int = 3, kind: str = "rating") -> pl.DataFrame:
    rows = [
        {
            "pair_id": f"{kind}-p{p}-{k}",
            "kind": kind,
            "prompt_id": f"p{p}",
            "chosen_prompt": f"prompt {p}",
            "chosen_image_id": f"p{p}-c{k}",
            "chosen_image_uri": f"/i/p{p}-c{k}.webp",
            "rejected_prompt": f"prompt {p}",
            "rejected_image_id": f"p{p}-r{k}",
            "rejected_image_uri": f"/i/p{p}-r{k}.webp",
            "chosen_score": 5.0,
            "rejected_score": 3.0,
        }
        for p in range(prompts)
        for k in range(per_prompt)
    ]
    return pl.DataFrame(rows, schema=PAIRS_SCHEMA)


def test_split_keeps_each_prompt_on_one_side_and_matches_the_fraction() -> None:
    assembled = assemble_pair_tables([pair_table(2000)], seed=0, validation_fraction=0.2)
    sides = assembled.group_by("prompt_id").agg(pl.col("split").n_unique().alias("sides"))
    assert (sides["sides"] == 1).all()
    fraction = assembled.filter(pl.col("split") == "validation")["prompt_id"].n_unique() / 2000
    assert fraction == pytest.approx(0.2, abs=0.03)  # binomial sd ~0.009


def test_shuffle_depends_on_content_and_seed_not_input_order() -> None:
    table = pair_table(50)
    forward = assemble_pair_tables([table], seed=3, validation_fraction=0.1)
    reversed_input = assemble_pair_tables([table.reverse()], seed=3, validation_fraction=0.1)
    other_seed = assemble_pair_tables([table], seed=4, validation_fraction=0.1)
    assert forward.equals(reversed_input)
    assert forward["pair_id"].to_list() != other_seed["pair_id"].to_list()
    assert forward["pair_id"].to_list() != table.sort("pair_id")["pair_id"].to_list()


def test_adding_prompts_never_moves_an_old_prompt_to_the_other_split() -> None:
    old = split_of(pl.Series([f"p{i}" for i in range(500)]), seed=0, validation_fraction=0.1)
    new = split_of(pl.Series([f"p{i}" for i in range(1000)]), seed=0, validation_fraction=0.1)
    assert new[:500].to_list() == old.to_list()


def test_stage_writes_train_and_validation_and_loses_nothing(tmp_path: Path) -> None:
    ratings, negatives = tmp_path / "r.parquet", tmp_path / "n.parquet"
    pair_table(100).write_parquet(ratings)
    pair_table(100, per_prompt=1, kind="negative_text").write_parquet(negatives)
    result = assemble_pairs([ratings, negatives], seed=0, validation_fraction=0.25, root=tmp_path / "art")
    train, validation = result.read(), result.read("validation")
    assert train.height + validation.height == 400 == result.rows_in
    assert set(train["split"]) == {"train"} and set(validation["split"]) == {"validation"}
    assert result.stats["by_kind"] == {"rating": 300, "negative_text": 100}
    assert not set(train["prompt_id"]) & set(validation["prompt_id"])


def test_unpaired_rows_keep_their_labels(tmp_path: Path) -> None:
    rows = pl.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(40)],
            "prompt": [""] * 40,
            "image_uri": [f"/i/{k}.png" for k in range(40)],
            "label": [k % 2 for k in range(40)],
            "safety_label": ["Safe" if k % 2 else "Unsafe" for k in range(40)],
            "category": ["Hate"] * 40,
            "source": ["Lexica"] * 40,
            "split": ["train"] * 40,
            "source_file": ["f"] * 40,
            "source_row": list(range(40)),
        },
        schema=SAFETY_SCHEMA,
    )
    path = tmp_path / "rows.parquet"
    rows.write_parquet(path)
    result = assemble_unpaired(path, seed=0, validation_fraction=0.2, root=tmp_path / "art")
    combined = pl.concat([result.read(), result.read("validation")])
    assert sorted(zip(combined["item_id"], combined["label"], strict=True)) == sorted(
        zip(rows["item_id"], rows["label"], strict=True)
    )


def test_fraction_out_of_range_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="validation_fraction"):
        assemble_pairs([tmp_path / "x.parquet"], validation_fraction=1.0)
