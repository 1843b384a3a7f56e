"""A linear-chain CRF over the labelled positions of a token-classification model.

Many Chinese NER systems put a CRF on top of BERT: tag-to-tag transition scores are
learned with the emissions, and the loss is the negative log-likelihood of the whole
gold tag sequence instead of a sum of per-token cross-entropies.

Only labelled positions take part (the first piece of each word: `label_weights` 1).
They are first moved to the front of each row, in order, so the chain runs over
words, not word pieces, exactly as decoding (Viterbi over per-word scores) sees them.

B = batch, T = sequence length, C = tags, N = labelled positions in a row.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_bert_lite")
class CRF(keras.layers.Layer):
    """Holds the transition scores; `call` passes the emissions through unchanged (so
    the layer, and its weights, belong to the functional graph).

    Args:
        num_classes: tags (C).
    """

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes

    def build(self, input_shape=None):
        c = self.num_classes
        zeros = keras.initializers.Zeros()
        # transitions[i, j]: score of tag j following tag i.
        self.transitions = self.add_weight((c, c), zeros, name="transitions")
        self.start_transitions = self.add_weight((c,), zeros, name="start_transitions")
        self.end_transitions = self.add_weight((c,), zeros, name="end_transitions")

    def call(self, emissions):
        return emissions

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}

    def negative_log_likelihood(self, emissions, labels, weights):
        """Per-row -log p(gold tags | emissions) over the labelled positions.

        Args:
            emissions: float (B, T, C) tag scores.
            labels: int (B, T) gold tags (read where `weights` > 0).
            weights: (B, T), > 0 at the labelled positions.

        Returns:
            float32 (B,) losses, 0 for rows without a labelled position.
        """
        emissions = ops.cast(emissions, "float32")
        transitions = ops.cast(self.transitions, "float32")
        start = ops.cast(self.start_transitions, "float32")
        end = ops.cast(self.end_transitions, "float32")
        c = self.num_classes
        emissions, labels, mask = _compact(emissions, labels, weights)  # (B, T, ...)
        count = ops.sum(ops.cast(mask, "int32"), axis=1)  # (B,)

        # Gold path score: emissions + start + transitions between consecutive
        # labelled positions + end after the last one.
        gold = ops.sum(
            ops.where(
                mask,
                ops.squeeze(ops.take_along_axis(emissions, labels[..., None], -1), -1),
                0.0,
            ),
            axis=1,
        )
        gold += ops.take(start, labels[:, 0])
        pairs = labels[:, :-1] * c + labels[:, 1:]  # (B, T-1) flat transition index
        gold += ops.sum(
            ops.where(
                mask[:, 1:], ops.take(ops.reshape(transitions, [-1]), pairs), 0.0
            ),
            axis=1,
        )
        last = ops.take_along_axis(labels, ops.maximum(count - 1, 0)[:, None], 1)
        gold += ops.take(end, ops.squeeze(last, 1))

        # Partition function: the forward algorithm, carrying alpha past the padding.
        alpha = start[None, :] + emissions[:, 0]  # (B, C)

        length = emissions.shape[1]
        if isinstance(length, int):
            alpha = _forward_by_products(alpha, emissions, mask, transitions)
        else:  # a length known only at run time (a graph traced with T = None)

            def step(t, alpha):
                emitted = ops.take(emissions, t, axis=1)  # (B, C)
                scores = alpha[:, :, None] + transitions[None] + emitted[:, None, :]
                following = ops.logsumexp(scores, axis=1)  # (B, C)
                return ops.where(ops.take(mask, t, axis=1)[:, None], following, alpha)

            alpha = ops.fori_loop(1, ops.shape(emissions)[1], step, alpha)
        log_z = ops.logsumexp(alpha + end[None, :], axis=1)
        return ops.where(count > 0, log_z - gold, 0.0)


def _log_matmul(a, b):
    """Matrix product in the log semiring over the last two axes."""
    return ops.logsumexp(a[..., :, :, None] + b[..., None, :, :], axis=-2)


def _forward_by_products(alpha, emissions, mask, transitions):
    """The forward algorithm's final alpha (B, C) for a static length T, as alpha
    times the product of one (C, C) step matrix per position (log semiring),
    multiplied in pairs: log2(T) levels and no loop.

    A loop over T unrolled into XLA took ~7 minutes to compile with its gradient
    (T = 128), and a run-time loop's gradient does not compile at all (TensorFlow's
    while_loop accumulators need a maximum size). Unlabelled positions contribute the
    identity, so alpha carries past them.
    """
    c = transitions.shape[0]
    steps = emissions.shape[1] - 1
    # step[b, t, i, j]: score of moving from tag i to tag j at position t + 1.
    step = transitions[None, None] + emissions[:, 1:, None, :]  # (B, T-1, C, C)
    identity = ops.where(ops.eye(c) > 0, 0.0, -1e9)  # log-semiring identity
    step = ops.where(mask[:, 1:, None, None], step, identity)
    levels = max(1, (steps - 1).bit_length())
    padding = 2**levels - steps
    if padding:
        pad = ops.broadcast_to(identity, (ops.shape(step)[0], padding, c, c))
        step = ops.concatenate([step, pad], axis=1)
    for _ in range(levels):  # pairwise, in order: (M1 M2)(M3 M4)...
        pairs = ops.reshape(step, (ops.shape(step)[0], -1, 2, c, c))
        step = _log_matmul(pairs[:, :, 0], pairs[:, :, 1])
    return ops.logsumexp(alpha[:, :, None] + step[:, 0], axis=1)


def _compact(emissions, labels, weights):
    """Moves the labelled positions of each row to its front, keeping their order.

    Returns:
        (emissions (B, T, C), labels int32 (B, T), mask bool (B, T)): the first N
        positions of a row are its labelled ones.
    """
    length = ops.shape(weights)[1]
    position = ops.arange(length, dtype="int32")[None, :]
    labelled = weights > 0
    # Labelled positions sort first (key = position), the rest after (T + position).
    order = ops.argsort(ops.where(labelled, position, position + length), axis=1)
    emissions = ops.take_along_axis(emissions, order[..., None], 1)
    labels = ops.take_along_axis(ops.cast(labels, "int32"), order, 1)
    count = ops.sum(ops.cast(labelled, "int32"), axis=1, keepdims=True)
    return emissions, labels, position < count
