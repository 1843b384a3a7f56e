"""Sentence and sentence-pair classification (or regression) from the pooled [CLS].

B = batch, C = classes.
"""

import keras
from keras import ops

from keras_bert_lite.models.bert_backbone import BertBackbone
from keras_bert_lite.models.task_model import TaskModel


@keras.saving.register_keras_serializable(package="keras_bert_lite")
class BertClassifier(TaskModel):
    """Backbone -> pooled [CLS] -> dropout -> dense. Outputs `logits` (B, C) and
    `probabilities` (softmax; sigmoid when `multi_label`; the value itself for
    regression).

    Args:
        backbone: a `BertBackbone`.
        num_classes: classes (1 with `regression=True`).
        multi_label: independent sigmoid per class, binary cross-entropy.
        regression: one output, mean squared error.
        dropout: dropout before the output layer.
    """

    config_keys = ("num_classes", "multi_label", "regression", "dropout")

    def __init__(
        self,
        backbone: BertBackbone,
        num_classes: int,
        multi_label=False,
        regression=False,
        dropout=0.1,
        **kwargs,
    ):
        # === Layers ===
        self.backbone = backbone
        self.output_dropout = keras.layers.Dropout(dropout, name="output_dropout")
        self.output_dense = keras.layers.Dense(
            1 if regression else num_classes,
            name="logits",
            dtype=backbone.dtype_policy,
            kernel_initializer=keras.initializers.TruncatedNormal(
                stddev=backbone.initializer_range
            ),
        )

        # === Functional Model ===
        inputs = dict(backbone.input)
        pooled = backbone(inputs)["pooled_output"]  # (B, D)
        logits = ops.cast(self.output_dense(self.output_dropout(pooled)), "float32")
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

        # === Config ===
        self.num_classes = num_classes
        self.multi_label = multi_label
        self.regression = regression
        self.dropout = dropout
        self.loss_kind = "mse" if regression else "binary" if multi_label else "sparse"
        self._init_trackers()
