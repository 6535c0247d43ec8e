"""Shared test fixtures: the real-data location (one setting) and offline defaults."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Tests never touch the user's (or `make demo`'s) Prefect home, server or artifacts: a fresh PREFECT_HOME
# is set before anything imports Prefect, and the API URL is dropped so flows run under the test harness.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="llava-reward-tests-prefect-")
atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)  # each run left one behind
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("LLAVA_REWARD_ARTIFACTS", None)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The one setting that locates ../shared/data/real: the LLAVA_REWARD_REAL_DATA environment variable,
#: defaulting to the folder beside the clone (where CI has it).
REAL_DATA_ENV = "LLAVA_REWARD_REAL_DATA"


def real_data_root() -> Path:
    return Path(os.environ.get(REAL_DATA_ENV, REPO_ROOT.parent / "shared" / "data" / "real")).resolve()


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real public data folder; tests using it skip with the reason when it is absent."""
    root = real_data_root()
    if not root.is_dir():
        pytest.skip(
            f"real data not found at {root}: set {REAL_DATA_ENV} to the folder holding "
            "imagereward/, mjbench/, llava_reward/ (a fresh clone does not have it)"
        )
    return root


#: The one setting that locates the paper-oracle fixture (numbers computed by the LLaVA-Reward authors' own
#: code): LLAVA_REWARD_PAPER_ORACLE, defaulting to ../shared/fixtures/paper-oracle beside the clone.
PAPER_ORACLE_ENV = "LLAVA_REWARD_PAPER_ORACLE"


def paper_oracle_root() -> Path:
    default = REPO_ROOT.parent / "shared" / "fixtures" / "paper-oracle"
    return Path(os.environ.get(PAPER_ORACLE_ENV, default)).resolve()


@pytest.fixture(scope="session")
def paper_oracle() -> Path:
    """The paper-oracle folder; tests using it skip with the reason when it is absent."""
    root = paper_oracle_root()
    if not (root / "expected.json").is_file():
        pytest.skip(
            f"paper oracle not found at {root}: set {PAPER_ORACLE_ENV} to the folder holding expected.json, "
            "base/ and checkpoints/ (a fresh clone does not have it)"
        )
    return root


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect API (SQLite) for the whole session: flows run as real flow runs."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


#: Size of the demo corpus shared by the flow and stage tests (small: generated once per session).
TEST_CORPUS_PROMPTS = 120


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo corpus in the published layouts, generated once per test session."""
    from data.demo import DemoCorpusConfig, generate_demo_corpus

    root = tmp_path_factory.mktemp("demo-corpus") / "corpus"
    generate_demo_corpus(root, DemoCorpusConfig.with_prompts(TEST_CORPUS_PROMPTS, seed=0))
    return root
