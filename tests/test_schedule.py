import keras
import numpy as np
import pytest

from keras_bert_lite.training.optimizer import (
    AdamW,
    Lamb,
    WarmupLinearDecay,
    bert_optimizer,
    layer_decay_factors,
)


def test_warmup_then_linear_decay_to_zero():
    schedule = WarmupLinearDecay(1e-3, warmup_steps=10, total_steps=110)
    assert float(schedule(0)) == pytest.approx(1e-4)
    assert float(schedule(9)) == pytest.approx(1e-3)
    assert float(schedule(10)) == pytest.approx(1e-3)
    assert float(schedule(60)) == pytest.approx(5e-4)
    assert float(schedule(110)) == pytest.approx(0.0)
    assert float(schedule(500)) == pytest.approx(0.0)


def test_weight_decay_skips_layer_norm_and_biases():
    from keras_bert_lite.models import BertBackbone

    backbone = BertBackbone(
        vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16
    )
    optimizer = bert_optimizer(1e-3, total_steps=10)
    decayed = {
        v.path for v in backbone.trainable_variables if optimizer._use_weight_decay(v)
    }
    assert "encoder_0/qkv/kernel" in decayed
    assert "embeddings/token_embedding/embeddings" in decayed
    assert not any(p.endswith(("bias", "gamma", "beta")) for p in decayed)


def _variables(*names):
    """Variables of shape (3, 2) whose start values depend on their names only."""
    return [
        keras.Variable(
            np.random.default_rng(ord(name)).normal(size=(3, 2)).astype("float32"),
            name=name,
        )
        for name in names
    ]


def _train(optimizer, variables, steps=4):
    """`steps` updates of `variables`, each variable's gradients seeded by its name
    and the step, so that a variable trained alone gets the same ones."""
    for step in range(steps):
        grads = [
            np.random.default_rng((ord(v.name), step)).normal(size=v.shape)
            for v in variables
        ]
        optimizer.apply([g.astype("float32") for g in grads], variables)
    return [v.numpy() for v in variables]


def test_adamw_is_keras_adamw_without_factors():
    # The decoupled decay moved into each variable's update: the same arithmetic.
    options = dict(learning_rate=0.05, weight_decay=0.5, epsilon=1e-6)
    ours, theirs = AdamW(**options), keras.optimizers.AdamW(**options)
    for optimizer in (ours, theirs):
        optimizer.exclude_from_weight_decay(var_names=["b"])
    got = _train(ours, _variables("w", "b"))
    want = _train(theirs, _variables("w", "b"))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # ... and the decay is applied: without it w ends elsewhere.
    plain = keras.optimizers.Adam(learning_rate=0.05, epsilon=1e-6)
    assert not np.allclose(got[0], _train(plain, _variables("w"))[0], rtol=1e-3)


@pytest.mark.parametrize("cls", [AdamW, Lamb])
def test_rate_factor_trains_a_variable_as_at_that_rate(cls):
    """A variable at factor 0.25 ends where an optimizer at a quarter of the rate
    takes it, weight decay included; the others train at the full rate."""
    options = dict(weight_decay=0.5, epsilon=1e-6)
    w, b = _train(
        cls(learning_rate=0.08, rate_factors={"w": 0.25}, **options),
        _variables("w", "b"),
    )
    (w_quarter,) = _train(cls(learning_rate=0.02, **options), _variables("w"))
    (w_full,) = _train(cls(learning_rate=0.08, **options), _variables("w"))
    (b_full,) = _train(cls(learning_rate=0.08, **options), _variables("b"))
    np.testing.assert_allclose(w, w_quarter, rtol=1e-6)
    np.testing.assert_allclose(b, b_full, rtol=1e-6)
    assert not np.allclose(w, w_full, rtol=1e-3)


def test_layer_decay_factors_from_the_top_down():
    from keras_bert_lite.models import BertBackbone

    backbone = BertBackbone(
        vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16
    )
    factors = layer_decay_factors(backbone, 0.5)
    by_layer = {}
    for path, factor in factors.items():
        by_layer.setdefault(path.split("/")[0], set()).add(factor)
    assert by_layer == {"embeddings": {0.125}, "encoder_0": {0.25}, "encoder_1": {0.5}}
    # Every backbone variable but the pooler's (it trains with the head) has one.
    pooler = {v.path for v in backbone.pooler.trainable_weights}
    assert set(factors) | pooler == {v.path for v in backbone.trainable_weights}
    assert layer_decay_factors(backbone, 1.0) == {}
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="layer decay"):
            layer_decay_factors(backbone, bad)
