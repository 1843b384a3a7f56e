"""Trainable models: the functional backbone, the pretraining model and task models."""

from keras_bert_lite.models.bert_backbone import BertBackbone
from keras_bert_lite.models.bert_classifier import BertClassifier
from keras_bert_lite.models.bert_pretrainer import BertPretrainer
from keras_bert_lite.models.bert_question_answerer import BertQuestionAnswerer
from keras_bert_lite.models.bert_token_classifier import BertTokenClassifier

__all__ = [
    "BertBackbone",
    "BertClassifier",
    "BertPretrainer",
    "BertQuestionAnswerer",
    "BertTokenClassifier",
]
