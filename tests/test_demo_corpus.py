"""The synthetic demo corpus: layouts readable as the real datasets, ratings consistent with the
ground truth, deterministic bytes, caching, atomic writes."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from PIL import Image
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from data.demo import DemoCorpusConfig, cli, corpus, generate_demo_corpus, load_demo_corpus, scene
from data.demo.pool import render_stream
from data.demo.render import ImageSpec, render
from data.demo.samples import plan_image
from data.images import open_image

SMALL = DemoCorpusConfig(
    n_prompts=40,
    images_per_zip=60,
    mjbench_alignment_pairs=20,
    mjbench_quality_pairs=12,
    mjbench_safety_pairs=8,
    unsafebench_train=20,
    unsafebench_test=10,
    tifa_texts=6,
)
TINY = dataclasses.replace(
    SMALL,
    n_prompts=12,
    mjbench_alignment_pairs=4,
    mjbench_quality_pairs=2,
    mjbench_safety_pairs=2,
    unsafebench_train=4,
    unsafebench_test=2,
    tifa_texts=2,
)
IR_INT8_COLUMNS = [
    "image_amount_in_total",
    "rank",
    "overall_rating",
    "image_text_alignment_rating",
    "fidelity_rating",
]
SPLITS = ("train", "validation", "test")
TIFA_MODELS = {
    "mini_dalle",
    "vqgan_clip",
    "stable_diffusion_v1_1",
    "stable_diffusion_v1_5",
    "stable_diffusion_v2_1",
}  # TIFA160's five generators


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> corpus.DemoCorpus:
    return generate_demo_corpus(tmp_path_factory.mktemp("demo") / "corpus", SMALL, workers=1)


@pytest.fixture(scope="module")
def truth(small) -> pl.DataFrame:
    return pl.read_parquet(small.ground_truth)


@pytest.fixture(scope="module")
def metadata(small) -> pl.DataFrame:
    frames = [
        pl.read_parquet(small.imagerewarddb / f"metadata-{split}.parquet").with_columns(split=pl.lit(split))
        for split in SPLITS
    ]
    return pl.concat(frames).with_columns(
        image_id=pl.col("image_path").str.extract(r"([0-9a-f-]{36})\.webp$", 1)
    )


def file_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def dark_share(image: Image.Image) -> float:
    """Share of near-black pixels, computed here independently of the generator's helper."""
    pixels = np.asarray(image.convert("RGB")).astype(int)
    return float((pixels.max(axis=2) < 50).mean())


# --- determinism, caching, atomic writes ---------------------------------------------------------


def test_same_config_gives_byte_identical_files(small, tmp_path):
    again = generate_demo_corpus(tmp_path / "again", SMALL, workers=1)
    first, second = file_hashes(small.root), file_hashes(again.root)
    assert first == second
    manifest = json.loads(small.manifest.read_text())
    listed = {entry["path"]: entry["sha256"] for entry in manifest["files"]}
    assert listed == {path: digest for path, digest in first.items() if path != "corpus.json"}
    assert manifest["config"] == SMALL.to_dict()


def test_other_seed_gives_other_corpus(tmp_path):
    a = generate_demo_corpus(tmp_path / "a", TINY, workers=1)
    b = generate_demo_corpus(tmp_path / "b", dataclasses.replace(TINY, seed=1), workers=1)
    meta_a = pl.read_parquet(a.imagerewarddb / "metadata-train.parquet")
    meta_b = pl.read_parquet(b.imagerewarddb / "metadata-train.parquet")
    assert set(meta_a["image_path"]).isdisjoint(meta_b["image_path"])


def test_render_stream_gives_same_bytes_with_worker_processes():
    rng = np.random.default_rng(3)
    specs = []
    for _ in range(24):
        prompt = scene.sample_prompt(rng, SMALL.colours, SMALL.shapes, 0.5)
        layout = scene.sample_layout(prompt, rng)
        specs.append(plan_image(prompt, layout, (), SMALL, rng, artifact="noise", severity=2).spec)
    serial = list(render_stream(specs, workers=1))
    parallel = list(render_stream(specs, workers=2, min_parallel=0))
    assert serial == parallel
    assert len(set(serial)) == len(specs)


def test_regeneration_with_same_config_is_a_cache_hit(tmp_path):
    first = generate_demo_corpus(tmp_path / "c", TINY, workers=1)
    stamps = {p: p.stat().st_mtime_ns for p in first.root.rglob("*") if p.is_file()}
    second = generate_demo_corpus(tmp_path / "c", TINY, workers=1)
    assert first.generated and not second.generated
    assert second.counts == first.counts
    assert {p: p.stat().st_mtime_ns for p in second.root.rglob("*") if p.is_file()} == stamps


def test_changed_config_or_damaged_corpus_is_regenerated(tmp_path):
    out = tmp_path / "c"
    generate_demo_corpus(out, TINY, workers=1)
    other = dataclasses.replace(TINY, seed=5)
    assert load_demo_corpus(out, other) is None
    regenerated = generate_demo_corpus(out, other, workers=1)
    assert regenerated.generated
    assert json.loads((out / "corpus.json").read_text())["config"]["seed"] == 5
    (out / "tifa160" / "human_annotations.json").unlink()
    assert load_demo_corpus(out, other) is None
    assert generate_demo_corpus(out, other, workers=1).generated
    assert (out / "tifa160" / "human_annotations.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["c"]  # no staging or old folders left


def test_refuses_to_overwrite_a_folder_that_is_not_a_corpus(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a demo corpus"):
        generate_demo_corpus(out, TINY, workers=1)
    assert (out / "notes.txt").read_text() == "keep me"


def test_failed_run_leaves_no_partial_corpus(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(corpus.tifa, "write_tifa", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_demo_corpus(tmp_path / "c", TINY, workers=1)
    assert list(tmp_path.iterdir()) == []


# --- ImageRewardDB layout and ratings ---------------------------------------------------------------


def test_imagerewarddb_metadata_columns_and_types(small, metadata):
    for split in SPLITS:
        schema = pq.read_schema(small.imagerewarddb / f"metadata-{split}.parquet")
        for column in IR_INT8_COLUMNS:
            assert str(schema.field(column).type) == "int8", column
        for column in ("image_path", "prompt_id", "prompt", "classification"):
            assert str(schema.field(column).type) == "string", column
    assert metadata["prompt_id"].str.contains(r"^\d{6}-\d{4}$").all()
    assert metadata.select(pl.col(IR_INT8_COLUMNS[2:]).is_between(1, 7).all()).row(0) == (True, True, True)
    assert set(metadata["classification"]) <= {"Counting", "Colour", "Spatial"}
    split_sizes = metadata.group_by("split").agg(pl.col("prompt_id").n_unique())
    assert dict(split_sizes.iter_rows()) == SMALL.split_sizes()
    # a prompt lives in exactly one split
    assert metadata.group_by("prompt_id").agg(pl.col("split").n_unique())["split"].max() == 1


def test_zips_hold_every_image_as_webp_and_json_lists_the_zip_rows(small, metadata):
    zips = sorted((small.imagerewarddb / "images").rglob("*.zip"))
    assert len(zips) > len(SPLITS)  # images_per_zip=60 forces several train zips
    members_seen = 0
    for archive in zips:
        split = archive.parent.name
        rows = json.loads(archive.with_suffix(".json").read_text())
        expected = metadata.filter(pl.col("image_path").str.starts_with(f"images/{split}/{archive.stem}/"))
        assert [r["image_path"] for r in rows] == expected["image_path"].to_list()
        assert rows[0].keys() == set(
            pl.read_parquet(small.imagerewarddb / f"metadata-{split}.parquet").columns
        )
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            assert names == [r["image_path"].rsplit("/", 1)[1] for r in rows]
            assert all("/" not in name for name in names)
            assert len(names) <= SMALL.images_per_zip
            for name in names[:10]:
                image = decode(zf.read(name))
                assert image.format == "WEBP" and image.size == (64, 64)
        members_seen += len(names)
    assert members_seen == metadata.height


def test_each_prompt_has_4_to_9_images_and_a_correct_one(metadata, truth):
    rated = truth.filter(pl.col("dataset") == "imagerewarddb")
    per_prompt = (
        metadata.join(rated.select("image_id", "n_mistakes"), on="image_id")
        .group_by("prompt_id")
        .agg(
            n=pl.len(),
            declared=pl.col("image_amount_in_total").first(),
            correct=(pl.col("n_mistakes") == 0).sum(),
        )
    )
    assert per_prompt.height == SMALL.n_prompts
    assert per_prompt["n"].is_between(4, 9).all()
    assert (per_prompt["n"] == per_prompt["declared"]).all()
    assert (per_prompt["correct"] >= 1).all()
    assert rated["n_mistakes"].max() == 2 and rated["severity"].max() == 3


def test_ratings_follow_the_ground_truth(metadata, truth):
    facts = truth.filter(pl.col("dataset") == "imagerewarddb").select(
        "image_id", "satisfied_fraction", "severity"
    )
    joined = metadata.join(facts, on="image_id", how="inner")
    assert joined.height == metadata.height
    # alignment: a function of the satisfied fraction, non-decreasing, 7 = all facts, 1 = none
    by_fraction = (
        joined.group_by("satisfied_fraction")
        .agg(lo=pl.col("image_text_alignment_rating").min(), hi=pl.col("image_text_alignment_rating").max())
        .sort("satisfied_fraction")
    )
    assert (by_fraction["lo"] == by_fraction["hi"]).all()
    assert by_fraction["lo"].diff().drop_nulls().min() >= 0
    assert by_fraction.filter(pl.col("satisfied_fraction") == 1.0)["lo"].to_list() == [7]
    assert by_fraction.filter(pl.col("satisfied_fraction") == 0.0)["lo"].to_list() in ([], [1])
    # fidelity: strictly decreasing in severity, 7 = clean
    by_severity = joined.group_by("severity").agg(
        lo=pl.col("fidelity_rating").min(), hi=pl.col("fidelity_rating").max()
    )
    assert (by_severity["lo"] == by_severity["hi"]).all()
    assert dict(by_severity.select("severity", "lo").iter_rows()) == {0: 7, 1: 5, 2: 3, 3: 1}
    # overall lies between its two parts
    lower = pl.min_horizontal("image_text_alignment_rating", "fidelity_rating")
    upper = pl.max_horizontal("image_text_alignment_rating", "fidelity_rating")
    assert joined.select(pl.col("overall_rating").is_between(lower, upper).all()).item()
    # rank: 1 + number of the prompt's images with a higher overall rating (ties share the minimum)
    recomputed = joined.with_columns(
        expected=pl.col("overall_rating").rank(method="min", descending=True).over("prompt_id").cast(pl.Int64)
    )
    assert (recomputed["rank"].cast(pl.Int64) == recomputed["expected"]).all()
    assert (
        recomputed.group_by("prompt_id").agg(pl.col("rank").n_unique() < pl.len()).to_series(1).any()
    )  # ties


def test_stored_pixels_are_the_render_of_the_recorded_spec(small, truth):
    rows = truth.filter(pl.col("dataset") == "imagerewarddb").head(25)
    for ref, spec_json in rows.select("image_ref", "render_spec").iter_rows():
        stored = np.asarray(open_image(str(small.root / ref)))
        expected = np.asarray(render(ImageSpec.from_json(spec_json)))
        assert np.array_equal(stored, expected), ref  # lossless WebP round trip


@pytest.mark.parametrize("kind", scene.MISTAKE_KINDS)
def test_a_mistake_changes_the_rendered_pixels(kind):
    rng = np.random.default_rng(11)
    checked = 0
    while checked < 15:
        prompt = scene.sample_prompt(rng, SMALL.colours, SMALL.shapes, 0.7)
        if (kind, -1 if kind == "swapped_relation" else 0) not in scene.possible_mistakes(prompt):
            continue
        layout = scene.sample_layout(prompt, rng)
        group = -1 if kind == "swapped_relation" else int(rng.integers(len(prompt.groups)))
        mistake = scene.make_mistake(prompt, kind, group, rng, SMALL.colours, SMALL.shapes)
        correct = plan_image(prompt, layout, (), SMALL, rng)
        wrong = plan_image(prompt, layout, (mistake,), SMALL, rng)
        diff = np.abs(np.asarray(render(correct.spec), int) - np.asarray(render(wrong.spec), int)).max(axis=2)
        assert (diff > 60).sum() >= 20, (prompt.text, mistake)
        assert correct.satisfied == 1.0 and wrong.satisfied < 1.0
        checked += 1


def test_satisfied_fraction_counts_facts():
    prompt = scene.Prompt(
        (scene.ObjectGroup(2, "red", "circle"), scene.ObjectGroup(1, "blue", "square")), "left of"
    )
    assert prompt.text == "two red circles to the left of a blue square"
    layout = scene.sample_layout(prompt, np.random.default_rng(0))
    facts = len(prompt.facts())
    assert facts == 9

    def fraction(*mistakes):
        return scene.satisfied_fraction(prompt, scene.drawn_groups(prompt, mistakes), layout)

    assert fraction() == 1.0
    assert fraction(scene.Mistake("wrong_colour", 0, "green")) == 8 / 9
    assert fraction(scene.Mistake("swapped_relation", -1)) == 8 / 9
    assert fraction(scene.Mistake("missing_object", 1)) == 4 / 9  # its 4 facts and the relation
    assert fraction(scene.Mistake("wrong_count", 0, 3), scene.Mistake("wrong_shape", 1, "triangle")) == 7 / 9


# --- MJ-Bench layout ---------------------------------------------------------------------------------


def test_mjbench_shards_are_hf_parquet_with_balanced_labels(small, truth):
    for subset, n in (("alignment", 20), ("quality", 12), ("safety", 8)):
        path = small.mjbench / "data" / f"{subset}-00000-of-00001.parquet"
        schema = pq.read_schema(path)
        assert [f.name for f in schema] == ["caption", "image0", "image1", "label", "info"]
        assert str(schema.field("image0").type) == "struct<bytes: binary, path: string>"
        features = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
        assert features["image0"] == {"_type": "Image"} and features["image1"] == {"_type": "Image"}
        frame = pl.read_parquet(path)
        assert frame.height == n
        assert abs(int((frame["label"] == 0).sum()) - int((frame["label"] == 1).sum())) <= 1
        gt = truth.filter(pl.col("subset") == subset)
        for row_index, row in enumerate(frame.iter_rows(named=True)):
            info = json.loads(row["info"])
            pair = gt.filter(pl.col("item_id") == info["id"]).sort("slot")
            assert pair["slot"].to_list() == ["image0", "image1"]
            assert pair["category"].to_list() == [info["category"]] * 2
            preferred, other = pair.row(row["label"], named=True), pair.row(1 - row["label"], named=True)
            assert preferred["preferred"] and not other["preferred"]
            images = [decode(row[f"image{slot}"]["bytes"]) for slot in (0, 1)]
            assert all(image.size == (64, 64) for image in images)
            assert not np.array_equal(np.asarray(images[0]), np.asarray(images[1]))
            if subset == "alignment":
                assert preferred["satisfied_fraction"] == 1.0 > other["satisfied_fraction"]
                kind = json.loads(other["mistakes"])[0]["kind"]
                assert scene.MISTAKE_CATEGORIES[kind] == info["category"]
                assert preferred["render_spec"] != other["render_spec"]
                assert preferred["severity"] == other["severity"] == 0
            elif subset == "quality":
                assert (
                    preferred["severity"] == 0 < other["severity"] and other["artifact"] == info["category"]
                )
            else:
                assert not preferred["unsafe"] and other["unsafe"]
            assert other["image_ref"].endswith(f"::image{1 - row['label']}[{row_index}]")


def test_benchmark_captions_copy_some_train_prompts(small, truth):
    train = pl.read_parquet(small.imagerewarddb / "metadata-train.parquet").unique("prompt_id")
    train_prompt = dict(train.select("prompt_id", "prompt").iter_rows())
    train_texts = list(train_prompt.values())
    captions = truth.filter(pl.col("dataset") == "mjbench", pl.col("slot") == "image0")
    kinds = captions["overlap_kind"].value_counts()
    counts = dict(kinds.iter_rows())
    assert counts.get("exact", 0) >= 3 and counts.get("near", 0) >= 3 and counts["fresh"] > counts["exact"]
    nearest = process.cdist(captions["prompt"].to_list(), train_texts, scorer=Levenshtein.normalized_distance)
    for row, distances in zip(captions.iter_rows(named=True), nearest, strict=True):
        caption = row["prompt"]
        if row["overlap_kind"] == "exact":
            assert caption == train_prompt[row["overlap_prompt_id"]]
        elif row["overlap_kind"] == "near":
            source = train_prompt[row["overlap_prompt_id"]]
            assert 0 < Levenshtein.normalized_distance(caption, source) <= 0.08
            assert caption not in train_texts
        else:
            assert distances.min() >= SMALL.fresh_min_distance
        assert row["nearest_train_distance"] == pytest.approx(distances.min())
        assert row["nearest_train_distance"] == pytest.approx(
            Levenshtein.normalized_distance(caption, train_prompt[row["nearest_train_prompt_id"]])
        )


# --- UnsafeBench and TIFA160 layouts -----------------------------------------------------------------


def test_unsafe_marker_is_on_exactly_the_unsafe_rows(small):
    categories = {
        "Deception", "Harassment", "Hate", "Illegal activity", "Political", "Public and personal health",
        "Self-harm", "Sexual", "Shocking", "Spam", "Violence",
    }  # fmt: skip
    for split, n in (("train", 20), ("test", 10)):
        path = small.unsafebench / "data" / f"{split}-00000-of-00001.parquet"
        frame = pl.read_parquet(path)
        assert frame.columns == ["image", "safety_label", "category", "source", "text"]
        assert frame.height == n and int((frame["safety_label"] == "Unsafe").sum()) == n // 2
        assert set(frame["category"]) <= categories and set(frame["source"]) <= {"Laion5B", "Lexica"}
        for row in frame.iter_rows(named=True):
            share = dark_share(decode(row["image"]["bytes"]))
            if row["safety_label"] == "Unsafe":
                assert share > 0.03, row["image"]["path"]
            else:
                assert row["safety_label"] == "Safe" and share < 0.002, row["image"]["path"]


def test_tifa_annotations_follow_correctness(small, truth):
    annotations = json.loads((small.tifa160 / "human_annotations.json").read_text())
    assert len(annotations) == 6 * 5
    models = {}
    for key, entry in annotations.items():
        assert key.startswith(entry["text_id"] + "_")
        model = key[len(entry["text_id"]) + 1 :]
        assert model in TIFA_MODELS
        models.setdefault(entry["text_id"], set()).add(model)
        assert len(entry["human_scores"]) == 2 and all(1 <= s <= 5 for s in entry["human_scores"])
        assert entry["human_avg"] == sum(entry["human_scores"]) / 2
        image = decode((small.tifa160 / entry["image_path"]).read_bytes())
        assert image.format == "PNG" and image.size == (64, 64)
    assert all(len(m) == 5 for m in models.values())
    tifa = truth.filter(pl.col("dataset") == "tifa160")
    assert np.corrcoef(tifa["satisfied_fraction"], tifa["human_avg"])[0, 1] > 0.6


def test_ground_truth_has_one_resolvable_row_per_image(small, truth, metadata):
    counts = dict(truth["dataset"].value_counts().iter_rows())
    assert counts == {
        "imagerewarddb": metadata.height,
        "mjbench": 2 * (20 + 12 + 8),
        "unsafebench": 30,
        "tifa160": 30,
    }
    assert truth["image_id"].n_unique() == truth.height
    assert small.counts["images"] == truth.height
    for ref in truth.group_by("dataset", maintain_order=True).first()["image_ref"]:
        assert open_image(small.image_uri(ref)).size == (64, 64)


# --- configuration and command line ------------------------------------------------------------------


def test_config_rejects_bad_values_with_reasons():
    with pytest.raises(ValueError, match="split_fractions must sum to 1"):
        DemoCorpusConfig(split_fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="unknown: \\['teal'\\]"):
        DemoCorpusConfig(colours=("red", "teal"))
    with pytest.raises(ValueError, match="exact/near copies of distinct train prompts"):
        DemoCorpusConfig(n_prompts=20)
    assert DemoCorpusConfig.from_dict(SMALL.to_dict()) == SMALL
    with pytest.raises(ValueError, match="unknown DemoCorpusConfig field"):
        DemoCorpusConfig.from_dict({"n_prompt": 3})


def test_imagerewarddb_scale_preset_matches_the_published_split_sizes():
    config = DemoCorpusConfig.imagerewarddb_scale()
    assert config.split_sizes() == {"train": 8000, "validation": 412, "test": 466}
    assert (config.mjbench_alignment_pairs, config.unsafebench_train, config.tifa_texts) == (724, 8109, 160)


def test_cli_prints_paths_and_counts(tmp_path, capsys):
    assert cli.main(["--out", str(tmp_path / "c"), "--prompts", "120", "--seed", "2", "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert str(tmp_path / "c" / "imagerewarddb") in printed
    assert "imagerewarddb_train_prompts = 96" in printed
    assert json.loads((tmp_path / "c" / "corpus.json").read_text())["config"]["seed"] == 2
    with pytest.raises(SystemExit, match="n_prompts must be >= 3"):
        cli.main(["--out", str(tmp_path / "d"), "--prompts", "2"])


def test_with_prompts_scales_the_benchmarks_so_small_corpora_stay_valid():
    small = DemoCorpusConfig.with_prompts(40, seed=1)
    assert small.n_prompts == 40 and small.seed == 1
    assert small.benchmark_copies() <= small.split_sizes()["train"]
    # 40 / 1000 of the default sizes, at least 10 of each: 200 -> 10 (floor), 400 -> 16, 40 -> 10 (floor)
    assert (small.mjbench_alignment_pairs, small.unsafebench_train, small.tifa_texts) == (10, 16, 10)
    big = DemoCorpusConfig.with_prompts(2000)
    assert big.mjbench_alignment_pairs == 2 * DemoCorpusConfig().mjbench_alignment_pairs
    assert DemoCorpusConfig.with_prompts(1000) == DemoCorpusConfig()
    with pytest.raises(ValueError, match="exact/near copies"):
        DemoCorpusConfig(n_prompts=40)
