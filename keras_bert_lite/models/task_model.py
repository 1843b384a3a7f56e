"""What every fine-tuning model shares: a backbone, a head, and a loss over weighted
labels (so padding and the non-first pieces of a word never count)."""

import keras
from keras import ops

from keras_bert_lite.models.losses import weighted_mean

# The dtype of every task head's output layer, whatever the backbone's policy: under
# mixed precision its bfloat16 input is cast up and the logits (a regression head's
# value) computed in float32. In bfloat16 they would keep 8 significant bits (a value
# between 2 and 4 moves in steps of 1/64): an untrained regression head gave 200
# different texts one value, and its dev Pearson in training was 0.
OUTPUT_DTYPE = "float32"


class TaskModel(keras.Model):
    """Base for task models: subclasses build their functional graph and set
    `self.loss_kind`.

    Targets are `{"labels": ...}` and sample weights `{"label_weights": ...}`
    (optional), as `kbl.data.tasks` yields them. `loss_kind` is "sparse" (softmax
    cross-entropy on integer labels, per example or per token), "binary" (sigmoid,
    multi-hot labels) or "mse" (regression).
    """

    loss_kind = "sparse"
    logits_key = "logits"
    config_keys: tuple[str, ...] = ()  # constructor arguments besides the backbone

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            **{key: getattr(self, key) for key in self.config_keys},
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)

    # Tasks on the per-token output (tagging, QA) set this False. The pooler is then
    # not on the path to the outputs, and this model counts its weights as
    # non-trainable, so the optimizer does not warn at every fit that it has no
    # gradient for them. The backbone itself is left as it is: a classifier built
    # on the same backbone object still trains its pooler.
    reads_pooler = True

    def _split(self, trainable, non_trainable):
        """(trainable, non-trainable) as this model trains them: every weight in
        exactly one list, as Keras's trainers and optimizers expect."""
        if self.reads_pooler or not hasattr(self, "backbone"):
            return trainable, non_trainable
        ids = {id(v) for v in self.backbone.pooler.weights}
        unused = [v for v in trainable if id(v) in ids]
        return [v for v in trainable if id(v) not in ids], non_trainable + unused

    @property
    def trainable_weights(self):
        return self._split(super().trainable_weights, [])[0]

    @property
    def non_trainable_weights(self):
        return self._split(super().trainable_weights, super().non_trainable_weights)[1]

    @property
    def trainable_variables(self):
        return self._split(super().trainable_variables, [])[0]

    @property
    def non_trainable_variables(self):
        return self._split(
            super().trainable_variables, super().non_trainable_variables
        )[1]

    def _init_trackers(self):
        self.task_loss = keras.metrics.Mean(name="task_loss")
        self.task_accuracy = keras.metrics.Mean(name="accuracy")

    @property
    def metrics(self):
        # Keras has found the trackers already (attributes); listed once, in this
        # order, and a regression head has no accuracy to log (its dev scores are
        # MSE and correlations).
        ours = [self.task_loss]
        if self.loss_kind != "mse":
            ours.append(self.task_accuracy)
        known = {id(self.task_loss), id(self.task_accuracy)}
        return [m for m in super().metrics if id(m) not in known] + ours

    def _per_item(self, y, y_pred):
        logits = y_pred[self.logits_key]
        labels = y["labels"]
        if self.loss_kind == "sparse":
            loss = keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True
            )
            hit = ops.cast(
                ops.argmax(logits, axis=-1) == ops.cast(labels, "int32"), "float32"
            )
        elif self.loss_kind == "binary":
            labels = ops.cast(labels, "float32")
            loss = ops.mean(
                ops.binary_crossentropy(labels, logits, from_logits=True), -1
            )
            hit = ops.cast(ops.all((logits > 0) == (labels > 0.5), axis=-1), "float32")
        else:
            prediction = ops.squeeze(logits, -1)
            loss = ops.square(prediction - ops.cast(labels, "float32"))
            hit = ops.zeros_like(loss)
        return loss, hit

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        loss, hit = self._per_item(y, y_pred)
        if sample_weight is not None and "label_weights" in sample_weight:
            weights = ops.cast(sample_weight["label_weights"], "float32")
        else:
            weights = ops.ones_like(loss)
        # Exact under a strategy too (see `weighted_mean`).
        share, mean_loss, total = weighted_mean(loss, weights)
        self.task_loss.update_state(mean_loss, sample_weight=total)
        self.task_accuracy.update_state(
            ops.sum(hit * weights) / ops.maximum(total, 1.0), sample_weight=total
        )
        return share

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return self.get_metrics_result()
