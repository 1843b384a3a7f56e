"""Configuration: what a model IS (`BertConfig`), how its data is made
(`DataConfig`) and how it is trained (`TrainConfig`).

Field names equal the constructor arguments they feed, so a config round-trips through
JSON and `BertBackbone(**config.to_dict())` without renaming shims.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from keras_bert_lite.errors import KblError

CONFIG_VERSION = 1  # bumped when the run-directory layout changes incompatibly


@dataclasses.dataclass
class BertConfig:
    """Architecture only: nothing here changes how a model is trained."""

    vocabulary_size: int = 30522  # rows of the token embedding (and MLM output) matrix
    num_layers: int = 4  # Transformer encoder blocks
    num_heads: int = 4  # attention heads per block; hidden_dim % num_heads == 0
    hidden_dim: int = 256  # width of every token's representation
    intermediate_dim: int = 1024  # width of the feed-forward inner layer
    dropout: float = 0.1  # on embeddings, attention output and feed-forward output
    max_sequence_length: int = 512  # rows of the learned position embedding
    num_segments: int = 2  # segment (token type) ids 0 .. num_segments-1
    layer_norm_epsilon: float = 1e-12
    initializer_range: float = 0.02  # stddev of the truncated-normal initialiser

    def __post_init__(self):
        for name in (
            "vocabulary_size",
            "num_layers",
            "num_heads",
            "hidden_dim",
            "intermediate_dim",
            "max_sequence_length",
            "num_segments",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise KblError(
                    f"model config: '{name}' must be a positive integer, got {value!r}"
                )
        if self.hidden_dim % self.num_heads:
            raise KblError(
                f"model config: hidden_dim {self.hidden_dim} is not divisible "
                f"by num_heads {self.num_heads}"
            )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise KblError(
                f"model config: dropout must be in [0, 1), got {self.dropout}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(
        cls, values: dict[str, Any], where: str = "model config"
    ) -> BertConfig:
        return _from_dict(cls, values, where)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> BertConfig:
        if name not in PRESETS:
            raise KblError(
                f"unknown model preset '{name}': choose one of "
                f"{', '.join(PRESETS)} or pass a config.json"
            )
        return cls(**{**PRESETS[name], **overrides})


# layers / hidden / heads / intermediate, as in the BERT "compact models" table.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(num_layers=2, hidden_dim=128, num_heads=2, intermediate_dim=512),
    "mini": dict(num_layers=4, hidden_dim=256, num_heads=4, intermediate_dim=1024),
    "small": dict(num_layers=4, hidden_dim=512, num_heads=8, intermediate_dim=2048),
    "medium": dict(num_layers=8, hidden_dim=512, num_heads=8, intermediate_dim=2048),
    "base": dict(num_layers=12, hidden_dim=768, num_heads=12, intermediate_dim=3072),
}


@dataclasses.dataclass
class DataConfig:
    """How raw text becomes pretraining batches."""

    seq_len: int = 128  # tokens per example, [CLS] and [SEP]s included
    max_predictions: int | None = (
        None  # masked slots per example; None: round(0.15*seq_len)
    )
    mask_rate: float = 0.15  # share of real (non-special) tokens chosen for prediction
    mask_token_rate: float = 0.8  # of the chosen: replaced by [MASK]
    random_token_rate: float = 0.1  # of the chosen: replaced by a random token
    short_seq_prob: float = 0.1  # chance of a shorter target length (as in BERT)
    nsp: bool = True  # next-sentence pairs; False packs contiguous text as one segment
    whole_word_mask: bool = False  # choose whole words (all their ## pieces together)
    lowercase: bool = True  # uncased tokenizer with accent stripping
    held_out: float = 0.05  # share of documents kept for evaluation
    document_pool: int = 256  # documents held to draw NotNext segments from (x2 recent)

    def __post_init__(self):
        if not isinstance(self.seq_len, int) or self.seq_len < 8:
            raise KblError(
                f"data config: seq_len must be an integer >= 8, got {self.seq_len!r}"
            )
        if self.max_predictions is None:
            self.max_predictions = self.default_predictions(self.seq_len)
        if self.max_predictions < 1:
            raise KblError("data config: max_predictions must be >= 1")
        if not 0.0 < self.mask_rate < 1.0:
            raise KblError(
                f"data config: mask_rate must be in (0, 1), got {self.mask_rate}"
            )
        if self.mask_token_rate + self.random_token_rate > 1.0:
            raise KblError(
                "data config: mask_token_rate + random_token_rate must be <= 1"
            )
        if not 0.0 <= self.held_out < 1.0:
            raise KblError(
                f"data config: held_out must be in [0, 1), got {self.held_out}"
            )

    def default_predictions(self, seq_len: int) -> int:
        """The masked slots per example when `max_predictions` is not given."""
        return max(1, round(self.mask_rate * seq_len))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(
        cls, values: dict[str, Any], where: str = "data config"
    ) -> DataConfig:
        return _from_dict(cls, values, where)


STRATEGIES = ("auto", "default", "mirrored", "multiworker", "tpu")
OPTIMIZERS = ("adamw", "lamb")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")  # Keras policies
# A pretraining corpus whose tokenized ids fit in this many MiB is kept after its
# first pass (`pretraining_dataset(cache_bytes=...)`); a larger one streams.
DEFAULT_CACHE_MIB = 64
POOLING = ("cls", "mean")  # what a classifier reads: pooled [CLS], or mean of tokens


@dataclasses.dataclass
class TrainConfig:
    """How a model is optimised. Runtime switches live here, not in BertConfig."""

    batch_size: int = (
        32  # global batch per optimizer step (all replicas, all micro-batches)
    )
    steps: int | None = None  # total optimizer steps; or give epochs
    epochs: int | None = None  # passes over the training documents
    eval_every: int | None = None  # steps between held-out evaluations and checkpoints
    # Held-out batches per evaluation (None: the whole held-out share). Capped by
    # default, as BERT's max_eval_steps: a corpus of any size evaluates in bounded
    # time, and counting the batches reads only as far as the cap.
    eval_batches: int | None = 100
    learning_rate: float = 3e-4  # peak, after warm-up (1e-3 stalled BERT-mini: README)
    warmup: float = 0.1  # share of the steps spent warming up linearly from 0
    weight_decay: float = 0.01  # decoupled decay; LayerNorm and biases are exempt
    clipnorm: float = 1.0  # global gradient-norm clipping
    precision: str = "auto"  # one of PRECISIONS
    strategy: str = "auto"  # auto | default | mirrored | multiworker | tpu
    jit_compile: bool | str = "auto"  # XLA for the train step; "auto": by measurement
    seed: int = 0  # seeds data order, NSP pairs, masks and weight initialisation
    optimizer: str = "adamw"  # adamw | lamb (layer-wise trust ratio, large batches)
    accumulation: int = 1  # micro-batches per step: batch_size / accumulation each
    # Fine-tuning: each layer below the head trains at this factor of the rate of the
    # layer above (embeddings lowest); 1: one rate for all.
    layer_decay: float = 1.0
    steps_per_execution: int | None = (
        None  # steps per device call; None: 1, TPU: up to 100
    )

    def __post_init__(self):
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise KblError(
                f"train config: batch_size must be a positive integer, got "
                f"{self.batch_size!r}"
            )
        for name in (
            "steps",
            "epochs",
            "eval_every",
            "eval_batches",
            "steps_per_execution",
        ):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise KblError(
                    f"train config: {name} must be a positive integer, got {value!r}"
                )
        if not isinstance(self.accumulation, int) or self.accumulation < 1:
            raise KblError(
                f"train config: accumulation must be a positive integer, got "
                f"{self.accumulation!r}"
            )
        if self.batch_size % self.accumulation:
            raise KblError(
                f"train config: batch_size {self.batch_size} is not divisible by "
                f"accumulation {self.accumulation}; each step is accumulation "
                "micro-batches of batch_size / accumulation examples"
            )
        if self.precision not in PRECISIONS:
            raise KblError(f"train config: unknown precision '{self.precision}'")
        if self.strategy not in STRATEGIES:
            raise KblError(
                f"train config: unknown strategy '{self.strategy}': choose one of "
                f"{', '.join(STRATEGIES)}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise KblError(
                f"train config: unknown optimizer '{self.optimizer}': choose one of "
                f"{', '.join(OPTIMIZERS)}"
            )
        if self.jit_compile not in ("auto", True, False):
            raise KblError(
                f"train config: jit_compile must be auto, true or false, got "
                f"{self.jit_compile!r}"
            )
        if not 0.0 < self.layer_decay <= 1.0:
            raise KblError(
                f"train config: layer_decay must be in (0, 1], got {self.layer_decay}"
            )
        if not 0.0 <= self.warmup < 1.0:
            raise KblError(
                f"train config: warmup must be a share in [0, 1), got {self.warmup}"
            )
        # A negative rate climbs the loss and a zero one trains nothing; written as
        # "not (in range)" so that NaN, which fails every comparison, is refused.
        if not (0.0 < self.learning_rate < math.inf):
            raise KblError(
                "train config: learning_rate must be a positive number, got "
                f"{self.learning_rate}"
            )
        if not (0.0 <= self.weight_decay < math.inf):
            raise KblError(
                "train config: weight_decay must be a number >= 0, got "
                f"{self.weight_decay}"
            )
        if not (0.0 < self.clipnorm < math.inf):
            raise KblError(
                f"train config: clipnorm must be a positive number, got {self.clipnorm}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(
        cls, values: dict[str, Any], where: str = "train config"
    ) -> TrainConfig:
        return _from_dict(cls, values, where)


def _type_error(name: str, annotation: str, value: Any) -> str | None:
    """Why `value` does not fit a field annotated `annotation` ("int | None"...)."""
    allowed = [a.strip() for a in str(annotation).split("|")]
    checks = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "None": lambda v: v is None,
    }
    if any(checks.get(a, lambda v: True)(value) for a in allowed):
        return None
    wanted = " or ".join(
        {"int": "an integer", "float": "a number", "bool": "true or false"}.get(
            a, "null" if a == "None" else "a string" if a == "str" else a
        )
        for a in allowed
    )
    return f"'{name}' must be {wanted}, got {value!r}"


def _from_dict(cls, values: dict[str, Any], where: str):
    """`cls(**values)` for values read from a file: unknown keys and wrong types
    are errors naming `where` (the file and section), never a traceback."""
    if not isinstance(values, dict):
        raise KblError(f"{where}: expected a JSON object, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise KblError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known keys are "
            f"{', '.join(sorted(fields))}"
        )
    for name, value in values.items():
        problem = _type_error(name, fields[name].type, value)
        if problem:
            raise KblError(f"{where}: {problem}")
    try:
        return cls(**values)
    except KblError as e:  # name the file, not just the section
        message = re.sub(r"^(model|data|train) config: ", "", str(e))
        raise KblError(f"{where}: {message}") from None
    except (TypeError, ValueError) as e:
        raise KblError(f"{where}: {e}") from None
