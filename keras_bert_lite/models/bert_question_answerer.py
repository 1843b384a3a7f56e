"""Extractive question answering: start and end logits over the tokens.

B = batch, T = sequence length.
"""

import keras
from keras import ops

from keras_bert_lite.models.bert_backbone import BertBackbone
from keras_bert_lite.models.task_model import OUTPUT_DTYPE, TaskModel


@keras.saving.register_keras_serializable(package="keras_bert_lite")
class BertQuestionAnswerer(TaskModel):
    """Backbone -> sequence output -> dense(2). Outputs `start_logits` and
    `end_logits` (B, T); padding gets a large negative logit so it is never chosen.
    Train with targets `start_positions` and `end_positions` (B,), both 0 ([CLS])
    when the window holds no answer. Loss: the mean of the two cross-entropies.

    Args:
        backbone: a `BertBackbone`.
    """

    reads_pooler = False

    def __init__(self, backbone: BertBackbone, **kwargs):
        # === Layers ===
        self.backbone = backbone
        self.span_dense = keras.layers.Dense(
            2,
            name="span",
            dtype=OUTPUT_DTYPE,
            kernel_initializer=keras.initializers.TruncatedNormal(
                stddev=backbone.initializer_range
            ),
        )

        # === Functional Model ===
        inputs = dict(backbone.input)
        sequence = backbone(inputs)["sequence_output"]  # (B, T, D)
        logits = self.span_dense(sequence)  # (B, T, 2), float32
        padding = (1.0 - ops.cast(inputs["padding_mask"], "float32")) * -1e9
        start, end = logits[..., 0] + padding, logits[..., 1] + padding
        super().__init__(
            inputs=inputs, outputs={"start_logits": start, "end_logits": end}, **kwargs
        )
        self.dtype_policy = backbone.dtype_policy  # compile() scales float16 losses
        self._init_trackers()

    def _per_item(self, y, y_pred):
        losses, hits = [], []
        for side in ("start", "end"):
            logits = y_pred[f"{side}_logits"]
            labels = y[f"{side}_positions"]
            losses.append(
                keras.losses.sparse_categorical_crossentropy(
                    labels, logits, from_logits=True
                )
            )
            hits.append(
                ops.cast(
                    ops.argmax(logits, axis=-1) == ops.cast(labels, "int32"), "float32"
                )
            )
        return (losses[0] + losses[1]) / 2.0, hits[0] * hits[1]
