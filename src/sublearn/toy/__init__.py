"""The embedded toy world: tiny Llama-style causal LMs built from scratch, offline.

``sublearn toy build`` pretrains a few base models (same corpus and tokenizer,
different init seeds) on a synthetic chat corpus of preference questions and number
continuations. They are saved as ordinary Hugging Face model folders, so the rest of
the toolkit (teacher fine-tuning, sampling, filtering, student training, evaluation)
runs on them exactly as on a real model. Toy-specific code lives only in this package.
"""

from sublearn.toy.corpus import CorpusConfig, Document, build_corpus
from sublearn.toy.pretrain import ModelConfig, PretrainConfig
from sublearn.toy.world import ToyWorldConfig, base_name, build_world, cached_bases, read_manifest

__all__ = [
    "CorpusConfig",
    "Document",
    "ModelConfig",
    "PretrainConfig",
    "ToyWorldConfig",
    "base_name",
    "build_corpus",
    "build_world",
    "cached_bases",
    "read_manifest",
]
