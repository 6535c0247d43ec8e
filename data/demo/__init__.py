"""Synthetic demo corpus with known ground truth, written in the real datasets' published layouts.

Nothing can be downloaded here, so the pipeline (ingest, dedup, pairs, training, evaluation) runs on
compositional shape scenes ("two red circles to the left of a blue square") rendered at 64 px with
controlled alignment mistakes and artifacts::

    <out>/imagerewarddb/   ImageRewardDB: metadata-{split}.parquet, images/{split}/{split}_{i}.zip + .json
    <out>/mjbench/data/    MJ-Bench: {alignment,quality,safety}-00000-of-00001.parquet (HF Image columns)
    <out>/unsafebench/data UnsafeBench: {train,test}-00000-of-00001.parquet
    <out>/tifa160/         TIFA160: human_annotations.json + images/*.png
    <out>/ground_truth.parquet   what is true about every image
    <out>/corpus.json            manifest (config, generator version, counts, files), written last

Usage: ``generate_demo_corpus(Path("demo"), DemoCorpusConfig(n_prompts=200))`` or
``python -m data.demo --out demo``.
"""

from .config import GENERATOR_VERSION, DemoCorpusConfig
from .corpus import CorpusLayout, DemoCorpus, generate_demo_corpus, load_demo_corpus

__all__ = [
    "GENERATOR_VERSION",
    "CorpusLayout",
    "DemoCorpus",
    "DemoCorpusConfig",
    "generate_demo_corpus",
    "load_demo_corpus",
]
