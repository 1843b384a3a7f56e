"""How a model is trained: strategy, optimizer and schedule, callbacks, pretrain()."""

from keras_bert_lite.training.pretrain import PretrainResult, pretrain

__all__ = ["PretrainResult", "pretrain"]
