"""The stage cache: content keys, reuse, invalidation, atomic writes, accounting, kill-safety."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from data.schemas import REJECTS_SCHEMA
from tasks import cache
from tasks.cache import MAIN, REJECTS, AccountingError, Stage, StageOutput, run_stage

THIS_MODULE = sys.modules[__name__]
STAGE = Stage("toy", 1, (THIS_MODULE,))


def doubling(source: Path, calls: list[int]):
    def compute() -> StageOutput:
        calls.append(1)
        frame = pl.read_parquet(source).with_columns((pl.col("x") * 2).alias("y"))
        return StageOutput(tables={MAIN: frame}, rows_in=frame.height, rows_kept=frame.height)

    return compute


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "input.parquet"
    pl.DataFrame({"x": [1, 2, 3]}).write_parquet(path)
    return path


def run(source: Path, root: Path, calls: list[int], *, factor: int = 2, stage: Stage = STAGE):
    return run_stage(
        stage, params={"factor": factor}, inputs={"table": source}, compute=doubling(source, calls), root=root
    )


def test_first_run_computes_second_run_reuses(tmp_path: Path, source: Path) -> None:
    calls: list[int] = []
    first = run(source, tmp_path / "art", calls)
    second = run(source, tmp_path / "art", calls)
    assert calls == [1]
    assert not first.cached and second.cached
    assert first.key == second.key and first.paths == second.paths
    assert first.path == tmp_path / "art" / "toy" / f"{first.key}.parquet"
    assert pl.read_parquet(first.path)["y"].to_list() == [2, 4, 6]
    assert pq.read_table(first.path).num_rows == 3  # readable by pyarrow too
    manifest = json.loads(Path(first.manifest_path).read_text())
    assert manifest["rows_in"] == 3 and manifest["rows_rejected"] == 0
    assert manifest["outputs"][MAIN]["rows"] == 3
    assert manifest["params"] == {"factor": 2}
    assert Path(manifest["outputs"][REJECTS]["path"]).is_file()


def test_parameter_change_gives_a_new_key_and_keeps_the_old_output(tmp_path: Path, source: Path) -> None:
    calls: list[int] = []
    first = run(source, tmp_path, calls, factor=2)
    second = run(source, tmp_path, calls, factor=3)
    assert first.key != second.key and len(calls) == 2
    assert first.path.is_file() and second.path.is_file()


def test_input_content_change_invalidates_but_touching_does_not(tmp_path: Path, source: Path) -> None:
    calls: list[int] = []
    first = run(source, tmp_path / "art", calls)
    os.utime(source, None)  # same bytes, new mtime: re-hashed, same fingerprint
    assert run(source, tmp_path / "art", calls).key == first.key
    pl.DataFrame({"x": [1, 2, 4]}).write_parquet(source)
    changed = run(source, tmp_path / "art", calls)
    assert changed.key != first.key and pl.read_parquet(changed.path)["y"].to_list() == [2, 4, 8]


def test_code_change_invalidates(tmp_path: Path, source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module_dir = tmp_path / "mods"
    module_dir.mkdir()
    (module_dir / "toy_stage_code.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(module_dir))
    module = importlib.import_module("toy_stage_code")
    stage = Stage("toy", 1, (module,))
    calls: list[int] = []
    first = run(source, tmp_path / "art", calls, stage=stage)
    (module_dir / "toy_stage_code.py").write_text("VALUE = 2  # edited\n")
    importlib.reload(module)
    second = run(source, tmp_path / "art", calls, stage=stage)
    assert first.key != second.key and len(calls) == 2
    bumped = run(source, tmp_path / "art", calls, stage=Stage("toy", 2, (module,)))
    assert bumped.key != second.key


def test_downstream_fingerprint_of_a_stage_output_is_its_key(tmp_path: Path, source: Path) -> None:
    calls: list[int] = []
    upstream = run(source, tmp_path / "art", calls)
    fingerprints = cache.input_fingerprints(
        {"t": upstream.path}, cache.FingerprintMemo(tmp_path / "memo.sqlite")
    )
    assert fingerprints["t"] == f"stage:toy:{upstream.key}:main"


def test_output_without_manifest_is_not_taken_as_finished(tmp_path: Path, source: Path) -> None:
    calls: list[int] = []
    first = run(source, tmp_path / "art", calls)
    Path(first.manifest_path).unlink()
    first.path.write_bytes(b"half a parquet file")  # what a crash could leave without atomic writes
    again = run(source, tmp_path / "art", calls)
    assert not again.cached and len(calls) == 2
    assert pl.read_parquet(again.path)["y"].to_list() == [2, 4, 6]


def test_manifest_listing_a_missing_table_is_recomputed(tmp_path: Path, source: Path) -> None:
    calls: list[int] = []
    first = run(source, tmp_path / "art", calls)
    first.path.unlink()
    assert not run(source, tmp_path / "art", calls).cached


def test_lost_rows_raise_an_accounting_error(tmp_path: Path) -> None:
    def compute() -> StageOutput:
        return StageOutput(tables={MAIN: pl.DataFrame({"x": [1]})}, rows_in=3, rows_kept=1)

    with pytest.raises(AccountingError, match=r"toy: 3 rows in but 1 kept \+ 0 rejected"):
        run_stage(STAGE, params={}, inputs={}, compute=compute, root=tmp_path)
    assert not list((tmp_path / "toy").glob("*.json"))


def test_rejects_are_counted(tmp_path: Path) -> None:
    rejects = pl.DataFrame(
        {
            "stage": ["toy"],
            "source_file": ["f"],
            "source_row": [2],
            "record_id": ["c"],
            "field": ["x"],
            "reason": ["bad"],
        },
        schema=REJECTS_SCHEMA,
    )

    def compute() -> StageOutput:
        return StageOutput(
            tables={MAIN: pl.DataFrame({"x": [1, 2]}), REJECTS: rejects}, rows_in=3, rows_kept=2
        )

    result = run_stage(STAGE, params={}, inputs={}, compute=compute, root=tmp_path)
    assert (result.rows_in, result.rows_kept, result.rows_rejected) == (3, 2, 1)
    assert result.read(REJECTS)["reason"].to_list() == ["bad"]


def test_missing_input_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        run_stage(
            STAGE, params={}, inputs={"t": tmp_path / "nope.parquet"}, compute=lambda: None, root=tmp_path
        )


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import polars as pl
    from tasks import cache
    sys.path.insert(0, {repo!r})
    from tests import test_stage_cache as t

    real_write = pl.DataFrame.write_parquet

    def slow_write(self, path, **kwargs):
        real_write(self, path, **kwargs)
        Path(path).write_bytes(Path(path).read_bytes()[:20])  # half-written
        print("WRITING", flush=True)
        time.sleep(600)

    pl.DataFrame.write_parquet = slow_write
    t.run(Path({source!r}), Path({root!r}), [])
    """
)


def test_a_run_killed_while_writing_leaves_no_finished_output(tmp_path: Path, source: Path) -> None:
    root = tmp_path / "art"
    script = KILLED_WRITER.format(repo=str(Path(__file__).parents[1]), source=str(source), root=str(root))
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "WRITING"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    stage_dir = root / "toy"
    leftovers = list(stage_dir.glob("*.tmp-*"))
    assert leftovers, "the killed run was writing a temporary file"
    assert not list(stage_dir.glob("*.json")) and not list(stage_dir.glob("*[0-9a-f].parquet"))

    calls: list[int] = []
    resumed = run(source, root, calls)  # the lock file left behind does not block: the OS released it
    assert not resumed.cached and calls == [1]
    assert all(path.name.startswith(resumed.key) for path in leftovers), "same key as the killed run"
    assert pl.read_parquet(resumed.path)["y"].to_list() == [2, 4, 6]
    assert not list(stage_dir.glob("*.tmp-*")), "stale temporaries are cleaned up"
    clean_root = tmp_path / "clean"
    assert run(source, clean_root, []).key == resumed.key


def test_a_package_fingerprint_covers_every_module_in_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "mods" / "toy_readers"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "parquet.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    module = importlib.import_module("toy_readers")
    before = cache.code_fingerprint([module])
    (package / "parquet.py").write_text("X = 2\n")
    assert cache.code_fingerprint([module]) != before
