"""Token classification (NER) from every token's output.

B = batch, T = sequence length, C = tags.
"""

import keras
from keras import ops

from keras_bert_lite.layers.crf import CRF
from keras_bert_lite.models.bert_backbone import BertBackbone
from keras_bert_lite.models.losses import weighted_mean
from keras_bert_lite.models.task_model import OUTPUT_DTYPE, TaskModel


@keras.saving.register_keras_serializable(package="keras_bert_lite")
class BertTokenClassifier(TaskModel):
    """Backbone -> sequence output -> dropout -> dense. Outputs `logits` (B, T, C) and
    `probabilities`. Train with per-token `labels` and `label_weights` (1 on the first
    piece of each word, 0 elsewhere), so word pieces and padding add nothing.

    Args:
        backbone: a `BertBackbone`.
        num_classes: tags.
        dropout: dropout before the output layer.
        crf: learn tag-to-tag transitions with a linear-chain CRF over the words
            (loss: the whole sequence's negative log-likelihood); decoding then adds
            the learned transitions to the scheme's constraints.
    """

    config_keys = ("num_classes", "dropout", "crf")
    reads_pooler = False

    def __init__(
        self,
        backbone: BertBackbone,
        num_classes: int,
        dropout=0.1,
        crf: bool = False,
        **kwargs,
    ):
        # === Layers ===
        self.backbone = backbone
        self.output_dropout = keras.layers.Dropout(dropout, name="output_dropout")
        self.output_dense = keras.layers.Dense(
            num_classes,
            name="logits",
            dtype=OUTPUT_DTYPE,
            kernel_initializer=keras.initializers.TruncatedNormal(
                stddev=backbone.initializer_range
            ),
        )

        self.crf_layer = CRF(num_classes, name="crf") if crf else None

        # === Functional Model ===
        inputs = dict(backbone.input)
        sequence = backbone(inputs)["sequence_output"]  # (B, T, D)
        logits = self.output_dense(self.output_dropout(sequence))  # float32
        if self.crf_layer is not None:
            logits = self.crf_layer(logits)  # the same scores, read as emissions
        super().__init__(
            inputs=inputs,
            outputs={"logits": logits, "probabilities": ops.softmax(logits, axis=-1)},
            **kwargs,
        )
        self.dtype_policy = backbone.dtype_policy  # compile() scales float16 losses

        # === Config ===
        self.num_classes = num_classes
        self.dropout = dropout
        self.crf = crf
        self._init_trackers()

    def transition_scores(self):
        """(start, transitions, end) float arrays of the CRF, or None without one."""
        if self.crf_layer is None:
            return None
        layer = self.crf_layer
        return tuple(
            ops.convert_to_numpy(w)
            for w in (layer.start_transitions, layer.transitions, layer.end_transitions)
        )

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        if self.crf_layer is None:
            return super().compute_loss(x, y, y_pred, sample_weight, training)
        logits, labels = y_pred["logits"], y["labels"]
        if sample_weight is not None and "label_weights" in sample_weight:
            weights = ops.cast(sample_weight["label_weights"], "float32")
        else:
            weights = ops.ones_like(ops.cast(labels, "float32"))
        per_row = self.crf_layer.negative_log_likelihood(logits, labels, weights)
        # Averaged over the rows with a labelled word, across replicas too.
        share, loss, rows = weighted_mean(per_row, ops.sum(weights, axis=1) > 0)
        hit = ops.cast(ops.argmax(logits, -1) == ops.cast(labels, "int32"), "float32")
        total = ops.maximum(ops.sum(weights), 1.0)
        self.task_loss.update_state(loss, sample_weight=rows)
        self.task_accuracy.update_state(
            ops.sum(hit * weights) / total, sample_weight=ops.sum(weights)
        )
        return share
