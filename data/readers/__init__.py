"""Readers for the published dataset formats, each returning a normalized table and its rejects.

- :func:`read_imagereward` -> RATINGS_SCHEMA (ImageRewardDB layout, HF shards, ``test.json``)
- :func:`read_mjbench` -> BENCHMARK_PAIRS_SCHEMA (HF Parquet, pre-release JSON tree)
- :func:`read_unsafebench` -> SAFETY_SCHEMA (HF Parquet, LLaVA-Reward JSON)

Every reader returns a :class:`ReadResult`; rows that cannot be parsed are in ``rejects``
(REJECTS_SCHEMA, stage ``read``) and dataset-level problems raise :class:`ReaderError`.
"""

from data.readers.common import ReaderError, ReadResult
from data.readers.imagereward import read_imagereward
from data.readers.mjbench import benchmark_captions, read_mjbench
from data.readers.unsafebench import read_unsafebench

__all__ = [
    "ReadResult",
    "ReaderError",
    "benchmark_captions",
    "read_imagereward",
    "read_mjbench",
    "read_unsafebench",
]
