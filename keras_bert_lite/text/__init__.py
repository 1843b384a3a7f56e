"""Vocabulary learning and the in-graph WordPiece tokenizer (tensorflow-text)."""

from keras_bert_lite.text.tokenizer import SPECIAL_TOKENS, BertTokenizer
from keras_bert_lite.text.vocabulary import learn_vocabulary, read_vocabulary

__all__ = ["SPECIAL_TOKENS", "BertTokenizer", "learn_vocabulary", "read_vocabulary"]
