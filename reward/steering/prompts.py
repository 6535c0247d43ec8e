"""Prompt files for steering runs: GenEval's ``evaluation_metadata.jsonl``, DrawBench-style lists
(``.txt`` one prompt a line, or ``.csv`` with a ``Prompts`` / ``prompt`` column), or fresh demo
benchmark prompts. A malformed line is rejected with its line number and reason; the others are kept."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class PromptRow:
    """One prompt to generate for: a stable id, the text, a tag (GenEval task / DrawBench category)
    and where it came from."""

    prompt_id: str
    prompt: str
    tag: str
    source_file: str
    source_row: int


@dataclass(frozen=True)
class RejectedLine:
    """A line of a prompt file that was not used, and why (1-based line number)."""

    source_file: str
    line: int
    field: str
    reason: str


def read_prompt_file(path: str | Path) -> tuple[list[PromptRow], list[RejectedLine]]:
    """Prompts of a ``.jsonl`` (GenEval: ``{"prompt": ..., "tag": ...}`` per line), ``.csv`` or ``.txt``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _jsonl(path)
    if suffix in (".csv", ".tsv"):
        return _csv(path, "\t" if suffix == ".tsv" else ",")
    if suffix == ".txt":
        return _txt(path)
    raise ValueError(f"{path}: unknown prompt file type {suffix!r} (use .jsonl, .csv, .tsv or .txt)")


def _row(path: Path, line: int, prompt: str, tag: str) -> PromptRow:
    return PromptRow(f"{path.stem}-{line:05d}", prompt, tag, str(path), line)


def _jsonl(path: Path) -> tuple[list[PromptRow], list[RejectedLine]]:
    rows, rejects = [], []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            rejects.append(
                RejectedLine(str(path), number, "", f"not JSON: {error.msg} (column {error.colno})")
            )
            continue
        prompt = record.get("prompt") if isinstance(record, dict) else None
        if not isinstance(prompt, str) or not prompt.strip():
            rejects.append(RejectedLine(str(path), number, "prompt", "missing or empty 'prompt' string"))
            continue
        rows.append(_row(path, number, prompt.strip(), str(record.get("tag") or "")))
    return rows, rejects


def _csv(path: Path, delimiter: str) -> tuple[list[PromptRow], list[RejectedLine]]:
    rows, rejects = [], []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        fields = {name.lower(): name for name in reader.fieldnames or []}
        column = fields.get("prompts") or fields.get("prompt")
        if column is None:
            raise ValueError(f"{path}: no 'Prompts' or 'prompt' column (has {reader.fieldnames})")
        tag_column = fields.get("category") or fields.get("tag")
        for record in reader:
            number = reader.line_num
            prompt = (record.get(column) or "").strip()
            if not prompt:
                rejects.append(RejectedLine(str(path), number, column, "empty prompt"))
                continue
            rows.append(_row(path, number, prompt, (record.get(tag_column) or "") if tag_column else ""))
    return rows, rejects


def _txt(path: Path) -> tuple[list[PromptRow], list[RejectedLine]]:
    rows = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if text.strip() and not text.lstrip().startswith("#"):
            rows.append(_row(path, number, text.strip(), ""))
    return rows, []


def demo_benchmark_prompts(count: int, *, seed: int = 0, two_group_fraction: float = 0.0) -> list[PromptRow]:
    """``count`` distinct demo prompts in the benchmark wordings (never used in training), drawn from
    the demo palette; single-group scenes by default (what the 32 px demo generator learns)."""
    from data.demo.config import DemoCorpusConfig
    from data.demo.scene import BENCHMARK_TEMPLATES, sample_prompt

    config = DemoCorpusConfig()
    rng = np.random.default_rng(seed)
    seen: dict[str, PromptRow] = {}
    attempts = 0
    while len(seen) < count:
        attempts += 1
        if attempts > 100 * count + 1000:
            raise ValueError(
                f"only {len(seen)} distinct demo prompts exist for these settings, asked {count}"
            )
        prompt = sample_prompt(rng, config.colours, config.shapes, two_group_fraction, BENCHMARK_TEMPLATES)
        if prompt.text not in seen:
            tag = prompt.classification.lower()
            seen[prompt.text] = PromptRow(f"demo-{len(seen):05d}", prompt.text, tag, "demo", len(seen))
    return list(seen.values())
