"""The BERT encoder as a functional Keras model.

B = batch, T = sequence length, D = hidden_dim.
"""

import keras
from keras import ops

from keras_bert_lite.config import BertConfig
from keras_bert_lite.layers import BertEmbeddings, TransformerEncoder


@keras.saving.register_keras_serializable(package="keras_bert_lite")
class BertBackbone(keras.Model):
    """Inputs `token_ids`, `segment_ids`, `padding_mask` (int32, B x T); outputs
    `sequence_output` (B, T, D) and `pooled_output` (B, D: dense + tanh on [CLS]).

    Args: the fields of `BertConfig`, with the same names and meanings.
    """

    def __init__(
        self,
        vocabulary_size,
        num_layers=4,
        num_heads=4,
        hidden_dim=256,
        intermediate_dim=1024,
        dropout=0.1,
        max_sequence_length=512,
        num_segments=2,
        layer_norm_epsilon=1e-12,
        initializer_range=0.02,
        dtype=None,
        **kwargs,
    ):
        # Validates the arguments with the same messages the CLI shows.
        BertConfig(
            vocabulary_size=vocabulary_size,
            num_layers=num_layers,
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            intermediate_dim=intermediate_dim,
            dropout=dropout,
            max_sequence_length=max_sequence_length,
            num_segments=num_segments,
            layer_norm_epsilon=layer_norm_epsilon,
            initializer_range=initializer_range,
        )

        # === Layers ===
        self.embeddings = BertEmbeddings(
            vocabulary_size,
            hidden_dim,
            max_sequence_length,
            num_segments,
            dropout,
            layer_norm_epsilon,
            initializer_range,
            dtype=dtype,
            name="embeddings",
        )
        self.encoder_layers = [
            TransformerEncoder(
                num_heads,
                intermediate_dim,
                dropout,
                layer_norm_epsilon,
                initializer_range,
                dtype=dtype,
                name=f"encoder_{i}",
            )
            for i in range(num_layers)
        ]
        self.pooler = keras.layers.Dense(
            hidden_dim,
            activation="tanh",
            dtype=dtype,
            name="pooler",
            kernel_initializer=keras.initializers.TruncatedNormal(
                stddev=initializer_range
            ),
        )

        # === Functional Model ===
        token_ids = keras.Input((None,), dtype="int32", name="token_ids")
        segment_ids = keras.Input((None,), dtype="int32", name="segment_ids")
        padding_mask = keras.Input((None,), dtype="int32", name="padding_mask")
        x = self.embeddings(token_ids, segment_ids)  # (B, T, D)
        for layer in self.encoder_layers:
            x = layer(x, padding_mask)
        pooled = self.pooler(x[:, 0])  # (B, D)
        super().__init__(
            inputs={
                "token_ids": token_ids,
                "segment_ids": segment_ids,
                "padding_mask": padding_mask,
            },
            outputs={"sequence_output": x, "pooled_output": pooled},
            dtype=dtype,
            **kwargs,
        )
        if dtype is not None:
            # A functional model does not take `dtype` as its own policy; the task
            # heads built on the backbone read it from here (as keras-hub's do).
            self.dtype_policy = keras.dtype_policies.get(dtype)

        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.max_sequence_length = max_sequence_length
        self.num_segments = num_segments
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range

    @classmethod
    def from_preset(cls, name: str, vocabulary_size: int, **overrides):
        """A randomly initialised backbone of a named size (tiny ... base)."""
        config = BertConfig.from_preset(
            name, vocabulary_size=vocabulary_size, **overrides
        )
        return cls(**config.to_dict())

    @classmethod
    def from_bert_config(cls, config: BertConfig, **kwargs):
        return cls(**config.to_dict(), **kwargs)

    @property
    def token_embedding(self) -> keras.layers.Embedding:
        return self.embeddings.token_embedding

    def attention_probabilities(self, inputs: dict) -> list:
        """Every encoder layer's attention weights, (B, N, T, T) each, for the
        batch `inputs` (token_ids, segment_ids, padding_mask), in inference mode."""
        padding_mask = inputs["padding_mask"]
        x = self.embeddings(inputs["token_ids"], inputs["segment_ids"], training=False)
        weights = []
        for layer in self.encoder_layers:
            weights.append(layer.attention_probabilities(x, padding_mask))
            x = layer(x, padding_mask, training=False)
        return weights

    def bert_config(self) -> BertConfig:
        return BertConfig(
            **{k: getattr(self, k) for k in BertConfig.__dataclass_fields__}
        )

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            **self.bert_config().to_dict(),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def count_params(model: keras.Model) -> int:
    return int(sum(ops.size(w) for w in model.weights))
