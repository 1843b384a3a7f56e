"""AdamW with linear warm-up then linear decay to zero, as BERT was trained."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_bert_lite")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """0 -> `peak` over `warmup_steps`, then linearly to 0 at `total_steps`."""

    def __init__(self, peak: float, warmup_steps: int, total_steps: int):
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = max(int(total_steps), 1)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = ops.cast(max(self.warmup_steps, 1), "float32")
        total = ops.cast(self.total_steps, "float32")
        rise = self.peak * (step + 1.0) / warmup
        fall = (
            self.peak
            * ops.maximum(total - step, 0.0)
            / ops.maximum(total - warmup, 1.0)
        )
        return ops.where(step < warmup, rise, fall)

    def get_config(self):
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
        }


def adamw(
    learning_rate: float,
    total_steps: int,
    warmup: float = 0.1,
    weight_decay: float = 0.01,
    clipnorm: float | None = 1.0,
) -> keras.optimizers.AdamW:
    """AdamW whose weight decay skips LayerNorm parameters and biases.

    Args:
        learning_rate: peak learning rate.
        total_steps: steps of the whole run (the decay reaches 0 there).
        warmup: share of `total_steps` spent warming up.
        weight_decay: decoupled weight decay.
        clipnorm: global gradient-norm clip (None: no clipping).
    """
    schedule = WarmupLinearDecay(
        learning_rate, round(warmup * total_steps), total_steps
    )
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule,
        weight_decay=weight_decay,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-6,
        global_clipnorm=clipnorm,
    )
    # LayerNorm scales/offsets are gamma/beta; biases are bias. Decaying them toward 0
    # only fights the normalisation (BERT excluded them too).
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    return optimizer
