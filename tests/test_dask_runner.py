"""The task-runner choice: build-alignment-data on a local Dask cluster of two worker processes builds
the very Parquet tables the default runner builds, sharded or not; choosing Dask without the extra
fails at once, naming the extra."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from prefect.exceptions import ParameterTypeError

from flows.build_alignment_data import build_alignment_data
from flows.build_fidelity_data import build_fidelity_data
from flows.runners import MissingExtraError, stage_runner

pytestmark = pytest.mark.usefixtures("prefect_harness")

needs_dask = pytest.mark.skipif(
    importlib.util.find_spec("prefect_dask") is None,
    reason="prefect-dask (the optional 'dask' extra: pip install -e '.[dask]') is not installed",
)
#: The stage functions each build runs, by shard count (a Dask task's key starts with its name).
STAGE_FUNCTIONS = {
    1: {
        "ingest_ratings",
        "ingest_benchmark",
        "dedup",
        "ratings",
        "pairs",
        "embed",
        "negatives",
        "assemble_pairs",
    },
    2: {
        "ingest_ratings",
        "ingest_benchmark",
        "dedup_shard",
        "merge_dedup_shards",
        "ratings",
        "pairs",
        "embed_shard",
        "merge_embed_shards",
        "negatives",
        "assemble_pairs",
    },
}


def demo_paths(corpus: Path) -> dict[str, str]:
    return {"imagereward_path": str(corpus / "imagerewarddb"), "benchmark_path": str(corpus / "mjbench")}


def stage_tables(root: Path) -> dict[str, Path]:
    """Every stage table under an artifact root, by its path relative to the root."""
    return {str(path.relative_to(root)): path for path in sorted(root.glob("*/*.parquet"))}


@pytest.fixture(scope="module")
def cluster() -> Iterator:
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as local:
        yield local


@pytest.fixture(scope="module")
def default_build(demo_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """build-alignment-data with the default runner and one shard: the reference."""
    root = tmp_path_factory.mktemp("default-runner")
    return root, build_alignment_data(**demo_paths(demo_corpus), artifacts_dir=str(root))


@needs_dask
@pytest.mark.parametrize("shards", [1, 2])
def test_dask_builds_the_default_runners_parquet(
    shards: int, cluster, default_build: tuple[Path, dict[str, str]], demo_corpus: Path, tmp_path: Path
) -> None:
    from distributed import Client, get_task_stream

    reference_root, reference = default_build
    with Client(cluster) as client, get_task_stream(client) as stream:
        outputs = build_alignment_data(
            **demo_paths(demo_corpus),
            artifacts_dir=str(tmp_path),
            shards=shards,
            task_runner="dask",
            dask_address=cluster.scheduler_address,
        )

    ran = {}
    for task in stream.data:
        ran.setdefault(task["key"].split("-")[0], set()).add(task["worker"])
    assert set(ran) == STAGE_FUNCTIONS[shards], "every stage ran on the cluster's workers"
    if shards == 2:
        assert len(ran["embed_shard"]) == 2 and len(ran["dedup_shard"]) == 2, "shards ran side by side"

    expected, built = stage_tables(reference_root), stage_tables(tmp_path)
    assert {name.split("/")[0] for name in expected} == STAGE_FUNCTIONS[1], "every stage's tables compared"
    shard_tables = {name for name in built.keys() - expected.keys() if name.split("/")[0].endswith("_shard")}
    assert built.keys() - expected.keys() == shard_tables and bool(shard_tables) == (shards > 1)
    assert expected.keys() <= built.keys(), "the same stages under the same keys"
    for name, path in expected.items():
        ours, theirs = pl.read_parquet(built[name]), pl.read_parquet(path)
        assert ours.schema == theirs.schema and ours.equals(theirs), f"{name} differs"
    for split in ("train", "validation"):
        assert Path(outputs[split]).relative_to(tmp_path) == Path(reference[split]).relative_to(
            reference_root
        )


def test_choosing_dask_without_the_extra_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "prefect_dask", None)  # what an environment without it imports
    message = r"needs prefect-dask, the optional 'dask' extra: pip install 'llava-reward-pipeline\[dask\]'"
    with pytest.raises(MissingExtraError, match=message):
        with stage_runner("dask"):
            pass
    with pytest.raises(MissingExtraError, match=message):
        build_fidelity_data(artifacts_dir=str(tmp_path), demo_prompts=24, task_runner="dask")
    assert not list(tmp_path.iterdir()), "it fails before building anything"


def test_unknown_runners_and_a_stray_address_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown task_runner 'ray'; choose one of \['thread', 'dask'\]"):
        with stage_runner("ray"):  # type: ignore[arg-type]
            pass
    with pytest.raises(ValueError, match="dask_address is only used with task_runner='dask'"):
        with stage_runner("thread", "tcp://127.0.0.1:8786"):
            pass
    with pytest.raises(ParameterTypeError, match="task_runner"):
        build_fidelity_data(artifacts_dir=str(tmp_path), task_runner="ray")
    with pytest.raises(ValueError, match="shards must be a positive integer, got 0"):
        build_alignment_data(artifacts_dir=str(tmp_path), shards=0)
