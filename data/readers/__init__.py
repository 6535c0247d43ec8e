"""Readers for the published dataset formats, each returning a normalized table and its rejects.

- :func:`read_imagereward` -> RATINGS_SCHEMA (ImageRewardDB layout, HF shards, ``test.json``)
- :func:`read_mjbench` -> BENCHMARK_PAIRS_SCHEMA (HF Parquet, pre-release JSON tree)
- :func:`read_unsafebench` -> SAFETY_SCHEMA (HF Parquet, LLaVA-Reward JSON)
- :func:`read_tifa` -> TIFA_SCHEMA (TIFA160 ``human_annotations.json`` + an image folder)
- :func:`read_smid` -> SAFETY_SCHEMA (the LLaVA-Reward SMID list, or ``SMID_norms.csv`` + a label rule)
- :func:`read_unsafe_diffusion` -> SAFETY_SCHEMA (the ``labels.xlsx``-derived CSV, its 40% test split)

Every reader returns a :class:`ReadResult`; rows that cannot be parsed are in ``rejects``
(REJECTS_SCHEMA, stage ``read``) and dataset-level problems raise :class:`ReaderError`.
"""

from data.readers.common import ReaderError, ReadResult
from data.readers.imagereward import read_imagereward
from data.readers.mjbench import benchmark_captions, read_mjbench
from data.readers.smid import SmidLabelRule, read_smid, read_smid_json, read_smid_norms
from data.readers.tifa import read_tifa
from data.readers.unsafe_diffusion import HoldoutSplit, read_unsafe_diffusion
from data.readers.unsafebench import read_unsafebench

__all__ = [
    "HoldoutSplit",
    "ReadResult",
    "ReaderError",
    "SmidLabelRule",
    "benchmark_captions",
    "read_imagereward",
    "read_mjbench",
    "read_smid",
    "read_smid_json",
    "read_smid_norms",
    "read_tifa",
    "read_unsafe_diffusion",
    "read_unsafebench",
]
