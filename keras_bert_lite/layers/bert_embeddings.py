"""Token + segment + learned position embeddings, summed, then LayerNorm and dropout.

B = batch, T = sequence length, D = hidden_dim.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_bert_lite")
class BertEmbeddings(keras.layers.Layer):
    """Embeds `token_ids` and `segment_ids` (B, T) into (B, T, D).

    Args:
        vocabulary_size: rows of the token embedding.
        hidden_dim: embedding width D.
        max_sequence_length: rows of the learned position embedding.
        num_segments: rows of the segment embedding.
        dropout: dropout rate after the LayerNorm.
        layer_norm_epsilon: LayerNorm epsilon.
        initializer_range: stddev of the truncated-normal initialiser.
    """

    def __init__(
        self,
        vocabulary_size,
        hidden_dim,
        max_sequence_length=512,
        num_segments=2,
        dropout=0.1,
        layer_norm_epsilon=1e-12,
        initializer_range=0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.hidden_dim = hidden_dim
        self.max_sequence_length = max_sequence_length
        self.num_segments = num_segments
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range

        def init():
            return keras.initializers.TruncatedNormal(stddev=initializer_range)

        # The MLM head reads `token_embedding.embeddings` to tie its output projection.
        self.token_embedding = keras.layers.Embedding(
            vocabulary_size,
            hidden_dim,
            embeddings_initializer=init(),
            dtype=self.dtype_policy,
            name="token_embedding",
        )
        self.segment_embedding = keras.layers.Embedding(
            num_segments,
            hidden_dim,
            embeddings_initializer=init(),
            dtype=self.dtype_policy,
            name="segment_embedding",
        )
        self.position_embedding = keras.layers.Embedding(
            max_sequence_length,
            hidden_dim,
            embeddings_initializer=init(),
            dtype=self.dtype_policy,
            name="position_embedding",
        )
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="layer_norm"
        )
        self.dropout_layer = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def build(self, input_shape):
        self.token_embedding.build(input_shape)
        self.segment_embedding.build(input_shape)
        self.position_embedding.build(input_shape)
        self.layer_norm.build(tuple(input_shape) + (self.hidden_dim,))
        self.built = True

    def call(self, token_ids, segment_ids, training=None):
        positions = ops.arange(ops.shape(token_ids)[1])  # (T,)
        x = (
            self.token_embedding(token_ids)  # (B, T, D)
            + self.segment_embedding(segment_ids)
            + self.position_embedding(positions)[None]
        )
        return self.dropout_layer(self.layer_norm(x), training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.hidden_dim,)

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "hidden_dim": self.hidden_dim,
            "max_sequence_length": self.max_sequence_length,
            "num_segments": self.num_segments,
            "dropout": self.dropout,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "initializer_range": self.initializer_range,
        }
