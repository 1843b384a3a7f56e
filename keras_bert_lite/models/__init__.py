"""Trainable models: the functional backbone and the pretraining model."""

from keras_bert_lite.models.bert_backbone import BertBackbone
from keras_bert_lite.models.bert_pretrainer import BertPretrainer

__all__ = ["BertBackbone", "BertPretrainer"]
