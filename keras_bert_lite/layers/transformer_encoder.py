"""One post-LayerNorm Transformer encoder block, as in BERT.

B = batch, T = sequence length, D = hidden_dim, N = heads, H = D / N.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_bert_lite")
class TransformerEncoder(keras.layers.Layer):
    """Self-attention with a padding mask, then a GELU feed-forward; residual and
    LayerNorm after each.

    Query, key and value come from one fused projection (one matmul instead of three).

    Args:
        num_heads: attention heads N.
        intermediate_dim: width of the feed-forward inner layer.
        dropout: dropout on the attention output and the feed-forward output.
        layer_norm_epsilon: LayerNorm epsilon.
        initializer_range: stddev of the truncated-normal initialiser.
    """

    def __init__(
        self,
        num_heads,
        intermediate_dim,
        dropout=0.1,
        layer_norm_epsilon=1e-12,
        initializer_range=0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range
        self.supports_masking = False

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        if hidden_dim % self.num_heads:
            raise ValueError(
                f"hidden_dim {hidden_dim} is not divisible by num_heads "
                f"{self.num_heads}"
            )
        self.head_dim = hidden_dim // self.num_heads

        def dense(units, name, activation=None):
            layer = keras.layers.Dense(
                units,
                activation=activation,
                name=name,
                dtype=self.dtype_policy,
                kernel_initializer=keras.initializers.TruncatedNormal(
                    stddev=self.initializer_range
                ),
            )
            return layer

        def norm(name):
            return keras.layers.LayerNormalization(
                epsilon=self.layer_norm_epsilon, name=name, dtype=self.dtype_policy
            )

        self.qkv = dense(3 * hidden_dim, "qkv")  # (D, 3D): query | key | value
        self.attention_output = dense(hidden_dim, "attention_output")
        self.attention_norm = norm("attention_norm")
        self.intermediate = dense(
            self.intermediate_dim, "intermediate", activation="gelu"
        )
        self.output_dense = dense(hidden_dim, "output")
        self.output_norm = norm("output_norm")
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)

        self.qkv.build(input_shape)
        self.attention_output.build(input_shape)
        self.attention_norm.build(input_shape)
        self.intermediate.build(input_shape)
        self.output_dense.build(tuple(input_shape[:-1]) + (self.intermediate_dim,))
        self.output_norm.build(input_shape)
        self.built = True

    def _heads(self, x, padding_mask):
        """Query, key, value (B, T, N, H) and the key mask (B, 1, 1, T)."""
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        qkv = ops.reshape(
            self.qkv(x), (batch, length, 3, self.num_heads, self.head_dim)
        )
        # Padding keys get no attention: (B, 1, 1, T) broadcasts over heads and queries.
        # A reshape, not `[:, None, None, :]`: the TFLite converter cannot lower that
        # strided slice when both batch and length are dynamic (raw-text exports).
        mask = ops.reshape(ops.cast(padding_mask, "bool"), (batch, 1, 1, length))
        return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], mask

    def attention_probabilities(self, x, padding_mask):
        """The attention weights `call` applies, (B, N, T, T) in float32: each
        query's row over the keys, 0 on padding keys. For inspection only; `call`
        never materialises them."""
        query, key, _, mask = self._heads(x, padding_mask)
        scores = ops.einsum(
            "bqnh,bknh->bnqk", ops.cast(query, "float32"), ops.cast(key, "float32")
        ) / ops.sqrt(ops.cast(self.head_dim, "float32"))
        return ops.softmax(ops.where(mask, scores, -1e9), axis=-1)

    def call(self, x, padding_mask, training=None):
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        query, key, value, mask = self._heads(x, padding_mask)  # (B, T, N, H)
        attended = ops.dot_product_attention(query, key, value, mask=mask)  # (B,T,N,H)
        attended = ops.reshape(
            attended, (batch, length, self.num_heads * self.head_dim)
        )
        attended = self.dropout_layer(
            self.attention_output(attended), training=training
        )
        x = self.attention_norm(x + attended)
        ffn = self.output_dense(self.intermediate(x))
        ffn = self.dropout_layer(ffn, training=training)
        return self.output_norm(x + ffn)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "initializer_range": self.initializer_range,
        }
