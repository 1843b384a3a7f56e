"""Optimizers as BERT was trained: AdamW (or LAMB for large batches), linear warm-up
then linear decay to zero, LayerNorm and biases exempt from weight decay, optional
gradient accumulation, and optional per-variable learning-rate factors (layer-wise
decay for fine-tuning, as ELECTRA and DeBERTa fine-tune)."""

from __future__ import annotations

import keras
from keras import ops

# LayerNorm scales/offsets are gamma/beta; biases are bias. Decaying them toward 0
# only fights the normalisation (BERT excluded them too), and LAMB leaves them out of
# its layer-wise trust ratio for the same reason.
NO_DECAY = ["gamma", "beta", "bias"]


@keras.saving.register_keras_serializable(package="keras_bert_lite")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """0 -> `peak` over `warmup_steps`, then linearly to 0 at `total_steps`.

    Keras hands a schedule the count of micro-batches; with gradient accumulation
    over `accumulation` of them, a step is that many, so the shape is the same
    whatever the accumulation.
    """

    def __init__(
        self, peak: float, warmup_steps: int, total_steps: int, accumulation: int = 1
    ):
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = max(int(total_steps), 1)
        self.accumulation = max(int(accumulation), 1)

    def __call__(self, step):
        step = ops.floor(ops.cast(step, "float32") / float(self.accumulation))
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
            "accumulation": self.accumulation,
        }


class _ReduceThenClip:
    """Clips the gradient of the whole global batch, not each replica's share.

    Keras 3's TensorFlow optimizer clips (and adds up accumulated micro-batches)
    on each replica, then sums the replicas' gradients: under a strategy
    `global_clipnorm=1.0` would bound each share, not the gradient, so the step
    would depend on the number of replicas. Here the sum comes first, in the one
    place every update passes, and the later sum is skipped.
    """

    def _clip_gradients(self, grads):
        return super()._clip_gradients(_sum_over_replicas(grads))

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return list(grads_and_vars)  # summed before clipping


def _sum_over_replicas(grads):
    if keras.backend.backend() != "tensorflow":
        return grads
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return grads
    present = [g for g in grads if g is not None]
    summed = iter(context.all_reduce(tf.distribute.ReduceOp.SUM, present))
    return [None if g is None else next(summed) for g in grads]


class _RateFactors:
    """Scales the learning rate of some variables: `rate_factors` maps a variable's
    `path` to a factor (1 for the others). The update and the weight decay both see
    the scaled rate, as with an optimizer of its own at that rate."""

    def __init__(self, *args, rate_factors: dict[str, float] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.rate_factors = {str(k): float(v) for k, v in (rate_factors or {}).items()}

    def build(self, var_list):
        super().build(var_list)
        self._factors = [self.rate_factors.get(v.path, 1.0) for v in var_list]

    def _scaled(self, variable, learning_rate):
        factor = self._factors[self._get_variable_index(variable)]
        return learning_rate if factor == 1.0 else learning_rate * factor

    def get_config(self):
        return {**super().get_config(), "rate_factors": dict(self.rate_factors)}


@keras.saving.register_keras_serializable(package="keras_bert_lite")
class AdamW(_ReduceThenClip, _RateFactors, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW`, clipping the global gradient under a strategy.

    The decoupled weight decay is applied with each variable's update rather than
    in a pass of its own over all of them before (the same arithmetic: no update
    reads another variable), so that it sees the variable's scaled learning rate.
    """

    def _apply_weight_decay(self, variables):
        pass  # in update_step

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = self._scaled(variable, learning_rate)
        if self.weight_decay is not None and self._use_weight_decay(variable):
            lr = ops.cast(learning_rate, variable.dtype)
            wd = ops.cast(self.weight_decay, variable.dtype)
            self.assign_sub(variable, variable * wd * lr)
        super().update_step(gradient, variable, learning_rate)


@keras.saving.register_keras_serializable(package="keras_bert_lite")
class Lamb(_ReduceThenClip, _RateFactors, keras.optimizers.Lamb):
    """LAMB as in You et al. (2020), the optimizer of 76-minute BERT pretraining.

    `keras.optimizers.Lamb` applies weight decay outside the update (AdamW style)
    and puts every variable under the trust ratio. Here, as in the paper and in
    Google's BERT LAMB: the decay is part of the update the trust ratio scales,
    `w -= lr * ||w|| / ||r|| * r` with `r = m / (sqrt(v) + eps) + wd * w`, and
    LayerNorm parameters and biases take neither decay nor the trust ratio.
    """

    def __init__(self, *args, weight_decay: float = 0.01, **kwargs):
        super().__init__(*args, weight_decay=None, **kwargs)
        self.lamb_weight_decay = float(weight_decay)
        self.exclude_from_weight_decay(var_names=NO_DECAY)

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(self._scaled(variable, learning_rate), variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        step = ops.cast(self.iterations + 1, variable.dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, (gradient - m) * (1 - self.beta_1))
        self.assign_add(v, (ops.square(gradient) - v) * (1 - self.beta_2))
        m_hat = m / (1.0 - ops.power(ops.cast(self.beta_1, variable.dtype), step))
        v_hat = v / (1.0 - ops.power(ops.cast(self.beta_2, variable.dtype), step))
        update = m_hat / (ops.sqrt(v_hat) + self.epsilon)
        if not self._use_weight_decay(variable):  # LayerNorm, bias: plain Adam
            self.assign_sub(variable, lr * update)
            return
        update = update + self.lamb_weight_decay * variable
        w_norm = ops.sqrt(ops.sum(ops.square(variable)))
        u_norm = ops.sqrt(ops.sum(ops.square(update)))
        ratio = ops.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, 1.0)
        self.assign_sub(variable, lr * ratio * update)

    def get_config(self):
        config = super().get_config()
        config["weight_decay"] = self.lamb_weight_decay
        return config


def bert_optimizer(
    learning_rate: float,
    total_steps: int,
    warmup: float = 0.1,
    weight_decay: float = 0.01,
    clipnorm: float | None = 1.0,
    *,
    optimizer: str = "adamw",
    accumulation: int = 1,
    rate_factors: dict[str, float] | None = None,
) -> keras.optimizers.Optimizer:
    """The optimizer for a run: AdamW (default) or LAMB, with the BERT schedule.

    Args:
        learning_rate: peak learning rate.
        total_steps: optimizer steps of the whole run (the decay reaches 0 there).
        warmup: share of `total_steps` spent warming up.
        weight_decay: decoupled weight decay (LayerNorm and biases exempt).
        clipnorm: global gradient-norm clip (None: no clipping).
        optimizer: "adamw" or "lamb".
        accumulation: micro-batches whose mean gradient makes one step (1: none).
        rate_factors: learning-rate factor by variable path (`layer_decay_factors`).
    """
    schedule = WarmupLinearDecay(
        learning_rate, round(warmup * total_steps), total_steps, accumulation
    )
    options = dict(
        learning_rate=schedule,
        weight_decay=weight_decay,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-6,
        global_clipnorm=clipnorm,
        gradient_accumulation_steps=accumulation if accumulation > 1 else None,
        rate_factors=rate_factors,
    )
    if optimizer == "lamb":
        return Lamb(**options)
    result = AdamW(**options)
    result.exclude_from_weight_decay(var_names=NO_DECAY)
    return result


def layer_decay_factors(backbone, decay: float) -> dict[str, float]:
    """Layer-wise learning-rate decay (Clark et al. 2020, ELECTRA): the task head and
    the pooler train at the peak rate, the top encoder layer at `decay` times it, each
    layer below at `decay` times the one above, and the embeddings at
    `decay ** (num_layers + 1)`. Returns the factors by variable path for the
    optimizer's `rate_factors` (empty when `decay` is 1)."""
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"layer decay must be in (0, 1], got {decay}")
    if decay == 1.0:
        return {}
    depth = len(backbone.encoder_layers)
    groups = [(backbone.embeddings, depth + 1)] + [
        (layer, depth - i) for i, layer in enumerate(backbone.encoder_layers)
    ]
    return {
        v.path: decay**power for layer, power in groups for v in layer.trainable_weights
    }
