"""Reusable Keras blocks: embeddings, the encoder block and the pretraining heads."""

from keras_bert_lite.layers.bert_embeddings import BertEmbeddings
from keras_bert_lite.layers.crf import CRF
from keras_bert_lite.layers.masked_lm_head import MaskedLMHead
from keras_bert_lite.layers.transformer_encoder import TransformerEncoder

__all__ = ["BertEmbeddings", "CRF", "MaskedLMHead", "TransformerEncoder"]
