"""Cases 5 and 6: an empty stage output fails the run with where the rows went, and flow parameters
are checked before any stage runs (no bare library assertion reaches the user).

Case 5's input: an ImageRewardDB folder whose every rating is out of range, so ingest rejects every
row; case 6's: ``negatives_search_k=0`` / ``-1``, as typed on the command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import flows.common
from flows.build_alignment_data import build_alignment_data
from flows.build_fidelity_data import build_fidelity_data
from tasks.negatives import nearest_other
from tests.factories import imagerewarddb_root

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def all_rejected(tmp_path: Path) -> dict[str, str]:
    """Flow parameters over a dataset whose 3 rows all have a fidelity rating of 9 (range 1-7)."""
    rows = [{"image_id": f"i{n}", "fidelity_rating": 9} for n in range(3)]
    root = imagerewarddb_root(tmp_path / "irdb", rows)
    benchmark = tmp_path / "mj" / "alignment" / "benchmark" / "actions"
    benchmark.mkdir(parents=True)
    (benchmark / "actions_test.json").write_text(
        '[{"id": 0, "caption": "a cat", "image0": "a.jpg", "image1": "b.jpg", "label": 0}]'
    )
    return {
        "imagereward_path": str(root),
        "benchmark_path": str(tmp_path / "mj"),
        "artifacts_dir": str(tmp_path / "art"),
    }


@pytest.mark.hostile_case(5)
@pytest.mark.parametrize("flow", [build_alignment_data, build_fidelity_data])
def test_every_row_rejected_fails_naming_the_rejects(flow, all_rejected: dict[str, str]) -> None:
    with pytest.raises(RuntimeError) as caught:
        flow(**all_rejected)
    message = str(caught.value)
    assert message.startswith("no rows left after ingest_ratings: 3 rejected, see ")
    rejects = message.removeprefix("no rows left after ingest_ratings: 3 rejected, see ")
    assert rejects.endswith(".rejects.parquet") and Path(rejects).is_file()


@pytest.mark.hostile_case(6)
@pytest.mark.parametrize("search_k", [0, -1])
def test_search_k_is_checked_before_any_stage(search_k: int, all_rejected: dict[str, str]) -> None:
    with pytest.raises(Exception) as caught:  # noqa: B017 (its type and message are checked below)
        build_alignment_data(**all_rejected, negatives_search_k=search_k)
    assert str(caught.value) == (
        f"build-alignment-data: parameter negatives_search_k must be a positive integer, got {search_k}"
    )
    assert isinstance(caught.value, flows.common.ParameterError)
    assert not Path(all_rejected["artifacts_dir"]).exists()  # no stage ran


@pytest.mark.hostile_case(6)
def test_faiss_never_asserts_at_the_user() -> None:
    vectors = np.eye(3, dtype=np.float32)
    groups = np.array([0, 1, 2])
    with pytest.raises(ValueError, match="search_k must be a positive integer, got 0"):
        nearest_other(vectors, vectors, groups, groups, search_k=0)
    chosen, similarity = nearest_other(np.zeros((0, 3), np.float32), vectors, groups, groups[:0], search_k=4)
    assert chosen.tolist() == [-1, -1, -1] and np.isnan(similarity).all()
