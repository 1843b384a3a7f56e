"""Token classification (NER) from every token's output.

B = batch, T = sequence length, C = tags.
"""

import keras
from keras import ops

from keras_bert_lite.models.bert_backbone import BertBackbone
from keras_bert_lite.models.task_model import TaskModel


@keras.saving.register_keras_serializable(package="keras_bert_lite")
class BertTokenClassifier(TaskModel):
    """Backbone -> sequence output -> dropout -> dense. Outputs `logits` (B, T, C) and
    `probabilities`. Train with per-token `labels` and `label_weights` (1 on the first
    piece of each word, 0 elsewhere), so word pieces and padding add nothing.

    Args:
        backbone: a `BertBackbone`.
        num_classes: tags.
        dropout: dropout before the output layer.
    """

    config_keys = ("num_classes", "dropout")

    def __init__(self, backbone: BertBackbone, num_classes: int, dropout=0.1, **kwargs):
        # === Layers ===
        self.backbone = backbone
        self.output_dropout = keras.layers.Dropout(dropout, name="output_dropout")
        self.output_dense = keras.layers.Dense(
            num_classes,
            name="logits",
            dtype=backbone.dtype_policy,
            kernel_initializer=keras.initializers.TruncatedNormal(
                stddev=backbone.initializer_range
            ),
        )

        # === Functional Model ===
        inputs = dict(backbone.input)
        sequence = backbone(inputs)["sequence_output"]  # (B, T, D)
        logits = ops.cast(self.output_dense(self.output_dropout(sequence)), "float32")
        super().__init__(
            inputs=inputs,
            outputs={"logits": logits, "probabilities": ops.softmax(logits, axis=-1)},
            **kwargs,
        )

        # === Config ===
        self.num_classes = num_classes
        self.dropout = dropout
        self._init_trackers()
