"""BERT pretraining: masked-LM head (tied to the token embeddings) and NSP head.

B = batch, P = max_predictions, V = vocabulary.
"""

import re
import warnings

import keras
from keras import ops

from keras_bert_lite.layers import MaskedLMHead
from keras_bert_lite.models.bert_backbone import BertBackbone
from keras_bert_lite.models.losses import weighted_mean

# Without NSP nothing reads the pooler, so it has no gradient and Keras's optimizer
# warns at every fit. The warning is dropped when the pooler's kernel and bias are the
# only variables it names: any other missing gradient still warns.
POOLER_ONLY = re.compile(
    r"Gradients do not exist for variables \['[^',]*pooler/kernel', "
    r"'[^',]*pooler/bias'\] "
)


@keras.saving.register_keras_serializable(package="keras_bert_lite")
class BertPretrainer(keras.Model):
    """Backbone + MLM head at `mask_positions` (+ NSP head on the pooled [CLS] output).

    Inputs: the backbone's three plus `mask_positions` (B, P). Outputs `mlm_logits`
    (B, P, V) and, with `nsp=True`, `nsp_logits` (B, 2). Train it with targets
    `{"mask_ids", "nsp_labels"}` and sample weights `{"mask_weights"}`, the layout that
    `kbl.data.pretraining_dataset` yields. Loss = masked-LM cross-entropy averaged over
    the weighted prediction slots + NSP cross-entropy.

    Metrics: `mlm_accuracy` over all chosen tokens, and `mlm_hidden_accuracy` over
    the chosen tokens the model could not see (shown as `[MASK]` or a random token).
    A tenth of the chosen tokens are shown unchanged, so copying alone scores about
    0.1 of `mlm_accuracy`; `mlm_hidden_accuracy` counts only what is inferred, from
    context or from word frequency (predicting the most frequent token scores its
    share of the text), and is the one that shows a model learning from context.

    Args:
        backbone: a `BertBackbone`.
        nsp: add the next-sentence head and loss.
    """

    def __init__(self, backbone: BertBackbone, nsp: bool = True, **kwargs):
        # === Layers ===
        self.backbone = backbone
        self.mlm_head = MaskedLMHead(
            backbone.token_embedding,
            backbone.layer_norm_epsilon,
            backbone.initializer_range,
            dtype=backbone.dtype_policy,
            name="mlm_head",
        )
        self.nsp_head = (
            keras.layers.Dense(
                2,
                dtype=backbone.dtype_policy,
                name="nsp_head",
                kernel_initializer=keras.initializers.TruncatedNormal(
                    stddev=backbone.initializer_range
                ),
            )
            if nsp
            else None
        )

        # === Functional Model ===
        inputs = dict(backbone.input)
        inputs["mask_positions"] = keras.Input(
            (None,), dtype="int32", name="mask_positions"
        )
        features = backbone({k: inputs[k] for k in backbone.input})
        outputs = {
            "mlm_logits": self.mlm_head(
                features["sequence_output"], inputs["mask_positions"]
            )
        }
        if nsp:
            outputs["nsp_logits"] = ops.cast(
                self.nsp_head(features["pooled_output"]), "float32"
            )
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.dtype_policy = backbone.dtype_policy  # compile() scales float16 losses

        # === Config ===
        self.nsp = nsp

        self.mlm_loss_tracker = keras.metrics.Mean(name="mlm_loss")
        self.mlm_accuracy = keras.metrics.SparseCategoricalAccuracy(name="mlm_accuracy")
        self.mlm_hidden_accuracy = keras.metrics.SparseCategoricalAccuracy(
            name="mlm_hidden_accuracy"
        )
        if nsp:  # Keras reports every metric an attribute holds: none without NSP
            self.nsp_loss_tracker = keras.metrics.Mean(name="nsp_loss")
            self.nsp_accuracy = keras.metrics.SparseCategoricalAccuracy(
                name="nsp_accuracy"
            )

    @property
    def metrics(self):
        ours = [self.mlm_loss_tracker, self.mlm_accuracy, self.mlm_hidden_accuracy]
        if self.nsp:
            ours += [self.nsp_loss_tracker, self.nsp_accuracy]
        return super().metrics + ours

    def train_step(self, *args, **kwargs):
        if self.nsp:
            return super().train_step(*args, **kwargs)
        # The pooler stays in the optimizer (untouched: no gradient, no weight decay),
        # so checkpoints keep one layout with and without NSP; fine-tuning trains it.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=POOLER_ONLY.pattern)
            return super().train_step(*args, **kwargs)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        per_slot = keras.losses.sparse_categorical_crossentropy(
            y["mask_ids"], y_pred["mlm_logits"], from_logits=True
        )  # (B, P)
        # Averaged over the slots in use (mask_weights), never over B*P: unused slots
        # must not dilute it. Exact under a strategy too (see `weighted_mean`).
        loss, mlm_loss, slots = weighted_mean(per_slot, sample_weight["mask_weights"])
        # Weighted by slots, so the reported loss is per predicted token over a whole
        # evaluation (and an empty batch counts for nothing).
        self.mlm_loss_tracker.update_state(mlm_loss, sample_weight=slots)
        if self.nsp:
            per_example = keras.losses.sparse_categorical_crossentropy(
                y["nsp_labels"], y_pred["nsp_logits"], from_logits=True
            )  # (B,)
            self.nsp_loss_tracker.update_state(per_example)
            loss = loss + weighted_mean(per_example, ops.ones_like(per_example))[0]
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        weights = sample_weight["mask_weights"]  # (B, P)
        self.mlm_accuracy.update_state(
            y["mask_ids"], y_pred["mlm_logits"], sample_weight=weights
        )
        # What the input shows at each chosen position: the original token (kept,
        # or a random draw that happened to be it) or not.
        shown = ops.take_along_axis(
            ops.cast(x["token_ids"], "int32"),
            ops.cast(x["mask_positions"], "int32"),
            axis=1,
        )  # (B, P)
        hidden = ops.not_equal(shown, ops.cast(y["mask_ids"], "int32"))
        self.mlm_hidden_accuracy.update_state(
            y["mask_ids"],
            y_pred["mlm_logits"],
            sample_weight=ops.where(hidden, weights, ops.zeros_like(weights)),
        )
        if self.nsp:
            self.nsp_accuracy.update_state(y["nsp_labels"], y_pred["nsp_logits"])
        return self.get_metrics_result()

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "nsp": self.nsp,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
