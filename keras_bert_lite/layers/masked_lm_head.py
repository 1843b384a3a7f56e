"""The masked-LM head, computed only at the masked positions.

B = batch, T = sequence length, P = max_predictions, D = hidden_dim, V = vocabulary.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_bert_lite")
class MaskedLMHead(keras.layers.Layer):
    """Gathers (B, P) positions from (B, T, D), then dense + GELU + LayerNorm and the
    output projection tied to the token embedding matrix, plus a bias.

    Gathering first keeps the V-wide projection to P rows per example instead of T.

    Args:
        token_embedding: the backbone's `keras.layers.Embedding`, whose (V, D) matrix is
            the output projection.
        layer_norm_epsilon: LayerNorm epsilon.
        initializer_range: stddev of the truncated-normal initialiser.
    """

    def __init__(
        self,
        token_embedding,
        layer_norm_epsilon=1e-12,
        initializer_range=0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.token_embedding = token_embedding
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range

    def build(self, sequence_output_shape, mask_positions_shape=None):
        hidden_dim = sequence_output_shape[-1]
        vocabulary_size = self.token_embedding.input_dim
        self.transform = keras.layers.Dense(
            hidden_dim,
            activation="gelu",
            name="transform",
            dtype=self.dtype_policy,
            kernel_initializer=keras.initializers.TruncatedNormal(
                stddev=self.initializer_range
            ),
        )
        self.transform.build((None, None, hidden_dim))
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, name="layer_norm", dtype=self.dtype_policy
        )
        self.layer_norm.build((None, None, hidden_dim))
        self.bias = self.add_weight(
            name="bias", shape=(vocabulary_size,), initializer="zeros"
        )
        self.built = True

    def call(self, sequence_output, mask_positions):
        positions = ops.cast(mask_positions, "int32")[:, :, None]  # (B, P, 1)
        x = ops.take_along_axis(sequence_output, positions, axis=1)  # (B, P, D)
        x = self.layer_norm(self.transform(x))
        weights = ops.cast(self.token_embedding.embeddings, x.dtype)  # (V, D)
        logits = ops.matmul(x, ops.transpose(weights))  # (B, P, V)
        # Losses and softmax stay float32 under mixed precision.
        return ops.cast(logits, "float32") + ops.cast(self.bias, "float32")

    def compute_output_shape(self, sequence_output_shape, mask_positions_shape):
        return (
            sequence_output_shape[0],
            mask_positions_shape[1],
            self.token_embedding.input_dim,
        )

    def get_config(self):
        # The tied embedding is wiring, not config: BertPretrainer rebuilds the link.
        return {
            **super().get_config(),
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "initializer_range": self.initializer_range,
        }
