"""Shared benchmark tools: timing with peak memory, medians of repeated runs, machine facts, output.

A :class:`Measurement` records the wall time, the CPU time (user + system, every thread of the process)
and the peak resident memory of one call. Peak memory is sampled from ``/proc/self/statm`` by a
background thread every few milliseconds (it sees polars', Arrow's and FAISS' native allocations,
which ``tracemalloc`` does not); the process' lifetime maximum (``ru_maxrss``) is reported beside it.
On a shared machine the wall time is noisy, the CPU time much less so: both are kept, with the load
average at the start of each run.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from reward.atomic import write_text_atomically

if TYPE_CHECKING:
    import argparse

    from data.demo import DemoCorpus

T = TypeVar("T")
MIB = 1024 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss() -> int:
    """Resident memory of this process in bytes (0 where ``/proc`` is absent)."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except OSError:
        return 0


def lifetime_peak_rss() -> int:
    """The process' peak resident memory so far, in bytes (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load_average() -> float:
    """The 1-minute load average (how busy the shared machine was)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


class PeakRssSampler:
    """Context manager: the highest resident memory seen while it is open (sampled every
    ``interval`` seconds, plus once at entry and exit)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.start_bytes = 0
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_bytes = max(self.peak_bytes, current_rss())

    def __enter__(self) -> PeakRssSampler:
        self.start_bytes = self.peak_bytes = current_rss()
        self._thread = threading.Thread(target=self._sample, name="peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_bytes = max(self.peak_bytes, current_rss())


@dataclass(frozen=True)
class Measurement:
    """One timed call."""

    seconds: float
    cpu_seconds: float
    peak_rss_mib: float
    rss_growth_mib: float  # peak during the call minus resident memory at its start
    load_1min: float


def measure(function: Callable[[], T]) -> tuple[T, Measurement]:
    """Run ``function`` once; return its result and how long and how much memory it took."""
    load = load_average()
    with PeakRssSampler() as sampler:
        cpu_before = cpu_seconds()
        started = time.perf_counter()
        result = function()
        seconds = time.perf_counter() - started
        cpu = cpu_seconds() - cpu_before
    return result, Measurement(
        seconds=seconds,
        cpu_seconds=cpu,
        peak_rss_mib=sampler.peak_bytes / MIB,
        rss_growth_mib=(sampler.peak_bytes - sampler.start_bytes) / MIB,
        load_1min=load,
    )


@dataclass(frozen=True)
class Summary:
    """Medians over repeated runs (and every run, for the record)."""

    runs: tuple[Measurement, ...]

    @property
    def seconds(self) -> float:
        return statistics.median(run.seconds for run in self.runs)

    @property
    def cpu_seconds(self) -> float:
        return statistics.median(run.cpu_seconds for run in self.runs)

    @property
    def peak_rss_mib(self) -> float:
        return max(run.peak_rss_mib for run in self.runs)

    @property
    def rss_growth_mib(self) -> float:
        return max(run.rss_growth_mib for run in self.runs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "median_seconds": round(self.seconds, 4),
            "median_cpu_seconds": round(self.cpu_seconds, 4),
            "peak_rss_mib": round(self.peak_rss_mib, 1),
            "rss_growth_mib": round(self.rss_growth_mib, 1),
            "runs": [asdict(run) for run in self.runs],
        }


def summarize(runs: Iterable[Measurement]) -> Summary:
    runs = tuple(runs)
    if not runs:
        raise ValueError("summarize: no runs")
    return Summary(runs)


def ratio(slow: float, fast: float) -> float:
    """``slow / fast`` (inf when ``fast`` is 0)."""
    return slow / fast if fast > 0 else float("inf")


@dataclass(frozen=True)
class MachineFacts:
    """Where and when a benchmark ran."""

    date: str
    host: str
    cpu_model: str
    cores: int
    memory_gib: float
    load_average: tuple[float, float, float]
    python: str
    platform: str
    versions: dict[str, str] = field(default_factory=dict)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return float("nan")


def library_versions(names: Sequence[str]) -> dict[str, str]:
    """Installed versions of ``names`` (distribution names), 'absent' for the missing ones."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "absent"
    return found


DATA_LIBRARIES = (
    "polars",
    "pyarrow",
    "rapidfuzz",
    "faiss-cpu",
    "numpy",
    "pillow",
    "torch",
    "open_clip_torch",
)


def machine_facts(libraries: Sequence[str] = DATA_LIBRARIES) -> MachineFacts:
    """Cores, memory, load, date and library versions of this machine, now."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return MachineFacts(
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        host=platform.node(),
        cpu_model=_cpu_model(),
        cores=os.cpu_count() or 0,
        memory_gib=_memory_gib(),
        load_average=tuple(round(value, 2) for value in load),  # type: ignore[arg-type]
        python=platform.python_version(),
        platform=platform.platform(),
        versions=library_versions(libraries),
    )


def write_json(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` as indented JSON (dataclasses and paths converted), creating the folder;
    atomically, so a run killed mid-write leaves the previous report whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(json.dumps(payload, indent=2, default=_jsonable) + "\n", path)
    return path


def _jsonable(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A GitHub-flavoured markdown table of ``rows`` restricted to ``columns`` (floats to 3 places)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(column, "")) for column in columns) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Command lines

#: Where the scripts put corpora and artifact roots unless ``--work`` says otherwise.
DEFAULT_WORK = Path(tempfile.gettempdir()) / "llava-reward-bench"
#: Prompts of the corpus a ``--smoke`` run generates.
SMOKE_PROMPTS = 30


def add_work_and_out(parser: argparse.ArgumentParser) -> None:
    """The ``--work`` (scratch folder) and ``--out`` (JSON report) options every script shares."""
    parser.add_argument(
        "--work", type=Path, default=DEFAULT_WORK, help="scratch folder: corpora, artifact roots"
    )
    parser.add_argument("--out", type=Path, help="write the report as JSON here")


def command_line(module: str, argv: Sequence[str] | None) -> str:
    """The command that produced a report (recorded in it)."""
    return f"python -m {module} " + " ".join(argv if argv is not None else sys.argv[1:])


def smoke_corpus(work: Path) -> DemoCorpus:
    """The small demo corpus of ``--smoke`` runs, generated once under ``work`` and then reused."""
    from data.demo import DemoCorpusConfig, generate_demo_corpus

    config = DemoCorpusConfig.with_prompts(SMOKE_PROMPTS, seed=0)
    return generate_demo_corpus(work / "corpus", config, workers=1)
