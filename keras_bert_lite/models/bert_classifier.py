"""Sentence and sentence-pair classification (or regression) from the pooled [CLS]
(or the mean of the token outputs).

B = batch, T = tokens, D = hidden, C = classes.
"""

import keras
from keras import ops

from keras_bert_lite.config import POOLING
from keras_bert_lite.models.bert_backbone import BertBackbone
from keras_bert_lite.models.task_model import OUTPUT_DTYPE, TaskModel


def masked_mean(sequence, padding_mask):
    """(B, T, D), (B, T) -> (B, D): the mean over the positions where the mask is
    set, computed in float32 (a bfloat16 sum over 512 tokens loses digits)."""
    mask = ops.expand_dims(ops.cast(padding_mask, "float32"), -1)  # (B, T, 1)
    total = ops.sum(ops.cast(sequence, "float32") * mask, axis=1)  # (B, D)
    mean = total / ops.maximum(ops.sum(mask, axis=1), 1.0)
    return ops.cast(mean, sequence.dtype)


@keras.saving.register_keras_serializable(package="keras_bert_lite")
class BertClassifier(TaskModel):
    """Backbone -> pooled [CLS] (or mean over tokens) -> dropout -> dense. Outputs
    `logits` (B, C) and `probabilities` (softmax; sigmoid when `multi_label`; the
    value itself for regression).

    Args:
        backbone: a `BertBackbone`.
        num_classes: classes (1 with `regression=True`).
        multi_label: independent sigmoid per class, binary cross-entropy.
        regression: one output, mean squared error.
        dropout: dropout before the output layer.
        pooling: "cls", BERT's pooled [CLS] output (dense + tanh, trained by
            next-sentence prediction where the backbone was); or "mean", the
            average of the sequence output over real tokens (padding excluded;
            [CLS] and [SEP] included), which does not read the pooler.
    """

    config_keys = ("num_classes", "multi_label", "regression", "dropout", "pooling")

    def __init__(
        self,
        backbone: BertBackbone,
        num_classes: int,
        multi_label=False,
        regression=False,
        dropout=0.1,
        pooling="cls",
        **kwargs,
    ):
        if pooling not in POOLING:
            raise ValueError(f"pooling {pooling!r}: choose one of {', '.join(POOLING)}")
        # === Layers ===
        self.backbone = backbone
        self.output_dropout = keras.layers.Dropout(dropout, name="output_dropout")
        self.output_dense = keras.layers.Dense(
            1 if regression else num_classes,
            name="logits",
            dtype=OUTPUT_DTYPE,
            kernel_initializer=keras.initializers.TruncatedNormal(
                stddev=backbone.initializer_range
            ),
        )

        # === Functional Model ===
        inputs = dict(backbone.input)
        features = backbone(inputs)
        if pooling == "cls":
            pooled = features["pooled_output"]  # (B, D)
        else:
            pooled = masked_mean(features["sequence_output"], inputs["padding_mask"])
        logits = self.output_dense(self.output_dropout(pooled))  # float32
        if regression:
            probabilities = ops.squeeze(logits, -1)
        elif multi_label:
            probabilities = ops.sigmoid(logits)
        else:
            probabilities = ops.softmax(logits, axis=-1)
        super().__init__(
            inputs=inputs,
            outputs={"logits": logits, "probabilities": probabilities},
            **kwargs,
        )
        self.dtype_policy = backbone.dtype_policy  # compile() scales float16 losses

        # === Config ===
        self.num_classes = num_classes
        self.multi_label = multi_label
        self.regression = regression
        self.dropout = dropout
        self.pooling = pooling
        self.reads_pooler = pooling == "cls"
        self.loss_kind = "mse" if regression else "binary" if multi_label else "sparse"
        self._init_trackers()
