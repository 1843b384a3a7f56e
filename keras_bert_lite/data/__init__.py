"""Corpus readers and the tf.data pretraining pipeline."""

from keras_bert_lite.data.corpus import CorpusStats, read_documents, split_sentences
from keras_bert_lite.data.pretraining import InstanceBuilder, pretraining_dataset

__all__ = [
    "CorpusStats",
    "InstanceBuilder",
    "pretraining_dataset",
    "read_documents",
    "split_sentences",
]
