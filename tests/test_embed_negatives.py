"""embed → negatives: open_clip embeddings and FAISS hard negatives that are really hard."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from rapidfuzz.distance import Levenshtein

from tasks.embed import ClipSpec, embed
from tasks.ingest import ingest_ratings
from tasks.negatives import mine_negatives, nearest_other, negatives
from tasks.ratings import ratings
from tests.factories import imagerewarddb_root

#: Measured with the random-weight demo-tiny-clip (seed 0): the mined negative prompt is lexically
#: closer (normalized Levenshtein) to the prompt than a random other prompt for 0.82 of the pairs on the
#: 120-prompt test corpus, 0.87 with 240 prompts and 0.95 on the default 1,000-prompt demo corpus
#: (a random choice would score about 0.5).
HARDNESS_FLOOR = 0.75


@pytest.fixture(scope="module")
def mined(demo_corpus: Path, tmp_path_factory: pytest.TempPathFactory):
    art = tmp_path_factory.mktemp("art")
    ingested = ingest_ratings(demo_corpus / "imagerewarddb", split="train", root=art)
    scored = ratings(ingested.path, perspective="alignment", root=art)
    embedded = embed(scored.path, clip=ClipSpec(), root=art)
    result = negatives(scored.path, embedded.path, embedded.paths["text"], root=art)
    return scored, embedded, result


def test_embeddings_are_unit_vectors_for_every_image_and_prompt(mined) -> None:
    scored, embedded, _ = mined
    images, texts = embedded.read(), embedded.read("text")
    assert images.height == scored.rows_kept and texts.height == scored.read()["prompt_id"].n_unique()
    norms = np.linalg.norm(images["embedding"].to_numpy(), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-4)
    assert embedded.stats["dimension"] == 64


def test_text_negatives_are_closer_than_a_random_other_prompt(mined) -> None:
    _, _, result = mined
    pairs = result.read().filter(pl.col("kind") == "negative_text")
    prompts = pairs["chosen_prompt"].unique().to_list()
    rng = random.Random(0)
    closer = 0
    for chosen, rejected in zip(pairs["chosen_prompt"], pairs["rejected_prompt"], strict=True):
        other = rng.choice([p for p in prompts if p != chosen])
        closer += Levenshtein.normalized_distance(chosen, rejected) < Levenshtein.normalized_distance(
            chosen, other
        )
    fraction = closer / pairs.height
    print(f"hard text negatives closer than a random prompt: {fraction:.3f} of {pairs.height}")
    assert fraction >= HARDNESS_FLOOR
    assert (pairs["chosen_prompt"] != pairs["rejected_prompt"]).all()
    assert (pairs["chosen_image_id"] == pairs["rejected_image_id"]).all()


def test_image_negatives_come_from_another_prompt(mined) -> None:
    scored, _, result = mined
    pairs = result.read().filter(pl.col("kind") == "negative_image")
    prompt_of = dict(scored.read().select("image_id", "prompt_id").iter_rows())
    assert pairs.height > 0
    assert all(prompt_of[r] != p for r, p in zip(pairs["rejected_image_id"], pairs["prompt_id"], strict=True))
    assert (pairs["chosen_prompt"] == pairs["rejected_prompt"]).all()
    assert result.rows_in == result.rows_kept + result.rows_rejected


def test_anchors_are_the_best_rated_images(mined) -> None:
    scored, _, result = mined
    table = scored.read()
    best = table.filter(pl.col("score") == pl.col("score").max().over("prompt_id"))
    anchors = result.read().filter(pl.col("kind") == "negative_text")
    assert set(anchors["chosen_image_id"]) == set(best["image_id"])


def test_nearest_other_skips_the_same_group() -> None:
    base = np.eye(4, dtype=np.float32)
    base[1] = [0.9, 0.1, 0, 0]
    base[2] = [0.8, 0.2, 0, 0]
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    groups = np.array([0, 0, 1, 2])
    chosen, similarity = nearest_other(base, base[:1], np.array([0]), groups, search_k=4)
    assert chosen.tolist() == [2]  # row 1 is nearer but in the query's own group
    assert similarity[0] == pytest.approx(float(base[0] @ base[2]), abs=1e-6)
    none, _ = nearest_other(base, base[:1], np.array([0]), groups, search_k=2)
    assert none.tolist() == [-1]


def test_a_lone_prompt_has_no_text_negative_and_says_so() -> None:
    scored = pl.DataFrame(
        {
            "image_id": ["a", "b"],
            "prompt_id": ["p", "p"],
            "prompt": ["x", "x"],
            "image_uri": ["/a", "/b"],
            "score": [2.0, 1.0],
            "source_file": ["f", "f"],
            "source_row": [0, 1],
        }
    )
    vectors = np.eye(2, dtype=np.float32)
    images = pl.DataFrame({"image_id": ["a", "b"], "prompt_id": ["p", "p"]}).with_columns(
        pl.Series("embedding", vectors, dtype=pl.Array(pl.Float32, 2))
    )
    texts = pl.DataFrame({"prompt_id": ["p"], "prompt": ["x"]}).with_columns(
        pl.Series("embedding", vectors[:1], dtype=pl.Array(pl.Float32, 2))
    )
    pairs, rejects, stats = mine_negatives(scored, images, texts)
    assert pairs.is_empty() and stats["anchors"] == 1
    assert sorted(rejects["field"]) == ["negative_image", "negative_text"]


def test_an_undecodable_image_is_rejected_by_embed(tmp_path: Path) -> None:
    rows = [{"image_id": "ok", "prompt_id": "p"}, {"image_id": "bad", "prompt_id": "p", "rank": 2}]
    root = imagerewarddb_root(
        tmp_path / "irdb", rows, image_bytes={"bad": b"RIFF\x10\x00\x00\x00WEBPVP8 truncated"}
    )
    ingested = ingest_ratings(root, image_check="none", root=tmp_path / "art")
    scored = ratings(ingested.path, perspective="ranking", root=tmp_path / "art")
    embedded = embed(scored.path, root=tmp_path / "art")
    assert embedded.rows_kept == 1 and embedded.read()["image_id"].to_list() == ["ok"]
    rejects = embedded.read("rejects")
    assert rejects["record_id"].to_list() == ["bad"] and "bad.webp" in rejects["reason"][0]


def test_a_local_checkpoint_replaces_the_random_weights(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from tasks.embed import load_clip

    reference = load_clip(ClipSpec(seed=0))
    checkpoint = tmp_path / "demo-tiny-clip.safetensors"
    weights = {name: tensor.contiguous() for name, tensor in reference.model.state_dict().items()}
    save_file(weights, checkpoint)
    loaded = load_clip(ClipSpec(pretrained=str(checkpoint), seed=7))
    other_seed = load_clip(ClipSpec(seed=7))
    prompts = ["two red circles", "a blue square above a green triangle"]
    assert np.allclose(loaded.encode_text(prompts), reference.encode_text(prompts), atol=1e-6)
    assert not np.allclose(other_seed.encode_text(prompts), reference.encode_text(prompts), atol=1e-3)


def test_auto_index_is_exact_for_small_tables_and_ivf_for_large(monkeypatch: pytest.MonkeyPatch) -> None:
    import faiss

    from tasks import negatives as negatives_module

    base = np.random.default_rng(0).normal(size=(400, 8)).astype(np.float32)
    assert isinstance(negatives_module.build_index(base, "auto"), faiss.IndexFlatIP)
    monkeypatch.setattr(negatives_module, "AUTO_IVF_MIN_ROWS", 100)
    assert isinstance(negatives_module.build_index(base, "auto"), faiss.IndexIVFFlat)


def test_the_demo_model_loads_without_the_random_weights_warning(caplog: pytest.LogCaptureFixture) -> None:
    """open_clip warns on the root logger that a model without pretrained weights is random; for
    ``pretrained=None`` that is what was asked, so the warning is dropped (and only then)."""
    import logging

    import open_clip

    from reward.clip import load_clip

    with caplog.at_level(logging.INFO):
        load_clip(ClipSpec(seed=987_654))  # a seed no other test uses: really loaded, not cached
    assert "random weights (seed 987654), as asked" in caplog.text
    assert "No pretrained weights loaded" not in caplog.text
    leftover = [kind for kind in map(type, logging.getLogger().filters) if kind.__module__ == "reward.clip"]
    assert not leftover  # the filter does not outlive the load
    with caplog.at_level(logging.WARNING):
        open_clip.create_model("demo-tiny-clip", pretrained=None)  # open_clip itself still warns
    assert "No pretrained weights loaded for model 'demo-tiny-clip'" in caplog.text


def test_embedding_reports_its_progress(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from PIL import Image

    from reward.clip import load_clip
    from tasks.embed import embed_images

    uris = []
    for index in range(5):
        path = tmp_path / f"{index}.png"
        Image.new("RGB", (64, 64), (index * 40, 0, 0)).save(path)
        uris.append(str(path))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    uris.append(str(tmp_path / "broken.png"))
    with caplog.at_level(logging.INFO, logger="tasks.embed"):
        vectors, failures = embed_images(load_clip(ClipSpec()), uris, batch_size=2)
    assert vectors.shape[0] == 5 and list(failures) == [5]
    assert caplog.messages[-1].startswith("embed images: 6 / 6 (100%), ")
