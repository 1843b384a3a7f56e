"""Loss averaging that stays exact when a batch is split across replicas.

Under a `tf.distribute` strategy each replica computes the loss of its slice of the
global batch, and the gradients of the replicas are summed. A replica's loss must
then be its share of the global mean: its sum over the global count, not its own
mean (replicas hold different numbers of masked tokens or labelled words, and a mean
of means weights them wrongly). With one replica, or under JAX, this is the mean.
"""

import keras
from keras import ops


def cross_replica_sum(value):
    """`value` summed over the replicas training in sync (itself with one)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            return context.all_reduce("sum", value)
    return value


def weighted_mean(values, weights):
    """(share of the global weighted mean to train on, this replica's own mean).

    Args:
        values: float per-item losses (any shape).
        weights: float weights of the same shape (0 leaves an item out).

    Returns:
        `sum(values * weights) / global sum(weights)`: summed over replicas it is
        the mean over the whole global batch (what the gradient must follow);
        and the local weighted mean with its weight, for metrics (which Keras
        aggregates over replicas itself).
    """
    weights = ops.cast(weights, "float32")
    local_sum = ops.sum(ops.cast(values, "float32") * weights)
    local_weight = ops.sum(weights)
    share = local_sum / ops.maximum(cross_replica_sum(local_weight), 1.0)
    return share, local_sum / ops.maximum(local_weight, 1.0), local_weight
